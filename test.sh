#!/usr/bin/env bash
# The project's checks, in the order CI runs them: formatting, lints, docs, then every test
# (unit, black-box through `mc`, Docker against the real engine, plugins against a real sshd).
# Docker tests never skip: without an engine they fail and say so.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for tool in bwrap busybox sshd ssh-keygen python3 perl ip setpriv unshare docker; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: missing ${missing[*]}; install with:" >&2
    echo "  apt-get install -y bubblewrap busybox-static openssh-server openssh-client python3 perl iproute2 util-linux docker.io" >&2
    echo "(.ci/run does this, and starts dockerd when no engine answers)" >&2
    exit 1
fi
docker/build-test-image.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
cargo test --workspace --locked
