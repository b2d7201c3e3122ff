//! The `socketserver` command: the bundled echo and time servers, a line
//! client, and the strategy benchmark.

mod bench;
mod client;
mod logging;
mod restart;
mod serve;
mod signals;
mod tls;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

/// Python's socketserver, rebuilt in Rust: bundled servers, a client, benchmarks.
#[derive(Debug, Parser)]
#[command(name = "socketserver", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo server: every byte (TCP, Unix) or datagram (UDP, Unix-datagram)
    /// comes back unchanged. Default: TCP and UDP on 127.0.0.1:9999.
    Echo(serve::EchoArgs),
    /// Time server: each request is a strftime format, the reply the local
    /// time rendered with it (empty request: "%Y-%m-%d %X"). Default: TCP
    /// and UDP on 127.0.0.1:9000.
    Time(serve::TimeArgs),
    /// Sends each line of stdin to a server and prints each reply as a line.
    Client(client::ClientArgs),
    /// Load generator and strategy benchmark: requests/s, p50/p99/p99.9
    /// latency, errors and unserved clients against a server (--addr) or
    /// in-process servers for each strategy (--spawn).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = match &cli.command {
        Command::Echo(args) => Some(("echo", &args.serve.options)),
        Command::Time(args) => Some(("time", &args.serve.options)),
        _ => None,
    };
    if let Some((name, options)) = options
        && let Err(msg) = options.check()
    {
        // A usage error like clap's own, with the subcommand's usage line.
        let mut cli = Cli::command();
        cli.build();
        let kind = clap::error::ErrorKind::ArgumentConflict;
        match cli.find_subcommand_mut(name) {
            Some(sub) => sub.error(kind, msg).exit(),
            None => cli.error(kind, msg).exit(),
        }
    }
    let result = match cli.command {
        Command::Echo(args) => serve::run(args.bundled(), args.serve),
        Command::Time(args) => serve::run(serve::Bundled::Time(args.request_timeout), args.serve),
        Command::Client(args) => client::run(args),
        Command::Bench(args) => bench::run(args),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::eprintln(&format!("socketserver: {e}"), EXIT_FLUSH);
            // A file named on the command line that cannot be used: a usage
            // error's code (clap's own is 2), nothing was served.
            if e.get_ref().is_some_and(|inner| inner.is::<ConfigError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    };
    // What the servers logged last (the signal, the drain) is still queued:
    // written now, unless stderr takes nothing for EXIT_FLUSH.
    logging::flush(EXIT_FLUSH);
    code
}

/// An error in what the command line named (a certificate file that
/// cannot be read): the command exits with 2, as for a usage error.
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub fn config_error(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, ConfigError(msg))
}

/// How long the exit waits for stderr to take the log lines still queued.
const EXIT_FLUSH: Duration = Duration::from_secs(2);
