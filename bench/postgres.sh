#!/usr/bin/env bash
# PostgreSQL store benchmarks (issue 13 §3), each side by side with its peer in the same run:
#   1. `mc submit` of a one-step `true` job: the PostgreSQL store, the file store, `sh -c true`;
#   2. `mc status ID` and one page of `mc status` with 1 and with 100,000 jobs in the database;
#   3. two `mc serve` on one database against one: JOBS one-step `true` jobs POSTed by CLIENTS
#      clients (split between the servers), each server --max-concurrent-jobs SLOTS.
# Starts its own PostgreSQL 15 (Debian's binaries, as nobody, in a temporary directory, on a
# loopback port) and stops it by pid at the end. Needs hyperfine, python3, setpriv. Run as
# root (postgres is started as nobody). Prints the figures recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
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

echo "== 2. status at 1 and 100,000 jobs"
export MAESTRO_STATE_URL="$URL/single"
"$MC" submit true.json --quiet --output json > one.json
id=$(python3 -c 'import json; print(json.load(open("one.json"))["job_id"])')
measure() { # label
    hyperfine -N --warmup 5 --runs 40 --export-json "$1-show.json" "$MC status $id" >/dev/null
    hyperfine -N --warmup 3 --runs 30 --export-json "$1-page.json" \
        "$MC status --limit 50 --output json" >/dev/null
    hyperfine -N --warmup 3 --runs 30 --export-json "$1-filtered.json" \
        "$MC status --limit 50 --state succeeded --output json" >/dev/null
}
measure one
# 99,999 older jobs: version 7 ids from a day before the real one, each a copy of it (record
# and history), inserted by SQL.
python3 - "$id" > ids.txt <<'PY'
import os, sys, time, uuid
start = int(time.time() * 1000) - 86_400_000
for n in range(99_999):
    value = ((start + n) << 80) | (0x7 << 76) | (int.from_bytes(os.urandom(10), "big") & ((1 << 76) - 1))
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    print(uuid.UUID(int=value))
PY
psql -d single -c "CREATE TEMP TABLE ids (id uuid)" -c "\\copy ids FROM 'ids.txt'" -c "
    INSERT INTO jobs (job_id, meta, spec, spec_file, owner, environment, submitted_at, state,
                      lease_token, claimed_by)
    SELECT ids.id, convert_to(replace(convert_from(j.meta, 'UTF8'), '$id', ids.id::text), 'UTF8'),
           j.spec, j.spec_file, j.owner, j.environment, j.submitted_at, j.state, 1, j.claimed_by
    FROM ids, jobs j WHERE j.job_id = '$id';
    INSERT INTO transitions SELECT ids.id, t.seq, t.entry FROM ids, transitions t WHERE t.job_id = '$id';
    INSERT INTO step_results SELECT ids.id, s.seq, s.entry FROM ids, step_results s WHERE s.job_id = '$id';
    ANALYZE;"
echo "$(psql -d single -c 'SELECT count(*) FROM jobs') jobs in the database"
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
unset MAESTRO_STATE_URL

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
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
