//! `--proxy-protocol`: behind a proxy the command serves (and `--allow`
//! filters) the client the PROXY header names; a peer not in
//! `--trusted-proxy` cannot claim an address; a connection without a header
//! is closed and logged, and the server goes on.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;

use util::*;

fn exchange(server: &Server, header: &[u8], body: &[u8]) -> String {
    let mut c = connect(server.addr);
    let _ = c.write_all(&[header, body].concat());
    let _ = c.shutdown(Shutdown::Write);
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn allow_filters_the_client_the_header_names() {
    let server = Server::start(&[
        "echo",
        "--tcp",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--allow",
        "192.0.2.0/24",
        "--log-level",
        "debug",
    ]);
    // From 127.0.0.1 itself, `--allow` alone would refuse everyone.
    assert_eq!(exchange(&server, b"PROXY TCP4 192.0.2.5 192.0.2.1 4000 9999\r\n", b"hi\n"), "hi\n");
    assert_eq!(exchange(&server, b"PROXY TCP4 203.0.113.5 192.0.2.1 4000 9999\r\n", b"hi\n"), "");
    assert!(server.stderr_shows("refused 203.0.113.5:4000"));
    // No header: closed, logged with the reason; the next client is served.
    assert_eq!(exchange(&server, b"", b"hello without a header\n"), "");
    assert!(server.stderr_shows("does not start with a PROXY header"));
    assert_eq!(exchange(&server, b"PROXY TCP4 192.0.2.6 192.0.2.1 4001 9999\r\n", b"again\n"), "again\n");
}

#[test]
fn only_trusted_proxies_may_send_the_header() {
    let server = Server::start(&[
        "echo",
        "--tcp",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--log-level",
        "debug",
    ]);
    assert_eq!(exchange(&server, b"PROXY TCP4 192.0.2.5 192.0.2.1 4000 9999\r\n", b"hi\n"), "");
    assert!(server.stderr_shows("not a trusted proxy"));
}

#[test]
fn trusted_proxy_needs_proxy_protocol() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_socketserver"))
        .args(["echo", "--trusted-proxy", "10.0.0.0/8"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--proxy-protocol"));
}
