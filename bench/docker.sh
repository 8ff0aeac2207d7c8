#!/usr/bin/env bash
# Docker executor benchmarks (issue 3): mc submit against the docker CLI on the same engine.
#   1. a one-step job running `true` vs `docker run --rm IMAGE true`          (target <= 0.95x)
#   2. a five-step job, a container per step, vs five sequential docker runs (target <= 0.95x)
#   3. the same job with reuse_container: true                                (target <= 0.5x)
#   4. 1 GiB printed inside a container: mc's wall time and peak RSS          (target < 48 MiB)
# Needs a running Docker engine, python3 and busybox-static (for the test image).
# MC=/path/to/mc uses that binary instead of building target/release/mc. RUNS=N sets the
# number of hyperfine runs (default 20). Prints the figures recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash docker/build-test-image.sh
if [[ -z "${MC:-}" ]]; then
    cargo build --release --quiet --bin mc
    MC="$PWD/target/release/mc"
fi
RSS="$PWD/bench/rss.py"
RUNS="${RUNS:-20}"
IMAGE=maestro-test/busybox:latest
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export MAESTRO_HOME="$work/state"

docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}'
docker info --format 'storage driver {{.Driver}}, cgroup v{{.CgroupVersion}}, {{.NCPU}} CPUs'

steps() { # steps N COMMAND: N steps named s1..sN running COMMAND
    local n=$1 command=$2 out="" i
    for ((i = 1; i <= n; i++)); do
        out+="{\"name\":\"s$i\",\"run\":\"$command\"},"
    done
    echo "[${out%,}]"
}
job() { # job NAME REUSE STEPS
    echo "{\"name\":\"$1\",\"owner\":\"bench\",\"runtime\":\"docker\",\"image\":\"$IMAGE\",\"reuse_container\":$2,\"steps\":$3}"
}
job one false "$(steps 1 true)" > one.json
job five false "$(steps 5 true)" > five.json
job reuse true "$(steps 5 true)" > reuse.json

# Fail early, with mc's own message, if this mc has no docker runtime or the engine is down.
"$MC" submit one.json --quiet >/dev/null

# hyperfine runs all of one command's runs before the next command's, so on a shared machine a
# burst of load lands on one side; runs are interleaved here instead (round robin, one run of
# each command per round), and ratios are of medians.
python3 - "$RUNS" "$MC" "$IMAGE" <<'PY'
import statistics, subprocess, sys, time
runs, mc, image = int(sys.argv[1]), sys.argv[2], sys.argv[3]
five = " ; ".join([f"docker run --rm {image} true"] * 5)
commands = {
    "docker run --rm": ["docker", "run", "--rm", image, "true"],
    "mc submit, 1 step": [mc, "submit", "one.json", "--quiet"],
    "5x docker run --rm": ["sh", "-c", five],
    "mc submit, 5 steps": [mc, "submit", "five.json", "--quiet"],
    "mc submit, 5 steps, reuse_container": [mc, "submit", "reuse.json", "--quiet"],
}
times = {name: [] for name in commands}
for round_ in range(runs + 2):
    for name, argv in commands.items():
        start = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if round_ >= 2:  # two warm-up rounds
            times[name].append((time.monotonic() - start) * 1000)
med = {name: statistics.median(t) for name, t in times.items()}
print(f"{runs} interleaved runs each")
print("| what | median (ms) | mean (ms) | stddev (ms) | ratio of medians | target |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
rows = [
    ("docker run --rm", None, None),
    ("mc submit, 1 step", "docker run --rm", 0.95),
    ("5x docker run --rm", None, None),
    ("mc submit, 5 steps", "5x docker run --rm", 0.95),
    ("mc submit, 5 steps, reuse_container", "5x docker run --rm", 0.5),
]
for name, base, target in rows:
    t = times[name]
    ratio = f"{med[name] / med[base]:.2f}x" if base else ""
    goal = f"<= {target}x" if target else ""
    print(f"| {name} | {med[name]:.1f} | {statistics.mean(t):.1f} | {statistics.stdev(t):.1f} | {ratio} | {goal} |")
PY

echo "== 1 GiB of output inside a container (100-byte lines)"
line=$(printf 'x%.0s' $(seq 1 99))
job big false "[{\"name\":\"s\",\"run\":\"yes $line | head -c 1073741824\"}]" > big.json
echo -n "docker run (output to /dev/null): "
python3 "$RSS" docker run --rm "$IMAGE" sh -c "yes $line | head -c 1073741824"
echo -n "mc submit:                        "
python3 "$RSS" "$MC" submit big.json --quiet
rm -rf "$MAESTRO_HOME/jobs"/*/logs/s.log
