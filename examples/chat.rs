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
//! UDP protocol, one text datagram each way:
//! * `/name alice` — be known as `alice` (answer `ok: you are alice`);
//! * `@bob hello` — the server sends `alice: hello` to bob;
//! * `/who` — the names online;
//! * `/quit` — forget my name (answer `ok: bye`); the client sends it when
//!   its input ends or on Ctrl-C. Anything else gets `error: ...`.
//!
//! TCP room: each line a member sends reaches every other member as
//! `[name] line`; `/name NAME` renames (to a name nobody else has); joins
//! and leaves are announced. A member that does not read its messages fast
//! enough is disconnected rather than slowing the room down (and announced
//! as gone).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;
use socketserver::framing::Lines;
use socketserver::{Address, DatagramRequest, RequestHandler, Server, Stream, StreamRequest, ThreadPool};
use socketserver::{TcpServer, ThreadPoolTcpServer, ThreadingTcpServer, UdpServer};

/// The longest name a chatter may take.
pub const MAX_NAME: usize = 32;
/// The most UDP chatters remembered at once.
pub const MAX_USERS: usize = 1024;
/// The longest line in the TCP room.
pub const MAX_LINE: usize = 4096;
/// Messages queued for one TCP member before it counts as too slow.
pub const OUTBOX: usize = 256;

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// The UDP relay: names to addresses.
#[derive(Default)]
pub struct UdpChat {
    users: Mutex<HashMap<String, Address>>,
}

impl UdpChat {
    fn answer(&self, from: &Address, text: &str, req: &DatagramRequest) -> io::Result<String> {
        let text = text.trim_end_matches(['\r', '\n']);
        if let Some(name) = text.strip_prefix("/name ") {
            let name = name.trim();
            if !valid_name(name) {
                return Ok(format!("error: a name is 1 to {MAX_NAME} letters, digits, '_' or '-'"));
            }
            let mut users = self.users.lock();
            if users.get(name).is_some_and(|a| a != from) {
                return Ok(format!("error: {name} is taken"));
            }
            if users.len() >= MAX_USERS && !users.contains_key(name) {
                return Ok("error: the server is full".to_string());
            }
            users.retain(|_, a| a != from);
            users.insert(name.to_string(), from.clone());
            return Ok(format!("ok: you are {name}"));
        }
        if text == "/quit" {
            self.users.lock().retain(|_, a| a != from);
            return Ok("ok: bye".to_string());
        }
        if text == "/who" {
            let mut names: Vec<_> = self.users.lock().keys().cloned().collect();
            names.sort();
            return Ok(format!("online: {}", names.join(" ")));
        }
        if let Some(rest) = text.strip_prefix('@') {
            let Some(sender) = self.users.lock().iter().find(|(_, a)| *a == from).map(|(n, _)| n.clone()) else {
                return Ok("error: say /name NAME first".to_string());
            };
            let (to, message) = rest.split_once(' ').unwrap_or((rest, ""));
            let Some(addr) = self.users.lock().get(to).cloned() else {
                return Ok(format!("error: no such user {to}"));
            };
            req.socket().send_to(format!("{sender}: {message}").as_bytes(), &addr)?;
            return Ok(format!("sent to {to}"));
        }
        Ok("error: use /name NAME, @NAME MESSAGE, /who or /quit".to_string())
    }
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
    UdpServer::bind(addr, UdpChat::default())
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
}

impl TcpRoom {
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

    fn serve_member(&self, id: u64, req: &mut StreamRequest) -> io::Result<()> {
        let codec = Lines::new(MAX_LINE);
        let mut line = Vec::new();
        loop {
            match codec.read_line(req, &mut line) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    writeln!(req, "error: lines are at most {MAX_LINE} bytes")?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            let text = String::from_utf8_lossy(&line);
            let name = match self.members.lock().get(&id) {
                Some(m) => m.name.clone(),
                None => return Ok(()), // removed as too slow
            };
            if let Some(new) = text.strip_prefix("/name ") {
                let new = new.trim();
                if !valid_name(new) {
                    self.send_to(id, &format!("error: a name is 1 to {MAX_NAME} letters, digits, '_' or '-'"));
                    continue;
                }
                let renamed = {
                    let mut members = self.members.lock();
                    // Nobody may speak as somebody else.
                    if members.iter().any(|(&other, m)| other != id && m.name == new) {
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
            self.broadcast(id, &format!("[{name}] {text}"));
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
        let name = format!("guest{id}");
        let (outbox, inbox) = crossbeam_channel::bounded::<Arc<str>>(OUTBOX);
        // The member's own writer: the room never blocks on a slow socket.
        let mut out = req.try_clone()?;
        let writer = std::thread::Builder::new().name(format!("chat-out-{id}")).spawn(move || {
            for line in inbox {
                if out.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        })?;
        self.members.lock().insert(id, Member { name: name.clone(), outbox, stream: req.try_clone()? });
        self.send_to(id, &format!("* welcome, {name}; /name NAME to rename"));
        self.broadcast(id, &format!("* {name} joined"));
        let result = self.serve_member(id, req);
        // Not `if let Some(m) = self.members.lock().remove(..)`: the guard
        // would live through the block, and `broadcast` locks again.
        let left = self.members.lock().remove(&id);
        if let Some(m) = left {
            self.broadcast(id, &format!("* {} left", m.name));
        }
        // Dropping the member closed its outbox: the writer drains and ends.
        let _ = writer.join();
        result
    }
}

/// Binds the TCP room: a thread per member (members are long-lived).
pub fn tcp_server(addr: &str) -> io::Result<ThreadingTcpServer> {
    ThreadingTcpServer::bind(addr, TcpRoom::default())
}

/// A pool-served TCP room, capped at `max` members at once.
pub fn tcp_server_pooled(addr: &str, max: NonZeroUsize) -> io::Result<ThreadPoolTcpServer> {
    TcpServer::builder().strategy(ThreadPool::new(max)).max_connections(max.get()).bind(addr, TcpRoom::default())
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
            if &buf[..n] == b"ok: bye" {
                let _ = bye_tx.send(());
                break;
            }
            println!("{}", String::from_utf8_lossy(&buf[..n]));
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
            println!("{line}");
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
