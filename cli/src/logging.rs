//! The servers' logger: env_logger's format and filters (`--log-level`,
//! `RUST_LOG`, `RUST_LOG_STYLE`), but a log call never waits on stderr.
//!
//! env_logger formats each record and hands it, whole, to a bounded queue;
//! one writer thread drains the queue to stderr. When stderr does not keep
//! up (a pipe nobody reads, a stopped terminal) the queue fills and further
//! lines are dropped and counted, and the writer says "N log lines dropped"
//! as soon as it can write again. Serving and shutdown never wait on a
//! write: a thread that logs from the accept loop, a worker or the signal
//! handler takes a lock only long enough to queue the line.
//!
//! At exit, [`flush`] waits (bounded) for the writer to write what is
//! queued. A stderr that is closed (EPIPE) costs a failed write per batch,
//! nothing more: SIGPIPE is ignored in Rust programs.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use env_logger::WriteStyle;

/// Lines the queue holds: ~100 KB of typical lines. A burst beyond it is
/// dropped (and counted), never waited for.
const QUEUE_LINES: usize = 1024;
/// The writer writes up to this much at once.
const BATCH_BYTES: usize = 64 * 1024;

enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it has been written (or
    /// failed to be).
    Flush(Sender<()>),
}

struct Queue {
    tx: Sender<Message>,
    /// Lines dropped since the writer last reported them.
    dropped: Arc<AtomicU64>,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

impl Queue {
    /// Queues `line` if there is room; otherwise counts it as dropped.
    fn offer(&self, line: Vec<u8>) {
        match self.tx.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// What env_logger writes each formatted record to, under its own lock:
/// the record's bytes, then a flush, which queues them as one line.
struct QueueWriter {
    pending: Vec<u8>,
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty()
            && let Some(queue) = QUEUE.get()
        {
            queue.offer(std::mem::take(&mut self.pending));
        }
        self.pending.clear();
        Ok(())
    }
}

/// Installs the logger for the whole process: records at `level` or above
/// (or as `RUST_LOG` says) are formatted by env_logger and written to
/// stderr by a thread of their own.
pub fn init(level: log::LevelFilter) -> io::Result<()> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let writer_dropped = Arc::clone(&dropped);
    std::thread::Builder::new()
        .name("log writer".into())
        .spawn(move || write_out(&rx, &writer_dropped))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start the log writer thread: {e}")))?;
    if QUEUE.set(Queue { tx, dropped }).is_err() {
        return Err(io::Error::other("the logger is already installed"));
    }
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).parse_default_env();
    // Colours as env_logger gives them on stderr (a terminal, NO_COLOR,
    // CLICOLOR_FORCE, RUST_LOG_STYLE), decided here: through a pipe target
    // env_logger would never colour.
    builder.write_style(write_style());
    builder.target(env_logger::Target::Pipe(Box::new(QueueWriter { pending: Vec::new() })));
    builder.try_init().map_err(|e| io::Error::other(format!("cannot install the logger: {e}")))
}

fn write_style() -> WriteStyle {
    match std::env::var("RUST_LOG_STYLE").as_deref() {
        Ok("always") => WriteStyle::Always,
        Ok("never") => WriteStyle::Never,
        _ => match anstream::AutoStream::choice(&io::stderr()) {
            anstream::ColorChoice::Never => WriteStyle::Never,
            _ => WriteStyle::Always,
        },
    }
}

/// The writer thread: lines to stderr, in batches, then a report of what
/// was dropped meanwhile. It ends when the process does.
fn write_out(rx: &Receiver<Message>, dropped: &AtomicU64) {
    // fd 2 itself, not `io::stderr()`: a write blocked on a full pipe must
    // not hold the lock that anything else writing to stderr (a panic
    // message, the last error line) takes. Rust opens /dev/null on a closed
    // fd 2 before main, so it is always a descriptor of ours.
    // SAFETY: fd 2 stays open for the life of the process; ManuallyDrop
    // never closes it.
    let mut stderr = ManuallyDrop::new(unsafe { File::from_raw_fd(2) });
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.clear();
        let mut lines = 0u64;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => {
                    batch.extend_from_slice(&line);
                    lines += 1;
                }
                Message::Flush(ack) => acks.push(ack),
            }
            if batch.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() && stderr.write_all(&batch).is_err() {
            // Closed, or non-blocking and full: those lines are lost too.
            dropped.fetch_add(lines, Relaxed);
        }
        let lost = dropped.swap(0, Relaxed);
        if lost > 0 {
            let report = format!("socketserver: {lost} log lines dropped (stderr did not keep up)\n");
            if stderr.write_all(report.as_bytes()).is_err() {
                dropped.fetch_add(lost, Relaxed);
            }
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// Waits at most `within` for every line queued so far to be written. Does
/// nothing if the logger is not installed.
pub fn flush(within: Duration) {
    let Some(queue) = QUEUE.get() else { return };
    let deadline = Instant::now() + within;
    let (ack, acked) = crossbeam_channel::bounded(1);
    if queue.tx.send_deadline(Message::Flush(ack), deadline).is_ok() {
        let _ = acked.recv_deadline(deadline);
    }
}

/// Writes `line` and a newline to stderr, for the last words of the
/// process: queued behind the log lines if the logger is installed (so it
/// comes after them; waiting at most `within` for room), or written at
/// once. Errors are ignored: there is nowhere left to report them.
pub fn eprintln(line: &str, within: Duration) {
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    match QUEUE.get() {
        Some(queue) => {
            if queue.tx.send_timeout(Message::Line(bytes), within).is_err() {
                queue.dropped.fetch_add(1, Relaxed);
            }
        }
        None => {
            let _ = io::stderr().write_all(&bytes);
        }
    }
}
