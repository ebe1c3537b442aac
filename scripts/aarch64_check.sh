#!/usr/bin/env bash
# Installs slimtorch in an emulated arm64 Debian and runs a subset of its
# Python tests there: "pip install ." compiles the native module for aarch64
# under qemu-user, so this shows that the package builds and works on ARM64
# Linux without ARM hardware.
#
#   sudo bash scripts/aarch64_check.sh [SOURCE_DIR] [TEST_PATH ...]
#
# SOURCE_DIR (default: this checkout) is copied into the root, so another
# branch or clone can be checked with the same root. TEST_PATHs are relative
# to SOURCE_DIR (default: every op and layer test, the native-module tests,
# the edge export and the files written by earlier releases).
# Needs root (debootstrap, chroot, mounts) and the Debian packages debootstrap
# and qemu-user-static; registers qemu for arm64 binaries with binfmt_misc
# where that is not done yet. Everything goes under build/aarch64-root; the
# root is kept between runs, each finished stage is skipped the next time.
# It is slow (every instruction emulated, the C++ compiled under emulation),
# far beyond CI's time budget, so CI does not run it.
#
# Environment: AARCH64_ROOT (where the root goes), DEBIAN_MIRROR, DEBIAN_SUITE,
# TORCH_VERSION (the torch release pip installs; 2.9.1 by default),
# PIP_CERT / SSL_CERT_FILE (a CA bundle on this machine, copied into the root
# for pip: needed behind a TLS-intercepting proxy).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source_dir=$(cd "${1:-$repo}" && pwd)
shift || true
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  tests=(tests/ops tests/nn tests/test_native.py tests/api/test_export.py tests/api/test_files_written_before.py)
fi
root=${AARCH64_ROOT:-$repo/build/aarch64-root}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
torch_version=${TORCH_VERSION:-2.9.1}

case "$root" in
  /|"") echo "AARCH64_ROOT must not be /" >&2; exit 2 ;;
esac
stamp() { printf '\n=== %s (%s, %ss since start)\n' "$1" "$(date +%T)" "$SECONDS"; }
if [ "$(id -u)" != 0 ]; then echo "run as root (debootstrap, chroot and mount need it)" >&2; exit 2; fi
for tool in debootstrap qemu-aarch64-static chroot; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install debootstrap qemu-user-static)" >&2; exit 2; }
done

stamp "binfmt_misc registration of qemu-aarch64"
binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  # The F flag opens the interpreter now, so it also works inside the chroot.
  magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  echo ":qemu-aarch64:M::$magic:$mask:$(command -v qemu-aarch64-static):OCF" > "$binfmt/register"
fi
grep -E '^(enabled|interpreter|flags)' "$binfmt/qemu-aarch64"

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount_into_root() {  # source target [mount options...]
  local target=$root$2
  mkdir -p "$target"
  mountpoint -q "$target" || { mount "${@:3}" "$1" "$target"; mounted+=("$target"); }
}

if [ ! -e "$root/.stage-debootstrap" ]; then
  stamp "debootstrap --foreign (arm64 $suite)"
  mkdir -p "$root"
  debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3,python3-venv,python3-dev,g++,make,ca-certificates \
    "$suite" "$root" "$mirror"
  install -m 755 "$(command -v qemu-aarch64-static)" "$root/usr/bin/qemu-aarch64-static"
  stamp "debootstrap second stage (emulated)"
  chroot "$root" /debootstrap/debootstrap --second-stage
  touch "$root/.stage-debootstrap"
fi

mount_into_root proc /proc -t proc
mount_into_root /dev /dev --bind
mount_into_root sysfs /sys -t sysfs
cp /etc/resolv.conf "$root/etc/resolv.conf"
root_env=(HOME=/root PATH=/opt/venv/bin:/usr/bin:/bin LANG=C.UTF-8)
ca_bundle=${PIP_CERT:-${SSL_CERT_FILE:-}}
if [ -n "$ca_bundle" ] && [ -f "$ca_bundle" ]; then
  cp "$ca_bundle" "$root/etc/ssl/certs/host-ca-bundle.crt"
  root_env+=(PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt)
fi
in_root() { chroot "$root" /usr/bin/env -i "${root_env[@]}" "$@"; }

stamp "emulated machine"
in_root uname -m
in_root python3 --version

if [ ! -e "$root/.stage-torch" ]; then
  stamp "venv + torch==$torch_version (aarch64 CPU wheel) + test tools"
  in_root python3 -m venv /opt/venv
  in_root pip install -q --retries 10 --timeout 120 "torch==$torch_version" pytest pytest-benchmark hypothesis expecttest
  touch "$root/.stage-torch"
fi
in_root python -c "import torch, platform; print('torch', torch.__version__, platform.machine())"

stamp "pip install . (native module compiled under emulation)"
rm -rf "$root/src/slimtorch"
mkdir -p "$root/src/slimtorch"
# A clean copy: no build outputs or compiled modules of the host.
if git -C "$source_dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$source_dir" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) \
    | tar -xf - -C "$root/src/slimtorch"
else
  tar -C "$source_dir" --exclude=./build --exclude=./.venv --exclude='*.so' -cf - . | tar -xf - -C "$root/src/slimtorch"
fi
in_root bash -c 'set -o pipefail; cd /src/slimtorch && SLIMTORCH_CUDA=OFF CMAKE_BUILD_PARALLEL_LEVEL=2 pip install -v . 2>&1 | tail -60'
in_root python -c "import slimtorch, slimtorch._native as n; print('slimtorch', slimtorch.__version__, 'native module:', n.cpu is not None); n.cpu is not None or exit('the native module did not load')"
in_root slimtorch info || true

stamp "pytest ${tests[*]} (emulated)"
# From a copy of the tests only, so that the installed package is imported,
# not the sources.
rm -rf "$root/src/tests-only"
mkdir -p "$root/src/tests-only"
cp -r "$root/src/slimtorch/tests" "$root/src/slimtorch/pyproject.toml" "$root/src/tests-only/"
status=0
in_root bash -c "cd /src/tests-only && python -m pytest -q -p no:cacheprovider ${tests[*]}" || status=$?
stamp "finished: pytest exit status $status"
exit $status
