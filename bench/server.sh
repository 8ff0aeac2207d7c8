#!/usr/bin/env bash
# Server benchmark (issue 11): 1,000 one-step `true` jobs POSTed by 8 concurrent clients to
# `mc serve --max-concurrent-jobs 8`, side by side with pueue (`pueue parallel 8`, 1,000
# `pueue add -- true`, until all are done) in the same run; p99 POST -> RUNNING; the server's
# peak RSS with 10,000 jobs in the store. Prints the figures recorded in docs/benchmarks.md.
# `bench/server.sh rss` measures the RSS alone, over a store seeded with 200 jobs and copies;
# `bench/server.sh throughput` skips it.
# Needs python3; installs pueue with cargo into a directory of its own when it is missing
# (PUEUE_ROOT, default /tmp/maestro-bench-pueue). Run it with nice on a quiet machine, and note
# the load it printed.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
JOBS=${JOBS:-1000}
CLIENTS=${CLIENTS:-8}
if [ -z "${MC:-}" ]; then
    cargo build --release --quiet --bin mc
    MC="${CARGO_TARGET_DIR:-$PWD/target}/release/mc"
fi
LOAD="$PWD/bench/server_load.py"

PUEUE_ROOT=${PUEUE_ROOT:-/tmp/maestro-bench-pueue}
if [ "$WHAT" != rss ] && ! command -v pueue >/dev/null 2>&1; then
    if [ ! -x "$PUEUE_ROOT/bin/pueue" ]; then
        echo "== installing pueue into $PUEUE_ROOT" >&2
        CARGO_HOME="$PUEUE_ROOT/cargo-home" CARGO_TARGET_DIR="$PUEUE_ROOT/target" \
            cargo install pueue --locked --root "$PUEUE_ROOT" >&2
    fi
    export PATH="$PUEUE_ROOT/bin:$PATH"
fi

work=$(mktemp -d)
server_pid=""
pueued_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ -n "$pueued_pid" ] && kill "$pueued_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, $(uname -r)"
# ext4 without a journal skips every inode deleted in the last 1-5 minutes when it allocates one
# (`recently_deleted` in fs/ext4/ialloc.c), so right after a big deletion (an earlier run's
# cleanup, `mc prune`) each file a job creates costs a scan: the first round then runs at a
# fraction of its rate. Say so, since it is the machine's state and not the program's.
device=$(findmnt -no SOURCE --target "$work" 2>/dev/null || true)
if [ "$(findmnt -no FSTYPE --target "$work" 2>/dev/null)" = ext4 ] \
    && ! ls /proc/fs/jbd2 2>/dev/null | grep -q "^$(basename "$device")-"; then
    echo "note: $work is on ext4 without a journal ($device): wait 5 minutes after any large" \
        "deletion (such as an earlier run of this script) before reading the figures"
fi

# Start `mc serve` on STATE_ROOT with ARGS; sets server_pid and url.
serve() {
    local state=$1; shift
    MAESTRO_HOME="$state" "$MC" serve --listen 127.0.0.1:0 "$@" > serve.out 2> serve.err &
    server_pid=$!
    # Starting reads the queue and settles an earlier run's jobs: longer with a big store.
    for _ in $(seq 1 1200); do
        grep -q listening serve.out 2>/dev/null && break
        sleep 0.1
    done
    [ -n "$(sed -n 's/^mc serve: listening on //p' serve.out)" ] || { cat serve.err >&2; exit 1; }
    url=$(sed -n 's/^mc serve: listening on //p' serve.out)
}
stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=""
}
# The server's peak RSS (VmHWM) and CPU seconds (user, system) so far.
server_usage() {
    local hwm ticks
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
    ticks=$(awk '{print $14, $15}' "/proc/$server_pid/stat")
    python3 -c "import os,sys; t=os.sysconf('SC_CLK_TCK'); u,s=map(int,sys.argv[2:4]); print(f'server peak RSS {int(sys.argv[1])/1024:.1f} MiB, CPU user {u/t:.1f} s system {s/t:.1f} s')" "$hwm" $ticks
}

maestro_round() {
    local isolation=$1 state="$work/state-$1"
    MAESTRO_HOME="$state" "$MC" tokens add bench --roles submit > token.out
    local token
    token=$(tail -n 1 token.out)
    serve "$state" --max-concurrent-jobs 8 --queue-limit 100000
    echo "-- maestro, isolation: $isolation"
    python3 "$LOAD" throughput "$url" "$token" "$JOBS" "$CLIENTS" "$isolation"
    server_usage
    stop_server
}

pueue_round() {
    export HOME="$work/pueue-home" XDG_CONFIG_HOME="$work/pueue-home/config" \
        XDG_DATA_HOME="$work/pueue-home/data" XDG_RUNTIME_DIR="$work/pueue-home/run"
    mkdir -p "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_RUNTIME_DIR"
    pueued > pueued.log 2>&1 &
    pueued_pid=$!
    for _ in $(seq 1 100); do pueue status >/dev/null 2>&1 && break; sleep 0.1; done
    pueue parallel 8 >/dev/null
    echo "-- pueue $(pueue --version | awk '{print $2}')"
    local start end
    start=$(date +%s.%N)
    for _ in $(seq 1 "$JOBS"); do pueue add -- true >/dev/null; done
    pueue wait >/dev/null
    end=$(date +%s.%N)
    python3 -c "import sys; w=float(sys.argv[2])-float(sys.argv[1]); print(f'{sys.argv[3]} tasks in {w:.2f} s: {int(sys.argv[3])/w:.1f} tasks/s')" "$start" "$end" "$JOBS"
    pueue shutdown >/dev/null 2>&1 || kill "$pueued_pid"
    wait "$pueued_pid" 2>/dev/null || true
    pueued_pid=""
}

if [ "$WHAT" = rss ]; then
    JOBS=200 maestro_round none > /dev/null
else
    echo "== throughput: $JOBS one-step true jobs, $CLIENTS clients, 8 at a time"
    maestro_round sandbox
    pueue_round
    maestro_round none
    echo "load after throughput: $(cut -d' ' -f1-3 /proc/loadavg)"
    [ "$WHAT" = throughput ] && exit 0
fi

echo "== peak RSS with 10,000 jobs in the store"
state="$work/state-none"
python3 - "$state/jobs" <<'PY'
import os, shutil, sys, uuid, time
jobs = sys.argv[1]
present = [name for name in os.listdir(jobs)]
source = os.path.join(jobs, present[0])
for _ in range(10_000 - len(present)):
    # Version 7 ids, as the server makes them, so that listings see them as jobs.
    ms = int(time.time() * 1000)
    raw = ms.to_bytes(6, "big") + os.urandom(10)
    raw = bytearray(raw)
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    shutil.copytree(source, os.path.join(jobs, str(uuid.UUID(bytes=bytes(raw)))))
print(f"{len(os.listdir(jobs))} jobs in the store")
PY
start=$(date +%s.%N)
serve "$state" --max-concurrent-jobs 8
echo "server up in $(python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$start") s"
token=$(tail -n 1 token.out)
python3 "$LOAD" touch "$url" "$token"
python3 "$LOAD" throughput "$url" "$token" 100 "$CLIENTS" none > /dev/null
server_usage
stop_server
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
