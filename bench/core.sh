#!/usr/bin/env bash
# Core benchmarks (issue 2): submit overhead, 1 GiB output capture, status with 10,000 jobs.
# Needs hyperfine and python3. Prints the figures recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin mc
MC="$PWD/target/release/mc"
RSS="$PWD/bench/rss.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export MAESTRO_HOME="$work/state"

echo "== mc submit of a one-step job running true, against sh -c true"
echo '{"name":"t","owner":"bench","steps":[{"name":"s","run":"true"}]}' > true.json
hyperfine -N --warmup 5 --runs 100 --export-json submit.json \
    "sh -c true" "$MC submit true.json --quiet" >/dev/null
python3 - <<'PY'
import json
r = json.load(open("submit.json"))["results"]
base, mc = r[0]["mean"] * 1000, r[1]["mean"] * 1000
print(f"sh -c true: {base:.2f} ms   mc submit: {mc:.2f} ms ± {r[1]['stddev']*1000:.2f}   overhead: {mc-base:.2f} ms")
PY

echo "== 1 GiB of step output (100-byte lines)"
line=$(printf 'x%.0s' $(seq 1 99))
cat > big.json <<JSON
{"name":"big","owner":"bench","steps":[{"name":"s","run":"yes $line | head -c 1073741824"}]}
JSON
# Three interleaved rounds: the machine is shared, so one pair of runs says little.
for round in 1 2 3; do
    cat_run=$(python3 "$RSS" sh -c "yes $line | head -c 1073741824 | cat > cat.out")
    rm -f cat.out
    mc_run=$(python3 "$RSS" "$MC" submit big.json --quiet)
    rm -rf "$MAESTRO_HOME/jobs"/*/logs/s.log
    python3 - "$round" "$cat_run" "$mc_run" <<'PY'
import json, sys
cat, mc = json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"round {sys.argv[1]}: cat {cat['wall_s']:.2f} s   mc {mc['wall_s']:.2f} s, "
      f"peak RSS {mc['peak_rss_mib']} MiB   mc throughput = {cat['wall_s'] / mc['wall_s']:.2f} x cat")
PY
done

echo "== mc status JOB_ID with 1 job and with 10,000 jobs"
"$MC" submit true.json --quiet --output json > one.json
id=$(python3 -c 'import json; print(json.load(open("one.json"))["job_id"])')
hyperfine -N --warmup 5 --runs 100 --export-json s1.json "$MC status $id" >/dev/null
python3 - "$MAESTRO_HOME/jobs" "$id" <<'PY'
import os, shutil, sys, uuid
jobs, source = sys.argv[1], sys.argv[2]
for _ in range(10_000):
    shutil.copytree(os.path.join(jobs, source), os.path.join(jobs, str(uuid.uuid4())))
PY
hyperfine -N --warmup 5 --runs 100 --export-json s2.json "$MC status $id" >/dev/null
python3 - <<'PY'
import json
a = json.load(open("s1.json"))["results"][0]["mean"] * 1000
b = json.load(open("s2.json"))["results"][0]["mean"] * 1000
print(f"status with 1 job: {a:.2f} ms   with 10,001 jobs: {b:.2f} ms")
PY
