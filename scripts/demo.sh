#!/usr/bin/env bash
# The main job: an agent session, offline, with the scripted model. Turn 1 clones a repository,
# installs a package and starts a dev server in the session's machine; the session goes idle and
# is suspended (machine gone, snapshot on disk); turn 2 arrives, the machine is restored, and the
# dev server is still running. Every step says how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(swift build -c release --show-bin-path)"
stasis="${STASIS_BIN:-$bin/stasis}"
[ -x "$stasis" ] || { echo "demo: build first: scripts/setup.sh" >&2; exit 1; }
export STASIS_HOME="${STASIS_HOME:-$HOME/.stasis}"

now() { date +%s%N; }
ms_since() { echo $(( ($(now) - $1) / 1000000 )); }
say() { printf '\033[1m%s\033[0m\n' "$*"; }

work=$(mktemp -d /tmp/stasis-demo-XXXXXX)
server_pid=""; content_pid=""; session=""
cleanup() {
    [ -z "$session" ] || "$stasis" session rm "$session" >/dev/null 2>&1 || true
    [ -z "$server_pid" ] || { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; }
    [ -z "$content_pid" ] || kill "$content_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Host content the guest may reach (and nothing else): a git repository and a wheel.
(
    cd "$work"
    git init -q app && echo '<h1>hello from the dev server</h1>' > app/index.html
    git -C app add index.html && git -C app -c user.email=demo@example.invalid -c user.name=demo commit -qm init
    git clone -q --bare app app.git && git -C app.git update-server-info
    python3 - <<'PY'
import zipfile, base64, hashlib
files = {"greeting/__init__.py": "TEXT = 'installed from a local wheel'\n",
         "greeting-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: greeting\nVersion: 1.0\n",
         "greeting-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: stasis-demo\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b'=').decode()},{len(c)}" for p, c in files.items()]
files["greeting-1.0.dist-info/RECORD"] = "\n".join(record + ["greeting-1.0.dist-info/RECORD,,"]) + "\n"
with zipfile.ZipFile("greeting-1.0-py3-none-any.whl", "w") as z:
    for p, c in files.items(): z.writestr(p, c)
PY
)
content_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dev_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$content_port" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
content_pid=$!

say "== stasis serve"
rm -f "$STASIS_HOME/server/address"
"$stasis" serve --port 0 2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 300); do [ -s "$STASIS_HOME/server/address" ] && break; sleep 0.1; done
[ -s "$STASIS_HOME/server/address" ] || { cat "$work/serve.log" >&2; exit 1; }
echo "  $(cat "$STASIS_HOME/server/address") (scripted model: lines starting with \$ run in the machine)"

session=$("$stasis" session new --image debian-dev --allow-host "127.0.0.1:$content_port" -p "$dev_port:8000" --idle-timeout 5)
say "== session $session: turn 1"
base="http://10.0.2.100:$content_port"
# The guest's own view of its dev server (the image has python3, not curl).
fetch="python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000').read().decode().strip())\""
t0=$(now)
"$stasis" session send "$session" "set up the app and serve it
\$ git clone -q $base/app.git /root/app && ls /root/app
\$ python3 -m venv --without-pip /root/venv && python3 -m pip --python /root/venv/bin/python install -q --no-index --disable-pip-version-check $base/greeting-1.0-py3-none-any.whl && /root/venv/bin/python -c 'import greeting; print(greeting.TEXT)'
\$ cd /root/app && nohup python3 -m http.server 8000 >/tmp/dev-server.log 2>&1 & echo started
\$ for i in \$(seq 600); do ss -ltn | grep -q ':8000 ' && break; sleep 0.1; done; $fetch"
say "  turn 1: $(ms_since "$t0") ms (includes booting the machine)"
echo "  from the host: $(curl -s -m 5 "http://127.0.0.1:$dev_port/")"

say "== idle: the session suspends after 5 s"
last=$("$stasis" session ls --json | python3 -c "import json,sys; print([s for s in json.load(sys.stdin) if s['id']=='$session'][0]['lastSeq'])")
"$stasis" session attach "$session" --after "$last" --until suspended
echo "  machines left running for the session: $("$stasis" ps -q | grep -c "session-$session" || true)"
echo "  QEMU processes of the session: $(pgrep -fc "session-$session" || true)"

say "== turn 2, minutes or weeks later"
t0=$(now)
"$stasis" session send "$session" "is the server still up?
\$ $fetch; pgrep -af 'http.server 8000'"
say "  turn 2: $(ms_since "$t0") ms (includes restoring the machine)"
echo "  from the host: $(curl -s -m 5 "http://127.0.0.1:$dev_port/")"
say "== done: the log of the session"
"$stasis" session attach "$session" --no-follow | tail -n 5
