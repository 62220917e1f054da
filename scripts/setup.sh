#!/usr/bin/env bash
# Sets WimGuard up and runs a real backup and restore:
#   1. installs wimtools when missing (used to prove interoperability),
#   2. builds the release binary,
#   3. captures a demo tree into a WIM, appends an unchanged second image,
#      has wimlib-imagex verify the archive, restores it and compares.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --locked
WG=target/release/wimguard
DEMO=${WIMGUARD_DEMO_DIR:-$(mktemp -d /tmp/wimguard-demo.XXXXXX)}
SRC=${WIMGUARD_DEMO_SOURCE:-/usr/share/doc}
echo "== demo in $DEMO (source: $SRC)"
rm -f "$DEMO/demo.wim"
"$WG" archive capture "$SRC" "$DEMO/demo.wim" --name first --compression lzx
"$WG" archive capture "$SRC" "$DEMO/demo.wim" --name second
"$WG" archive info "$DEMO/demo.wim"
wimlib-imagex verify "$DEMO/demo.wim" | tail -n 1
rm -rf "$DEMO/restore"
"$WG" archive extract "$DEMO/demo.wim" second "$DEMO/restore"
diff -r --no-dereference "$SRC" "$DEMO/restore" >/dev/null && echo "== restored tree is identical to $SRC"
echo "== done: archive at $DEMO/demo.wim"
