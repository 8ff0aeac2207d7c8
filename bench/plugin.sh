#!/usr/bin/env bash
# Plugin executor benchmark (issue 4): a one-step job running `true` through a plugin, against the
# same job on the built-in local runtime. Target: the plugin adds at most 5 ms of wall time (plugin
# start, handshake, describe, start/exit, shutdown all included).
#   plugin: the SDK's example plugin mc-executor-process (Rust, release build)
#   for information: the SDK-less Python plugin plugins/mc-executor-pyproc (interpreter start-up)
# Needs hyperfine and python3. MC=/path/to/mc uses that binary instead of building
# target/release/mc; RUNS=N sets the number of hyperfine runs (default 100). Prints the figures
# recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ -z "${MC:-}" ]; then
    cargo build --release --quiet --bin mc
    MC="$root/target/release/mc"
fi
cargo build --release --quiet -p maestro-plugin-sdk --example mc-executor-process
PLUGIN_TARGET=$(dirname "$(dirname "$MC")")
[ -x "$PLUGIN_TARGET/release/examples/mc-executor-process" ] || PLUGIN_TARGET="$root/target"
RUNS=${RUNS:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir plugins
cp "$PLUGIN_TARGET/release/examples/mc-executor-process" plugins/
cp "$root/plugins/mc-executor-pyproc" plugins/
export MAESTRO_HOME="$work/state" MAESTRO_PLUGIN_PATH="$work/plugins"

echo '{"name":"t","owner":"bench","steps":[{"name":"s","run":"true"}]}' > local.json
echo '{"name":"t","owner":"bench","steps":[{"name":"s","run":"true","runtime":"process"}]}' > plugin.json
echo '{"name":"t","owner":"bench","steps":[{"name":"s","run":"true","runtime":"pyproc"}]}' > python.json
"$MC" submit plugin.json --quiet >/dev/null   # fail early if the plugin is not picked up

echo "== one-step job: local runtime vs the Rust SDK plugin vs the Python plugin ($RUNS runs each)"
hyperfine -N --warmup 10 --runs "$RUNS" --export-json plugin-bench.json \
    "$MC submit local.json --quiet" \
    "$MC submit plugin.json --quiet" \
    "$MC submit python.json --quiet" >/dev/null
python3 - <<'PY'
import json
r = json.load(open("plugin-bench.json"))["results"]
ms = lambda x: x * 1000
local, rust, py = r
print(f"local runtime:          {ms(local['mean']):6.2f} ms ± {ms(local['stddev']):.2f}  (median {ms(local['median']):.2f})")
print(f"plugin (Rust, SDK):     {ms(rust['mean']):6.2f} ms ± {ms(rust['stddev']):.2f}  (median {ms(rust['median']):.2f})")
print(f"plugin (Python, no SDK):{ms(py['mean']):6.2f} ms ± {ms(py['stddev']):.2f}  (median {ms(py['median']):.2f})")
added = ms(rust['mean'] - local['mean'])
added_median = ms(rust['median'] - local['median'])
print(f"added by the Rust plugin: {added:.2f} ms mean, {added_median:.2f} ms median (target <= 5 ms): {'OK' if added <= 5 else 'OVER'}")
PY
