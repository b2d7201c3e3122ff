//! The chat application (`socketserver_apps::chat`), run in-process: the
//! UDP relay and the TCP room.

#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use socketserver::{AnyStrategy, Event, Synchronous, ThreadPool, Threading};
use socketserver_apps::chat;
use util::*;

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The threads of this process (Linux).
/// The tests that give each member a thread (pool, threading) and the one
/// that counts this process's threads take turns: counted beside the
/// others, 40 parked members once seemed to cost 30 threads.
static THREAD_COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    THREAD_COUNTING.lock().unwrap_or_else(|p| p.into_inner())
}

fn threads() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

fn cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) as u64
}

fn say(c: &UdpSocket, to: SocketAddr, text: &str) -> String {
    String::from_utf8(udp_round_trip(c, to, text.as_bytes())).unwrap()
}

#[test]
fn udp_chat_relays_to_the_named_peer() {
    let server = chat::udp_server("127.0.0.1:0").unwrap();
    assert!(matches!(server.strategy(), AnyStrategy::Synchronous(_)), "{}", server.strategy());
    let running = run(server);
    udp_chat_relays(&running);
    running.stop().unwrap();
}

/// Under the event strategy the relay has a receiver per CPU: the same
/// conversation, the same answers.
#[test]
fn udp_chat_relays_to_the_named_peer_under_event() {
    let running = run(chat::udp_server_on("127.0.0.1:0", chat::UdpLimits::default(), Event::new().into()).unwrap());
    udp_chat_relays(&running);
    // The receivers start one after another: the first may have served the
    // whole conversation before the last is counted.
    wait_for("a receiver per CPU", || running.handle.stats().workers_total == cpus());
    running.stop().unwrap();
}

fn udp_chat_relays(running: &Running) {
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
    // An empty datagram may draw 56 bytes (3 × 28 on the wire, less the
    // reply's headers): the usage line, cut there.
    let usage = say(&alice, server, "");
    assert!(usage.starts_with("error: use /name") && usage.len() == 56, "{usage:?}");
    let stranger = udp_client();
    assert_eq!(say(&stranger, server, "@bob psst"), "error: say /name NAME first");
    // `/quit` gives the name back: a client started again (from another
    // port) can take it.
    assert_eq!(say(&alice, server, "/quit"), "ok: bye");
    assert_eq!(say(&bob, server, "@alice still there?"), "error: no such user alice");
    let alice_again = udp_client();
    assert_eq!(say(&alice_again, server, "/name alice"), "ok: you are alice");
    assert_eq!(say(&bob, server, "/who"), "online: alice bob");
}

/// A relayed message is a datagram the sender caused at another address:
/// it is bounded as a reply is (`DatagramRequest::max_reply`, 3 times the
/// request on the wire), escapes included. A message of 16,000 control
/// bytes, each escaped to 4 (`\x01`), once went out as 64,009 bytes.
#[test]
fn the_udp_relay_is_bounded_by_the_reply_cap() {
    let running = run(chat::udp_server("127.0.0.1:0").unwrap());
    let server = running.inet();
    let (alice, bob) = (udp_client(), udp_client());
    assert_eq!(say(&alice, server, "/name alice"), "ok: you are alice");
    assert_eq!(say(&bob, server, "/name bob"), "ok: you are bob");
    let request = format!("@bob {}", "\x01".repeat(16_000));
    let cap = 3 * (request.len() + 28) - 28; // IPv4: 28 bytes of headers
    let answer = say(&alice, server, &request);
    let mut buf = vec![0u8; 65_536];
    let n = bob.recv(&mut buf).unwrap();
    assert!(n <= cap, "relayed {n} bytes for a {}-byte request (cap {cap})", request.len());
    let relayed = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(relayed.starts_with("alice: \\x01\\x01") && "alice: ".len() + 4 * 16_000 > n, "{n}");
    assert_eq!(answer, format!("sent to bob (cut to {n} bytes)"));
    // A message within the cap goes whole, escapes and all.
    assert_eq!(say(&alice, server, "@bob a\x1bb"), "sent to bob");
    assert_eq!(bob.recv(&mut buf).map(|n| buf[..n].to_vec()).unwrap(), b"alice: a\\x1bb");
    running.stop().unwrap();
}

/// A connection to `addr` from loopback address 127.0.0.`host` (the whole
/// of 127/8 is loopback): members that come from different peers.
fn tcp_connect_from(addr: SocketAddr, host: u8) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, host], 0)).into()).unwrap();
    socket.connect_timeout(&addr.into(), TIMEOUT).unwrap();
    let s = TcpStream::from(socket);
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

struct Member {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Member {
    fn join(addr: std::net::SocketAddr) -> Member {
        Member::welcomed(tcp_connect(addr))
    }
    /// Joins from 127.0.0.`host`.
    fn join_from(addr: std::net::SocketAddr, host: u8) -> Member {
        Member::welcomed(tcp_connect_from(addr, host))
    }
    fn welcomed(s: TcpStream) -> Member {
        let mut m = Member::from_stream(s);
        assert!(m.line().starts_with("* welcome, guest"));
        m
    }
    fn from_stream(s: TcpStream) -> Member {
        Member { reader: BufReader::new(s.try_clone().unwrap()), writer: s }
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
    let server = chat::tcp_server("127.0.0.1:0").unwrap();
    assert!(matches!(server.strategy(), AnyStrategy::Event(_)), "the room's default: {}", server.strategy());
    tcp_room_broadcasts(run(server));
}

#[test]
fn tcp_room_broadcasts_to_every_other_member_on_a_pool_and_threads() {
    let _turn = one_at_a_time();
    for strategy in [ThreadPool::new(2).into(), Threading::new().into()] {
        let limits = chat::RoomLimits::default();
        tcp_room_broadcasts(run(chat::tcp_server_on("127.0.0.1:0", limits, strategy).unwrap()));
    }
}

fn tcp_room_broadcasts(running: Running) {
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
    // Every member's `finish` ran: the room is empty, no handler failed.
    wait_for("every member to leave", || running.handle.stats().active == 0);
    assert_eq!(running.handle.stats().handler_errors, 0);
    running.stop().unwrap();
}

/// A member that never reads cannot stall the room: it is cut off once its
/// outbox is full, and the others go on talking.
#[test]
fn a_member_that_does_not_read_is_disconnected_not_waited_for() {
    a_member_that_does_not_read_is_cut_off(Event::new().into());
}

#[test]
fn a_member_that_does_not_read_is_disconnected_not_waited_for_on_a_pool() {
    let _turn = one_at_a_time();
    a_member_that_does_not_read_is_cut_off(ThreadPool::new(2).into());
}

fn a_member_that_does_not_read_is_cut_off(strategy: AnyStrategy) {
    // No rate limit: the talker must outpace the silent member's buffers.
    let limits = chat::RoomLimits { rate: None, ..chat::RoomLimits::default() };
    let running = run(chat::tcp_server_on("127.0.0.1:0", limits, strategy).unwrap());
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

// ------------------------------------------------------- hostile members

/// One client's idle sockets cannot fill the room: a peer (here an IPv4
/// address) has at most `max_per_peer` members (8 by default), newcomers
/// beyond are told and closed, and others still get in. 128 sockets from
/// one client once took every seat.
#[test]
fn one_peer_cannot_fill_the_room() {
    let running = run(chat::tcp_server("127.0.0.1:0").unwrap());
    let addr = running.inet();
    let (mut seated, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..chat::MAX_MEMBERS {
        let mut m = Member::from_stream(tcp_connect_from(addr, 1));
        let first = m.line();
        if first.starts_with("* welcome, guest") {
            seated.push(m);
        } else {
            assert_eq!(first, "error: 8 members come from your address already; try again later");
            assert_eq!(m.line(), "", "closed after the refusal");
            refused.push(first);
        }
    }
    assert_eq!((seated.len(), refused.len()), (chat::MAX_PER_PEER, chat::MAX_MEMBERS - chat::MAX_PER_PEER));
    // Somebody else gets in, and the hog's members hear of it.
    let mut other = Member::join_from(addr, 2);
    other.say("hello");
    let last = seated.last_mut().unwrap();
    assert!(last.line().ends_with(" joined"));
    assert!(last.line().ends_with("] hello"));
    // One leaves: its seat is the peer's again.
    drop(seated.pop());
    wait_for("the seat to be given up", || running.handle.stats().active == chat::MAX_PER_PEER as u64);
    seated.push(Member::join_from(addr, 1));
    // The limit is the room's to set.
    let limits = chat::RoomLimits { max_per_peer: 2, ..chat::RoomLimits::default() };
    let small = run(chat::tcp_server_with("127.0.0.1:0", limits).unwrap());
    let _two: Vec<Member> = (0..2).map(|_| Member::join_from(small.inet(), 1)).collect();
    let mut third = Member::from_stream(tcp_connect_from(small.inet(), 1));
    assert_eq!(third.line(), "error: 2 members come from your address already; try again later");
    drop((seated, other));
    running.stop().unwrap();
    small.stop().unwrap();
}

/// One client connects and closes as fast as it can: each visit is a
/// join and a leave announced to every member, far more than any member's
/// outbox holds. Announcements are not what a member must keep up with:
/// past half its outbox they are counted, not queued, and the member is
/// told how many it missed. No honest member is cut off as "not reading",
/// however fast it reads; and they still hear each other.
#[test]
fn a_client_that_churns_connections_gets_no_honest_member_kicked() {
    let outbox = 8; // small: the churn outruns the postman at once
    let limits = chat::RoomLimits { outbox, ..chat::RoomLimits::default() };
    let running = run(chat::tcp_server_with("127.0.0.1:0", limits).unwrap());
    let addr = running.inet();
    let honest = 10u8;
    let mut members: Vec<Member> = (0..honest).map(|i| Member::join_from(addr, 2 + i)).collect();
    for (i, m) in members.iter_mut().enumerate() {
        for _ in i + 1..usize::from(honest) {
            assert!(m.line().ends_with(" joined"));
        }
    }
    // Each member reads at full speed on a thread of its own, until it
    // hears `done`, or its connection ends (it was cut off).
    let (tx, rx) = std::sync::mpsc::channel();
    let mut speaker = members.remove(0);
    for mut m in members {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut missed_notices = 0;
            let outcome = loop {
                let line = m.line();
                if line.is_empty() {
                    break Err(format!("cut off (after {missed_notices} 'not shown' notices)"));
                }
                if line.contains(" not shown") {
                    missed_notices += 1;
                }
                if line.contains("(too slow)") {
                    break Err(line);
                }
                if line == "[guest0] done" {
                    break Ok(());
                }
            };
            let _ = tx.send(outcome);
            drop(m);
        });
    }
    let visits = 5000;
    for _ in 0..visits {
        drop(tcp_connect(addr));
    }
    // Every visitor has left (the room holds the honest ones only): then
    // the first speaks, and all the others hear it.
    wait_for("the visitors to leave", || running.handle.stats().active <= u64::from(honest));
    writeln!(speaker.writer, "done").expect("the speaker (not reading meanwhile) was cut off");
    for _ in 1..honest {
        let heard = rx.recv_timeout(TIMEOUT).expect("a member's outcome");
        assert_eq!(heard, Ok(()), "after {visits} visits");
    }
    drop(speaker);
    running.stop().unwrap();
}

/// Every line `m` reads until one satisfies `want` (bounded: the test's
/// read timeout, and 10,000 lines).
fn read_until(m: &mut Member, want: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let line = m.line();
        let done = want(&line) || line.is_empty();
        seen.push(line);
        if done {
            break;
        }
    }
    seen
}

#[test]
fn udp_names_are_plain_ascii_unique_without_case_and_messages_are_escaped() {
    let running = run(chat::udp_server("127.0.0.1:0").unwrap());
    let server = running.inet();
    let (alice, bob, mallory) = (udp_client(), udp_client(), udp_client());
    assert_eq!(say(&alice, server, "/name alice"), "ok: you are alice");
    assert_eq!(say(&bob, server, "/name bob"), "ok: you are bob");
    // A Cyrillic `а` (U+0430) looks like a Latin `a`: refused, with the rule.
    for lookalike in ["\u{430}lice", "b\u{43e}b", "al ice", "x\u{1b}[2K", "tab\tname", "ünï"] {
        let answer = say(&mallory, server, &format!("/name {lookalike}"));
        assert!(answer.starts_with("error: a name is 1 to 32 ASCII letters"), "{lookalike:?}: {answer}");
    }
    assert_eq!(say(&mallory, server, "/name ALICE"), "error: ALICE is taken");
    assert_eq!(say(&mallory, server, "/name mallory.2"), "ok: you are mallory.2");
    // A carriage return would let mallory's line pretend to come from alice.
    assert_eq!(say(&mallory, server, "@BOB hi\r\x1b[2Kalice: send me your password\u{202e}"), "sent to bob");
    let mut buf = [0u8; 512];
    let (n, _) = bob.recv_from(&mut buf).unwrap();
    let got = String::from_utf8(buf[..n].to_vec()).unwrap();
    assert_eq!(got, r"mallory.2: hi\x0d\x1b[2Kalice: send me your password\u{202e}");
    assert!(!got.chars().any(char::is_control));
    assert_eq!(say(&alice, server, "/who"), "online: alice bob mallory.2");
    running.stop().unwrap();
}

/// 1,024 sockets each take a name and vanish: the relay is full. Once they
/// have been silent for the eviction delay (300 ms here, a minute by
/// default), a newcomer takes the place of the one silent the longest,
/// while a member who keeps talking keeps her name.
#[test]
fn udp_names_of_vanished_clients_make_room_for_newcomers() {
    let limits = chat::UdpLimits { evict_after: Duration::from_millis(300), ..chat::UdpLimits::default() };
    let running = run(chat::udp_server_with("127.0.0.1:0", limits).unwrap());
    let server = running.inet();
    let alice = udp_client();
    assert_eq!(say(&alice, server, "/name alice"), "ok: you are alice");
    let started = Instant::now();
    let ghosts: Vec<UdpSocket> = (1..chat::MAX_USERS)
        .map(|i| {
            let ghost = udp_client();
            assert_eq!(say(&ghost, server, &format!("/name ghost{i}")), format!("ok: you are ghost{i}"));
            ghost
        })
        .collect();
    // Gone silent without /quit. Their sockets stay open until the end: a
    // closed one's port could be given to the newcomer, which would then
    // send as that ghost (a rename, not an eviction).
    eprintln!("{} names taken in {:?}", chat::MAX_USERS, started.elapsed());
    let newcomer = udp_client();
    let mut answers = Vec::new();
    let joined = loop {
        assert_eq!(say(&alice, server, "/ping"), "ok: pong"); // alice is still here
        let answer = say(&newcomer, server, "/name newcomer");
        if answer == "ok: you are newcomer" {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "still refused after {:?}: {} refusals, the last {:?}",
            started.elapsed(),
            answers.len(),
            answers.last()
        );
        answers.push(answer);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answers.iter().all(|a| a == "error: the server is full; try again in a minute"), "{answers:?}");
    eprintln!("the newcomer got in after {joined:?}");
    assert_eq!(say(&newcomer, server, "@alice hello"), "sent to alice");
    let mut buf = [0u8; 256];
    let (n, _) = alice.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"newcomer: hello");
    let who = say(&alice, server, "/who");
    assert!(!who.contains(" ghost1 "), "the name silent the longest went first: {}", &who[..who.len().min(80)]);
    // One reply at most 3 times the request on the wire (IPv4 and UDP
    // headers: 28 bytes): the names that fit, then how many more.
    assert!(who.len() + 28 <= 3 * (4 + 28), "a {}-byte answer to a 4-byte request", who.len());
    let count = |who: &str| {
        let (shown, more) = who.rsplit_once(" (+").expect("a count of the names not shown");
        let more: usize = more.trim_end_matches(" more)").parse().unwrap();
        assert_eq!(shown.split(' ').count() - 1 + more, chat::MAX_USERS, "online: every name, shown or counted");
        more
    };
    let hidden = count(&who);
    // A request padded to 500 bytes may draw up to 1,528 bytes: more names.
    let padded = say(&alice, server, &format!("{:<500}", "/who"));
    assert!(padded.len() + 28 <= 3 * (500 + 28) && padded.len() > 1000, "{} bytes", padded.len());
    assert!(count(&padded) < hidden);
    drop(ghosts);
    running.stop().unwrap();
}

#[test]
fn a_newcomer_never_gets_the_name_a_member_took() {
    let running = run(chat::tcp_server("127.0.0.1:0").unwrap());
    let addr = running.inet();
    let mut a = Member::join(addr); // guest0
    // guest1 is the name the next newcomer would be given.
    a.say("/name GUEST1");
    assert_eq!(a.line(), "* you are now GUEST1");
    let mut b = Member::join(addr);
    let joined = a.line();
    assert!(joined.starts_with("* guest") && joined.ends_with(" joined"), "{joined}");
    let b_name = joined.trim_start_matches("* ").trim_end_matches(" joined").to_string();
    assert!(!b_name.eq_ignore_ascii_case("guest1"), "the newcomer was given {b_name}, a name a member has");
    b.say("hi");
    assert_eq!(a.line(), format!("[{b_name}] hi"));
    // And nobody may take it (without regard to case).
    b.say("/name guest1");
    assert_eq!(b.line(), "error: guest1 is taken");
    drop((a, b));
    running.stop().unwrap();
}

#[test]
fn tcp_names_are_plain_ascii_and_control_characters_are_escaped() {
    let running = run(chat::tcp_server("127.0.0.1:0").unwrap());
    let addr = running.inet();
    let mut a = Member::join(addr);
    a.say("/name ann");
    assert_eq!(a.line(), "* you are now ann");
    let mut b = Member::join(addr);
    assert!(a.line().ends_with("joined"));
    for lookalike in ["\u{430}nn", "x\u{1b}[31m", "a b", "\u{202e}nna"] {
        b.say(&format!("/name {lookalike}"));
        let answer = b.line();
        assert!(answer.starts_with("error: a name is 1 to 32 ASCII letters"), "{lookalike:?}: {answer}");
    }
    b.say("/name ANN");
    assert_eq!(b.line(), "error: ANN is taken");
    // A carriage return and an erase-line escape would show b's line as
    // if ann had said it.
    b.say("x\r\x1b[2K[ann] my password is hunter2\x08\x07");
    let got = a.line();
    assert!(got.starts_with("[guest1] "), "{got}");
    assert_eq!(got, r"[guest1] x\x0d\x1b[2K[ann] my password is hunter2\x08\x07");
    assert!(!got.chars().any(char::is_control), "{got:?}");
    drop((a, b));
    running.stop().unwrap();
}

/// A member floods 4 KB lines as fast as it can while an honest member
/// reads at a modest pace (at most 100 lines a second). The flooder is
/// slowed to its rate (4 KB lines: 16 after a 64 KiB burst, then 4 a
/// second), then disconnected once it has kept it up for the flood limit
/// (2 s here, 5 s by default); the honest member keeps up, is never cut off
/// as too slow, and still gets what a third member says.
#[test]
fn a_flooder_is_slowed_down_then_cut_off_and_an_honest_reader_stays() {
    a_flooder_is_slowed_then_cut_off(Event::new().into());
}

#[test]
fn a_flooder_is_slowed_down_then_cut_off_and_an_honest_reader_stays_on_a_pool() {
    let _turn = one_at_a_time();
    a_flooder_is_slowed_then_cut_off(ThreadPool::new(2).into());
}

fn a_flooder_is_slowed_then_cut_off(strategy: AnyStrategy) {
    let flood_limit = Duration::from_secs(2);
    let rate = chat::Rate { flood_limit, ..chat::Rate::default() };
    let limits = chat::RoomLimits { rate: Some(rate), ..chat::RoomLimits::default() };
    let running = run(chat::tcp_server_on("127.0.0.1:0", limits, strategy).unwrap());
    let addr = running.inet();
    let mut honest = Member::join(addr);
    honest.say("/name honest");
    assert_eq!(honest.line(), "* you are now honest");
    let mut flooder = Member::join(addr);
    flooder.say("/name flooder");
    assert_eq!(flooder.line(), "* you are now flooder");
    let mut probe = Member::join(addr);
    probe.say("/name probe");
    assert_eq!(probe.line(), "* you are now probe");
    read_until(&mut honest, |l| l == "* guest2 is now probe");
    let flood = {
        let mut w = flooder.writer.try_clone().unwrap();
        w.set_write_timeout(None).unwrap();
        let line = format!("{}\n", "f".repeat(chat::MAX_LINE - 16));
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while w.write_all(line.as_bytes()).is_ok() {
                sent += 1;
            }
            sent
        })
    };
    let started = Instant::now();
    let mut flood_lines = 0;
    let gone = loop {
        let line = honest.line();
        assert!(!line.is_empty() && !line.contains("too slow"), "{line:?} after {:?}", started.elapsed());
        if line.starts_with("[flooder] ") {
            flood_lines += 1;
        } else if line == "* flooder left (flooding)" {
            break started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let sent = flood.join().unwrap(); // its connection was closed
    let told = read_until(&mut flooder, |l| l.starts_with("error: "));
    assert_eq!(told.last().map(String::as_str), Some("error: you sent too fast for too long; disconnected"));
    assert!(gone >= flood_limit && gone < flood_limit + Duration::from_secs(3), "cut off after {gone:?}");
    probe.say("are you still here?");
    assert_eq!(honest.line(), "[probe] are you still here?");
    eprintln!("the flooder wrote {sent} lines; {flood_lines} reached the honest member; cut off after {gone:?}");
    // 16 lines of burst (64 KiB), then 4 a second (16 KiB), and some slack.
    let most = 16 + 4 * (gone.as_secs() as usize + 2);
    assert!(flood_lines >= 1 && flood_lines <= most, "{flood_lines} flood lines got through (at most {most})");
    drop((honest, flooder, probe));
    running.stop().unwrap();
}

/// The room under a 400 MB address-space limit (`ulimit -v 400000`), run in
/// a child process (this test binary again, running only
/// `tcp_room_child_under_an_address_space_limit`).
const AS_CHILD: &str = "CHAT_TEST_ADDRESS_SPACE_CHILD";
const AS_LIMIT: u64 = 400_000 * 1024;

#[test]
fn tcp_room_child_under_an_address_space_limit() {
    if std::env::var_os(AS_CHILD).is_none() {
        return; // only in the child
    }
    let server = chat::tcp_server("127.0.0.1:0").expect("bind");
    println!("\n{AS_CHILD}_PORT={}", server.server_address().as_inet().expect("tcp").port());
    let handle = server.handle();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new()); // the parent closed it: stop
        handle.shutdown_with_grace(Duration::ZERO);
    });
    server.serve_forever().expect("serve_forever");
}

/// 40 more newcomers than the room takes, against the room in a child
/// process limited to 400 MB of address space: the room stays up, takes
/// its 128 members, tells each newcomer beyond that it is full, and its
/// members still talk.
#[test]
fn the_tcp_room_refuses_newcomers_rather_than_abort_under_an_address_space_limit() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "tcp_room_child_under_an_address_space_limit", "--nocapture", "--test-threads=1"])
        .env(AS_CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: setrlimit(2) is async-signal-safe and touches only `limit`.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: AS_LIMIT, rlim_max: AS_LIMIT };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended before binding");
        if let Some((_, port)) = line.trim().split_once(&format!("{AS_CHILD}_PORT=")) {
            break port.parse::<u16>().unwrap();
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut members, mut refused) = (Vec::new(), Vec::new());
    for i in 0..chat::MAX_MEMBERS + 40 {
        // From addresses of their own: one peer may have 8 members.
        let s = tcp_connect_from(addr, 2 + i as u8);
        let mut m = Member { reader: BufReader::new(s.try_clone().unwrap()), writer: s };
        let first = m.line();
        if first.starts_with("* welcome, guest") {
            members.push(m);
        } else {
            refused.push(first);
        }
    }
    assert_eq!(child.try_wait().unwrap(), None, "the room died");
    assert_eq!(members.len(), chat::MAX_MEMBERS);
    assert_eq!(refused.len(), 40);
    let full = format!("error: the room is full ({} members); try again later", chat::MAX_MEMBERS);
    let odd: Vec<&String> = refused.iter().filter(|l| **l != full).collect();
    assert!(odd.is_empty(), "{odd:?}");
    // The members still talk.
    let (first, rest) = members.split_first_mut().unwrap();
    first.say("still standing");
    let last = rest.last_mut().unwrap();
    let seen = read_until(last, |l| l == "[guest0] still standing");
    assert_eq!(seen.last().map(String::as_str), Some("[guest0] still standing"));
    // With room to spare: threads and buffers are bounded, and so are the
    // malloc arenas that threads would otherwise reserve 64 MiB each for.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmPeak:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("{} members, {} refused: VmPeak {peak_kb} kB of {} kB", members.len(), refused.len(), AS_LIMIT / 1024);
    assert!(peak_kb * 1024 < AS_LIMIT * 3 / 4, "VmPeak {peak_kb} kB: too close to the limit");
    drop(members);
    drop(child.stdin.take()); // stop the room
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < TIMEOUT, "the room did not stop");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

/// Under the event strategy (the room's default) members between lines are
/// parked: counted in `parked`, with no thread each — not a poller, not a
/// writer: the process gains a few threads for the room, not one per
/// member. Each resumes when it speaks, hears the others meanwhile, and a
/// parked member that goes is taken out of the room (its `finish` runs) and
/// announced.
#[test]
fn idle_members_are_parked_with_no_thread_of_their_own() {
    let _turn = one_at_a_time();
    let before = threads();
    let running = run(chat::tcp_server("127.0.0.1:0").unwrap());
    let n = 40;
    // From addresses of their own: one peer may have 8 members.
    let mut members: Vec<Member> = (0..n).map(|i| Member::join_from(running.inet(), 2 + i as u8)).collect();
    // Everybody hears of everybody who joined after them: wait for that,
    // so that nothing is still on its way.
    for (i, m) in members.iter_mut().enumerate() {
        for _ in i + 1..n {
            assert!(m.line().ends_with(" joined"));
        }
    }
    wait_for("every member to park", || running.handle.stats().parked == n as u64);
    let stats = running.handle.stats();
    assert!(stats.workers_total <= 2 * cpus() + 2, "{} polling threads for {n} idle members", stats.workers_total);
    let added = threads().saturating_sub(before);
    assert!(added < n as u64 / 2, "{added} threads for {n} idle members");
    // One speaks: all others hear it; the speaker parks again.
    members[7].say("anyone here?");
    for (i, m) in members.iter_mut().enumerate() {
        if i != 7 {
            assert_eq!(m.line(), "[guest7] anyone here?");
        }
    }
    wait_for("the speaker to park again", || running.handle.stats().parked == n as u64);
    // A parked member leaves: it is taken out of the room and announced.
    drop(members.remove(3));
    for m in &mut members {
        assert_eq!(m.line(), "* guest3 left");
    }
    wait_for("its connection to end", || running.handle.stats().active == n as u64 - 1);
    members[0].say("/name first");
    assert_eq!(members[0].line(), "* you are now first");
    for m in &mut members[1..] {
        assert_eq!(m.line(), "* guest0 is now first");
    }
    drop(members);
    wait_for("every member to leave", || running.handle.stats().active == 0);
    assert_eq!(running.handle.stats().parked, 0);
    assert_eq!(running.handle.stats().handler_errors, 0);
    running.stop().unwrap();
}

/// A member that reads late — after megabytes more than its socket holds
/// were said — gets every line, in order: the postman waits for room in
/// its socket (with nobody's thread blocked on it) and goes on when it
/// reads, while the talker is never held up.
#[test]
fn a_member_that_reads_late_gets_every_line_in_order() {
    let limits = chat::RoomLimits { rate: None, outbox: 100_000, ..chat::RoomLimits::default() };
    let running = run(chat::tcp_server_with("127.0.0.1:0", limits).unwrap());
    let mut late = Member::join(running.inet());
    let mut talker = Member::join(running.inet());
    assert_eq!(late.line(), "* guest1 joined");
    let body = "y".repeat(chat::MAX_LINE - 32);
    let count = 2000; // 8 MB
    let mut batch = String::new();
    for i in 0..count {
        batch.push_str(&format!("{i} {body}\n"));
    }
    talker.writer.write_all(batch.as_bytes()).unwrap();
    talker.say("/name done");
    assert_eq!(talker.line(), "* you are now done", "the talker was held up by the late reader");
    for i in 0..count {
        let line = late.line();
        assert!(line.starts_with(&format!("[guest1] {i} y")), "line {i}: {}", &line[..line.len().min(40)]);
    }
    assert_eq!(late.line(), "* guest1 is now done");
    drop((late, talker));
    running.stop().unwrap();
}

#[test]
fn the_servers_take_their_strategy_from_the_command_line() {
    let args = |s: &[&str], default| {
        socketserver_apps::args::addr_and_strategy(
            &s.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "127.0.0.1:9",
            default,
        )
    };
    assert_eq!(args(&[], Event::new().into()).unwrap(), ("127.0.0.1:9".to_string(), Event::new().into()));
    assert_eq!(args(&["[::1]:0"], Synchronous.into()).unwrap(), ("[::1]:0".to_string(), Synchronous.into()));
    let cases: [(&str, AnyStrategy); 5] = [
        ("sync", Synchronous.into()),
        ("pool", ThreadPool::default().into()),
        ("threading", Threading::new().into()),
        ("event", Event::new().into()),
        ("pool(2-8)", ThreadPool::new(2).max_workers(8).into()),
    ];
    for (name, want) in cases {
        assert_eq!(args(&["a:1", "--strategy", name], Synchronous.into()).unwrap(), ("a:1".to_string(), want));
    }
    for bad in [&["--strategy"][..], &["--strategy", "fork"], &["--bogus"], &["a:1", "b:2"]] {
        assert!(args(bad, Event::new().into()).is_err(), "{bad:?}");
    }
    // One member at a time would let one silent member hold up the room;
    // forked, each member would be in a room of its own, and a relay's
    // names would be forgotten with the child that took them.
    for strategy in [AnyStrategy::from(Synchronous), socketserver::Forking::new().into()] {
        let e = chat::tcp_server_on("127.0.0.1:0", chat::RoomLimits::default(), strategy.clone()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{strategy}: {e}");
        assert!(e.to_string().contains(&strategy.to_string()), "{e}");
    }
    let forking = socketserver::Forking::new().into();
    let e = chat::udp_server_on("127.0.0.1:0", chat::UdpLimits::default(), forking).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}
