#!/usr/bin/env bash
# Sandbox overhead benchmark: what the kernel sandbox adds to a one-step job running `true`.
# Target (docs/benchmarks.md): a sandboxed one-step job costs at most 2 ms more wall time than
# the same job with `isolation: none`, measured side by side in one run.
#
# One hyperfine invocation per round, every command side by side in it:
#   mc submit, isolation: none           the baseline
#   mc submit, sandbox (default)         network: host
#   mc submit, sandbox, network: none    a network namespace too
#   the shim alone (`mc __maestro-sandbox-shim --plan-file`), /bin/true, bwrap with an equivalent
#   setup, `unshare --user --pid --fork true`: for reference
# Then the machine's CPU per sandbox with the shim executed (as `mc submit` runs it) and forked
# by the launcher (as `mc serve` runs it), CPU_RUNS=N of each (default 500), in turns.
# Prints min, median and mean per command and the sandbox's overhead over `isolation: none`
# (median - median and min - min), per round.
#
# Needs hyperfine, python3 and bwrap. Environment: MC=/path/to/mc uses that binary instead of
# building one in release (it honours CARGO_TARGET_DIR); RUNS=N runs per command (default 300);
# ROUNDS=N hyperfine invocations (default 3); KEEP=dir keeps the hyperfine JSON there.
# TMPDIR_BENCH=dir puts the job's workspace and state root there (default /var/tmp): on a shared
# disk, `mc submit`'s fsyncs vary by more than the 2 ms to be resolved, the same on both sides,
# so a tmpfs-backed directory gives the clearest difference (`mount -t tmpfs tmpfs /mnt/b`;
# not /dev/shm, which policy refuses as a workspace).
# Reproduce: `bench/sandbox.sh` (or `RUNS=500 ROUNDS=5 bench/sandbox.sh`) on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
if [ -z "${MC:-}" ]; then
    cargo build --release --quiet --bin mc
    MC="${CARGO_TARGET_DIR:-$PWD/target}/release/mc"
fi
RUNS=${RUNS:-300}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d -p "${TMPDIR_BENCH:-/var/tmp}")
trap 'rm -rf "$work"' EXIT
cd "$work"
export MAESTRO_HOME="$work/state"
mkdir workspace

job() { # name isolation network
    local network=""
    [ -n "$3" ] && network=",\"network\":\"$3\""
    echo "{\"name\":\"t\",\"owner\":\"bench\",\"steps\":[{\"name\":\"s\",\"command\":[\"true\"],\"isolation\":\"$2\"$network}]}" > "$1"
}
job none.json none ""
job sandbox.json sandbox ""
job sandbox-net.json sandbox none
cat > plan.json <<JSON
{"argv":["true"],"workdir":"$work/workspace","workspace":"$work/workspace","network":"host"}
JSON
for spec in none.json sandbox.json sandbox-net.json; do  # fail early, with the reason
    "$MC" submit "$spec" --quiet >/dev/null
done
"$MC" __maestro-sandbox-shim --plan-file plan.json

# bwrap doing what the sandbox does that bwrap can: read-only host, the workspace writable, a
# fresh /dev, /proc and /tmp, new user, mount, PID, IPC and UTS namespaces, dies with its parent.
BWRAP="bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --bind $work/workspace $work/workspace --unshare-all --share-net --die-with-parent true"
UNSHARE="unshare --user --pid --fork true"

echo "mc: $MC"
echo "$(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $RUNS runs per command, $ROUNDS rounds"
commands=(
    "mc submit, isolation: none" "$MC submit none.json --quiet"
    "mc submit, sandbox" "$MC submit sandbox.json --quiet"
    "mc submit, sandbox, network: none" "$MC submit sandbox-net.json --quiet"
    "shim alone, true" "$MC __maestro-sandbox-shim --plan-file plan.json"
    "/bin/true" "/bin/true"
    "bwrap (equivalent setup), true" "$BWRAP"
    "unshare --user --pid --fork true" "$UNSHARE"
)
for round in $(seq 1 "$ROUNDS"); do
    # Every other round lists the commands in reverse order, so that a drift of the machine
    # during a round shows up as a difference between rounds instead of a bias.
    args=()
    count=$((${#commands[@]} / 2))
    for i in $(seq 0 $((count - 1))); do
        j=$i
        [ $((round % 2)) -eq 0 ] && j=$((count - 1 - i))
        args+=(-n "${commands[$((2 * j))]}" "${commands[$((2 * j + 1))]}")
    done
    hyperfine -N --warmup 20 --runs "$RUNS" --export-json "round-$round.json" "${args[@]}" >/dev/null
    python3 - "round-$round.json" "$round" <<'PY'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
print(f"\nround {sys.argv[2]}")
print(f"| command | min (ms) | median (ms) | mean (ms) |")
print(f"|---|---:|---:|---:|")
stats = {}
for r in results:
    times = [t * 1000 for t in r["times"]]
    stats[r["command"]] = (min(times), statistics.median(times))
    print(f"| {r['command']} | {min(times):.2f} | {statistics.median(times):.2f} | {statistics.mean(times):.2f} |")
base = stats["mc submit, isolation: none"]
for name in ("mc submit, sandbox", "mc submit, sandbox, network: none"):
    over_min, over_median = stats[name][0] - base[0], stats[name][1] - base[1]
    verdict = "met" if over_median <= 2.0 else "NOT met"
    print(f"{name}: +{over_median:.2f} ms median, +{over_min:.2f} ms min over isolation: none "
          f"(target 2 ms at the median: {verdict})")
PY
done
# All rounds pooled: the figures to quote (each command's times from every round together).
python3 - round-*.json <<'PY'
import json, statistics, sys
times = {}
for path in sys.argv[1:]:
    for r in json.load(open(path))["results"]:
        times.setdefault(r["command"], []).extend(t * 1000 for t in r["times"])
print(f"\nall {len(sys.argv) - 1} rounds pooled")
print("| command | min (ms) | median (ms) | mean (ms) |")
print("|---|---:|---:|---:|")
for name, values in times.items():
    print(f"| {name} | {min(values):.2f} | {statistics.median(values):.2f} | {statistics.mean(values):.2f} |")
base = statistics.median(times["mc submit, isolation: none"])
for name in ("mc submit, sandbox", "mc submit, sandbox, network: none"):
    over = statistics.median(times[name]) - base
    print(f"{name}: +{over:.2f} ms at the pooled median over isolation: none "
          f"(target 2 ms: {'met' if over <= 2.0 else 'NOT met'})")
shim = statistics.median(times["shim alone, true"]) - statistics.median(times["/bin/true"])
print(f"the shim alone: +{shim:.2f} ms at the median over /bin/true")
PY
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP" && cp round-*.json "$KEEP"/
fi

# The machine's CPU per sandbox, the shim executed (`mc submit`) against forked by the launcher
# (`mc serve`), in turns, through the crate's public API (crates/maestro-sandbox/examples).
echo
echo "CPU per sandbox running true, executed shim vs launched (machine-wide, /proc/stat):"
(cd "$repo" && cargo build --release --quiet -p maestro-sandbox --example sandbox_cpu)
"${CARGO_TARGET_DIR:-$repo/target}/release/examples/sandbox_cpu" "$MC" "$work/workspace" "${CPU_RUNS:-500}"
