#!/usr/bin/env bash
# The main job for now: boot a machine from the default image, run a few commands in it, then put
# it to sleep on disk and bring it back (and fork it), saying how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
stasis="$(swift build -c release --show-bin-path)/stasis"
[ -x "$stasis" ] || { echo "demo: build first: scripts/setup.sh" >&2; exit 1; }

now() { date +%s%N; }
step() {  # step "what" command…
    local what="$1"; shift
    local t0; t0=$(now)
    "$@"
    printf '  \033[1m%-46s %6d ms\033[0m\n' "$what" $(( ($(now) - t0) / 1000000 ))
}
cleanup() {
    "$stasis" rm -f demo demo-back $("$stasis" ps -a -q | grep '^demo-fork' || true) >/dev/null 2>&1 || true
    [ -z "${snapshot:-}" ] || "$stasis" snapshot rm "$snapshot" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

echo "== stasis demo"
"$stasis" doctor | grep -E "accelerator|kernel" | sed 's/^/  /' || true
step "boot a 512 MiB machine from 'debian'"         "$stasis" run -d --name demo debian
step "exec: true"                                   "$stasis" exec demo true
step "exec: uname -a"                               "$stasis" exec demo uname -a
step "exec: write and hash 10 MiB"                  "$stasis" exec demo sh -c 'head -c 10M /dev/urandom > /root/data && sha256sum /root/data'
step "exec -d: a counter that lives in RAM"         "$stasis" exec -d demo sh -c 'i=0; while sleep 0.1; do i=$((i+1)); echo $i > /run/counter; done'
"$stasis" exec demo sh -c 'sleep 1; echo "  counter before snapshot: $(cat /run/counter)"'
"$stasis" ps

echo "== suspend to disk and back"
t0=$(now)
snapshot=$("$stasis" snapshot demo --tag demo)
printf '  \033[1m%-46s %6d ms\033[0m\n' "snapshot (machine stopped: no process left)" $(( ($(now) - t0) / 1000000 ))
"$stasis" snapshots | sed 's/^/  /'
step "restore"                                      "$stasis" restore demo --name demo-back
"$stasis" exec demo-back sh -c 'echo "  counter right after restore: $(cat /run/counter), generation $(cat /run/stasis/generation)"; sha256sum /root/data | cut -c1-16'
step "fork 3 machines from the snapshot"            "$stasis" fork demo --count 3 --name demo-fork
for m in $("$stasis" ps -q | grep '^demo-fork'); do
    "$stasis" exec "$m" sh -c 'echo "  $(hostname): counter $(cat /run/counter), random $(head -c 6 /dev/urandom | od -An -tx1 | tr -d " ")"'
done
step "stop (clean shutdown)"                        "$stasis" stop demo-back
