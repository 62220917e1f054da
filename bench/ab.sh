#!/bin/bash
# Compares two builds of a benchmark that prints "<speed> MB/s" (the first
# such figure counts), such as host/codecs/lzx/examples/lzx_ratio.rs with
# LZX_BENCH=ours or host/codecs/xpress/examples/xpress_ratio.rs with
# XPRESS_BENCH=ours. Both run at the same time, one per CPU, and swap CPUs
# every round, so a slow spell of the shared machine hits both. Give each run a few
# seconds: an A/A run (one build on both sides, lzx_ratio 32768 16) gave
# rounds of 0.95-1.04 and a median of 0.99 over 4 rounds, so use 8 rounds
# or more for differences of a few percent.
#
#   bench/ab.sh ROUNDS OLD NEW [ARGS...]
#   LZX_BENCH=ours bench/ab.sh 8 /tmp/lzx_ratio.old target/release/examples/lzx_ratio 32768 16
#   XPRESS_BENCH=ours bench/ab.sh 8 /tmp/xpress_ratio.old target/release/examples/xpress_ratio 8
#
# Prints each round's speeds and NEW/OLD ratio, then the median ratio
# (above 1: NEW is faster). The environment reaches both; to give one side
# other settings, wrap it in a script.
set -euo pipefail
if (( $# < 3 )); then
    sed -n '2,17p' "$0" | cut -c3-
    exit 2
fi
rounds=$1 old=$2 new=$3
shift 3
if ! command -v taskset >/dev/null || (( $(nproc) < 2 )); then
    echo "ab.sh needs taskset and 2 CPUs" >&2
    exit 2
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
speed() {
    grep -o '[0-9.]* MB/s' "$1" | head -1 | cut -d' ' -f1 | grep . ||
        { echo "no 'MB/s' in the output of $2:" >&2; cat "$1" >&2; exit 1; }
}
for ((r = 0; r < rounds; r++)); do
    a=$((r % 2)) b=$((1 - r % 2))
    taskset -c "$a" "$old" "$@" >"$out/old" 2>&1 & p=$!
    taskset -c "$b" "$new" "$@" >"$out/new" 2>&1 & q=$!
    wait "$p" || { echo "$old failed:" >&2; cat "$out/old" >&2; exit 1; }
    wait "$q" || { echo "$new failed:" >&2; cat "$out/new" >&2; exit 1; }
    o=$(speed "$out/old" "$old")
    n=$(speed "$out/new" "$new")
    ratio=$(awk -v o="$o" -v n="$n" 'BEGIN { printf "%.3f", n / o }')
    echo "round $((r + 1)): old $o MB/s, new $n MB/s, new/old $ratio"
    echo "$ratio" >>"$out/ratios"
done
sort -n "$out/ratios" | awk '{ r[NR] = $1 } END { m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2;
    printf "median new/old speed: %.3f (rounds %s-%s)\n", m, r[1], r[NR] }'
