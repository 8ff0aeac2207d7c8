#!/usr/bin/env bash
# Installs what the test suite needs on a Debian or Ubuntu machine and makes sure a Docker engine
# answers: the Debian packages, then `dockerd` from Debian's docker.io when no engine answers,
# then the rustfmt and clippy components. Needs root (or passwordless sudo). `./test.sh` runs it
# when something is missing; run it by hand with `sudo scripts/test-prerequisites.sh`.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi

# bubblewrap: the jail for tests that submit destructive commands; busybox-static: the test
# image; openssh: the ssh plugin's tests; perl, iproute2, util-linux (setpriv, unshare): the
# sandbox tests' payloads and probes; bsdutils (script): a terminal for the live-view tests;
# hyperfine: bench/ (not run by the tests).
# curl, openssl: the `mc serve` tests (an HTTP client, a self-signed certificate).
# docker-registry, apache2-utils (htpasswd): the swarm tests' private registry.
# python3-venv: schemathesis (below) lives in a virtualenv of its own.
# postgresql (15 on Debian 12): the PostgreSQL store's tests start their own server from its
# binaries (/usr/lib/postgresql/15/bin) as nobody in a temporary directory.
packages=(bubblewrap busybox-static openssh-server openssh-client python3 python3-venv perl
    iproute2 util-linux bsdutils hyperfine ca-certificates file curl openssl docker-registry
    apache2-utils postgresql)
echo "test-prerequisites: installing ${packages[*]}" >&2
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${packages[@]}" >/dev/null

# schemathesis, from PyPI: property-based tests of the server's API against its OpenAPI
# document (pinned: its command line changes between major versions). In a virtualenv of its own (Debian's python refuses a system-wide pip install),
# linked onto the PATH.
if ! command -v schemathesis >/dev/null 2>&1; then
    echo "test-prerequisites: installing schemathesis from PyPI into /opt/maestro-schemathesis" >&2
    $SUDO python3 -m venv /opt/maestro-schemathesis
    $SUDO /opt/maestro-schemathesis/bin/pip install --quiet "schemathesis==4.32.5"
    $SUDO ln -sf /opt/maestro-schemathesis/bin/schemathesis /usr/local/bin/schemathesis
fi

if ! timeout 10 docker info >/dev/null 2>&1; then
    echo "test-prerequisites: no Docker engine answers; starting dockerd from Debian's docker.io" >&2
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        $SUDO apt-get install -y -qq docker.io >/dev/null
    fi
    $SUDO sh -c 'nohup dockerd --host=unix:///var/run/docker.sock >/tmp/dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do
        timeout 5 docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! timeout 10 docker info >/dev/null 2>&1; then
        echo "test-prerequisites: dockerd did not come up; its log:" >&2
        tail -n 30 /tmp/dockerd.log >&2
        exit 1
    fi
fi

if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
