//! The crate's modules form layers: each uses only modules below it, and no
//! module uses one that uses it back. This reads `src/` and checks it, so a
//! change that adds an import upwards fails here, not in review.
//! (ARCHITECTURE.md draws the layers.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules, bottom layer first.
const LAYERS: &[&[&str]] = &[
    &["deadline", "escaped"],
    &["sys", "error", "framing", "handler", "stats", "tls"],
    &["net"],
    &["proxy", "activation"],
    &["shutdown"],
    &["signals"],
    &["handle"],
    &["request"],
    &["options", "service"],
    &["strategy"],
    &["loops"],
    &["transport"],
    &["server"],
    &["builder", "servers"],
];

/// The top-level modules that `src/<name>` (a file or a folder) refers to
/// as `crate::<module>`, in code and in `use crate::{a, b::c}` groups.
fn uses(src: &Path, name: &str) -> BTreeSet<String> {
    let mut files = Vec::new();
    let file = src.join(format!("{name}.rs"));
    if file.exists() {
        files.push(file);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("tests.rs") {
                // (A module's tests in a file of their own use what they like.)
                files.push(p);
            }
        }
    }
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may use the whole crate: they sit at the end of a file.
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        // Doc comments may link anywhere (`[Builder](crate::Builder)`): only code counts.
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let mut rest = code.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let head: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !head.is_empty() {
                        out.insert(head);
                    }
                }
            } else {
                let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.insert(head);
            }
        }
    }
    out.remove(name);
    out
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, usize> =
        LAYERS.iter().enumerate().flat_map(|(i, mods)| mods.iter().map(move |m| (*m, i))).collect();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let p = entry.path();
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        if stem != "lib" && stem != "bin" && (p.is_dir() || p.extension().is_some_and(|x| x == "rs")) {
            listed.insert(stem);
        }
    }
    let known: BTreeSet<String> = layer.keys().map(|s| s.to_string()).collect();
    assert_eq!(listed, known, "every module in src/ has a layer in LAYERS, and only those");
    let mut wrong = Vec::new();
    for (&name, &at) in &layer {
        for used in uses(&src, name) {
            match layer.get(used.as_str()) {
                Some(&l) if l < at => {}
                Some(_) => wrong.push(format!("{name} uses {used}, which is not below it")),
                None => wrong.push(format!("{name} uses crate::{used}, which is not a module (use the module path)")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Inside `loops`, the event strategy and the accept loop share only
/// `admit` (taking one connection): the event loop never reaches into the
/// accept loop, so the two are no circle (`event` used `accept_request` from
/// `accept`, which called `event::serve`).
#[test]
fn the_event_loop_does_not_use_the_accept_loop() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/loops/event");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if !code.starts_with("//") && (code.contains("loops::accept") || code.contains("super::accept")) {
                offenders.push(format!("{}:{}: {code}", entry.path().display(), i + 1));
            }
        }
    }
    assert!(!dir.join("../event.rs").exists(), "the event loop is a directory, a file per job");
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}
