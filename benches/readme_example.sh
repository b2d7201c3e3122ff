#!/usr/bin/env bash
# The README's first example, built as written, under load from
# `socketserver bench tcp-line`: the latency of one request, p50/p99.
# The example uses ThreadingTcpServer; each other strategy is the same
# program with `TcpServer::builder().strategy(..)` in its place.
#
#   benches/readme_example.sh            # the library of this checkout
#   benches/readme_example.sh 62b5256    # the library at another commit
#
# PIN=1 pins the server to CPU 0 and the load generator to CPU 1.
# CONNECTIONS (default 1), SECONDS_PER_CELL (default 3), STRATEGIES
# (default "threading sync pool forking event").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-}
conns=${CONNECTIONS:-1}
secs=${SECONDS_PER_CELL:-3}
strategies=${STRATEGIES:-threading sync pool forking event}
work=$(mktemp -d /tmp/readme-example.XXXXXX)
trap 'rm -rf "$work"; [[ -n ${wt:-} ]] && git -C "$repo" worktree remove --force "$wt"' EXIT

lib=$repo
label=${rev:-$(git -C "$repo" rev-parse --short HEAD)}
[[ -z $rev && -n $(git -C "$repo" status --porcelain -- src) ]] && label+="+changes"
if [[ -n $rev ]]; then
    wt=$work/lib
    git -C "$repo" worktree add --detach "$wt" "$rev" >/dev/null 2>&1
    lib=$wt
fi

# The first Rust block of the README, as a newcomer copies it.
awk '/^```rust/ {on = 1; next} on && /^```/ {exit} on' "$repo/README.md" >"$work/readme.rs"
grep -q 'ThreadingTcpServer::bind("127.0.0.1:9999"' "$work/readme.rs" || {
    echo "the README's first example no longer binds a ThreadingTcpServer on 127.0.0.1:9999: update this script" >&2
    exit 1
}

mkdir -p "$work/proj/src/bin"
cat >"$work/proj/Cargo.toml" <<EOF
[package]
name = "readme-example"
version = "0.0.0"
edition = "2024"
[dependencies]
socketserver = { path = "$lib" }
[profile.release]
debug = false
[workspace]
EOF
for s in $strategies; do
    case $s in
        threading) cp "$work/readme.rs" "$work/proj/src/bin/$s.rs"; continue ;;
        sync) strategy=Synchronous ;;
        pool) strategy='ThreadPool::default()' ;;
        forking) strategy='Forking::new()' ;;
        event) strategy='Event::new()' ;;
        *) echo "unknown strategy $s" >&2; exit 1 ;;
    esac
    sed -e "s/ThreadingTcpServer::bind(/TcpServer::builder().strategy(socketserver::$strategy).bind(/" \
        -e 's/ThreadingTcpServer}/TcpServer}/' "$work/readme.rs" >"$work/proj/src/bin/$s.rs"
done
echo "building the example against $lib ..." >&2
CARGO_TARGET_DIR=$work/target cargo build --release -q --manifest-path "$work/proj/Cargo.toml"
(cd "$repo" && cargo build --release -q -p socketserver-cli)
bench=$repo/target/release/socketserver
server_cpu="" generator_cpu=""
if [[ ${PIN:-0} == 1 ]]; then
    server_cpu="taskset -c 0"
    generator_cpu="taskset -c 1"
fi

for s in $strategies; do
    if (echo >/dev/tcp/127.0.0.1/9999) 2>/dev/null; then
        echo "127.0.0.1:9999 is taken: stop what listens there" >&2
        exit 1
    fi
    $server_cpu "$work/target/release/$s" &
    pid=$!
    for _ in $(seq 100); do
        (echo >/dev/tcp/127.0.0.1/9999) 2>/dev/null && break
        sleep 0.05
    done
    $generator_cpu "$bench" bench tcp-line --addr 127.0.0.1:9999 -c "$conns" -b 16 -d "$secs" --warmup 1 \
        --label "readme-$s@$label" --server-pid "$pid" || true
    kill -TERM "$pid"
    wait "$pid" || true
done
