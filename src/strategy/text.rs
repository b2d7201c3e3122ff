//! A strategy as text, e.g. from a command-line flag: `Display` writes
//! every setting that is not the default, `FromStr` reads that back (each
//! the inverse of the other) and the plain names users type as well. The
//! grammar is in [`AnyStrategy`]'s documentation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{
    AnyStrategy, DEFAULT_KEEP_ALIVE, DEFAULT_MAX_CHILDREN, DEFAULT_QUEUE, DEFAULT_STACK_SIZE, Event, Forking, Overflow,
    Synchronous, ThreadPool, Threading,
};

/// What a text may be, as a bad one's error lists it.
const CHOICES: &str = "sync, threading, threading(N), pool, pool(N), pool(N-M), forking, forking(N), event, \
                       event(N) or event(N-M), settings after the count (e.g. pool(4-64 queue=128 \
                       overflow=reject keep-alive=30s stack=1M))";

impl fmt::Display for AnyStrategy {
    /// `sync`, `threading`, `threading(N)`, `pool(N-M)` (`pool(N)` when
    /// N = M), `forking(N)`, `event(N-M)`; then, inside the parentheses,
    /// each setting that is not the default (`threading(stack=1M)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        let name = match self {
            AnyStrategy::Synchronous(_) => "sync",
            AnyStrategy::Threading(t) => {
                items.extend(t.max_threads.map(|n| n.to_string()));
                push_stack(&mut items, t.stack_size);
                "threading"
            }
            AnyStrategy::ThreadPool(p) => {
                items.push(counts(p.min, p.max));
                if p.queue != DEFAULT_QUEUE {
                    items.push(format!("queue={}", p.queue));
                }
                if p.overflow == Overflow::Reject {
                    items.push("overflow=reject".into());
                }
                push_keep_alive(&mut items, p.keep_alive);
                push_stack(&mut items, p.stack_size);
                "pool"
            }
            AnyStrategy::Forking(c) => {
                items.push(c.max_children.to_string());
                "forking"
            }
            AnyStrategy::Event(e) => {
                items.push(counts(e.pollers, e.max_workers));
                push_keep_alive(&mut items, e.keep_alive);
                push_stack(&mut items, e.stack_size);
                "event"
            }
        };
        f.write_str(name)?;
        if !items.is_empty() {
            write!(f, "({})", items.join(" "))?;
        }
        Ok(())
    }
}

macro_rules! display_as_any {
    ($($t:ident),*) => {$(
        /// As [`AnyStrategy`] writes it: the text its `FromStr` reads back.
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&AnyStrategy::from(self.clone()), f)
            }
        }
    )*};
}
display_as_any!(Synchronous, Threading, ThreadPool, Forking, Event);

fn counts(least: usize, most: usize) -> String {
    if least == most { least.to_string() } else { format!("{least}-{most}") }
}

fn push_keep_alive(items: &mut Vec<String>, idle: Duration) {
    if idle != DEFAULT_KEEP_ALIVE {
        items.push(format!("keep-alive={}", duration_text(idle)));
    }
}

fn push_stack(items: &mut Vec<String>, bytes: usize) {
    if bytes != DEFAULT_STACK_SIZE {
        items.push(format!("stack={}", size_text(bytes)));
    }
}

/// `10s`, `1500ms`, `20us`, `7ns`: the largest unit that loses nothing.
fn duration_text(d: Duration) -> String {
    let ns = d.as_nanos();
    let unit =
        [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")].into_iter().find(|(n, _)| ns.is_multiple_of(*n));
    match unit {
        Some((n, unit)) => format!("{}{unit}", ns / n),
        None => format!("{ns}ns"),
    }
}

/// `1G`, `512K`, `1000`: the largest power of 1024 that loses nothing.
fn size_text(bytes: usize) -> String {
    let unit = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
        .into_iter()
        .find(|(n, _)| bytes != 0 && bytes.is_multiple_of(*n));
    match unit {
        Some((n, unit)) => format!("{}{unit}", bytes / n),
        None => bytes.to_string(),
    }
}

/// A text that is not a strategy: it names the text, says what is wrong
/// with it and lists what a strategy may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseStrategyError {
    value: String,
    reason: String,
}

impl fmt::Display for ParseStrategyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a strategy: {}; give {CHOICES}", self.value, self.reason)
    }
}

impl std::error::Error for ParseStrategyError {}

impl FromStr for AnyStrategy {
    type Err = ParseStrategyError;

    /// Reads what [`Display`](fmt::Display) writes, and the plain names:
    /// see [`AnyStrategy`] for the grammar.
    fn from_str(s: &str) -> Result<AnyStrategy, ParseStrategyError> {
        parse(s).map_err(|reason| ParseStrategyError { value: s.to_string(), reason })
    }
}

/// What is between the parentheses: the count(s), then settings.
#[derive(Default)]
struct Inside<'a> {
    /// `N` (`single`) or `N-M`.
    counts: Option<(usize, usize, bool)>,
    settings: Vec<(&'a str, &'a str)>,
}

fn parse(s: &str) -> Result<AnyStrategy, String> {
    let (name, inside) = match s.split_once('(') {
        None => (s, Inside::default()),
        Some((name, rest)) => (name, inside(rest.strip_suffix(')').ok_or("no `)` at its end")?)?),
    };
    let strategy: AnyStrategy = match name {
        "sync" | "synchronous" => {
            inside.allow(name, Takes::Nothing, &[])?;
            Synchronous.into()
        }
        "threading" => {
            inside.allow(name, Takes::One, &["stack"])?;
            let mut t = Threading::new();
            t.max_threads = inside.counts.map(|(n, _, _)| n);
            t.stack_size = inside.stack()?.unwrap_or(t.stack_size);
            t.into()
        }
        "forking" => {
            inside.allow(name, Takes::One, &[])?;
            Forking { max_children: inside.counts.map_or(DEFAULT_MAX_CHILDREN, |(n, _, _)| n) }.into()
        }
        "pool" => {
            inside.allow(name, Takes::Range, &["queue", "overflow", "keep-alive", "stack"])?;
            let mut p = ThreadPool::default();
            if let Some((least, most, _)) = inside.counts {
                (p.min, p.max) = (least, most);
            }
            for &(key, value) in &inside.settings {
                match key {
                    "queue" => p.queue = whole(value).ok_or_else(|| format!("queue={value}: not a number"))?,
                    "overflow" if value == "block" => p.overflow = Overflow::Block,
                    "overflow" if value == "reject" => p.overflow = Overflow::Reject,
                    "overflow" => return Err(format!("overflow={value}: give block or reject")),
                    _ => {}
                }
            }
            p.keep_alive = inside.keep_alive()?.unwrap_or(p.keep_alive);
            p.stack_size = inside.stack()?.unwrap_or(p.stack_size);
            p.into()
        }
        "event" => {
            inside.allow(name, Takes::Range, &["keep-alive", "stack"])?;
            let mut e = Event::default();
            if let Some((least, most, _)) = inside.counts {
                (e.pollers, e.max_workers) = (least, most);
            }
            e.keep_alive = inside.keep_alive()?.unwrap_or(e.keep_alive);
            e.stack_size = inside.stack()?.unwrap_or(e.stack_size);
            e.into()
        }
        _ => return Err(format!("no strategy is called {name:?}")),
    };
    Ok(strategy)
}

/// Splits what is between the parentheses: a count or counts first (`4`,
/// `4-64`), then `key=value` settings, apart by spaces.
fn inside(text: &str) -> Result<Inside<'_>, String> {
    let mut words = text.split(' ').filter(|w| !w.is_empty()).peekable();
    if words.peek().is_none() {
        return Err("nothing between the parentheses".into());
    }
    let mut inside = Inside::default();
    if let Some(first) = words.next_if(|w| w.starts_with(|c: char| c.is_ascii_digit())) {
        let number = |n: &str| match whole(n) {
            Some(0) => Err(format!("{first:?}: a count is at least 1")),
            Some(n) => Ok(n),
            None => Err(format!("{first:?}: a count is N or N-M")),
        };
        inside.counts = Some(match first.split_once('-') {
            None => (number(first)?, number(first)?, true),
            Some((least, most)) => {
                let (least, most) = (number(least)?, number(most)?);
                if least > most {
                    return Err(format!("{first:?}: {least} is more than {most}"));
                }
                (least, most, false)
            }
        });
    }
    for word in words {
        let (key, value) = word.split_once('=').ok_or_else(|| format!("{word:?} is not a setting (key=value)"))?;
        if inside.settings.iter().any(|(k, _)| *k == key) {
            return Err(format!("{key}= is given twice"));
        }
        inside.settings.push((key, value));
    }
    Ok(inside)
}

/// The counts a kind takes: none (`sync`), one (`threading(N)`,
/// `forking(N)`), or a range (`pool(N-M)`, or `pool(N)` for N to N).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    One,
    Range,
}

impl Inside<'_> {
    /// Refuses counts `name` does not take, and settings not in `keys`.
    fn allow(&self, name: &str, takes: Takes, keys: &[&str]) -> Result<(), String> {
        match (self.counts, takes) {
            (Some(_), Takes::Nothing) => return Err(format!("{name} takes no count")),
            (Some((_, _, false)), Takes::One) => return Err(format!("{name} takes one count, not a range")),
            _ => {}
        }
        match self.settings.iter().find(|(key, _)| !keys.contains(key)) {
            None => Ok(()),
            Some((key, _)) if keys.is_empty() => Err(format!("{name} takes no settings ({key}=)")),
            Some((key, _)) => Err(format!("{name} takes the settings {}=, not {key}=", keys.join("=, "))),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// `keep-alive=`: a whole number of `s`, `ms`, `us` or `ns`.
    fn keep_alive(&self) -> Result<Option<Duration>, String> {
        let Some(value) = self.get("keep-alive") else { return Ok(None) };
        let bad = || format!("keep-alive={value}: give a whole number of s, ms, us or ns (e.g. 10s, 500ms)");
        let digits = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let per_unit: u128 = match &value[digits..] {
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" => 1_000,
            "ns" => 1,
            _ => return Err(bad()),
        };
        let ns = value[..digits].parse::<u128>().ok().and_then(|n| n.checked_mul(per_unit)).ok_or_else(bad)?;
        let secs = u64::try_from(ns / 1_000_000_000).map_err(|_| bad())?;
        Ok(Some(Duration::new(secs, (ns % 1_000_000_000) as u32)))
    }

    /// `stack=`: bytes, or `K`, `M`, `G` (powers of 1024).
    fn stack(&self) -> Result<Option<usize>, String> {
        let Some(value) = self.get("stack") else { return Ok(None) };
        let (digits, unit) = match value.strip_suffix(['K', 'M', 'G']) {
            Some(digits) => (digits, 1 << (10 * (1 + "KMG".find(&value[digits.len()..]).unwrap_or_default()))),
            None => (value, 1),
        };
        let bytes = whole(digits).and_then(|n| n.checked_mul(unit));
        Ok(Some(bytes.ok_or_else(|| format!("stack={value}: give bytes, or K, M or G (e.g. 512K)"))?))
    }
}

/// Decimal digits only (`str::parse` would take a `+` too).
fn whole(digits: &str) -> Option<usize> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
