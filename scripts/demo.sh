#!/usr/bin/env bash
# The main job for now: boot a machine from the default image, run a few commands in it, and say
# how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
stasis="$(swift build -c release --show-bin-path)/stasis"
[ -x "$stasis" ] || { echo "demo: build first: scripts/setup.sh" >&2; exit 1; }

now() { date +%s%N; }
step() {  # step "what" command…
    local what="$1"; shift
    local t0; t0=$(now)
    "$@"
    printf '  \033[1m%-44s %6d ms\033[0m\n' "$what" $(( ($(now) - t0) / 1000000 ))
}

"$stasis" rm -f demo >/dev/null 2>&1 || true
echo "== stasis demo"
"$stasis" doctor | grep -E "accelerator|kernel" | sed 's/^/  /'
step "boot a 512 MiB machine from 'debian'"       "$stasis" run -d --name demo debian
step "exec: true"                                 "$stasis" exec demo true
step "exec: uname -a"                             "$stasis" exec demo uname -a
step "exec: cat /etc/os-release | head -2"        "$stasis" exec demo sh -c 'head -2 /etc/os-release'
step "exec: write and read back 10 MiB"           "$stasis" exec demo sh -c 'head -c 10M /dev/urandom > /root/data && sha256sum /root/data'
step "exec: ps (user processes)"                    "$stasis" exec demo ps --ppid 2 -p 2 --deselect -o pid,user,args
"$stasis" ps
step "stop (clean shutdown)"                      "$stasis" stop demo
step "rm"                                         "$stasis" rm demo
