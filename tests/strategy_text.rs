//! `AnyStrategy` as text: `FromStr` is the inverse of `Display` (every
//! strategy written and read back is itself; every text `Display` writes,
//! read and written again, is itself), reads the plain names users type,
//! and a bad text's error names it and lists the choices.

use std::time::Duration;

use proptest::prelude::*;
use socketserver::strategy::DEFAULT_STACK_SIZE;
use socketserver::{AnyStrategy, Event, Forking, Overflow, Synchronous, ThreadPool, Threading};

fn parse(s: &str) -> AnyStrategy {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn plain_names_are_the_defaults() {
    let cases: [(&str, AnyStrategy); 6] = [
        ("sync", Synchronous.into()),
        ("synchronous", Synchronous.into()),
        ("threading", Threading::new().into()),
        ("pool", ThreadPool::default().into()),
        ("forking", Forking::new().into()),
        ("event", Event::new().into()),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text), want, "{text}");
    }
}

#[test]
fn counts_and_settings_are_read() {
    let cases: [(&str, AnyStrategy); 9] = [
        ("threading(64)", Threading::new().max_threads(64).into()),
        ("pool(4)", ThreadPool::new(4).into()),
        ("pool(4-64)", ThreadPool::new(4).max_workers(64).into()),
        ("forking(8)", Forking::new().max_children(8).into()),
        ("event(2)", Event::new().pollers(2).max_workers(2).into()),
        ("event(2-32)", Event::new().pollers(2).max_workers(32).into()),
        (
            "pool(4-64 queue=0 overflow=reject keep-alive=1500ms stack=1M)",
            ThreadPool::new(4)
                .max_workers(64)
                .queue(0)
                .overflow(Overflow::Reject)
                .keep_alive(Duration::from_millis(1500))
                .stack_size(1 << 20)
                .into(),
        ),
        ("threading(stack=256K)", Threading::new().stack_size(256 << 10).into()),
        // Spaces are separators however many; defaults may be written.
        ("event(1-8  keep-alive=10s stack=512K)", Event::new().pollers(1).max_workers(8).into()),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text), want, "{text}");
    }
}

/// What `Display` writes, read back and written again, is the same text.
#[test]
fn display_forms_read_back_to_themselves() {
    for text in [
        "sync",
        "threading",
        "threading(64)",
        "threading(stack=1M)",
        "threading(3 stack=1000)",
        "pool(4)",
        "pool(4-64)",
        "pool(1-2 queue=7 overflow=reject keep-alive=3us stack=2G)",
        "pool(2-256 keep-alive=0s)",
        "forking(40)",
        "event(2-256)",
        "event(3 keep-alive=7ns)",
        "event(1-8 keep-alive=18446744073709551615999999999ns)",
    ] {
        assert_eq!(parse(text).to_string(), text);
    }
    // A plain name is written with what it stands for.
    assert_eq!(parse("synchronous").to_string(), "sync");
    assert_eq!(parse("forking").to_string(), "forking(40)");
    let pool = parse("pool"); // its counts depend on the CPUs
    assert!(pool.to_string().starts_with("pool(") && parse(&pool.to_string()) == pool, "{pool}");
}

#[test]
fn a_bad_text_is_an_error_naming_it_and_listing_the_choices() {
    for (text, why) in [
        ("", "no strategy is called \"\""),
        ("fork", "no strategy is called \"fork\""),
        ("Pool", "no strategy is called \"Pool\""),
        ("pool:4", "no strategy is called \"pool:4\""),
        ("pool(4", "no `)`"),
        ("pool()", "nothing between"),
        ("pool( )", "nothing between"),
        ("pool(0)", "\"0\": a count is at least 1"),
        ("pool(0-4)", "\"0-4\": a count is at least 1"),
        ("event(8-4)", "8 is more than 4"),
        ("pool(4x)", "a count is N or N-M"),
        ("pool(4-+8)", "a count is N or N-M"),
        ("pool(queue=+1)", "queue=+1: not a number"),
        ("pool(stack=+1K)", "stack=+1K: give bytes"),
        ("pool(99999999999999999999999)", "a count is N or N-M"),
        ("threading(1-2)", "threading takes one count, not a range"),
        ("forking(2-3)", "forking takes one count"),
        ("sync(1)", "sync takes no count"),
        ("sync(stack=1M)", "sync takes no settings"),
        ("forking(8 stack=1M)", "forking takes no settings"),
        ("event(queue=1)", "event takes the settings keep-alive=, stack=, not queue="),
        ("threading(overflow=reject)", "threading takes the settings stack=, not overflow="),
        ("pool(4 queue)", "\"queue\" is not a setting"),
        ("pool(4,queue=1)", "a count is N or N-M"),
        ("pool(queue=x)", "queue=x: not a number"),
        ("pool(queue=1 queue=2)", "queue= is given twice"),
        ("pool(overflow=drop)", "overflow=drop: give block or reject"),
        ("pool(keep-alive=1.5s)", "keep-alive=1.5s: give a whole number"),
        ("pool(keep-alive=10)", "keep-alive=10: give a whole number"),
        ("pool(keep-alive=18446744073709551616s)", "keep-alive=18446744073709551616s"),
        ("pool(stack=1T)", "stack=1T: give bytes"),
        ("pool(stack=99999999999G)", "stack=99999999999G"),
    ] {
        let e = text.parse::<AnyStrategy>().expect_err(text);
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{text:?} is not a strategy: ")), "{text}: {msg}");
        assert!(msg.contains(why), "{text}: {msg}");
        assert!(msg.contains("sync, threading, threading(N), pool, pool(N), pool(N-M), forking"), "{text}: {msg}");
        let _: &dyn std::error::Error = &e;
    }
}

fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::from_secs(10)),
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (0u64..100_000).prop_map(Duration::from_millis),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn stacks() -> impl Strategy<Value = usize> {
    prop_oneof![Just(DEFAULT_STACK_SIZE), Just(0), (1usize..4096).prop_map(|k| k << 10), any::<usize>()]
}

/// `least..=most`, both at least 1.
fn counts() -> impl Strategy<Value = (usize, usize)> {
    let count = prop_oneof![1usize..300, 1usize..=usize::MAX];
    (count.clone(), count).prop_map(|(a, b)| (a.min(b), a.max(b)))
}

fn any_strategy() -> impl Strategy<Value = AnyStrategy> {
    prop_oneof![
        Just(AnyStrategy::from(Synchronous)),
        (proptest::option::of(1usize..=usize::MAX), stacks()).prop_map(|(cap, stack)| {
            let t = Threading::new().stack_size(stack);
            cap.map_or(t.clone(), |n| t.max_threads(n)).into()
        }),
        (counts(), prop_oneof![Just(256usize), any::<usize>()], any::<bool>(), durations(), stacks()).prop_map(
            |((least, most), queue, reject, idle, stack)| {
                let overflow = if reject { Overflow::Reject } else { Overflow::Block };
                let p = ThreadPool::new(least).max_workers(most).queue(queue).overflow(overflow);
                p.keep_alive(idle).stack_size(stack).into()
            }
        ),
        (1usize..=usize::MAX).prop_map(|n| Forking::new().max_children(n).into()),
        (counts(), durations(), stacks()).prop_map(|((least, most), idle, stack)| {
            Event::new().pollers(least).max_workers(most).keep_alive(idle).stack_size(stack).into()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every strategy with valid settings, written and read back, is itself;
    /// and what was written reads and writes back to the same text.
    #[test]
    fn every_strategy_written_reads_back_as_itself(x in any_strategy()) {
        let text = x.to_string();
        let back: AnyStrategy = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&back, &x, "{}", text);
        prop_assert_eq!(back.to_string(), text);
    }
}

/// What a command checks a strategy read from text against: the most
/// threads it runs handlers on, or none when nothing bounds them.
#[test]
fn max_threads_is_the_most_threads_a_strategy_runs_handlers_on() {
    for (text, want) in [
        ("sync", Some(1)),
        ("threading", None),
        ("threading(500)", Some(500)),
        ("pool(4-64)", Some(64)),
        ("pool(8)", Some(8)),
        ("forking(8)", None),
        ("event(2-32)", Some(32)),
    ] {
        assert_eq!(parse(text).max_threads(), want, "{text}");
    }
}
