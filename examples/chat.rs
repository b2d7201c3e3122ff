//! The tutorials' chat programs on the library: a UDP relay where each
//! client has a name and messages go to a named peer (the "QQ chat"), and a
//! TCP chat room that sends each line to every other member.
//!
//! ```text
//! cargo run --example chat -- udp-server [ADDR]          # udp 127.0.0.1:9003
//! cargo run --example chat -- udp-client ADDR NAME       # then: @bob hello
//! cargo run --example chat -- tcp-server [ADDR]          # tcp 127.0.0.1:9004
//! cargo run --example chat -- tcp-client ADDR            # every line goes to the room
//! ```
//!
//! Names are 1 to 32 ASCII letters, digits, `_`, `-` or `.` (so that no
//! name can look like another in a different alphabet), unique without
//! regard to case. Control characters (CR, ESC, ...) and invisible ones in
//! messages are shown escaped (`\x1b`), so that nobody can rewrite a line
//! on another member's terminal or make it seem to come from somebody else.
//!
//! UDP protocol, one text datagram each way:
//! * `/name alice` — be known as `alice` (answer `ok: you are alice`);
//! * `@bob hello` — the server sends `alice: hello` to bob;
//! * `/who` — the names online (as many as fit in one reply of about one
//!   MTU, then how many more: a tiny request never draws a large answer);
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
//! `[name] line`; `/name NAME` renames (to a name nobody else has); joins
//! and leaves are announced. At most 128 members: a newcomer beyond gets
//! `error: the room is full ...` and is closed. Each member may send 5
//! lines a second (bursts of 20) and 16 KiB a second (bursts of 64 KiB);
//! a member that sends faster is slowed down: its lines wait, unread, and
//! nobody else pays for them; one that keeps it up for 5 s is disconnected
//! (announced as `left (flooding)`). A member that does not read its messages
//! fast enough is disconnected rather than slowing the room down (and
//! announced as gone).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;
use socketserver::framing::Lines;
use socketserver::{Address, DatagramRequest, RequestHandler, Server, Stream, StreamRequest, ThreadPool};
use socketserver::{TcpServer, ThreadPoolTcpServer, UdpServer};

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
/// Pool workers beyond [`MAX_MEMBERS`], to tell newcomers the room is full.
const SPARE_WORKERS: usize = 16;
/// The stack of a member's thread (the pool's worker) and of its writer.
const MEMBER_STACK: usize = 256 * 1024;
const WRITER_STACK: usize = 64 * 1024;
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
        if text == "/who" {
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
            // A send never waits: a member whose queue is full (not
            // reading) misses the message, and the sender is told.
            return match req.socket().send_to(format!("{sender}: {}", sanitize(message)).as_bytes(), &addr) {
                Ok(()) => Ok(format!("sent to {to}")),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(format!("error: {to} is not reading; not sent")),
                Err(e) => Err(e),
            };
        }
        Ok("error: use /name NAME, @NAME MESSAGE, /who, /ping or /quit".to_string())
    }
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
        let answer = match std::str::from_utf8(req.data()) {
            Ok(text) => self.answer(&req.peer_addr().clone(), text, req)?,
            Err(_) => "error: messages are UTF-8 text".to_string(),
        };
        req.reply(answer.as_bytes())
    }
}

/// Binds the UDP relay.
pub fn udp_server(addr: &str) -> io::Result<UdpServer> {
    udp_server_with(addr, UdpLimits::default())
}

/// Binds the UDP relay with these limits.
pub fn udp_server_with(addr: &str, limits: UdpLimits) -> io::Result<UdpServer> {
    UdpServer::bind(addr, UdpChat::with_limits(limits))
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

/// How a member's time in the room ended.
enum Leaving {
    /// It closed, or was cut off as too slow.
    Left,
    /// It sent too fast for too long.
    Flooded,
}

/// What the TCP room allows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoomLimits {
    /// The most members at once; newcomers beyond are told and closed.
    pub max_members: usize,
    /// Messages queued for a member before it counts as too slow.
    pub outbox: usize,
    /// How fast each member may send; `None`: as fast as it likes.
    pub rate: Option<Rate>,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits { max_members: MAX_MEMBERS, outbox: OUTBOX, rate: Some(Rate::default()) }
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

struct Member {
    name: String,
    outbox: Sender<Arc<str>>,
    stream: Stream,
}

/// The TCP room: members and their outboxes.
#[derive(Default)]
pub struct TcpRoom {
    members: Mutex<HashMap<u64, Member>>,
    next: AtomicU64,
    limits: RoomLimits,
}

/// Whether `name` is some member's other than `id`'s (without regard to case).
fn taken(members: &HashMap<u64, Member>, id: u64, name: &str) -> bool {
    members.iter().any(|(&other, m)| other != id && m.name.eq_ignore_ascii_case(name))
}

impl TcpRoom {
    /// A room with these limits.
    pub fn with_limits(limits: RoomLimits) -> TcpRoom {
        TcpRoom { members: Mutex::default(), next: AtomicU64::new(0), limits }
    }

    /// Sends `line` to every member but `except`; members whose outbox is
    /// full are too slow: they are disconnected.
    fn broadcast(&self, except: u64, line: &str) {
        let mut pending = vec![(except, line.to_string())];
        while let Some((except, line)) = pending.pop() {
            let line: Arc<str> = Arc::from(format!("{line}\n"));
            let mut members = self.members.lock();
            let mut dropped = Vec::new();
            members.retain(|&id, m| {
                if id == except {
                    return true;
                }
                match m.outbox.try_send(Arc::clone(&line)) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        log::warn!("{} is not reading; disconnecting", m.name);
                        let _ = m.stream.shutdown(Shutdown::Both);
                        dropped.push((id, m.name.clone()));
                        false
                    }
                    Err(TrySendError::Disconnected(_)) => false,
                }
            });
            // Their own handler finds them gone and announces nothing.
            pending.extend(dropped.into_iter().map(|(id, name)| (id, format!("* {name} left (too slow)"))));
        }
    }

    /// Adds a member under a name nobody has (`guestN`, the next free N)
    /// and welcomes it; its name, or `None` when the room is full.
    fn join(&self, id: u64, outbox: Sender<Arc<str>>, stream: Stream) -> Option<String> {
        let mut members = self.members.lock();
        if members.len() >= self.limits.max_members {
            return None;
        }
        let mut name = format!("guest{id}");
        while taken(&members, id, &name) {
            name = format!("guest{}", self.next.fetch_add(1, Ordering::Relaxed));
        }
        // Welcomed before anything else reaches it: under the lock that
        // others broadcast with.
        let _ = outbox.try_send(Arc::from(format!("* welcome, {name}; /name NAME to rename\n")));
        members.insert(id, Member { name: name.clone(), outbox, stream });
        Some(name)
    }

    fn serve_member(&self, id: u64, req: &mut StreamRequest) -> io::Result<Leaving> {
        let codec = Lines::new(MAX_LINE);
        let mut line = Vec::new();
        let mut bucket = self.limits.rate.map(Bucket::new);
        let mut throttled_since: Option<Instant> = None;
        loop {
            match codec.read_line(req, &mut line) {
                Ok(true) => {}
                Ok(false) => return Ok(Leaving::Left),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    writeln!(req, "error: lines are at most {MAX_LINE} bytes")?;
                    return Ok(Leaving::Left);
                }
                Err(e) => return Err(e),
            }
            // Too fast: this member waits, not the others (what it sends
            // meanwhile stays unread in its own connection); too fast for
            // too long: it goes.
            if let Some(bucket) = bucket.as_mut() {
                let rate = bucket.rate;
                let wait = bucket.take(line.len());
                if wait.is_zero() {
                    throttled_since = None;
                } else {
                    let since = match throttled_since {
                        Some(since) => since,
                        None => {
                            self.send_to(
                                id,
                                &format!(
                                    "* you are sending too fast: your lines are delayed (at most {} lines and {} \
                                     KiB a second); keep it up for {:?} and you are disconnected",
                                    rate.lines_per_sec,
                                    rate.bytes_per_sec / 1024.0,
                                    rate.flood_limit
                                ),
                            );
                            *throttled_since.insert(Instant::now())
                        }
                    };
                    if since.elapsed() >= rate.flood_limit {
                        self.send_to(id, "error: you sent too fast for too long; disconnected");
                        return Ok(Leaving::Flooded);
                    }
                    std::thread::sleep(wait);
                }
            }
            let text = String::from_utf8_lossy(&line);
            let name = match self.members.lock().get(&id) {
                Some(m) => m.name.clone(),
                None => return Ok(Leaving::Left), // removed as too slow
            };
            if let Some(new) = text.strip_prefix("/name ") {
                let new = new.trim();
                if !valid_name(new) {
                    self.send_to(id, &name_rule());
                    continue;
                }
                let renamed = {
                    let mut members = self.members.lock();
                    // Nobody may speak as somebody else.
                    if taken(&members, id, new) {
                        false
                    } else {
                        if let Some(m) = members.get_mut(&id) {
                            m.name = new.to_string();
                        }
                        true
                    }
                };
                if renamed {
                    self.send_to(id, &format!("* you are now {new}"));
                    self.broadcast(id, &format!("* {name} is now {new}"));
                } else {
                    self.send_to(id, &format!("error: {new} is taken"));
                }
                continue;
            }
            self.broadcast(id, &format!("[{name}] {}", sanitize(&text)));
        }
    }

    fn send_to(&self, id: u64, line: &str) {
        if let Some(m) = self.members.lock().get(&id) {
            let _ = m.outbox.try_send(Arc::from(format!("{line}\n")));
        }
    }
}

impl RequestHandler<StreamRequest> for TcpRoom {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (outbox, inbox) = crossbeam_channel::bounded::<Arc<str>>(self.limits.outbox.max(1));
        let Some(name) = self.join(id, outbox, req.try_clone()?) else {
            log::info!("{}: the room is full ({} members); refused", req.peer_addr(), self.limits.max_members);
            let full = format!("error: the room is full ({} members); try again later\n", self.limits.max_members);
            return req.write_all(full.as_bytes());
        };
        // The member's own writer: the room never blocks on a slow socket.
        let writer = req.try_clone().and_then(|mut out| {
            std::thread::Builder::new().name(format!("chat-out-{id}")).stack_size(WRITER_STACK).spawn(move || {
                for line in inbox {
                    if out.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                }
            })
        });
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                // Out of threads or memory: refuse, do not abort.
                self.members.lock().remove(&id);
                log::warn!("{}: cannot start a writer ({e}); refused", req.peer_addr());
                return req.write_all(b"error: the server is busy; try again later\n");
            }
        };
        self.broadcast(id, &format!("* {name} joined"));
        let result = self.serve_member(id, req);
        // Not `if let Some(m) = self.members.lock().remove(..)`: the guard
        // would live through the block, and `broadcast` locks again.
        let left = self.members.lock().remove(&id);
        if let Some(m) = left {
            let why = match result {
                Ok(Leaving::Flooded) => {
                    log::warn!("{}: {} sent too fast for too long; disconnected", req.peer_addr(), m.name);
                    " (flooding)"
                }
                _ => "",
            };
            self.broadcast(id, &format!("* {} left{why}", m.name));
        }
        // Dropping the member closed its outbox: the writer drains and ends.
        let _ = writer.join();
        result.map(drop)
    }
}

/// Binds the TCP room with the default limits.
pub fn tcp_server(addr: &str) -> io::Result<ThreadPoolTcpServer> {
    tcp_server_with(addr, RoomLimits::default())
}

/// Binds the TCP room with these limits: a pool of worker threads (small
/// stacks), one per member and a few more to tell newcomers the room is
/// full; each member has a writer thread too. Past that, newcomers wait in
/// the pool's queue and the listen backlog: the room degrades by refusing,
/// never by running out of memory.
pub fn tcp_server_with(addr: &str, limits: RoomLimits) -> io::Result<ThreadPoolTcpServer> {
    few_malloc_arenas();
    let most = limits.max_members.max(1) + SPARE_WORKERS;
    TcpServer::builder()
        .strategy(ThreadPool::new(2).max_workers(most).queue(64).stack_size(MEMBER_STACK))
        .bind(addr, TcpRoom::with_limits(limits))
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
pub fn tcp_server_pooled(addr: &str, max: NonZeroUsize) -> io::Result<ThreadPoolTcpServer> {
    tcp_server_with(addr, RoomLimits { max_members: max.get(), ..RoomLimits::default() })
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
    println!("listening {} {}", T::NAME, server.server_address());
    server.handle().shutdown_on_signal()?;
    server.serve_forever()
}

#[allow(dead_code)] // the tests include this file as a module
fn main() {
    // Logs (the library's errors included) on stderr; RUST_LOG=debug for more.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let result = match args.first().map(String::as_str) {
        Some("udp-server") => udp_server(&arg(1, "127.0.0.1:9003")).and_then(serve),
        Some("tcp-server") => tcp_server(&arg(1, "127.0.0.1:9004")).and_then(serve),
        Some("udp-client") if args.len() == 3 => udp_client(&args[1], &args[2]),
        Some("tcp-client") if args.len() == 2 => tcp_client(&args[1]),
        _ => {
            eprintln!("usage: chat udp-server [ADDR] | udp-client ADDR NAME | tcp-server [ADDR] | tcp-client ADDR");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("chat: {e}");
        std::process::exit(1);
    }
}
