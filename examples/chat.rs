//! **Idea: state shared by all connections, joined in `setup` and left in
//! `finish`.**
//!
//! The tutorials' chat room over TCP: each line a member sends goes to
//! every other member as `[guestN] line`. The handler holds the room (the
//! members' connections, under a mutex); `setup` seats a newcomer, `handle`
//! reads its lines, and `finish` — which runs however `handle` ended —
//! takes it out, so a member who vanishes is never written to again.
//!
//! ```text
//! cargo run --example chat                     # tcp 127.0.0.1:9004
//! nc 127.0.0.1 9004                            # in two terminals or more
//! ```
//! Each member holds a thread while connected (`Threading`). Writing to a
//! member that does not read would stall the sender: each write here may
//! wait 1 s, then that member is dropped. The hardened room, in
//! `apps/src/chat.rs`, parks idle members with no thread, writes from one
//! postman thread that never waits, limits each member's rate and each
//! peer's connections, and has a UDP relay between named peers too.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socketserver::{RequestHandler, Stream, StreamRequest, TcpServer, Threading};

/// The longest line a member may send.
const MAX_LINE: u64 = 4096;

#[derive(Default)]
struct Room {
    /// Each member's id and a handle to its connection, to write to it.
    members: Mutex<HashMap<u64, Stream>>,
    next_id: AtomicU64,
}

impl Room {
    /// Sends `line` to every member but `from`; one that cannot take it
    /// within its write timeout is shut out (its own `handle` then ends).
    fn broadcast(&self, from: u64, line: &str) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|&id, stream| {
            let mut stream: &Stream = stream;
            if id == from || stream.write_all(line.as_bytes()).is_ok() {
                return true;
            }
            let _ = stream.shutdown(Shutdown::Both);
            false
        });
    }
}

/// Which member a connection is: kept in the request, from `setup` to
/// `finish` (`None`: not seated).
#[derive(Default)]
struct Seat(Option<u64>);

impl RequestHandler<StreamRequest> for Room {
    fn setup(&self, req: &mut StreamRequest) -> io::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = req.try_clone()?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        writeln!(req, "* welcome, guest{id}")?;
        self.broadcast(id, &format!("* guest{id} joined\n"));
        self.members.lock().unwrap_or_else(|e| e.into_inner()).insert(id, stream);
        *req.state_mut::<Seat>() = Seat(Some(id));
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let Some(&Seat(Some(id))) = req.state::<Seat>() else { return Ok(()) };
        let mut line = String::new();
        // At most MAX_LINE bytes a line: a member cannot fill our memory.
        while (&mut *req).take(MAX_LINE).read_line(&mut line)? > 0 {
            let text = line.trim_end();
            // Shown escaped: no member can move another's cursor or recolour
            // its terminal with control characters.
            self.broadcast(id, &format!("[guest{id}] {}\n", socketserver::Escaped(text.as_bytes())));
            line.clear();
        }
        Ok(())
    }

    fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
        if let Some(Seat(Some(id))) = req.take_state::<Seat>() {
            self.members.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            self.broadcast(id, &format!("* guest{id} left\n"));
        }
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9004".into());
    // A thread per member, at most 64 members at once.
    let server =
        TcpServer::builder().strategy(Threading::new().max_threads(64)).bind(addr.as_str(), Room::default())?;
    println!("listening {}", server.server_address());
    server.handle().shutdown_on_signal()?;
    server.serve_forever()
}
