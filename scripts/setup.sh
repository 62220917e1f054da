#!/usr/bin/env bash
# Sets WimGuard up and runs a real backup and restore through the daemon:
#   1. installs wimtools when missing (used to prove interoperability),
#   2. builds the release binary,
#   3. starts `wimguard server` on a fresh home (free port),
#   4. backs up a demo source twice (the second run appends an image and
#      reads no unchanged file), restores it, compares the trees, has
#      wimlib-imagex verify the archive, and stops the server.
# WIMGUARD_DEMO_SOURCE picks another source (default /usr/share/doc).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --locked
WG=$PWD/target/release/wimguard
DEMO=${WIMGUARD_DEMO_DIR:-$(mktemp -d /tmp/wimguard-demo.XXXXXX)}
SRC=${WIMGUARD_DEMO_SOURCE:-/usr/share/doc}
export WIMGUARD_HOME=$DEMO/home
echo "== demo in $DEMO (source: $SRC)"
"$WG" server --port 0 >"$DEMO/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do "$WG" health >/dev/null 2>&1 && break; sleep 0.1; done
"$WG" health
# Exit code 8 is "done, with warnings" (files the source does not let us
# read, say): the demo goes on, the warnings are printed.
wg_done() { "$WG" "$@" || { rc=$?; [ "$rc" -eq 8 ] || return "$rc"; }; }
rm -f "$DEMO/demo.wim"
wg_done backup --source "$SRC" --destination "$DEMO/demo.wim" --name first
UUID=$(wg_done backup --source "$SRC" --destination "$DEMO/demo.wim" --name second --json | sed -n 's/.*"uuid":"\([^"]*\)".*/\1/p' | tail -n 1)
"$WG" backups list
rm -rf "$DEMO/restore"
wg_done restore "$UUID" --target "$DEMO/restore"
diff -r --no-dereference "$SRC" "$DEMO/restore" >/dev/null && echo "== restored tree is identical to $SRC"
wimlib-imagex verify "$DEMO/demo.wim" | tail -n 1
"$WG" stats
kill -TERM $SERVER && wait $SERVER || true
trap - EXIT
echo "== done: archive at $DEMO/demo.wim, server home at $WIMGUARD_HOME"
