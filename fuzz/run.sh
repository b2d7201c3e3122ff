#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; first
# argument overrides). cargo-fuzz needs nightly flags: on stable,
# RUSTC_BOOTSTRAP=1 lets it pass them. Installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in length_prefixed lines time_format; do
    echo "== fuzz $target for ${seconds}s"
    cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=1024 2>&1 | grep -E "^(Done|==|SUMMARY|thread)" || true
    # cargo fuzz exits non-zero on a crash; re-check so the script fails.
    cargo fuzz run "$target" -- -runs=0 >/dev/null 2>&1
done
