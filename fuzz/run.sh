#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; the first
# argument overrides) and fails on the first crash. cargo-fuzz passes
# nightly flags to rustc; on stable, RUSTC_BOOTSTRAP=1 lets it. Installs
# cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in length_prefixed lines time_format proxy_header; do
    echo "== fuzz $target for ${seconds}s"
    if ! cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=1024 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target failed" >&2
        exit 1
    fi
    grep -E "^Done" "$log" || true
done
