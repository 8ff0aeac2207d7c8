#!/usr/bin/env bash
# The project's checks, in the order CI runs them: formatting, lints, docs, then every test
# (unit, black-box through `mc`, Docker against the real engine, plugins against a real sshd).
# Docker tests never skip: without an engine they fail and say so.
set -euo pipefail
cd "$(dirname "$0")"

# Prerequisites: the tools below and a Docker engine that answers. On a fresh Debian or Ubuntu
# machine they are installed here (as root or with passwordless sudo); otherwise the one
# command to run is printed.
missing() {
    local tool
    for tool in bwrap busybox sshd ssh-keygen python3 perl ip setpriv unshare script hyperfine curl openssl docker-registry htpasswd schemathesis docker cargo-fmt cargo-clippy; do
        command -v "$tool" >/dev/null 2>&1 || echo "$tool"
    done
    timeout 10 docker info >/dev/null 2>&1 || echo "a Docker engine that answers"
    [ -x /usr/lib/postgresql/15/bin/postgres ] || echo "PostgreSQL 15 (Debian's postgresql)"
}
if [ -n "$(missing)" ]; then
    echo "test.sh: missing: $(missing | paste -sd, - | sed 's/,/, /g')" >&2
    if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
        scripts/test-prerequisites.sh
    else
        echo "test.sh: install them with: sudo scripts/test-prerequisites.sh" >&2
        exit 1
    fi
    if [ -n "$(missing)" ]; then
        echo "test.sh: still missing after installing: $(missing | paste -sd, - | sed 's/,/, /g')" >&2
        exit 1
    fi
fi
docker/build-test-image.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
cargo test --workspace --locked
