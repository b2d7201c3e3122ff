//! System tools a test drives (HAProxy, `systemd-socket-activate`,
//! python3): found on `PATH`, or the test is skipped with one line on
//! stderr, so that `cargo test` passes on a machine without them. Under
//! `SOCKETSERVER_REQUIRE_TOOLS=1` (`.ci/run` sets it, having installed
//! them) a missing tool fails the test instead: CI never skips silently.
//!
//! Shared by the library's tests (`tests/util`) and the command's
//! (`cli/tests/util` includes this file).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The variable under which a missing tool is a failure, not a skip.
pub const REQUIRE_TOOLS: &str = "SOCKETSERVER_REQUIRE_TOOLS";

/// The path of `tool` on `PATH`. When it is not there: `None` after one
/// `skipped: TEST needs TOOL (Debian package PACKAGE)` line on stderr, and
/// the test returns early — or a panic under `SOCKETSERVER_REQUIRE_TOOLS=1`.
///
/// Only `PATH` is searched (Debian installs `haproxy` in `/usr/sbin`, which
/// is not on a user's `PATH`; `.ci/run` adds it), so a run with the tools
/// taken off `PATH` shows what a machine without them does.
pub fn require_tool(tool: &str, package: &str) -> Option<PathBuf> {
    let required = std::env::var_os(REQUIRE_TOOLS).is_some_and(|v| v == "1");
    decide(tool, package, find_on_path(tool, std::env::var_os("PATH")), required)
}

/// An executable file named `tool` in one of the directories of `path`.
pub fn find_on_path(tool: &str, path: Option<std::ffi::OsString>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(tool))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// What [`require_tool`] does with what it `found`: the path; or, when
/// missing, a skip (one line on stderr, `None`), or a panic if `required`.
pub fn decide(tool: &str, package: &str, found: Option<PathBuf>, required: bool) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    let what = format!("{test} needs {tool} (Debian package {package})");
    if required {
        panic!("{what}: not found on PATH, and {REQUIRE_TOOLS}=1 makes that a failure");
    }
    // Straight to the process's stderr: the test harness keeps what
    // `eprintln!` writes to itself unless the test fails.
    let _ = writeln!(std::io::stderr(), "skipped: {what}");
    None
}
