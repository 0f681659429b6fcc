#!/usr/bin/env bash
# Installs everything Stasis needs on Debian 12 and builds it. Safe to run again: each step is
# skipped when its result is already there.
#
#   scripts/setup.sh [--no-image] [--debug]
#
#   1. Debian packages (QEMU, e2fsprogs, mmdebstrap, …)       apt-get
#   2. the guest kernel from Debian's cloud kernel package      scripts/fetch-kernel.sh
#   3. the stasis CLI and the static guest agent stasis-init    swift build
#   4. the images: "debian" (bookworm minbase, the default) and    stasis image build
#      "debian-dev" (+ git, python3, venv, pip: the seed example)
#
# State goes to $STASIS_HOME (default ~/.stasis). Nothing is downloaded but Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

build_image=1
config=release
for arg in "$@"; do
    case "$arg" in
        --no-image) build_image=0 ;;
        --debug) config=debug ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument '$arg' (usage: $0 [--no-image] [--debug])" ;;
    esac
done

home="${STASIS_HOME:-$HOME/.stasis}"
packages=(qemu-system-x86 qemu-utils e2fsprogs zstd libzstd-dev libfuse3-dev fuse3 mmdebstrap busybox-static lz4 socat
          cpio curl ca-certificates binutils python3 git pkg-config)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq || die "apt-get update failed: check the apt sources"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
else
    say "Debian packages: all installed"
fi

command -v swift >/dev/null || die "swift is not in PATH: install Swift 6.3 (https://www.swift.org/install/linux/)"

scripts/fetch-kernel.sh

say "building the guest agent (static stasis-init)"
swift build -c release --product stasis-init --scratch-path .build-guest -Xswiftc -static-executable >&2 \
    || die "building stasis-init failed"
mkdir -p "$home/guest"
strip -o "$home/guest/.stasis-init.tmp" .build-guest/release/stasis-init
sync "$home/guest/.stasis-init.tmp"
mv -f "$home/guest/.stasis-init.tmp" "$home/guest/stasis-init"

say "building stasis ($config)"
swift build -c "$config" --product stasis >&2 || die "building stasis failed"
swift build -c "$config" --product stasis-bench >&2 || die "building stasis-bench failed"
swift build -c "$config" --product stasis-memfs >&2 || die "building stasis-memfs failed"
bin="$(swift build -c "$config" --show-bin-path)"

build() {  # build NAME PACKAGES
    if [ -f "$home/images/$1/image.json" ]; then
        say "image $1: already built"
    else
        say "building image '$1' (bookworm minbase + $2, under a minute)"
        "$bin/stasis" image build "$1" --debian bookworm --packages "$2" >/dev/null || die "building image $1 failed"
    fi
}
if [ "$build_image" -eq 1 ]; then
    build debian procps,iproute2
    build debian-dev procps,iproute2,git,python3,python3-venv,python3-pip,ca-certificates
fi

say "done: $bin/stasis (run '$bin/stasis doctor' to check)"
