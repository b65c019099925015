#!/usr/bin/env bash
# Build the real image from our Dockerfile on a machine that cannot reach a container registry, then run
# vlpeft stages in it through kfp.local.DockerRunner (`make image-local`).
#
# What stands in for the registry (kfp-notes.md §4.3): Debian's docker.io engine started with flags that
# work without iptables or a bridge; a base image made with debootstrap from the machine's Debian mirror
# (Debian 12 + its python3 3.11 instead of python:3.11-slim-bookworm); an offline wheelhouse made by the
# host's pip (torch 2.13.0 as the host installs it, here the CPU build, plus requirements/lock.txt). The
# build itself installs no Python package from the network (PIP_OFFLINE=1); it reaches the network only for
# `apt-get install openjdk-17-jre-headless` from the same Debian mirror. WITH_SPICE=0: no CoreNLP download.
#
# Needs root (apt-get, debootstrap, dockerd). Everything lives under $VLPEFT_IMAGE_SCRATCH
# (default /tmp/vlpeft-image, 6-13 GB); the base image and the wheelhouse are kept for the next run,
# `rm -rf` that directory for a cold run. The daemon is started here and stopped by its PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
S=${VLPEFT_IMAGE_SCRATCH:-/tmp/vlpeft-image}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
VERSION=$("$PYTHON" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' \
  "$ROOT/pyproject.toml")
IMAGE=${IMAGE:-localhost/vlpeft/vlpeft:$VERSION-cpu}
BASE=localhost/vlpeft/debian-py:bookworm
DOCKER=/usr/bin/docker # Debian's client, matching Debian's daemon (another client may come first on PATH)
export DOCKER_HOST="unix://$S/docker.sock" DOCKER_BUILDKIT=0

mkdir -p "$S"
declare -A SECONDS_OF
t0=$(date +%s.%N)
step() { # step NAME COMMAND...: run, time, remember
  local name=$1 start end
  shift
  echo "== $name"
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  SECONDS_OF[$name]=$(printf '%.1f' "$(echo "$end - $start" | bc)")
  echo "   $name: ${SECONDS_OF[$name]} s"
}

packages() {
  local missing=()
  [ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ] || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v bc >/dev/null || missing+=(bc)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

DOCKERD_PID=""
stop_daemon() {
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    kill "$DOCKERD_PID"
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  fi
  # dockerd leaves its network-namespace mount behind
  if mountpoint -q "$S/exec/netns/default" 2>/dev/null; then umount "$S/exec/netns/default" || true; fi
}

start_daemon() {
  # No iptables, no bridge (this machine allows neither): containers run with --network none or host.
  /usr/sbin/dockerd --iptables=false --bridge=none --host "$DOCKER_HOST" --data-root "$S/data" \
    --exec-root "$S/exec" --pidfile "$S/dockerd.pid" >"$S/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  trap stop_daemon EXIT
  for _ in $(seq 120); do "$DOCKER" version >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "dockerd did not start; see $S/dockerd.log" >&2
  return 1
}

# The host's Debian mirror (read from its apt sources, so no host name is written into the repository).
debian_mirror() {
  local uri
  uri=$(grep -h -E '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
    | grep -v -- '-security' | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -h -E '^\s*deb\s' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1)
  echo "$uri"
}

base_image() {
  if "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    echo "   $BASE exists (rm -rf $S for a cold run)"
    return 0
  fi
  local mirror rootfs=$S/rootfs
  mirror=$(debian_mirror)
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror"
  # debootstrap writes only `bookworm main`: use the host's full Debian sources (updates + security), or
  # apt in the image installs older builds than the host has.
  if ls /etc/apt/sources.list.d/debian.sources >/dev/null 2>&1; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  # The host's apt settings for its mirror (e.g. a snapshot whose Release files are past Valid-Until).
  cp /etc/apt/apt.conf.d/99* "$rootfs/etc/apt/apt.conf.d/" 2>/dev/null || true
  rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/var/cache/apt/archives/"*.deb
  tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE"
  rm -rf "$rootfs"
}

wheelhouse() {
  # The stamp lives beside the wheelhouse, not in it: a file inside would change the build's
  # `COPY wheelhouse/` layer and so re-run every pip install of the image.
  local wh=$S/wheelhouse stamp
  stamp=$(sha256sum <"$ROOT/requirements/lock.txt" | cut -c1-16)
  if [ -f "$S/wheelhouse.stamp-$stamp" ]; then
    echo "   wheelhouse up to date"
    return 0
  fi
  rm -rf "$wh" "$S"/wheelhouse.stamp-* && mkdir -p "$wh"
  # torch as the host installs it (make setup), then the lock: every wheel the offline build needs.
  "$PYTHON" -m pip wheel -q --disable-pip-version-check -w "$wh" torch==2.13.0 2>&1 | { grep -v 'is ignored' || true; }
  "$PYTHON" -m pip wheel -q --disable-pip-version-check -w "$wh" -r "$ROOT/requirements/lock.txt" 2>&1 \
    | { grep -v 'is ignored' || true; }
  rm -f "$S"/wheelhouse.stamp-*
  touch "$S/wheelhouse.stamp-$stamp"
}

# The build context: the checkout's files as git sees them (tracked + untracked, not ignored) plus the
# wheelhouse; .dockerignore applies on top.
context() {
  local ctx=$S/ctx
  rm -rf "$ctx" && mkdir -p "$ctx"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$ctx" 2>/dev/null) || true
  rm -rf "$ctx/wheelhouse" && cp -al "$S/wheelhouse" "$ctx/wheelhouse"
}

build() {
  "$DOCKER" build --network host \
    --build-arg PYTHON_IMAGE="$BASE" --build-arg PIP_OFFLINE=1 --build-arg WITH_SPICE=0 \
    -t "$IMAGE" "$S/ctx"
}

smoke() {
  "$DOCKER" run --rm --network none "$IMAGE" sh -c \
    'echo "uid=$(id -u) gid=$(id -g) user=$(id -un)"; vlpeft version; python -c "import torch, transformers, peft, mlflow, kfp; print(\"torch\", torch.__version__, \"transformers\", transformers.__version__, \"peft\", peft.__version__, \"mlflow\", mlflow.__version__, \"kfp\", kfp.__version__)"; java -version 2>&1 | head -1'
}

in_image() {
  "$PYTHON" "$ROOT/scripts/image/run_in_image.py" --image "$IMAGE" --work "$S/run"
}

step packages packages
step daemon start_daemon
step base-image base_image
step wheelhouse wheelhouse
step context context
step build build
step smoke smoke
step kfp-docker-runner in_image

size=$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE")
total=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
echo "== $IMAGE: $(echo "scale=2; $size / 1000000000" | bc) GB ($size bytes); total $total s"
{
  printf '{"image": "%s", "size_bytes": %s, "total_s": %s' "$IMAGE" "$size" "$total"
  for k in packages daemon base-image wheelhouse context build smoke kfp-docker-runner; do
    printf ', "%s_s": %s' "$k" "${SECONDS_OF[$k]}"
  done
  printf '}\n'
} | tee "$S/figures.json"
