#!/usr/bin/env bash
# Fetches the guest kernel from Debian's packages (linux-image-cloud-amd64) and installs it into
# ${STASIS_HOME:-$HOME/.stasis}/kernel/<version>/ (vmlinux, modules/, config, kernel.json), then
# points kernel/current at it. Safe to run again: does nothing if kernel/current/kernel.json exists.
#
# Usage: scripts/fetch-kernel.sh [--force]
#
# Needs (apt packages): lz4; plus apt, dpkg and coreutils, which every Debian has. No binutils.
# No other network than the Debian apt mirrors.
set -euo pipefail

die() { echo "fetch-kernel: error: $*" >&2; exit 1; }
say() { echo "fetch-kernel: $*"; }
# Any command that fails without its own message still says where.
trap 'echo "fetch-kernel: error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown argument '$arg' (usage: $0 [--force])" ;;
    esac
done

for tool in apt-cache apt-get dpkg-deb lz4 od dd stat; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: install it (apt-get install lz4 dpkg apt coreutils)"
done

home="${STASIS_HOME:-$HOME/.stasis}"
kernels="$home/kernel"

if [[ $force -eq 0 && -f "$kernels/current/kernel.json" ]]; then
    say "kernel already installed: $(readlink "$kernels/current") in $kernels (use --force to refetch)"
    exit 0
fi

meta=linux-image-cloud-amd64

# The meta-package's candidate names the real kernel package, e.g. linux-image-6.1.0-56-cloud-amd64.
# Only refresh the package lists if apt knows no candidate at all (apt-get update is slow-ish).
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
c="$(candidate "$meta")"
if [[ -z "$c" || "$c" == "(none)" ]]; then
    say "apt knows no candidate for $meta: running apt-get update"
    apt-get update -qq || die "apt-get update failed"
    c="$(candidate "$meta")"
    [[ -n "$c" && "$c" != "(none)" ]] || die "no installable candidate for $meta in the apt sources"
fi

version="$(apt-cache depends "$meta" 2>/dev/null \
    | sed -nE 's/^ *\|?Depends: linux-image-([0-9][^ ]*)-cloud-amd64(-unsigned)?$/\1/p' | head -n1)"
[[ -n "$version" ]] || die "cannot find the kernel version $meta $c depends on (apt-cache depends $meta)"
version="$version-cloud-amd64"

# The unsigned package holds the same kernel without the Secure Boot signature wrapper; prefer it.
package="linux-image-$version-unsigned"
pkgver="$(candidate "$package")"
if [[ -z "$pkgver" || "$pkgver" == "(none)" ]]; then
    package="linux-image-$version"
    pkgver="$(candidate "$package")"
    [[ -n "$pkgver" && "$pkgver" != "(none)" ]] || die "neither $package-unsigned nor $package can be installed"
fi
say "kernel $version from $package $pkgver"

work="$(mktemp -d "${TMPDIR:-/tmp}/stasis-kernel.XXXXXX")" || die "cannot create a temporary folder"
trap 'rm -rf "$work"' EXIT
# apt-get download drops privileges to _apt when run as root; let it write here.
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi

say "downloading $package=$pkgver"
(cd "$work" && apt-get download -q "$package=$pkgver" >/dev/null) \
    || die "apt-get download $package=$pkgver failed"
deb="$(ls "$work"/*.deb 2>/dev/null | head -n1)"
[[ -n "$deb" ]] || die "apt-get download produced no .deb in $work"

say "unpacking $(basename "$deb")"
mkdir "$work/pkg"
dpkg-deb -x "$deb" "$work/pkg" || die "dpkg-deb -x $deb failed"

vmlinuz="$work/pkg/boot/vmlinuz-$version"
config="$work/pkg/boot/config-$version"
modules="$work/pkg/lib/modules/$version"
[[ -f "$vmlinuz" ]] || die "the package has no boot/vmlinuz-$version"
[[ -f "$config" ]] || die "the package has no boot/config-$version"
[[ -d "$modules" ]] || die "the package has no lib/modules/$version"

# Stage everything in a hidden folder next to the target so the final step is one rename.
mkdir -p "$kernels" || die "cannot create $kernels"
stage="$kernels/.$version.partial"
rm -rf "$stage"
mkdir "$stage"

# vmlinux: the bzImage setup header locates the compressed payload (Documentation/x86/boot.rst).
u8()  { od -An -tu1 -j "$(($2))" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$(($2))" -N4 --endian=little "$1" | tr -d ' '; }
[[ "$(od -An -c -j $((0x202)) -N4 "$vmlinuz" | tr -d ' ')" == "HdrS" ]] \
    || die "$vmlinuz is not a bzImage (no HdrS setup header)"
setup_sects="$(u8 "$vmlinuz" 0x1f1)"
[[ "$setup_sects" -eq 0 ]] && setup_sects=4   # boot protocol: 0 means 4
payload_offset="$(u32 "$vmlinuz" 0x248)"
payload_length="$(u32 "$vmlinuz" 0x24c)"
start=$(( (setup_sects + 1) * 512 + payload_offset ))
say "extracting vmlinux (payload $payload_length bytes at $start)"
dd if="$vmlinuz" of="$work/payload" iflag=skip_bytes,count_bytes skip="$start" count="$payload_length" \
    bs=1M status=none || die "cannot cut the payload out of $vmlinuz"
# LZ4 legacy frame magic 0x184C2102, little-endian.
[[ "$(od -An -tx1 -N4 "$work/payload" | tr -d ' ')" == "02214c18" ]] \
    || die "the vmlinuz payload is not LZ4 legacy format (this script only handles LZ4 kernels)"
# The kernel build appends the uncompressed size (u32 LE) after the LZ4 frames, which makes lz4
# exit 1 on the "trailing garbage"; so judge the result by that size and the ELF magic instead.
lz4 -dc "$work/payload" > "$stage/vmlinux" 2>"$work/lz4.err" || true
expected_size="$(u32 "$work/payload" "$((payload_length - 4))")"
actual_size="$(stat -c %s "$stage/vmlinux")"
[[ "$actual_size" -eq "$expected_size" ]] \
    || die "vmlinux is $actual_size bytes, the kernel says $expected_size: $(cat "$work/lz4.err")"
[[ "$(od -An -tx1 -N4 "$stage/vmlinux" | tr -d ' ')" == "7f454c46" ]] \
    || die "decompressed vmlinux is not an ELF file: $(cat "$work/lz4.err")"

say "installing modules and config"
mv "$modules" "$stage/modules"
cp "$config" "$stage/config"

# kernel.json last: its presence marks a complete install.
printf '{\n  "package" : "%s",\n  "packageVersion" : "%s",\n  "version" : "%s"\n}\n' \
    "$package" "$pkgver" "$version" > "$stage/kernel.json.tmp"
mv "$stage/kernel.json.tmp" "$stage/kernel.json"
sync -f "$stage/kernel.json" 2>/dev/null || sync

target="$kernels/$version"
if [[ -e "$target" ]]; then
    # A refetch (or an earlier broken install): move the old one aside, then delete it.
    old="$kernels/.$version.old.$$"
    mv -T "$target" "$old" || die "cannot move the old $target aside"
    mv -T "$stage" "$target" || die "cannot install $target"
    rm -rf "$old"
else
    mv -T "$stage" "$target" || die "cannot install $target"
fi

ln -sfn "$version" "$kernels/current.tmp" || die "cannot create $kernels/current.tmp"
mv -T "$kernels/current.tmp" "$kernels/current" || die "cannot point $kernels/current at $version"
sync
say "installed $version in $target; kernel/current -> $version"
