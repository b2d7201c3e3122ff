//! The tutorials' chat programs on the library: a UDP relay where each
//! client has a name and messages go to a named peer (the "QQ chat"), and a
//! TCP chat room that sends each line to every other member.
//!
//! ```text
//! cargo run -p socketserver-apps --example chat -- udp-server [ADDR]          # udp 127.0.0.1:9003
//! cargo run -p socketserver-apps --example chat -- udp-client ADDR NAME       # then: @bob hello
//! cargo run -p socketserver-apps --example chat -- tcp-server [ADDR]          # tcp 127.0.0.1:9004
//! cargo run -p socketserver-apps --example chat -- tcp-client ADDR            # every line goes to the room
//! ```
//!
//! `--strategy` after a server's address chooses how it is served, as
//! `AnyStrategy` reads it: the UDP relay `sync` (the default: one datagram
//! at a time), `pool` or `event` (a receiver per CPU) or `threading`; the
//! TCP room `event` (the default), `pool` or `threading`. Not `forking`:
//! names and members live in the server's memory.
//!
//! Names are 1 to 32 ASCII letters, digits, `_`, `-` or `.` (so that no
//! name can look like another in a different alphabet), unique without
//! regard to case. Control characters (CR, ESC, ...) and invisible ones in
//! messages are shown escaped (`\x1b`), so that nobody can rewrite a line
//! on another member's terminal or make it seem to come from somebody else.
//!
//! **The UDP relay trusts source addresses**, as any unauthenticated UDP
//! chat does: a name belongs to the address that took it, and anyone who
//! can send datagrams with that source address (on the same network, or
//! wherever spoofing is not filtered) can speak as that name, take it over
//! with `/quit` then `/name`, or have messages relayed to an address of
//! their choice. What the relay bounds is what a forged datagram can cost
//! a third party: every answer and every relayed message is at most 3
//! times the request's size on the wire (`DatagramRequest::max_reply`).
//! Use the TCP room (a handshake proves the address) or add authentication
//! where names must mean something.
//!
//! UDP protocol, one text datagram each way:
//! * `/name alice` — be known as `alice` (answer `ok: you are alice`);
//! * `@bob hello` — the server sends `alice: hello` to bob (cut, if its
//!   escapes make it longer, to the bound of a reply to the request);
//! * `/who` — the names online: as many as fit in one reply, then how many
//!   more. A reply may take at most 3 times its request's bytes on the wire
//!   (`DatagramRequest::max_reply`): a tiny request never draws a large
//!   answer at a forged address; `/who` followed by spaces draws more.
//! * `/ping` — still here (answer `ok: pong`); the client sends it every
//!   30 s;
//! * `/quit` — forget my name (answer `ok: bye`); the client sends it when
//!   its input ends or on Ctrl-C. Anything else gets `error: ...`.
//!
//! The UDP relay remembers at most 1,024 names. A name nobody has used for
//! 10 minutes is forgotten; when the relay is full, a newcomer takes the
//! place of the name silent the longest, if that one has been silent for a
//! minute (so sockets that took a name and vanished cannot keep everyone
//! out for good).
//!
//! TCP room: each line a member sends reaches every other member as
//! `[name] line`; `/name NAME` renames (to a name nobody else has); joins,
//! leaves and renames are announced — while a member's outbox is less than
//! half full: past that (a client connecting and closing thousands of
//! times a second) they are counted, and the member later told how many
//! it missed, never cut off for them. At most 128 members, and 8 from one
//! peer (an IPv4 address, an IPv6 /64): a newcomer beyond gets `error: the
//! room is full ...` or `error: 8 members come from your address already
//! ...` and is closed. Each member may send 5
//! lines a second (bursts of 20) and 16 KiB a second (bursts of 64 KiB);
//! a member that sends faster is slowed down: its lines wait, unread, and
//! nobody else pays for them; one that keeps it up for 5 s is disconnected
//! (announced as `left (flooding)`). A member that does not read its messages
//! fast enough is disconnected rather than slowing the room down (and
//! announced as gone).
//!
//! A member of the TCP room is idle most of the time, so the room runs
//! under the event strategy: a member between lines is parked and holds no
//! thread (a polling thread per CPU serves those that sent a line), and one
//! thread, the room's postman, writes to every member, only as much as each
//! socket takes at once. What a member's connection needs across lines
//! (its id, its mailbox, its rate) is kept in the request's state; `setup`
//! joins the room and `finish` leaves it. On a pool, each member holds a
//! worker instead.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv6Addr, Shutdown, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::SockRef;
use socketserver::framing::Lines;
use socketserver::transport::{Tcp, Udp};
use socketserver::{Address, AnyStrategy, DatagramRequest, Event, RequestHandler, Server, Stream, StreamRequest};
use socketserver::{Synchronous, TcpServer, ThreadPool, UdpServer};

use crate::args;

/// The longest name a chatter may take.
pub const MAX_NAME: usize = 32;
/// The most UDP chatters remembered at once.
pub const MAX_USERS: usize = 1024;
/// The longest line in the TCP room.
pub const MAX_LINE: usize = 4096;
/// Messages queued for one TCP member before it counts as too slow.
pub const OUTBOX: usize = 256;
/// The most members of the TCP room at once.
pub const MAX_MEMBERS: usize = 128;
/// The most members of the TCP room from one peer (an IPv4 address, an
/// IPv6 /64) at once: room for a few people behind one NAT, not for one
/// client to fill the room.
pub const MAX_PER_PEER: usize = 8;
/// Threads beyond [`MAX_MEMBERS`], to tell newcomers the room is full.
const SPARE_WORKERS: usize = 16;
/// The stack of a thread that serves members (a pool's worker, a poller).
const MEMBER_STACK: usize = 256 * 1024;
/// The stack of the room's postman (it only copies).
const POSTMAN_STACK: usize = 64 * 1024;
/// How long a member that leaves may take to read what was on its way to it.
const FAREWELL: Duration = Duration::from_secs(2);
/// How often the UDP client says it is still there.
const PING_EVERY: Duration = Duration::from_secs(30);

/// The rule for names, as the refusal says it.
fn name_rule() -> String {
    format!(
        "error: a name is 1 to {MAX_NAME} ASCII letters, digits, '_', '-' or '.' (letters of other alphabets can look \
         like these and are refused)"
    )
}

/// Whether `name` may be taken: 1 to [`MAX_NAME`] ASCII letters, digits,
/// `_`, `-` or `.` — nothing that looks like something else (a Cyrillic
/// `а` beside a Latin `a`), no control characters, no spaces.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Characters that change how a line is shown without being seen: zero
/// width, direction overrides and isolates.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `text` made safe to show on a terminal: control characters (CR, ESC,
/// backspace, ...) and invisible or direction-changing ones are written as
/// escapes (`\x0d`, `\x1b`, `\u{202e}`), so that a line cannot move the
/// cursor, erase or recolour what is shown, or seem to come from somebody
/// else.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || invisible(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if u32::from(c) < 0x100 {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

// ------------------------------------------------------------------- UDP

/// How long the UDP relay keeps names, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpLimits {
    /// The most names remembered at once.
    pub max_users: usize,
    /// A name unused this long (no datagram from its owner) is forgotten.
    pub expire_after: Duration,
    /// When full, a newcomer takes the place of the name silent the
    /// longest, if it has been silent at least this long.
    pub evict_after: Duration,
}

impl Default for UdpLimits {
    fn default() -> Self {
        UdpLimits { max_users: MAX_USERS, expire_after: Duration::from_secs(600), evict_after: Duration::from_secs(60) }
    }
}

struct User {
    /// As its owner wrote it.
    name: String,
    addr: Address,
    last_seen: Instant,
}

/// Names (lower-cased: unique without regard to case) to users, and back.
#[derive(Default)]
struct Registry {
    users: HashMap<String, User>,
    by_addr: HashMap<Address, String>,
}

impl Registry {
    fn remove(&mut self, key: &str) -> Option<User> {
        let user = self.users.remove(key)?;
        self.by_addr.remove(&user.addr);
        Some(user)
    }

    /// The sender's name (its key), after noting that it is still there.
    fn touch(&mut self, from: &Address, now: Instant) -> Option<String> {
        let key = self.by_addr.get(from)?.clone();
        if let Some(user) = self.users.get_mut(&key) {
            user.last_seen = now;
        }
        Some(key)
    }

    /// Forgets names unused for `expire_after`.
    fn expire(&mut self, now: Instant, expire_after: Duration) {
        let stale: Vec<String> = self
            .users
            .iter()
            .filter(|(_, u)| now.duration_since(u.last_seen) >= expire_after)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.remove(&key);
        }
    }
}

/// The UDP relay: names to addresses.
#[derive(Default)]
pub struct UdpChat {
    registry: Mutex<Registry>,
    limits: UdpLimits,
}

impl UdpChat {
    /// A relay with these limits.
    pub fn with_limits(limits: UdpLimits) -> UdpChat {
        UdpChat { registry: Mutex::default(), limits }
    }

    fn answer(&self, from: &Address, text: &str, req: &DatagramRequest) -> io::Result<String> {
        let text = text.trim_end_matches(['\r', '\n']);
        let now = Instant::now();
        let mut registry = self.registry.lock();
        let sender = registry.touch(from, now);
        if let Some(name) = text.strip_prefix("/name ") {
            let name = name.trim();
            if !valid_name(name) {
                return Ok(name_rule());
            }
            let key = name.to_ascii_lowercase();
            registry.expire(now, self.limits.expire_after);
            if registry.users.get(&key).is_some_and(|u| u.addr != *from) {
                return Ok(format!("error: {name} is taken"));
            }
            if sender.is_none() && registry.users.len() >= self.limits.max_users {
                // Full: the name silent the longest goes, if it has been
                // silent long enough (its owner is told, if still there).
                let oldest =
                    registry.users.iter().min_by_key(|(_, u)| u.last_seen).map(|(k, u)| (k.clone(), u.last_seen));
                match oldest {
                    Some((old, seen)) if now.duration_since(seen) >= self.limits.evict_after => {
                        if let Some(user) = registry.remove(&old) {
                            log::info!("{}: {} forgotten after {:?} of silence", user.addr, user.name, now - seen);
                            let notice = "* your name was given up after a silence; send /name again";
                            let _ = req.socket().send_to(notice.as_bytes(), &user.addr);
                        }
                    }
                    _ => return Ok("error: the server is full; try again in a minute".to_string()),
                }
            }
            if let Some(old) = sender {
                registry.remove(&old);
            }
            registry.by_addr.insert(from.clone(), key.clone());
            registry.users.insert(key, User { name: name.to_string(), addr: from.clone(), last_seen: now });
            return Ok(format!("ok: you are {name}"));
        }
        if text == "/quit" {
            if let Some(key) = sender {
                registry.remove(&key);
            }
            return Ok("ok: bye".to_string());
        }
        if text == "/ping" {
            return Ok("ok: pong".to_string());
        }
        // Padded with spaces, a request may draw a longer list.
        if text.trim_end() == "/who" {
            registry.expire(now, self.limits.expire_after);
            let mut names: Vec<_> = registry.users.values().map(|u| u.name.clone()).collect();
            names.sort();
            // As many as one reply may carry: a 4-byte request must not
            // draw 33 KB at whatever address it claims to come from.
            return Ok(who_line(&names, req.max_reply()));
        }
        if let Some(rest) = text.strip_prefix('@') {
            let Some(sender) = sender.and_then(|k| registry.users.get(&k)).map(|u| u.name.clone()) else {
                return Ok("error: say /name NAME first".to_string());
            };
            let (to, message) = rest.split_once(' ').unwrap_or((rest, ""));
            registry.expire(now, self.limits.expire_after);
            let Some(user) = registry.users.get(&to.to_ascii_lowercase()) else {
                return Ok(format!("error: no such user {}", sanitize(to)));
            };
            let (to, addr) = (user.name.clone(), user.addr.clone());
            drop(registry);
            // What goes to `to` is bounded as a reply is (3 times the
            // request on the wire): escapes make a message up to 4 times
            // longer, and the sender may have forged the address `to`
            // registered from.
            let mut relayed = format!("{sender}: {}", sanitize(message));
            let cut = truncate_to(&mut relayed, req.max_reply());
            let sent =
                if cut { format!("sent to {to} (cut to {} bytes)", relayed.len()) } else { format!("sent to {to}") };
            // A send never waits: a member whose queue is full (not
            // reading) misses the message, and the sender is told.
            return match req.socket().send_to(relayed.as_bytes(), &addr) {
                Ok(()) => Ok(sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(format!("error: {to} is not reading; not sent")),
                Err(e) => Err(e),
            };
        }
        Ok("error: use /name NAME, @NAME MESSAGE, /who, /ping or /quit".to_string())
    }
}

/// Cuts `text` to at most `max` bytes, at a character's boundary; whether
/// it was cut.
fn truncate_to(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// `online: NAME ...`, at most `budget` bytes: the names that fit, then
/// how many more there are.
fn who_line(names: &[String], budget: usize) -> String {
    let mut line = String::from("online:");
    for (shown, name) in names.iter().enumerate() {
        let more = names.len() - shown;
        // Room for this name, and for " (+N more)" unless it is the last.
        let tail = if more > 1 { format!(" (+{more} more)").len() } else { 0 };
        if line.len() + 1 + name.len() + tail > budget {
            line.push_str(&format!(" (+{more} more)"));
            return line;
        }
        line.push(' ');
        line.push_str(name);
    }
    line
}

impl RequestHandler<DatagramRequest> for UdpChat {
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        let mut answer = match std::str::from_utf8(req.data()) {
            Ok(text) => self.answer(&req.peer_addr().clone(), text, req)?,
            Err(_) => "error: messages are UTF-8 text".to_string(),
        };
        // Within the amplification bound, even for an empty datagram (56
        // bytes may answer it over IPv4: the usage line is cut).
        truncate_to(&mut answer, req.max_reply());
        req.reply(answer.as_bytes())
    }
}

/// Binds the UDP relay: one datagram at a time.
///
/// # Errors
/// The address cannot be bound.
pub fn udp_server(addr: &str) -> io::Result<Server<Udp, AnyStrategy>> {
    udp_server_with(addr, UdpLimits::default())
}

/// Binds the UDP relay with these limits: one datagram at a time.
///
/// # Errors
/// The address cannot be bound.
pub fn udp_server_with(addr: &str, limits: UdpLimits) -> io::Result<Server<Udp, AnyStrategy>> {
    udp_server_on(addr, limits, Synchronous.into())
}

/// Binds the UDP relay with these limits, served as `strategy` says (each
/// datagram is a request: nothing waits between requests; `event` and
/// `pool` are a receiver per CPU, `threading` a thread per datagram).
///
/// # Errors
/// `InvalidInput` for [`Forking`](socketserver::Forking) (a name taken in
/// a child would be forgotten with it); the address cannot be bound.
pub fn udp_server_on(addr: &str, limits: UdpLimits, strategy: AnyStrategy) -> io::Result<Server<Udp, AnyStrategy>> {
    if let AnyStrategy::Forking(_) = strategy {
        let e = format!("the UDP relay cannot be served with {strategy}: its names live in one process");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
    }
    UdpServer::builder().strategy(strategy).bind(addr, UdpChat::with_limits(limits))
}

// ------------------------------------------------------------------- TCP

/// How fast one member may send: a token bucket for lines and one for
/// bytes. A member that sends faster has its lines wait (its handler
/// sleeps; what it sends waits unread in its own connection).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Lines a second, sustained.
    pub lines_per_sec: f64,
    /// Lines at once after a silence.
    pub burst_lines: f64,
    /// Bytes a second, sustained.
    pub bytes_per_sec: f64,
    /// Bytes at once after a silence (at least [`MAX_LINE`]).
    pub burst_bytes: f64,
    /// A member whose every line has had to wait for this long is
    /// flooding: it is disconnected (its backlog is not replayed to the
    /// room for minutes).
    pub flood_limit: Duration,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            lines_per_sec: 5.0,
            burst_lines: 20.0,
            bytes_per_sec: 16.0 * 1024.0,
            burst_bytes: 64.0 * 1024.0,
            flood_limit: Duration::from_secs(5),
        }
    }
}

/// Why a member's handler returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    /// Nothing more to read for now (parked, under the event strategy) or
    /// ever (it left, or was cut off as too slow).
    Waiting,
    /// It sent too fast for too long: it goes.
    Flooded,
}

/// What the TCP room allows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoomLimits {
    /// The most members at once; newcomers beyond are told and closed.
    pub max_members: usize,
    /// The most members from one peer at once (an IPv4 address; an IPv6
    /// /64, what one host is commonly given); newcomers beyond are told
    /// and closed.
    pub max_per_peer: usize,
    /// Messages queued for a member before it counts as too slow.
    pub outbox: usize,
    /// How fast each member may send; `None`: as fast as it likes.
    pub rate: Option<Rate>,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits { max_members: MAX_MEMBERS, max_per_peer: MAX_PER_PEER, outbox: OUTBOX, rate: Some(Rate::default()) }
    }
}

/// A member's token buckets.
struct Bucket {
    rate: Rate,
    lines: f64,
    bytes: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: Rate) -> Bucket {
        Bucket { rate, lines: rate.burst_lines, bytes: rate.burst_bytes, last: Instant::now() }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.lines = (self.lines + dt * self.rate.lines_per_sec).min(self.rate.burst_lines);
        self.bytes = (self.bytes + dt * self.rate.bytes_per_sec).min(self.rate.burst_bytes);
    }

    /// How long the member must wait before a line of `len` bytes may go;
    /// the line is paid for (zero: it may go now).
    fn take(&mut self, len: usize) -> Duration {
        self.refill(Instant::now());
        let len = (len as f64).min(self.rate.burst_bytes);
        let short_lines = (1.0 - self.lines).max(0.0) / self.rate.lines_per_sec;
        let short_bytes = (len - self.bytes).max(0.0) / self.rate.bytes_per_sec;
        self.lines -= 1.0;
        self.bytes -= len;
        Duration::from_secs_f64(short_lines.max(short_bytes).min(60.0))
    }
}

/// Lines waiting to be written to one member.
#[derive(Default)]
struct Outbox {
    lines: VecDeque<Arc<str>>,
    /// Bytes of the front line already written.
    sent: usize,
    /// The member has left (or its connection failed): nothing more is
    /// delivered to it.
    closed: bool,
    /// Announcements not queued because the outbox was half full: the
    /// member is told how many, once there is room.
    missed: u64,
}

/// One member's outbox and a handle to its connection: the room posts to
/// it, the postman delivers from it, the member's handler closes it.
struct Mailbox {
    outbox: Mutex<Outbox>,
    stream: Stream,
}

/// What one look of the postman at a mailbox came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// Nothing left to write to it (or it is closed).
    Done,
    /// Its socket takes no more now.
    Blocked,
}

impl Mailbox {
    /// Writes what the member's socket takes now, never waiting.
    fn deliver(&self) -> Delivery {
        let mut out = self.outbox.lock();
        loop {
            if out.closed {
                return Delivery::Done;
            }
            let Some(line) = out.lines.front().cloned() else { return Delivery::Done };
            // Never waits (the socket is non-blocking anyway); no SIGPIPE.
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            match SockRef::from(&self.stream).send_with_flags(&line.as_bytes()[out.sent..], flags) {
                Ok(n) if n > 0 => {
                    out.sent += n;
                    if out.sent == line.len() {
                        out.lines.pop_front();
                        out.sent = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Delivery::Blocked,
                // Gone (reset, closed): its handler finds out by reading.
                _ => {
                    out.closed = true;
                    out.lines.clear();
                    return Delivery::Done;
                }
            }
        }
    }

    /// The member leaves: nothing more is delivered to it; returns what
    /// was not delivered yet, for its handler to send.
    fn close(&self) -> Vec<u8> {
        let mut out = self.outbox.lock();
        out.closed = true;
        let mut rest = Vec::new();
        let mut skip = std::mem::take(&mut out.sent);
        for line in out.lines.drain(..) {
            rest.extend_from_slice(&line.as_bytes()[skip..]);
            skip = 0;
        }
        rest
    }

    fn is_closed(&self) -> bool {
        self.outbox.lock().closed
    }
}

/// The room's postman: one thread writes to every member, only as much as
/// each socket takes at once (never waiting on a slow member), and waits
/// with `poll(2)` for a wake-up or for room in the sockets it could not
/// finish. Members' handlers never write the room's traffic, so a member
/// that only listens holds no thread of its own.
struct Postbox {
    /// Mailboxes that got a first line since the postman last looked.
    ready: Arc<Mutex<Vec<Arc<Mailbox>>>>,
    /// A byte here wakes the postman; dropped with the room, it ends it.
    wake: UnixStream,
}

impl Postbox {
    fn start() -> io::Result<Postbox> {
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let ready = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::clone(&ready);
        std::thread::Builder::new()
            .name("chat-postman".into())
            .stack_size(POSTMAN_STACK)
            .spawn(move || postman(&queue, &woken))?;
        Ok(Postbox { ready, wake })
    }

    /// `mailbox` has lines to deliver.
    fn notify(&self, mailbox: &Arc<Mailbox>) {
        self.ready.lock().push(Arc::clone(mailbox));
        self.wake_up();
    }

    fn wake_up(&self) {
        // A full pipe means a wake-up is pending already.
        let _ = (&self.wake).write(&[1]);
    }
}

/// The postman's loop, until the room is dropped (its end of `woken` closes).
fn postman(ready: &Mutex<Vec<Arc<Mailbox>>>, woken: &UnixStream) {
    let mut blocked: Vec<Arc<Mailbox>> = Vec::new();
    let mut writable: Vec<Arc<Mailbox>> = Vec::new();
    loop {
        let mut todo = std::mem::take(&mut *ready.lock());
        todo.append(&mut writable);
        for mailbox in todo {
            if mailbox.deliver() == Delivery::Blocked {
                blocked.push(mailbox);
            }
        }
        // A member that left is forgotten at once (and its socket with it).
        blocked.retain(|m| !m.is_closed());
        let mut fds: Vec<libc::pollfd> = std::iter::once(woken.as_raw_fd())
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .chain(blocked.iter().map(|m| libc::pollfd { fd: m.stream.as_raw_fd(), events: libc::POLLOUT, revents: 0 }))
            .collect();
        if let Err(e) = poll(&mut fds) {
            log::error!("chat: the postman cannot wait: {e}");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if fds[0].revents != 0 {
            let mut bytes = [0u8; 64];
            loop {
                match (&*woken).read(&mut bytes) {
                    Ok(0) => return, // the room is gone
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::error!("chat: the postman's wake-up failed: {e}");
                        return;
                    }
                }
            }
        }
        // Room (or an error, which the next write reports) in these.
        for (mailbox, fd) in std::mem::take(&mut blocked).into_iter().zip(&fds[1..]) {
            if fd.revents != 0 {
                writable.push(mailbox);
            } else {
                blocked.push(mailbox);
            }
        }
    }
}

/// `poll(2)` on `fds` until one is ready.
fn poll(fds: &mut [libc::pollfd]) -> io::Result<()> {
    let n = libc::nfds_t::try_from(fds.len()).map_err(|_| io::Error::other("too many descriptors to poll"))?;
    loop {
        // SAFETY: `fds` is a slice of `n` pollfd values, ours alone for the call.
        #[allow(unsafe_code)]
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), n, -1) };
        if ready >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

struct Member {
    name: String,
    mailbox: Arc<Mailbox>,
    /// Where it comes from ([`peer_of`]).
    peer: Option<IpAddr>,
}

/// The peer a connection from `addr` counts against: its IPv4 address (an
/// IPv4-mapped IPv6 one included), or its IPv6 /64 — one host commonly
/// has a whole /64 to pick addresses from.
fn peer_of(addr: &Address) -> Option<IpAddr> {
    let ip = addr.as_inet()?.ip().to_canonical();
    Some(match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
    })
}

/// A member's place in the room, kept in its request (under the event
/// strategy, `handle` is called again after each park: its locals are
/// gone, this is not).
#[derive(Default)]
struct Seat {
    /// Its id and mailbox, once it has joined.
    joined: Option<(u64, Arc<Mailbox>)>,
    /// Why it was turned away (the room is full, the server busy).
    refused: Option<String>,
    /// How fast it may send, and since when it has sent too fast.
    bucket: Option<Bucket>,
    throttled_since: Option<Instant>,
    /// It sent too fast for too long.
    flooded: bool,
}

/// The TCP room: members, their mailboxes and the postman.
#[derive(Default)]
pub struct TcpRoom {
    members: Mutex<HashMap<u64, Member>>,
    next: AtomicU64,
    limits: RoomLimits,
    /// Started with the first member.
    postbox: OnceLock<Postbox>,
}

/// Whether `name` is some member's other than `id`'s (without regard to case).
fn taken(members: &HashMap<u64, Member>, id: u64, name: &str) -> bool {
    members.iter().any(|(&other, m)| other != id && m.name.eq_ignore_ascii_case(name))
}

impl TcpRoom {
    /// A room with these limits.
    pub fn with_limits(limits: RoomLimits) -> TcpRoom {
        TcpRoom { members: Mutex::default(), next: AtomicU64::new(0), limits, postbox: OnceLock::new() }
    }

    /// Queues `line` for a member; `false` when its outbox is full (it
    /// does not read fast enough).
    ///
    /// An announcement (`notice`: a join, a leave, a rename) never fills
    /// an outbox: past half of it, it is counted instead, and the member
    /// later told how many it missed. Anyone can cause announcements at
    /// the rate it can connect and close (thousands a second, from one
    /// client), far faster than members chat or a postman writes; queued,
    /// they would get every member cut off as "not reading", the fastest
    /// readers included. The other half is for what members say, which
    /// their rate limits bound.
    fn post(&self, mailbox: &Arc<Mailbox>, line: &Arc<str>, notice: bool) -> bool {
        let limit = self.limits.outbox.max(1);
        let for_notices = (limit / 2).max(1);
        let mut out = mailbox.outbox.lock();
        if out.closed {
            return true; // it is leaving: nothing to deliver
        }
        if notice && out.lines.len() >= for_notices {
            out.missed += 1;
            return true;
        }
        if out.lines.len() >= limit {
            return false;
        }
        let first = out.lines.is_empty();
        if out.missed > 0 && out.lines.len() < for_notices {
            let missed = std::mem::take(&mut out.missed);
            out.lines.push_back(Arc::from(format!("* {missed} joins, leaves and renames not shown (a busy moment)\n")));
        }
        out.lines.push_back(Arc::clone(line));
        drop(out);
        // A mailbox with lines already is the postman's until it is empty.
        if let (true, Some(postbox)) = (first, self.postbox.get()) {
            postbox.notify(mailbox);
        }
        true
    }

    /// Sends what a member said to every member but `except`; members
    /// whose outbox is full are too slow: they are disconnected.
    fn broadcast(&self, except: u64, line: &str) {
        self.broadcast_locked(&mut self.members.lock(), except, line, false);
    }

    /// Announces a change of the room (a join, a rename, a leave) to every
    /// member but `except`, under the members lock the caller holds: the
    /// change and its announcement are one step, so a newcomer never hears
    /// of what happened before it came.
    fn announce(&self, members: &mut HashMap<u64, Member>, except: u64, line: &str) {
        self.broadcast_locked(members, except, line, true);
    }

    fn broadcast_locked(&self, members: &mut HashMap<u64, Member>, except: u64, line: &str, notice: bool) {
        let mut pending = vec![(except, line.to_string(), notice)];
        while let Some((except, line, notice)) = pending.pop() {
            let line: Arc<str> = Arc::from(format!("{line}\n"));
            let mut dropped = Vec::new();
            members.retain(|&id, m| {
                if id == except || self.post(&m.mailbox, &line, notice) {
                    return true;
                }
                log::warn!("{} is not reading; disconnecting", m.name);
                let _ = m.mailbox.stream.shutdown(Shutdown::Both);
                dropped.push((id, m.name.clone()));
                false
            });
            // Their own handler finds them gone and announces nothing.
            pending.extend(dropped.into_iter().map(|(id, name)| (id, format!("* {name} left (too slow)"), true)));
        }
    }

    /// Adds a member from `peer` under a name nobody has (`guestN`, the
    /// next free N) and welcomes it and announces it to the others (one
    /// step, under the members lock): its name; or why it is refused, when
    /// the room is full or has as many members from `peer` as it takes.
    ///
    /// # Errors
    /// The postman cannot be started (out of threads or memory).
    fn join(&self, id: u64, mailbox: Arc<Mailbox>, peer: Option<IpAddr>) -> io::Result<Result<String, String>> {
        let mut members = self.members.lock();
        if members.len() >= self.limits.max_members {
            return Ok(Err(format!("the room is full ({} members)", self.limits.max_members)));
        }
        let from_peer = members.values().filter(|m| peer.is_some() && m.peer == peer).count();
        if from_peer >= self.limits.max_per_peer {
            return Ok(Err(format!("{from_peer} members come from your address already")));
        }
        if self.postbox.get().is_none() {
            let postbox = Postbox::start()?;
            // Under the members lock: nobody else can have started one.
            let _ = self.postbox.set(postbox);
        }
        let mut name = format!("guest{id}");
        while taken(&members, id, &name) {
            name = format!("guest{}", self.next.fetch_add(1, Ordering::Relaxed));
        }
        // Welcomed before anything else reaches it: under the lock that
        // others broadcast with.
        self.post(&mailbox, &Arc::from(format!("* welcome, {name}; /name NAME to rename\n")), false);
        members.insert(id, Member { name: name.clone(), mailbox, peer });
        self.announce(&mut members, id, &format!("* {name} joined"));
        Ok(Ok(name))
    }

    /// Pays for a line of `len` bytes: a member that sends too fast waits
    /// here, not the others (what it sends meanwhile stays unread in its
    /// own connection); `true` once it has kept that up for the flood limit.
    fn throttle(&self, id: u64, req: &mut StreamRequest, len: usize) -> bool {
        let seat = req.state_mut::<Seat>();
        let Some(bucket) = seat.bucket.as_mut() else { return false };
        let rate = bucket.rate;
        let wait = bucket.take(len);
        if wait.is_zero() {
            seat.throttled_since = None;
            return false;
        }
        if seat.throttled_since.is_none() {
            self.send_to(
                id,
                &format!(
                    "* you are sending too fast: your lines are delayed (at most {} lines and {} KiB a second); \
                     keep it up for {:?} and you are disconnected",
                    rate.lines_per_sec,
                    rate.bytes_per_sec / 1024.0,
                    rate.flood_limit
                ),
            );
        }
        let since = *seat.throttled_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= rate.flood_limit {
            self.send_to(id, "error: you sent too fast for too long; disconnected");
            return true;
        }
        std::thread::sleep(wait);
        false
    }

    /// Serves a member's lines until it has nothing more to say for now
    /// (under the event strategy: parked) or ever.
    fn serve_member(&self, id: u64, req: &mut StreamRequest) -> io::Result<Turn> {
        let codec = Lines::new(MAX_LINE);
        let mut line = Vec::new();
        // The request boundary: under the event strategy, with nothing to
        // read, `false` (the connection parks; `handle` comes back when the
        // member sends); under the others it waits. `false` is the end too.
        while req.wait_for_data()? {
            match codec.read_line(req, &mut line) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.send_to(id, &format!("error: lines are at most {MAX_LINE} bytes"));
                    break;
                }
                Err(e) => return Err(e),
            }
            if self.throttle(id, req, line.len()) {
                return Ok(Turn::Flooded);
            }
            let text = String::from_utf8_lossy(&line);
            let name = match self.members.lock().get(&id) {
                Some(m) => m.name.clone(),
                None => break, // removed as too slow
            };
            if let Some(new) = text.strip_prefix("/name ") {
                let new = new.trim();
                if !valid_name(new) {
                    self.send_to(id, &name_rule());
                    continue;
                }
                let mut members = self.members.lock();
                // Nobody may speak as somebody else.
                let reply = if taken(&members, id, new) {
                    format!("error: {new} is taken\n")
                } else {
                    if let Some(m) = members.get_mut(&id) {
                        m.name = new.to_string();
                    }
                    // With the rename: a member who joins after it hears
                    // of it from nobody.
                    self.announce(&mut members, id, &format!("* {name} is now {new}"));
                    format!("* you are now {new}\n")
                };
                if let Some(m) = members.get(&id) {
                    let _ = self.post(&m.mailbox, &Arc::from(reply), false);
                }
                continue;
            }
            self.broadcast(id, &format!("[{name}] {}", sanitize(&text)));
        }
        Ok(Turn::Waiting)
    }

    fn send_to(&self, id: u64, line: &str) {
        if let Some(m) = self.members.lock().get(&id) {
            let _ = self.post(&m.mailbox, &Arc::from(format!("{line}\n")), false);
        }
    }
}

impl RequestHandler<StreamRequest> for TcpRoom {
    /// Joins the room (once per connection, whatever the strategy).
    fn setup(&self, req: &mut StreamRequest) -> io::Result<()> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox { outbox: Mutex::default(), stream: req.try_clone()? });
        let seat = match self.join(id, Arc::clone(&mailbox), peer_of(req.peer_addr())) {
            Ok(Ok(_)) => {
                Seat { joined: Some((id, mailbox)), bucket: self.limits.rate.map(Bucket::new), ..Seat::default() }
            }
            Ok(Err(why)) => {
                log::info!("{}: {why}; refused", req.peer_addr());
                Seat { refused: Some(format!("error: {why}; try again later\n")), ..Seat::default() }
            }
            Err(e) => {
                // Out of threads or memory: refuse, do not abort.
                log::warn!("{}: cannot start the room's postman ({e}); refused", req.peer_addr());
                Seat { refused: Some("error: the server is busy; try again later\n".to_string()), ..Seat::default() }
            }
        };
        *req.state_mut::<Seat>() = seat;
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let seat = req.state_mut::<Seat>();
        if let Some(refusal) = seat.refused.take() {
            return req.write_all(refusal.as_bytes());
        }
        let Some(id) = seat.joined.as_ref().map(|(id, _)| *id) else { return Ok(()) };
        if self.serve_member(id, req)? == Turn::Flooded {
            req.state_mut::<Seat>().flooded = true;
        }
        Ok(())
    }

    /// Leaves the room (once, at the end, however the handler ended), and
    /// sends the member what was still on its way to it.
    fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
        let Some(Seat { joined: Some((id, mailbox)), flooded, .. }) = req.take_state::<Seat>() else { return Ok(()) };
        {
            // Removed and announced in one step, as a join is.
            let mut members = self.members.lock();
            if let Some(m) = members.remove(&id) {
                let why = if flooded { " (flooding)" } else { "" };
                self.announce(&mut members, id, &format!("* {} left{why}", m.name));
                drop(members);
                if flooded {
                    log::warn!("{}: {} sent too fast for too long; disconnected", req.peer_addr(), m.name);
                }
            }
        }
        let rest = mailbox.close();
        if let Some(postbox) = self.postbox.get() {
            postbox.wake_up(); // to let go of its handle on the connection
        }
        if !rest.is_empty() {
            // Bounded: a member that has stopped reading is not waited for.
            let mut stream = &mailbox.stream;
            let sent = stream.set_write_timeout(Some(FAREWELL)).and_then(|()| stream.write_all(&rest));
            if let Err(e) = sent {
                log::debug!("{}: what was left for it was not sent: {e}", req.peer_addr());
            }
        }
        Ok(())
    }
}

/// Binds the TCP room with the default limits, under the event strategy.
///
/// # Errors
/// The address cannot be bound.
pub fn tcp_server(addr: &str) -> io::Result<Server<Tcp, AnyStrategy>> {
    tcp_server_with(addr, RoomLimits::default())
}

/// Binds the TCP room with these limits, under the event strategy.
///
/// # Errors
/// The address cannot be bound.
pub fn tcp_server_with(addr: &str, limits: RoomLimits) -> io::Result<Server<Tcp, AnyStrategy>> {
    tcp_server_on(addr, limits, Event::new().into())
}

/// Binds the TCP room with these limits, served as `strategy` says, with
/// the most threads and their stack the room's (from its member limit).
/// Under the event strategy (the default) a member between lines holds no
/// thread: a polling thread per CPU, more (up to a thread per member and a
/// few to tell newcomers the room is full) only while members are slowed
/// down or send half a line. On a pool (or with threads), a worker per
/// member and a few more; past that, newcomers wait in the pool's queue
/// and the listen backlog. Either way one thread, the postman, writes to
/// every member, and the room degrades by refusing newcomers, never by
/// running out of memory.
///
/// # Errors
/// `InvalidInput` for [`Synchronous`] (one member would hold up the room)
/// and [`Forking`](socketserver::Forking) (a room per member); the address
/// cannot be bound.
pub fn tcp_server_on(addr: &str, limits: RoomLimits, strategy: AnyStrategy) -> io::Result<Server<Tcp, AnyStrategy>> {
    few_malloc_arenas();
    let most = limits.max_members.max(1) + SPARE_WORKERS;
    let strategy: AnyStrategy = match strategy {
        AnyStrategy::Event(e) => e.max_workers(most).stack_size(MEMBER_STACK).into(),
        AnyStrategy::ThreadPool(p) => p.max_workers(most).queue(64).stack_size(MEMBER_STACK).into(),
        AnyStrategy::Threading(t) => t.max_threads(most).stack_size(MEMBER_STACK).into(),
        other => {
            let e = format!("the TCP room cannot be served with {other}: give --strategy event, pool or threading");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
    };
    TcpServer::builder().strategy(strategy).bind(addr, TcpRoom::with_limits(limits))
}

/// glibc gives threads malloc arenas of their own, up to 8 per core, each
/// reserving 64 MiB of address space: with a thread per member, arenas,
/// not members, would use up a limit such as `ulimit -v` (5 arenas took
/// 327 MB of a 400 MB limit). Two are plenty for a chat room.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only sets a malloc tunable; safe at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// A pool-served TCP room, capped at `max` members at once.
///
/// # Errors
/// The address cannot be bound.
pub fn tcp_server_pooled(addr: &str, max: usize) -> io::Result<Server<Tcp, AnyStrategy>> {
    tcp_server_on(addr, RoomLimits { max_members: max, ..RoomLimits::default() }, ThreadPool::new(2).into())
}

fn udp_client(addr: &str, name: &str) -> io::Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(addr)?;
    socket.send(format!("/name {name}").as_bytes())?;
    let receiver = socket.try_clone()?;
    let (bye_tx, bye_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok(n) = receiver.recv(&mut buf) {
            match &buf[..n] {
                b"ok: bye" => {
                    let _ = bye_tx.send(());
                    break;
                }
                b"ok: pong" => {}
                other => println!("{}", sanitize(&String::from_utf8_lossy(other))),
            }
        }
    });
    // Still here, while the user is silent: the relay forgets silent names.
    let pinger = socket.try_clone()?;
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(PING_EVERY);
            if pinger.send(b"/ping").is_err() {
                break;
            }
        }
    });
    // Ctrl-C gives the name back too.
    let on_signal = socket.try_clone()?;
    ctrlc::set_handler(move || {
        let _ = on_signal.send(b"/quit");
        std::process::exit(130);
    })
    .map_err(io::Error::other)?;
    for line in io::stdin().lock().lines() {
        socket.send(line?.as_bytes())?;
    }
    // The server answers in order: once `/quit` is answered, every reply
    // to what came before it has been printed.
    socket.send(b"/quit")?;
    let _ = bye_rx.recv_timeout(std::time::Duration::from_secs(2));
    Ok(())
}

fn tcp_client(addr: &str) -> io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    let reader = BufReader::new(stream.try_clone()?);
    let printer = std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            println!("{}", sanitize(&line));
        }
        // The room closed the connection: nothing more to send either.
        std::process::exit(0);
    });
    let mut stream = stream;
    for line in io::stdin().lock().lines() {
        writeln!(stream, "{}", line?)?;
    }
    // Input ended: leave, and print what the room still sends until it
    // closes the connection.
    stream.shutdown(Shutdown::Write)?;
    let _ = printer.join();
    Ok(())
}

fn serve<T: socketserver::Transport, S: socketserver::Strategy>(server: Server<T, S>) -> io::Result<()> {
    println!("listening {} {} ({})", T::NAME, server.server_address(), server.strategy());
    server.handle().shutdown_on_signal()?;
    server.serve_forever()
}

/// The usage text.
pub const USAGE: &str = "\
usage: chat udp-server [ADDR] [--strategy sync|pool|threading|event...]  (default 127.0.0.1:9003, sync)
       chat tcp-server [ADDR] [--strategy event|pool|threading...]       (default 127.0.0.1:9004, event)
       chat udp-client ADDR NAME
       chat tcp-client ADDR";

/// The UDP relay's default address.
pub const UDP_ADDR: &str = "127.0.0.1:9003";
/// The TCP room's default address.
pub const TCP_ADDR: &str = "127.0.0.1:9004";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Args {
    /// `udp-server [ADDR] [--strategy STRATEGY]`
    UdpServer(String, AnyStrategy),
    /// `tcp-server [ADDR] [--strategy STRATEGY]`
    TcpServer(String, AnyStrategy),
    /// `udp-client ADDR NAME`
    UdpClient(String, String),
    /// `tcp-client ADDR`
    TcpClient(String),
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A message for the user; print it with [`USAGE`].
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let rest = args.get(1..).unwrap_or_default();
    match (args.first().map(String::as_str), rest) {
        (Some("udp-server"), _) => {
            let (addr, strategy) = args::addr_and_strategy(rest, UDP_ADDR, Synchronous.into())?;
            Ok(Args::UdpServer(addr, strategy))
        }
        (Some("tcp-server"), _) => {
            let (addr, strategy) = args::addr_and_strategy(rest, TCP_ADDR, Event::new().into())?;
            Ok(Args::TcpServer(addr, strategy))
        }
        (Some("udp-client"), [addr, name]) => Ok(Args::UdpClient(addr.clone(), name.clone())),
        (Some("tcp-client"), [addr]) => Ok(Args::TcpClient(addr.clone())),
        _ => Err("give udp-server, tcp-server, udp-client or tcp-client".into()),
    }
}

/// Runs what the command line asks (exit code 0 when done).
///
/// # Errors
/// The server cannot be bound or served; the client cannot talk.
pub fn run(args: Args) -> io::Result<i32> {
    match args {
        Args::UdpServer(addr, strategy) => udp_server_on(&addr, UdpLimits::default(), strategy).and_then(serve),
        Args::TcpServer(addr, strategy) => tcp_server_on(&addr, RoomLimits::default(), strategy).and_then(serve),
        Args::UdpClient(addr, name) => udp_client(&addr, &name),
        Args::TcpClient(addr) => tcp_client(&addr),
    }?;
    Ok(0)
}
