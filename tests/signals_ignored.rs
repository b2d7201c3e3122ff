//! A signal ignored when the process started stays ignored: `nohup` sets
//! SIGHUP to be ignored so that logging out does not stop the program, and
//! installing the shutdown hub must not undo that. Its own file: it changes
//! this process's signal dispositions.

mod util;

use socketserver::TcpServer;
use util::*;

fn disposition(sig: libc::c_int) -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is a valid value; a null new action
    // only reads the current one.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer, null `act`.
    assert_eq!(unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) }, 0);
    old.sa_sigaction
}

#[test]
fn a_signal_ignored_at_start_stays_ignored_and_the_others_are_taken() {
    // As `nohup` leaves it.
    // SAFETY: SIG_IGN is a valid disposition for SIGHUP.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let server = TcpServer::bind("127.0.0.1:0", echo_lines).unwrap();
    server.handle().shutdown_on_signal().unwrap();
    assert_eq!(disposition(libc::SIGHUP), libc::SIG_IGN, "SIGHUP is ignored no more");
    assert_ne!(disposition(libc::SIGTERM), libc::SIG_DFL, "SIGTERM is not taken");
    assert_ne!(disposition(libc::SIGINT), libc::SIG_DFL, "SIGINT is not taken");
    // A hang-up changes nothing: still serving.
    // SAFETY: signalling our own process; SIGHUP is ignored.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    let running = run(server);
    let mut c = tcp_connect(running.inet());
    assert_eq!(round_trip(&mut c, b"still here\n"), b"still here\n");
    assert!(!running.handle.is_shutting_down());
    std::io::Write::write_all(&mut c, b"quit\n").unwrap();
    running.stop().unwrap();
}
