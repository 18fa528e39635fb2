#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for pybuild: system packages, then a venv in .venv with pybuild and its
# test tools installed. Idempotent; `make demo` and `make test` call it first.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="python3-venv python3-dev gcc skopeo umoci runc crun podman busybox-static pigz zstd docker.io debootstrap docker-registry slirp4netns passt uidmap fuse-overlayfs"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=$(for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: need Python >= 3.11" >&2; exit 1; }

stamp=.venv/.pybuild-setup
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
# Byte-compile (a no-op when up to date): a build must not pay for compiling pybuild, and the environment
# may forbid writing .pyc files at run time (PYTHONDONTWRITEBYTECODE).
.venv/bin/python -m compileall -q pybuild >/dev/null

# crun refuses cgroup v1 "hybrid" hosts whose cgroup2 hierarchy still holds controllers (here: hugetlb);
# moving each such controller to its own v1 hierarchy makes crun usable (runc works either way). Needs root;
# idempotent. The controllers file is read, not size-tested: cgroupfs files report a size of 0.
controllers=$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true)
if [ "$(id -u)" = 0 ] && [ -n "$controllers" ]; then
  for c in $controllers; do
    mountpoint -q "/sys/fs/cgroup/$c" 2>/dev/null && continue
    { mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"; } 2>/dev/null \
      || echo "setup: warning: could not mount the $c cgroup controller as a v1 hierarchy; crun unusable, runc still fine" >&2
  done
fi

# A rootless build opens /dev/net/tun (slirp4netns, the RUN network) and /dev/fuse (fuse-overlayfs, where the
# kernel refuses overlayfs in a user namespace) as the user: 0666 is their standard mode (udev's), but some
# images ship them 0600.
for dev in /dev/net/tun /dev/fuse; do
  if [ "$(id -u)" = 0 ] && [ -c "$dev" ]; then chmod 0666 "$dev"; fi
done

# The rootless tests run pybuild as this unprivileged user, with 65536 subordinate uids and gids (next to
# the highest range /etc/subuid already hands out). Needs root; idempotent.
ROOTLESS_USER=${PYBUILD_ROOTLESS_USER:-pybuild-rootless}
if [ "$(id -u)" = 0 ] && command -v useradd >/dev/null; then
  id -u "$ROOTLESS_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$ROOTLESS_USER"
  for kind in uid gid; do
    file=/etc/sub$kind
    touch "$file"
    grep -q "^$ROOTLESS_USER:" "$file" && continue
    start=$(awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }' "$file")
    usermod "--add-sub${kind}s" "$start-$((start + 65535))" "$ROOTLESS_USER"
  done
fi
