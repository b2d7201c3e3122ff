//! The echo_server and time_server examples, run in-process.

mod util;

#[path = "../examples/echo_server.rs"]
#[allow(dead_code)]
mod echo_server;
#[path = "../examples/time_server.rs"]
#[allow(dead_code)]
mod time_server;

use std::io::Write;

use util::*;

#[test]
fn echo_server_example_echoes_several_clients_at_once() {
    let running = run(echo_server::bind("127.0.0.1:0").unwrap());
    let mut a = tcp_connect(running.inet());
    let mut b = tcp_connect(running.inet());
    assert_eq!(round_trip(&mut a, b"from a"), b"from a");
    assert_eq!(round_trip(&mut b, b"from b"), b"from b");
    let big = vec![42u8; 1 << 20];
    let mut c = tcp_connect(running.inet());
    let writer = {
        let mut w = c.try_clone().unwrap();
        let big = big.clone();
        std::thread::spawn(move || w.write_all(&big).unwrap())
    };
    let mut back = vec![0u8; big.len()];
    std::io::Read::read_exact(&mut c, &mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back, big);
    drop((a, b, c));
    running.stop().unwrap();
}

#[test]
fn time_server_example_renders_formats_and_reports_bad_ones() {
    let running = run(time_server::bind("127.0.0.1:0").unwrap());
    let c = udp_client();
    let year = String::from_utf8(udp_round_trip(&c, running.inet(), b"%Y")).unwrap();
    assert!(year.len() == 4 && year.chars().all(|ch| ch.is_ascii_digit()), "{year}");
    let default = String::from_utf8(udp_round_trip(&c, running.inet(), b"")).unwrap();
    assert!(default.starts_with(&year) && default.len() == 19, "{default}");
    let bad = String::from_utf8(udp_round_trip(&c, running.inet(), b"\xff\xfe")).unwrap();
    assert!(bad.starts_with("error:"), "{bad}");
    running.stop().unwrap();
}
