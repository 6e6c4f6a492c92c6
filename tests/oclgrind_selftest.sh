#!/usr/bin/env bash
# Shows that the Oclgrind check can fail: a copy of the kernels with one barrier of the tiled
# kernel removed (the one that keeps the next tile's loads from overwriting local memory the
# previous tile still reads) must make Oclgrind report a data race, through the same
# invocation as tests/oclgrind_check.sh.
#   tests/oclgrind_selftest.sh OCLGRIND CLATTN_RUN KERNEL_SOURCE_DIR
set -u
oclgrind=$1
run=$2
src=$3
dir=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$dir" "$log"' EXIT
cp "$src"/*.cl "$dir"/
pattern='barrier(CLK_LOCAL_MEM_FENCE); /\* the previous tile is no longer read \*/'
if ! grep -q "$pattern" "$dir/attention_tiled.cl"; then
  echo "FAIL: the barrier to remove is not in attention_tiled.cl any more; update this test"
  exit 1
fi
sed -i "0,\\|$pattern|s|||" "$dir/attention_tiled.cl"
CLATTN_KERNEL_DIR=$dir "$oclgrind" --data-races --check-api "$run" --core --seq 37 --seq-kv 45 \
  --head-dim 8 --heads 2 --variant tiled --block-m 8 --threads-per-row 4 --block-n 8 --reps 1 \
  --warmup 0 >"$log" 2>&1
if grep -q 'data race' "$log"; then
  echo "ok: the removed barrier is reported as a data race"
  grep -m 3 'data race' "$log"
  exit 0
fi
echo "FAIL: no data race reported without the barrier"
sed -n '1,40p' "$log"
exit 1
