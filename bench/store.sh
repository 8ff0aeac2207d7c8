#!/usr/bin/env bash
# State store benchmarks (issues 11 and 13): `mc status ID` and one page of `mc status` with 1
# and with 100,000 jobs in the file store. Needs hyperfine and python3. Prints the figures
# recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${MC:-}" ] || cargo build --release --quiet --bin mc
MC="${MC:-${CARGO_TARGET_DIR:-$PWD/target}/release/mc}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export MAESTRO_HOME="$work/state"

echo '{"name":"t","owner":"bench","steps":[{"name":"s","run":"true"}]}' > true.json
"$MC" submit true.json --quiet --output json > one.json
id=$(python3 -c 'import json; print(json.load(open("one.json"))["job_id"])')

measure() { # label
    hyperfine -N --warmup 5 --runs 50 --export-json "$1-show.json" "$MC status $id" >/dev/null
    hyperfine -N --warmup 3 --runs 30 --export-json "$1-page.json" \
        "$MC status --limit 50 --output json" >/dev/null
    hyperfine -N --warmup 3 --runs 30 --export-json "$1-filtered.json" \
        "$MC status --limit 50 --state succeeded --output json" >/dev/null
}
measure one

# 99,999 older jobs: version 7 ids from a day before the real one, each a copy of it.
python3 - "$MAESTRO_HOME/jobs" "$id" <<'PY'
import os, shutil, sys, time, uuid
jobs, source = sys.argv[1], sys.argv[2]
start = int(time.time() * 1000) - 86_400_000
for n in range(99_999):
    ms = start + n
    value = (ms << 80) | (0x7 << 76) | (int.from_bytes(os.urandom(10), "big") & ((1 << 76) - 1))
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    shutil.copytree(os.path.join(jobs, source), os.path.join(jobs, str(uuid.UUID(int=value))))
PY
measure many

python3 - <<'PY'
import json
def mean(name):
    return json.load(open(name))["results"][0]["mean"] * 1000
for what, label in [("show", "mc status ID"), ("page", "mc status --limit 50 (a page)"),
                    ("filtered", "mc status --limit 50 --state succeeded")]:
    print(f"{label}: 1 job {mean(f'one-{what}.json'):.2f} ms   "
          f"100,000 jobs {mean(f'many-{what}.json'):.2f} ms")
PY
