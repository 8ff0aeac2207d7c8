#!/usr/bin/env bash
# Swarm executor benchmarks (issue 12): mc submit with `runtime: swarm` against the docker CLI
# doing the same work on the same single-node swarm, in the same run:
#   1. a one-step job running `true` vs `docker service create -d --mode replicated-job`,
#      polling the task to a final state, `docker service logs`, `docker service rm`
#                                                                        (target <= 0.9x)
#   2. a five-step job vs five such CLI runs one after the other         (target <= 0.8x)
# Needs a running Docker engine in no swarm or in one of its own (the script inits a
# single-node swarm on 127.0.0.1 when the engine is in none, and leaves it afterwards),
# python3 and busybox-static (for the test image). MC=/path/to/mc uses that binary instead of
# building it (into $CARGO_TARGET_DIR, else target/). RUNS=N sets the number of interleaved
# runs (default 10).
# MC_BEFORE=/path/to/another/mc adds its rows to the same run (a build of an earlier commit, to
# measure a change side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
bash docker/build-test-image.sh
if [[ -z "${MC:-}" ]]; then
    cargo build --release --quiet --bin mc
    MC="${CARGO_TARGET_DIR:-$PWD/target}/release/mc"
fi
RUNS="${RUNS:-10}"
IMAGE=maestro-test/busybox:latest
work=$(mktemp -d)
initialised=""
gwbridge_existed=""
cleanup() {
    docker service ls -q --filter label=maestro-bench=1 | xargs -r docker service rm >/dev/null 2>&1 || true
    if [[ -n "$initialised" ]]; then
        docker swarm leave --force >/dev/null 2>&1 || true
        [[ -n "$gwbridge_existed" ]] || docker network rm docker_gwbridge >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export MAESTRO_HOME="$work/state"

docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}'
if [[ "$(docker info --format '{{.Swarm.LocalNodeState}}')" == inactive ]]; then
    docker network inspect docker_gwbridge >/dev/null 2>&1 && gwbridge_existed=1
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    initialised=1
fi
docker info --format 'swarm {{.Swarm.LocalNodeState}}, {{.Swarm.Nodes}} node(s), storage driver {{.Driver}}, {{.NCPU}} CPUs'

steps() { # steps N: N steps named s1..sN running `true`
    local n=$1 out="" i
    for ((i = 1; i <= n; i++)); do
        out+="{\"name\":\"s$i\",\"run\":\"true\"},"
    done
    echo "[${out%,}]"
}
job() { # job NAME STEPS
    echo "{\"name\":\"$1\",\"owner\":\"bench\",\"runtime\":\"swarm\",\"image\":\"$IMAGE\",\"steps\":$2}"
}
job one "$(steps 1)" > one.json
job five "$(steps 5)" > five.json

# The CLI doing what one swarm step does: a one-shot job service (detached: without -d a
# failing job never converges), its task polled every 100 ms (as the runtime polls) to a
# final state, its logs read, the service removed.
cat > cli-step.sh <<SH
#!/bin/sh
set -e
id=\$(docker service create -d -q --mode replicated-job --restart-condition none \\
    --label maestro-bench=1 --init $IMAGE sh -c true)
while :; do
    state=\$(docker service ps --format '{{.CurrentState}}' "\$id" | head -n 1)
    case "\$state" in
        Complete*|Failed*|Rejected*) break ;;
    esac
    sleep 0.1
done
docker service logs "\$id" >/dev/null 2>&1
docker service rm "\$id" >/dev/null
SH
chmod +x cli-step.sh

# Fail early, with mc's own message, if this mc has no swarm runtime or the engine is not a
# manager.
"$MC" submit one.json --quiet >/dev/null

# Interleaved runs (one of each command per round, after one warm-up round), ratios of medians.
python3 - "$RUNS" "$MC" "${MC_BEFORE:-}" <<'PY'
import statistics, subprocess, sys, time
runs, mc, before = int(sys.argv[1]), sys.argv[2], sys.argv[3]
commands = {
    "docker service CLI, 1 step": ["sh", "./cli-step.sh"],
    "mc submit, 1 swarm step": [mc, "submit", "one.json", "--quiet"],
    "docker service CLI, 5 steps": ["sh", "-c", " && ".join(["sh ./cli-step.sh"] * 5)],
    "mc submit, 5 swarm steps": [mc, "submit", "five.json", "--quiet"],
}
if before:
    commands["MC_BEFORE submit, 1 swarm step"] = [before, "submit", "one.json", "--quiet"]
    commands["MC_BEFORE submit, 5 swarm steps"] = [before, "submit", "five.json", "--quiet"]
times = {name: [] for name in commands}
for round_ in range(runs + 1):
    for name, argv in commands.items():
        start = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if round_ >= 1:
            times[name].append((time.monotonic() - start) * 1000)
med = {name: statistics.median(t) for name, t in times.items()}
print(f"{runs} interleaved runs each")
print("| what | median (ms) | min (ms) | max (ms) | ratio of medians | target |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
rows = [
    ("docker service CLI, 1 step", None, None),
    ("mc submit, 1 swarm step", "docker service CLI, 1 step", 0.9),
    ("docker service CLI, 5 steps", None, None),
    ("mc submit, 5 swarm steps", "docker service CLI, 5 steps", 0.8),
]
if before:
    rows.insert(2, ("MC_BEFORE submit, 1 swarm step", "docker service CLI, 1 step", 0.9))
    rows.append(("MC_BEFORE submit, 5 swarm steps", "docker service CLI, 5 steps", 0.8))
for name, base, target in rows:
    t = times[name]
    ratio = f"{med[name] / med[base]:.2f}x" if base else ""
    goal = f"<= {target}x" if target else ""
    print(f"| {name} | {med[name]:.0f} | {min(t):.0f} | {max(t):.0f} | {ratio} | {goal} |")
PY
