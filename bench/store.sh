#!/usr/bin/env bash
# State store benchmarks (issues 11 and 13), with the file store:
#  1. `mc submit` of a one-step `true` job above `sh -c true`, in fdatasync-equivalents: the cost
#     of one 200-byte append + fdatasync is measured in the same run, on the same file system,
#     so the figure holds on any disk (goal: at most 12); `mc --version` beside it is the floor
#     (starting mc, no work). The same submits run under `no-sync` (bench/no-sync.c, built with
#     gcc: a seccomp filter answers every fsync, fdatasync and syncfs at once, without doing
#     it) give the floor of any store design, what a submit costs without a single sync; the
#     difference is what the store's syncs cost. With strace installed, the syncs and renames of
#     one submit are counted too.
#  2. `mc status ID` and one page of `mc status` with 1, 100 and 100,000 jobs (goal: constant;
#     a page of 50 is full from 100 jobs on).
#     The 99,999 extra jobs are stored through the StateStore API by the `fill_store` example
#     (every fsync included), not by 100,000 `mc submit`s.
# Needs hyperfine, python3 and gcc (strace optional). MC=, MC_BEFORE=, RUNS= (rounds of submits,
# default 60), LISTING=0 (submit only), SLOW_SYNC_US=N (model a slower disk: every fsync and
# fdatasync of the run, the append+fdatasync loop's included, waits N microseconds more,
# through an LD_PRELOAD shim built from bench/slow-sync.c with gcc; concurrent syncs wait
# together, as a disk with a queue serves them),
# BENCH_DIR= (default /var/tmp: a disk, not a tmpfs). Prints the figures in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
[ -n "${MC:-}" ] || cargo build --release --quiet --bin mc
cargo build --release --quiet -p maestro-core --example fill_store
MC="${MC:-$target/release/mc}"
FILL="$target/release/examples/fill_store"
command -v hyperfine >/dev/null || { echo "hyperfine is missing (apt-get install hyperfine)" >&2; exit 1; }
command -v gcc >/dev/null || { echo "gcc is missing (apt-get install gcc): it builds bench/no-sync.c" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || { echo "bench/no-sync.c filters x86_64 system calls only" >&2; exit 1; }
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-store.XXXXXX")
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/no-sync" bench/no-sync.c
if [ -n "${SLOW_SYNC_US:-}" ]; then
    gcc -shared -fPIC -O2 -o "$work/slow-sync.so" bench/slow-sync.c -ldl
    export SLOW_SYNC_US LD_PRELOAD="$work/slow-sync.so"
    echo "(a slower disk modelled: every sync waits ${SLOW_SYNC_US} us more)"
fi
cd "$work"
export MAESTRO_HOME="$work/state"

echo '{"name":"t","owner":"bench","steps":[{"name":"s","run":"true"}]}' > true.json
# The same without the sandbox, to tell the store's cost from the sandbox's.
echo '{"name":"t","owner":"bench","steps":[{"name":"s","run":"true","isolation":"none"}]}' > none.json

echo "== mc submit of a one-step true job, against sh -c true and one append+fdatasync"
# MC_BEFORE=path/to/an/older/mc measures it too, in the same run (its jobs in another root).
# The commands are run in turn, round after round, with the append+fdatasync loop between
# rounds: on a shared machine the load changes over a run, and each round sees the same load.
python3 - "$MC" "${MC_BEFORE:-}" "$work" "${RUNS:-60}" <<'PY'
import os, statistics, subprocess, sys, time
mc, before, work, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
env = dict(os.environ)
# Without syncs: their own root, and no modelled disk (SLOW_SYNC_US's shim would still wait).
bare = {key: value for key, value in env.items() if key not in ("LD_PRELOAD", "SLOW_SYNC_US")}
unsynced = dict(bare, MAESTRO_HOME=os.path.join(work, "unsynced"))
no_sync = os.path.join(work, "no-sync")
commands = [("sh -c true", ["sh", "-c", "true"], env),
            ("mc submit", [mc, "submit", "true.json", "--quiet"], env),
            ("mc submit, isolation: none", [mc, "submit", "none.json", "--quiet"], env),
            # No work at all: what starting mc costs, a floor under any submit.
            ("mc --version (the floor: starting mc)", [mc, "--version"], env),
            # No syncs: the floor of any store (against sh started the same way).
            ("no-sync sh -c true", [no_sync, "sh", "-c", "true"], unsynced),
            ("no-sync mc submit", [no_sync, mc, "submit", "true.json", "--quiet"], unsynced),
            ("no-sync mc submit, isolation: none",
             [no_sync, mc, "submit", "none.json", "--quiet"], unsynced)]
if before:
    commands.append(("MC_BEFORE submit", [before, "submit", "true.json", "--quiet"],
                     dict(env, MAESTRO_HOME=os.path.join(work, "before"))))
def fsync_cost(count=50):
    fd = os.open(os.path.join(work, "fsync.probe"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    start = time.perf_counter()
    for _ in range(count):
        os.write(fd, b"x" * 199 + b"\n"); os.fdatasync(fd)
    os.close(fd)
    return (time.perf_counter() - start) / count * 1000
times = {label: [] for label, _, _ in commands}
syncs = []
for round in range(runs + 3):
    cost = fsync_cost()
    for label, argv, command_env in commands:
        start = time.perf_counter()
        # A command that failed did not do the work: stop rather than time it.
        subprocess.run(argv, env=command_env, stdout=subprocess.DEVNULL, check=True)
        elapsed = (time.perf_counter() - start) * 1000
        if round >= 3:  # warm-up rounds
            times[label].append(elapsed)
    if round >= 3:
        syncs.append(cost)
fsync = statistics.median(syncs)
medians = {label: statistics.median(values) for label, values in times.items()}
print(f"append+fdatasync: median {fsync:.3f} ms over {len(syncs)} rounds of 50")
print(f"sh -c true: median {medians['sh -c true']:.2f} ms; "
      f"no-sync sh -c true: median {medians['no-sync sh -c true']:.2f} ms")
overhead = {}
for label, _, _ in commands[1:]:
    if label == "no-sync sh -c true":
        continue
    base = medians["no-sync sh -c true" if label.startswith("no-sync") else "sh -c true"]
    overhead[label] = medians[label] - base
    goal = "" if "floor" in label or label.startswith("no-sync") else " (goal: at most 12)"
    print(f"{label}: median {medians[label]:.2f} ms; overhead {overhead[label]:.2f} ms = "
          f"{overhead[label]/fsync:.1f} fdatasync-equivalents{goal}")
for label in ("mc submit", "mc submit, isolation: none"):
    store = overhead[label] - overhead["no-sync " + label]
    print(f"{label}: its syncs cost {store:.2f} ms = {store/fsync:.1f} fdatasync-equivalents "
          f"(the overhead with them less the overhead without)")
PY
if command -v strace >/dev/null; then
    # On the roots the runs above used: the steady state, not a root's first job.
    for label in mc ${MC_BEFORE:+before}; do
        binary=$MC root=$MAESTRO_HOME
        [ "$label" = mc ] || { binary=$MC_BEFORE; root="$work/before"; }
        MAESTRO_HOME="$root" strace -f -c -o "strace-$label.txt" \
            -e trace=fsync,fdatasync,rename,renameat,renameat2 "$binary" submit true.json --quiet >/dev/null
        echo "syscalls of one submit ($label):" $(grep -E "fsync|fdatasync|rename" "strace-$label.txt" | awk '{print $NF "=" $4 " (" $2 " s)"}')
    done
else
    echo "(strace is not installed: the syncs of one submit are not counted)"
fi

# LISTING=0 stops here (the listing part takes several minutes).
[ "${LISTING:-1}" = 1 ] || exit 0

echo "== mc status ID and a page of mc status, with 1, 100 and 100,000 jobs"
rm -rf "$MAESTRO_HOME"
"$MC" submit true.json --quiet --output json > one.json
id=$(python3 -c 'import json; print(json.load(open("one.json"))["job_id"])')
measure() { # label
    hyperfine -N --warmup 5 --runs 50 --export-json "$1-show.json" "$MC status $id" >/dev/null
    hyperfine -N --warmup 3 --runs 30 --export-json "$1-page.json" \
        "$MC status --limit 50 --output json" >/dev/null
    hyperfine -N --warmup 3 --runs 30 --export-json "$1-filtered.json" \
        "$MC status --limit 50 --state succeeded --output json" >/dev/null
    # No job matches: every job is loaded, so few runs.
    hyperfine -N --warmup 1 --runs 3 --export-json "$1-rare.json" \
        "$MC status --limit 50 --state failed --output json" >/dev/null
}
measure one
"$FILL" "$MAESTRO_HOME" 99 4
measure hundred
start=$(date +%s)
"$FILL" "$MAESTRO_HOME" 99900 4
echo "stored 99,999 jobs through the store API in $(( $(date +%s) - start )) s"
measure many

python3 - <<'PY'
import json
def mean(name):
    return json.load(open(name))["results"][0]["mean"] * 1000
for what, label in [("show", "mc status ID"), ("page", "mc status --limit 50 (a page)"),
                    ("filtered", "mc status --limit 50 --state succeeded (every job matches)"),
                    ("rare", "mc status --limit 50 --state failed (no job matches)")]:
    print(f"{label}: 1 job {mean(f'one-{what}.json'):.2f} ms   "
          f"100 jobs {mean(f'hundred-{what}.json'):.2f} ms   "
          f"100,000 jobs {mean(f'many-{what}.json'):.2f} ms")
PY
