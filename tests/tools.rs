//! `util::tools::require_tool`, which the tests that drive a system tool
//! (HAProxy, `systemd-socket-activate`, python3) call first: a tool found
//! on `PATH` is used; a missing one skips the test with one line on stderr,
//! or fails it under `SOCKETSERVER_REQUIRE_TOOLS=1` (what `.ci/run` sets).

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use util::TempDir;
use util::tools::{REQUIRE_TOOLS, decide, find_on_path, require_tool};

const MISSING: &str = "socketserver-test-no-such-tool";

#[test]
fn a_tool_found_is_used_whether_required_or_not() {
    let path = PathBuf::from("/usr/bin/some-tool");
    for required in [false, true] {
        assert_eq!(decide("some-tool", "pkg", Some(path.clone()), required), Some(path.clone()));
    }
}

/// (Not required, it is a skip: see the child-process test below, which
/// also sees the line the skip prints.)
#[test]
fn a_missing_tool_when_required_fails_naming_the_package() {
    let panic = std::panic::catch_unwind(|| decide(MISSING, "the-package", None, true)).unwrap_err();
    let msg = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains(&format!("needs {MISSING} (Debian package the-package)")), "{msg}");
    assert!(msg.contains(REQUIRE_TOOLS), "{msg}");
}

#[test]
fn only_an_executable_file_on_path_is_a_tool() {
    let dir = TempDir::new("tools");
    let file = |name: &str, mode: u32| {
        std::fs::write(dir.join(name), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    };
    file("runnable", 0o755);
    file("not-runnable", 0o644);
    std::fs::create_dir(dir.join("a-directory")).unwrap();
    let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
    assert_eq!(find_on_path("runnable", Some(path.clone())), Some(dir.join("runnable")));
    for absent in ["not-runnable", "a-directory", MISSING] {
        assert_eq!(find_on_path(absent, Some(path.clone())), None, "{absent}");
    }
    assert_eq!(find_on_path("runnable", None), None, "no PATH at all");
}

/// Run by the test below in a child process: the tool does not exist.
#[test]
#[ignore = "run by a_test_without_its_tool_says_it_skipped_or_fails_when_required"]
fn needs_a_missing_tool() {
    let Some(_) = require_tool(MISSING, "the-package") else { return };
    panic!("{MISSING} was found");
}

/// The whole path, in a child process as `cargo test` runs it: without
/// the variable the test passes and its one `skipped:` line reaches
/// stderr (past the harness, which keeps what a passing test prints);
/// with `SOCKETSERVER_REQUIRE_TOOLS=1` it fails, naming the package.
#[test]
fn a_test_without_its_tool_says_it_skipped_or_fails_when_required() {
    let run = |required: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--ignored", "--exact", "needs_a_missing_tool"]).env_remove(REQUIRE_TOOLS);
        if let Some(v) = required {
            cmd.env(REQUIRE_TOOLS, v);
        }
        let out = cmd.output().expect("run the test binary");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let line = format!("skipped: needs_a_missing_tool needs {MISSING} (Debian package the-package)\n");
    for not_required in [None, Some("0")] {
        let (passed, stdout, stderr) = run(not_required);
        assert!(passed, "{not_required:?}: {stdout}{stderr}");
        assert_eq!(stderr, line, "{not_required:?}: one line on stderr");
        assert!(stdout.contains("1 passed"), "{stdout}");
    }
    let (passed, stdout, stderr) = run(Some("1"));
    assert!(!passed, "a missing tool passed under {REQUIRE_TOOLS}=1: {stdout}{stderr}");
    assert!(stdout.contains("(Debian package the-package): not found on PATH"), "{stdout}{stderr}");
    assert!(!stderr.contains("skipped:"), "{stderr}");
}
