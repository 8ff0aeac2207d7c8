#!/usr/bin/env bash
# PostgreSQL store benchmarks (issue 13 §3), each side by side with its peer in the same run:
#   1. `mc submit` of a one-step `true` job: the PostgreSQL store, the file store, `sh -c true`;
#   2. `mc status ID` and pages of `mc status` (unfiltered, and by each kind of filter, matching
#      or not) with 1, 100 and 100,000 jobs in the database;
#   3. two `mc serve` on one database against one: JOBS one-step `true` jobs POSTed by CLIENTS
#      clients (split between the servers), each server --max-concurrent-jobs SLOTS.
# Usage: bench/postgres.sh [all|submit|status|throughput] (default all: every part).
# Starts its own PostgreSQL 15 (Debian's binaries, as nobody, in a temporary directory, on a
# loopback port) and stops it by pid at the end. Needs hyperfine, python3, setpriv. Run as
# root (postgres is started as nobody). Prints the figures recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
case "$WHAT" in
    all | submit | status | throughput) ;;
    *) echo "usage: bench/postgres.sh [all|submit|status|throughput]" >&2; exit 2 ;;
esac
want() { [ "$WHAT" = all ] || [ "$WHAT" = "$1" ]; }
JOBS=${JOBS:-400}
CLIENTS=${CLIENTS:-8}
SLOTS=${SLOTS:-4}
PG=/usr/lib/postgresql/15/bin
[ -x "$PG/postgres" ] || { echo "bench/postgres.sh needs PostgreSQL 15: apt-get install postgresql" >&2; exit 1; }
if [ -z "${MC:-}" ]; then
    cargo build --release --quiet --bin mc
    MC="${CARGO_TARGET_DIR:-$PWD/target}/release/mc"
fi
LOAD="$PWD/bench/server_load.py"

work=$(mktemp -d)
pg_pid=""
server_pids=()
cleanup() {
    for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    [ -n "$pg_pid" ] && kill -INT "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, $(uname -r)"

# PostgreSQL as nobody, with its defaults (fsync and synchronous_commit on).
# (postgres gets a directory of its own: the sandboxed steps must still read the state root.)
chmod 711 "$work"
mkdir "$work/pgdir"
chown nobody:nogroup "$work/pgdir"
setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$PG/initdb" -D "$work/pgdir/data" -U postgres \
    --auth=trust -E UTF8 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$PG/postgres" -D "$work/pgdir/data" -p "$port" \
    -k "$work/pgdir" -c listen_addresses=127.0.0.1 > "$work/pg.log" 2>&1 &
pg_pid=$!
for _ in $(seq 1 100); do "$PG/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.1; done
psql() { "$PG/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
psql -d postgres -c "CREATE ROLE maestro LOGIN" -c "CREATE DATABASE bench OWNER maestro" \
    -c "CREATE DATABASE shared OWNER maestro" -c "CREATE DATABASE single OWNER maestro" \
    -c "CREATE DATABASE one OWNER maestro"
URL="postgres://maestro@127.0.0.1:$port"
export MAESTRO_HOME="$work/state" XDG_CONFIG_HOME="$work/xdg"

echo '{"name":"t","owner":"bench","steps":[{"name":"s","run":"true"}]}' > true.json
if want submit; then
echo "== 1. submit overhead"
MAESTRO_STATE_URL="$URL/bench" "$MC" submit true.json --quiet >/dev/null # migrations, once
hyperfine -N --warmup 5 --runs 40 --export-json submit.json \
    "sh -c true" \
    "$MC submit true.json --quiet" \
    "env MAESTRO_STATE_URL=$URL/bench $MC submit true.json --quiet" >/dev/null
python3 - <<'PY'
import json
r = json.load(open("submit.json"))["results"]
base = r[0]["mean"] * 1000
for row, label in zip(r, ["sh -c true", "mc submit, file store", "mc submit, PostgreSQL"]):
    m = row["mean"] * 1000
    print(f"{label}: {m:.2f} ms ± {row['stddev']*1000:.2f} (+{m-base:.2f} ms over sh -c true)")
PY
fi

if want status; then

echo "== 2. status at 1, 100 and 100,000 jobs"
MAESTRO_STATE_URL="$URL/single" "$MC" submit true.json --quiet --output json > one.json
id=$(python3 -c 'import json; print(json.load(open("one.json"))["job_id"])')
# Two copies of that database get 99 and 99,999 older jobs: version 7 ids from a day before
# the real one, each a copy of it (record and history), inserted by SQL. Each command is then
# timed on the three databases in one hyperfine run, so that every size sees the same machine;
# a full page (50 jobs) at 100 jobs against 100,000 isolates the database's size from the
# page's.
fill() { # database count
    psql -d postgres -c "CREATE DATABASE $1 OWNER maestro TEMPLATE single"
    python3 - "$2" > "ids-$1.txt" <<'PY'
import os, sys, time, uuid
start = int(time.time() * 1000) - 86_400_000
for n in range(int(sys.argv[1])):
    value = ((start + n) << 80) | (0x7 << 76) | (int.from_bytes(os.urandom(10), "big") & ((1 << 76) - 1))
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    print(uuid.UUID(int=value))
PY
    psql -d "$1" -c "CREATE TEMP TABLE ids (id uuid)" -c "\\copy ids FROM 'ids-$1.txt'" -c "
        INSERT INTO jobs (job_id, meta, spec, spec_file, owner, environment, owner_key,
                          environment_key, submitted_at, state, lease_token, claimed_by)
        SELECT ids.id, convert_to(replace(convert_from(j.meta, 'UTF8'), '$id', ids.id::text), 'UTF8'),
               j.spec, j.spec_file, j.owner, j.environment, j.owner_key, j.environment_key,
               j.submitted_at, j.state, 1, j.claimed_by
        FROM ids, jobs j WHERE j.job_id = '$id';
        INSERT INTO transitions SELECT ids.id, t.seq, t.entry FROM ids, transitions t WHERE t.job_id = '$id';
        INSERT INTO step_results SELECT ids.id, s.seq, s.entry FROM ids, step_results s WHERE s.job_id = '$id';
        ANALYZE;"
}
fill hundred 99
fill many 99999
echo "jobs in the databases: $(for db in single hundred many; do psql -d $db -c 'SELECT count(*) FROM jobs'; done | xargs)"
# Every job is the real one's copy: SUCCEEDED, owner "bench", no environment, so each filter
# is measured matching (a full page) and matching nothing (an empty page, which must not read
# the jobs that fail it). --since 1h matches the real job alone (the copies are a day older).
pages=("show:$id" "page:--limit 50" "succeeded:--limit 50 --state succeeded"
       "running:--limit 50 --state running" "owner:--limit 50 --owner bench"
       "owner-x:--limit 50 --owner x" "env-x:--limit 50 --env x" "since:--limit 50 --since 1h")
for page in "${pages[@]}"; do
    hyperfine -N --warmup 3 --runs 30 --export-json "${page%%:*}.json" \
        "env MAESTRO_STATE_URL=$URL/single $MC status ${page#*:} --output json" \
        "env MAESTRO_STATE_URL=$URL/hundred $MC status ${page#*:} --output json" \
        "env MAESTRO_STATE_URL=$URL/many $MC status ${page#*:} --output json" >/dev/null
done
python3 - <<'PY'
import json
def means(name):
    return [r["mean"] * 1000 for r in json.load(open(f"{name}.json"))["results"]]
for what, label in [("show", "mc status ID"), ("page", "mc status --limit 50 (a page, counted)"),
                    ("succeeded", "  --state succeeded (all match)"),
                    ("running", "  --state running (none match)"),
                    ("owner", "  --owner bench (all match)"), ("owner-x", "  --owner x (none match)"),
                    ("env-x", "  --env x (none match)"), ("since", "  --since 1h (one matches)")]:
    one, hundred, many = means(what)
    print(f"{label}: 1 job {one:.2f} ms   100 jobs {hundred:.2f} ms   100,000 jobs {many:.2f} ms")
PY
fi

if want throughput; then

echo "== 3. throughput: $JOBS one-step true jobs, $CLIENTS clients, $SLOTS slots per server"
"$MC" tokens add bench --roles submit > token.out
token=$(tail -n 1 token.out)
# Start N servers on DATABASE; sets urls.
serve() {
    local database=$1 count=$2
    urls=()
    for n in $(seq 1 "$count"); do
        MAESTRO_STATE_URL="$URL/$database" "$MC" serve --listen 127.0.0.1:0 \
            --max-concurrent-jobs "$SLOTS" --queue-limit 100000 > "serve-$database-$n.out" 2> "serve-$database-$n.err" &
        server_pids+=($!)
        for _ in $(seq 1 600); do grep -q listening "serve-$database-$n.out" 2>/dev/null && break; sleep 0.1; done
        urls+=("$(sed -n 's/^mc serve: listening on //p' "serve-$database-$n.out")")
    done
}
stop_servers() {
    for pid in "${server_pids[@]}"; do kill -TERM "$pid"; wait "$pid" || true; done
    server_pids=()
}
round() { # database servers
    serve "$1" "$2"
    local start end per=$((JOBS / $2)) clients=$((CLIENTS / $2))
    start=$(date +%s.%N)
    local loads=() n=0
    for url in "${urls[@]}"; do
        n=$((n + 1))
        python3 "$LOAD" throughput "$url" "$token" "$per" "$clients" sandbox > "load-$1-$n.json" &
        loads+=($!)
    done
    for pid in "${loads[@]}"; do wait "$pid"; done
    end=$(date +%s.%N)
    local ran
    ran=$(psql -d "$1" -c "SELECT count(*) FROM jobs WHERE state = 'SUCCEEDED'")
    python3 -c "import sys; w=float(sys.argv[2])-float(sys.argv[1]); print(f'{sys.argv[3]} server(s): {sys.argv[4]} jobs succeeded in {w:.2f} s: {int(sys.argv[4])/w:.1f} jobs/s')" \
        "$start" "$end" "$2" "$ran"
    stop_servers
}
round one 1
round shared 2
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
