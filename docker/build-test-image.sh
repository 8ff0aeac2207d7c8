#!/usr/bin/env bash
# Build maestro-test/busybox:latest, the image the Docker executor's tests run, from the host's
# static busybox (Debian's busybox-static package). Nothing is pulled: the image is FROM scratch.
#
# Idempotent and fast when the image exists: it is rebuilt only when it is missing or was built
# from a different busybox binary or Dockerfile (their sha256 is kept in an image label).
#
# Environment: BUSYBOX (default /bin/busybox), IMAGE (default maestro-test/busybox:latest).
set -euo pipefail

image="${IMAGE:-maestro-test/busybox:latest}"
busybox="${BUSYBOX:-/bin/busybox}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v docker >/dev/null; then
    echo "build-test-image: the docker CLI is not installed (apt-get install -y docker.io)" >&2
    exit 1
fi
if [[ ! -x "$busybox" ]]; then
    echo "build-test-image: $busybox is missing; install it with: apt-get install -y busybox-static" >&2
    exit 1
fi
if ! file_type="$(LC_ALL=C file -b "$busybox" 2>/dev/null)" || [[ "$file_type" != *"statically linked"* && "$file_type" != *"static-pie"* ]]; then
    # Without `file`, trust the caller; with it, refuse a dynamic busybox, which cannot run FROM scratch.
    if command -v file >/dev/null; then
        echo "build-test-image: $busybox is not statically linked; install busybox-static" >&2
        exit 1
    fi
fi

sum="$(cat "$busybox" "$here/busybox/Dockerfile" | sha256sum | cut -d' ' -f1)"

# Parallel test binaries may all call this script: one build at a time, the others wait and reuse.
lock="${TMPDIR:-/tmp}/maestro-test-image.lock"
exec 9>"$lock"
flock 9

current="$(docker image inspect --format '{{ index .Config.Labels "maestro.test-image.sha256" }}' "$image" 2>/dev/null || true)"
if [[ "$current" == "$sum" ]]; then
    exit 0
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$here/busybox/Dockerfile" "$context/Dockerfile"
cp "$busybox" "$context/busybox"
chmod 0755 "$context/busybox"

# The classic builder needs nothing but the engine; BuildKit would need the buildx plugin.
if ! log="$(DOCKER_BUILDKIT=0 docker build --quiet \
    --label "maestro.test-image.sha256=$sum" \
    --tag "$image" "$context" 2>&1)"; then
    echo "$log" >&2
    echo "build-test-image: docker build of $image failed (is the engine running? docker info)" >&2
    exit 1
fi
echo "build-test-image: built $image from $busybox" >&2
