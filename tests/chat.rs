//! The chat example, run in-process: the UDP relay and the TCP room.

mod util;

#[path = "../examples/chat.rs"]
#[allow(dead_code)]
mod chat;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use util::*;

fn say(c: &std::net::UdpSocket, to: std::net::SocketAddr, text: &str) -> String {
    String::from_utf8(udp_round_trip(c, to, text.as_bytes())).unwrap()
}

#[test]
fn udp_chat_relays_to_the_named_peer() {
    let running = run(chat::udp_server("127.0.0.1:0").unwrap());
    let server = running.inet();
    let alice = udp_client();
    let bob = udp_client();
    assert_eq!(say(&alice, server, "/name alice"), "ok: you are alice");
    assert_eq!(say(&bob, server, "/name bob"), "ok: you are bob");
    assert_eq!(say(&bob, server, "/name alice"), "error: alice is taken");
    assert_eq!(say(&alice, server, "/who"), "online: alice bob");
    assert_eq!(say(&alice, server, "@bob hello there"), "sent to bob");
    let mut buf = [0u8; 256];
    let (n, from) = bob.recv_from(&mut buf).unwrap();
    assert_eq!(from, server);
    assert_eq!(&buf[..n], b"alice: hello there");
    assert_eq!(say(&alice, server, "@carol hi"), "error: no such user carol");
    assert!(say(&alice, server, "/name not a name!").starts_with("error:"));
    assert!(String::from_utf8(udp_round_trip(&alice, server, b"\xff")).unwrap().starts_with("error:"));
    let stranger = udp_client();
    assert_eq!(say(&stranger, server, "@bob psst"), "error: say /name NAME first");
    // `/quit` gives the name back: a client started again (from another
    // port) can take it.
    assert_eq!(say(&alice, server, "/quit"), "ok: bye");
    assert_eq!(say(&bob, server, "@alice still there?"), "error: no such user alice");
    let alice_again = udp_client();
    assert_eq!(say(&alice_again, server, "/name alice"), "ok: you are alice");
    assert_eq!(say(&bob, server, "/who"), "online: alice bob");
    running.stop().unwrap();
}

struct Member {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Member {
    fn join(addr: std::net::SocketAddr) -> Member {
        let s = tcp_connect(addr);
        let mut m = Member { reader: BufReader::new(s.try_clone().unwrap()), writer: s };
        assert!(m.line().starts_with("* welcome, guest"));
        m
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        l.trim_end().to_string()
    }
    fn say(&mut self, text: &str) {
        writeln!(self.writer, "{text}").unwrap();
    }
}

#[test]
fn tcp_room_broadcasts_to_every_other_member() {
    let running = run(chat::tcp_server("127.0.0.1:0").unwrap());
    let addr = running.inet();
    let mut a = Member::join(addr);
    a.say("/name ann");
    assert_eq!(a.line(), "* you are now ann");
    let mut b = Member::join(addr);
    assert!(a.line().ends_with("joined"));
    b.say("/name ben");
    assert_eq!(b.line(), "* you are now ben");
    assert_eq!(a.line(), format!("* {} is now ben", "guest1"));
    let mut c = Member::join(addr);
    assert!(a.line().ends_with("joined"));
    assert!(b.line().ends_with("joined"));
    a.say("hello room");
    assert_eq!(b.line(), "[ann] hello room");
    assert_eq!(c.line(), "[ann] hello room");
    c.say("hi ann");
    assert_eq!(a.line(), "[guest2] hi ann");
    assert_eq!(b.line(), "[guest2] hi ann");
    drop(c);
    assert_eq!(a.line(), "* guest2 left");
    assert_eq!(b.line(), "* guest2 left");
    // Nobody may take a name somebody else has.
    b.say("/name ann");
    assert_eq!(b.line(), "error: ann is taken");
    b.say("still ben");
    assert_eq!(a.line(), "[ben] still ben");
    drop((a, b));
    running.stop().unwrap();
}

/// A member that never reads cannot stall the room: it is cut off once its
/// outbox is full, and the others go on talking.
#[test]
fn a_member_that_does_not_read_is_disconnected_not_waited_for() {
    let running = run(chat::tcp_server("127.0.0.1:0").unwrap());
    let addr = running.inet();
    let mut talker = Member::join(addr);
    // Processed before the talker's chat lines: one connection, one order.
    talker.say("/name talker");
    assert_eq!(talker.line(), "* you are now talker");
    let mut silent = tcp_connect(addr);
    let mut listener = Member::join(addr);
    let big = "x".repeat(chat::MAX_LINE - 16);
    let expected = format!("[talker] {big}");
    // Far more than the silent member's socket buffers and outbox hold.
    let mut notices = Vec::new();
    for _ in 0..(chat::OUTBOX * 8) {
        talker.say(&big);
        let mut got = listener.line();
        while got.starts_with("* ") {
            notices.push(got);
            got = listener.line(); // join, rename and leave notices
        }
        assert!(got == expected, "unexpected line: {}", &got[..got.len().min(60)]);
    }
    // The others are told it is gone (right after the line that found it
    // too slow, so perhaps after the last one).
    let gone = |n: &String| n.starts_with("* guest") && n.ends_with(" left (too slow)");
    if !notices.iter().any(gone) {
        notices.push(listener.line());
    }
    assert!(notices.iter().any(gone), "{notices:?}");
    // The silent member was cut off: what it has not read ends in EOF.
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut silent, &mut rest).expect("end of stream, not a timeout");
    assert!(rest.len() < chat::OUTBOX * 8 * big.len(), "the silent member got everything");
    drop((talker, listener));
    running.stop().unwrap();
}
