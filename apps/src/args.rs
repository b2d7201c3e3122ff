//! What the applications' command lines share: reading flags and their
//! values, `--strategy` as [`AnyStrategy`]'s `FromStr` reads it, a
//! server's `[ADDR] [--strategy STRATEGY]`, connecting to an `ADDR`, and
//! `main`: logging, arguments that must be UTF-8, and the exit codes (2
//! for a bad command line, 1 for an error, else what the program says).

use std::io::{self, ErrorKind};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use socketserver::AnyStrategy;

/// How long [`connect`] tries each address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads `value` as a strategy (`event`, `pool`, `'pool(4-64)'`, ...).
///
/// # Errors
/// What `AnyStrategy` says: the choices and their grammar.
pub fn strategy(value: &str) -> Result<AnyStrategy, String> {
    value.parse().map_err(|e| format!("{e}"))
}

/// The arguments after a program's name, one at a time, with the value
/// each flag takes.
pub struct Flags<'a> {
    it: std::slice::Iter<'a, String>,
}

impl<'a> Flags<'a> {
    /// Over `args`.
    pub fn new(args: &'a [String]) -> Flags<'a> {
        Flags { it: args.iter() }
    }

    /// The value after `flag`.
    ///
    /// # Errors
    /// There is none.
    pub fn value(&mut self, flag: &str) -> Result<String, String> {
        self.it.next().cloned().ok_or_else(|| format!("{flag} needs a value"))
    }

    /// The strategy after `flag` (`--strategy`).
    ///
    /// # Errors
    /// There is none, or it is not a strategy.
    pub fn strategy(&mut self, flag: &str) -> Result<AnyStrategy, String> {
        strategy(&self.value(flag)?)
    }
}

impl<'a> Iterator for Flags<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.it.next().map(String::as_str)
    }
}

/// A server's arguments, `[ADDR] [--strategy STRATEGY]` in any order:
/// `default_addr` and `default` unless given.
///
/// # Errors
/// A message for the user: an unknown option, a second address, a bad
/// strategy.
pub fn addr_and_strategy(
    args: &[String],
    default_addr: &str,
    default: AnyStrategy,
) -> Result<(String, AnyStrategy), String> {
    let (mut addr, mut strategy) = (None, default);
    let mut flags = Flags::new(args);
    while let Some(arg) = flags.next() {
        match arg {
            "--strategy" => strategy = flags.strategy(arg)?,
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
            other if addr.is_none() => addr = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok((addr.unwrap_or_else(|| default_addr.to_string()), strategy))
}

/// Connects to `addr`, the first of its addresses that accepts within
/// [`CONNECT_TIMEOUT`].
///
/// # Errors
/// The address does not resolve, or no address accepts.
pub fn connect(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(ErrorKind::NotFound, format!("{addr}: no address"));
    for a in addr.to_socket_addrs().map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = io::Error::new(e.kind(), format!("cannot connect to {a}: {e}")),
        }
    }
    Err(last)
}

/// A program's `main`: logs on stderr (`info`; `RUST_LOG=debug` for more),
/// then `parse` the arguments and `run` what they ask. Exits with 2 and
/// the `usage` when they are not UTF-8 or `parse` refuses them, with 1 on
/// `run`'s error, else with the code `run` returns.
pub fn main<A>(
    program: &str,
    usage: &str,
    parse: fn(&[String]) -> Result<A, String>,
    run: fn(A) -> io::Result<i32>,
) -> ! {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = match std::env::args_os().skip(1).map(|a| a.into_string()).collect() {
        Ok(a) => a,
        Err(bad) => {
            eprintln!("{program}: argument {bad:?} is not valid UTF-8\n{usage}");
            std::process::exit(2);
        }
    };
    let args = match parse(&args) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{program}: {msg}\n{usage}");
            std::process::exit(2);
        }
    };
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::exit(1);
        }
    }
}
