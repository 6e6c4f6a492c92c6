#!/usr/bin/env bash
# The tools' command lines, without a device: --version prints "<tool> <version>", --help
# exits 0, and each bad command line exits 2 with a message naming the flag and the text.
#   tests/tools_cli.sh TOOLS_DIR VERSION
set -u
dir=$1
version=$2
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# expect STATUS PATTERN TOOL ARGS...: the exit status, and a fixed string in stdout + stderr.
expect() {
  local status=$1 pattern=$2 tool=$3
  shift 3
  "$dir/$tool" "$@" >"$out" 2>&1
  local rc=$?
  if [[ $rc -ne $status ]] || ! grep -qF -- "$pattern" "$out"; then
    echo "FAIL: $tool $* exited $rc (expected $status) and printed:"
    sed -n '1,5p' "$out"
    echo "  (expected to contain: $pattern)"
    failed=1
  else
    echo "ok:   $tool $*"
  fi
}

for tool in clattn-run clattn-bench clattn-tune clattn-info; do
  expect 0 "$tool $version" "$tool" --version
  expect 0 "--version" "$tool" --help
  expect 2 "unknown flag '--bogus'" "$tool" --bogus
  expect 2 "--json is given more than once" "$tool" --json --json
done
expect 0 "clattn-run $version" clattn-run --core --version
expect 0 "--lse" clattn-run --core --help

# Values that do not fit their flag are refused, never wrapped.
for mode in "" --core; do
  # shellcheck disable=SC2086  # mode is an argument list
  expect 2 "'99999999999999999999'" clattn-run $mode --seq 99999999999999999999
  # shellcheck disable=SC2086
  expect 2 "--reps takes 0..1000000, got '99999999999'" clattn-run $mode --reps 99999999999
  # shellcheck disable=SC2086
  expect 2 "--seed takes 0..18446744073709551615" clattn-run $mode --seed 18446744073709551616
done
expect 2 "--block-m takes 0..4294967295, got '4294967296'" clattn-run --core --block-m 4294967296
expect 2 "--layout takes bhnd|bnhd, got 'x'" clattn-run --core --layout x
expect 2 "--variant takes auto|tiled|regblock, got 'x'" clattn-run --core --variant x
expect 2 "unknown flag '--lse' (options of the attention core alone need --core)" clattn-run --lse
expect 2 "--seq needs a non-negative integer, got '-1'" clattn-run --core --seq -1
expect 2 "--block-m takes 0..4294967295, got '4294967296'" clattn-bench --block-m 4294967296
expect 2 "--reps takes 0..1000000" clattn-bench --reps 99999999999
expect 2 "--max-seconds needs a positive finite number, got 'inf'" clattn-bench --max-seconds inf
expect 2 "'bogus' is not one of fused, unfused_clblast, naive, reference, cached" clattn-bench \
  --impl fused,bogus
expect 2 "--mha needs --d-model" clattn-bench --mha
expect 2 "--bandwidth-mb takes 1..16384, got '0'" clattn-bench --bandwidth-mb 0
expect 2 "--bandwidth-mb takes 1..16384, got '16385'" clattn-bench --bandwidth-mb 16385
expect 2 "--bandwidth-mb needs a non-negative integer, got '1.5'" clattn-bench --bandwidth-mb 1.5
expect 2 "--num-splits takes 0..4294967295, got '4294967296'" clattn-bench --num-splits 4294967296
expect 2 "--decode takes no value, got '1'" clattn-bench --decode=1
expect 2 "--block-tokens takes 0..1048576, got '1048577'" clattn-bench --block-tokens 1048577
expect 2 "--decode times the attention core; drop --mha" clattn-bench --decode --d-model 64
expect 2 "--variant takes auto|tiled_local|register_blocked" clattn-bench --variant x
expect 2 "--seq-kv needs a non-negative integer, got '-4096'" clattn-bench --decode --seq-kv -4096
expect 2 "--seed takes 0..4294967295, got '4294967296'" clattn-tune --seed 4294967296
expect 2 "--budget needs a positive finite number, got 'inf'" clattn-tune --budget inf
expect 2 "--seq takes comma-separated integers" clattn-tune --seq 64,,128
expect 2 "unexpected argument '2'" clattn-tune --causal 2
expect 2 "leave nothing to tune" clattn-tune --no-gemm --gemm-only
expect 2 "--device needs a value" clattn-info --device
# An output the run could not write is refused before any tuning, not after the budget.
expect 1 "/dev/null is a device" clattn-tune --output /dev/null --budget 600
expect 1 "the path of the tuning file is empty" clattn-tune --output "" --budget 600

# With --json, a run that fails before any result still prints one JSON object on stdout
# (the shape is refused, or with no device the context is; either way "ok" is false).
"$dir/clattn-bench" --json --no-peak --head-dim 300 >"$out" 2>/dev/null
if head -c 12 "$out" | grep -qF '{"ok":false'; then
  echo "ok:   clattn-bench --json --no-peak --head-dim 300 prints a JSON error object"
else
  echo "FAIL: clattn-bench --json --no-peak --head-dim 300 printed on stdout:"
  sed -n '1,3p' "$out"
  failed=1
fi

# With a device (clattn-info finds one): checks that need a context.
if "$dir/clattn-info" >/dev/null 2>&1; then
  # A layer the library refuses is reported as such before gigabytes of host weights are
  # made (before, "out of host memory"); the check is the library's own.
  expect 1 "d_model (100000) is not divisible by heads (3)" clattn-run --d-model 100000 --heads 3
  expect 1 "head_dim 33333 is larger than 256" clattn-run --d-model 99999 --heads 3

  # clattn-tune at a long sequence keeps to its budget and stops promptly on SIGTERM: a call
  # at the tuned shape (seconds each on a CPU here) is timed on a slice of it, and the budget
  # and the signal are looked at between calls (before, --seq 16384 took about 30 s whatever
  # the budget, and SIGTERM waited for the candidate to finish).
  tune_dir=$(mktemp -d)
  start=$SECONDS
  timeout 60 "$dir/clattn-tune" --seq 16384 --causal 0 --no-gemm --budget 1 \
    --output "$tune_dir/t.json" >"$out" 2>&1
  rc=$?
  took=$((SECONDS - start))
  if [[ $rc -eq 0 && $took -le 12 && -s "$tune_dir/t.json" ]]; then
    echo "ok:   clattn-tune --seq 16384 --budget 1 wrote its entry in $took s"
  else
    echo "FAIL: clattn-tune --seq 16384 --budget 1 exited $rc after $took s (at most 12 expected):"
    sed -n '1,5p' "$out"
    failed=1
  fi
  "$dir/clattn-tune" --seq 16384 --causal 0 --no-gemm --budget 600 \
    --output "$tune_dir/u.json" >"$out" 2>&1 &
  pid=$!
  sleep 2
  kill -TERM $pid
  start=$SECONDS
  wait $pid
  rc=$?
  took=$((SECONDS - start))
  if [[ $rc -eq 130 && $took -le 5 && ! -e "$tune_dir/u.json" ]] &&
    grep -qF "interrupted by SIGTERM" "$out"; then
    echo "ok:   clattn-tune stopped $took s after SIGTERM, exit 130, nothing written"
  else
    echo "FAIL: clattn-tune exited $rc $took s after SIGTERM (130 within 5 s expected):"
    sed -n '1,5p' "$out"
    failed=1
  fi
  rm -rf "$tune_dir"
else
  echo "skip: no OpenCL device, the checks that need a context were not run"
fi
# clattn-maps (built where libpng is): inputs, labels, outputs and sizes it refuses, all
# before any device is asked for.
if [[ -x "$dir/clattn-maps" ]]; then
  maps_dir=$(mktemp -d)
  # npy FILE DESCR SHAPE DATA_BYTES: a .npy file of zero bytes as NumPy lays it out.
  npy() {
    local dict="{'descr': '$2', 'fortran_order': False, 'shape': $3, }"
    local len=$(((${#dict} + 1 + 10 + 63) / 64 * 64 - 10))
    {
      printf '\x93NUMPY\x01\x00'
      printf "\\x$(printf %02x $((len % 256)))\\x$(printf %02x $((len / 256)))"
      printf '%-*s\n' $((len - 1)) "$dict"
      head -c "$4" /dev/zero
    } >"$1"
  }
  npy "$maps_dir/q.npy" '<f4' '(1, 2, 8, 4)' 256
  npy "$maps_dir/int.npy" '<i4' '(2, 8, 4)' 256
  npy "$maps_dir/short.npy" '<f4' '(2, 8, 4)' 100
  printf 'The\ncat\nsat\n' >"$maps_dir/three.txt"
  expect 0 "clattn-maps $version" clattn-maps --version
  expect 0 "--weights DIR" clattn-maps --help
  expect 0 "--identity" clattn-maps --core --help
  expect 2 "unknown flag '--bogus'" clattn-maps --bogus
  expect 2 "unknown flag '--q' (options of the attention core need --core)" clattn-maps --q x
  expect 2 "--mean is given more than once" clattn-maps --mean --mean
  expect 2 "--cell takes 0..64, got '65'" clattn-maps --core --cell 65
  expect 2 "--range takes max|fixed|log, got 'x'" clattn-maps --range x
  expect 2 "unknown flag '--identity' (options of the attention core need --core)" clattn-maps \
    --identity
  expect 2 "--head-dim takes 1..256, got '300'" clattn-maps --core --head-dim 300
  expect 1 "cannot read $maps_dir/none.npy: No such file" clattn-maps --core \
    --q "$maps_dir/none.npy"
  expect 1 "its dtype is '<i4'; this tool reads little-endian float32" clattn-maps --core \
    --q "$maps_dir/int.npy"
  expect 1 "needs 256 data bytes, the file has 100" clattn-maps --core --q "$maps_dir/short.npy"
  expect 2 "--seq 5, but $maps_dir/q.npy has 8 there" clattn-maps --core --q "$maps_dir/q.npy" \
    --seq 5
  expect 2 "--labels $maps_dir/three.txt has 3 lines, but the sequence has 8" clattn-maps --core \
    --seq 8 --labels "$maps_dir/three.txt"
  expect 2 "--kv-labels $maps_dir/three.txt has 3 lines, but the keys number 9" clattn-maps \
    --core --seq 8 --seq-kv 9 --kv-labels "$maps_dir/three.txt"
  expect 1 "cannot write /nonexistent-dir/m.png: No such file or directory" clattn-maps --core \
    --seq 8 --output /nonexistent-dir/m.png
  expect 1 "$maps_dir exists and is not a regular file (a directory)" clattn-maps --core --seq 8 \
    --output "$maps_dir"
  expect 1 "/dev/null exists and is not a regular file (a device)" clattn-maps --core --seq 8 \
    --svg /dev/null --output "$maps_dir/m.png"
  expect 2 "--svg and --output name the same file" clattn-maps --svg a.png --output a.png
  expect 2 "above the limit of 268435456 elements" clattn-maps --core --seq 65536
  expect 2 "an SVG of 4 maps of 1024 x 1024 cells is above its limit" clattn-maps --core \
    --seq 1024 --svg "$maps_dir/m.svg"
  expect 2 "the picture would be" clattn-maps --core --seq 300 --cell 64
  expect 2 "is wider than 32768 pixels; choose a smaller --cell" clattn-maps --core --seq 1000 \
    --cell 64
  expect 2 "--heads-to-draw: head 9 does not exist (4 heads: 0..3)" clattn-maps --core \
    --heads-to-draw 1,9
  expect 2 "--batch-index 3: the batch has 2 sequences" clattn-maps --core --batch 2 \
    --batch-index 3
  expect 2 "--kv-length 40 is longer than the 32 keys of a sequence" clattn-maps --core \
    --kv-length 40
  expect 2 "--kv-length takes one length, or one per sequence (2), got 3" clattn-maps --core \
    --batch 2 --kv-length 1,2,3
  expect 2 "--weights needs --heads" clattn-maps --weights "$maps_dir"
  expect 1 "cannot read $maps_dir/in_proj_weight.npy" clattn-maps --weights "$maps_dir" --heads 2
  # With a device: the identity demo's probabilities land on the diagonal (head 1's one key to
  # the left), masked keys are exactly 0, and both files are written whole.
  if "$dir/clattn-info" >/dev/null 2>&1; then
    expect 0 "4 maps of 8 x 8" clattn-maps --core --identity --heads 4 --kv-heads 2 --seq 8 \
      --kv-length 6 --output "$maps_dir/id.png" --svg "$maps_dir/id.svg"
    for cell in "head 0 (kv 0): q 3, k 3: 0.99" "head 2 (kv 1): q 3, k 2: 0.99" \
      "head 1 (kv 0): q 2, k 6: 0<" "head 0 (kv 0): q 7, k 0: 0.166667<"; do
      if grep -qF "<title>$cell" "$maps_dir/id.svg" && [[ -s "$maps_dir/id.png" ]]; then
        echo "ok:   clattn-maps --identity SVG has \"$cell\""
      else
        echo "FAIL: clattn-maps --identity SVG lacks \"$cell\""
        failed=1
      fi
    done
    rm -f "$maps_dir/id.png" "$maps_dir/id.svg"
    # The layer with nn.MultiheadAttention's weights from .npy files, all zero: every score
    # is 0, so each row spreads evenly over the keys it sees (causal: i + 1 of them).
    mkdir -p "$maps_dir/w"
    npy "$maps_dir/w/in_proj_weight.npy" '<f4' '(24, 8)' 768
    npy "$maps_dir/w/out_proj.weight.npy" '<f4' '(8, 8)' 256
    npy "$maps_dir/x.npy" '<f4' '(1, 6, 8)' 192
    expect 0 "3 maps of 6 x 6" clattn-maps --x "$maps_dir/x.npy" --weights "$maps_dir/w" \
      --heads 2 --causal --mean --output "$maps_dir/layer.png" --svg "$maps_dir/layer.svg"
    for cell in "head 1: q 2, k 1: 0.333333<" "head 0: q 5, k 0: 0.166667<" \
      "head 0: q 1, k 2: 0<" "mean of 2 heads: q 3, k 3: 0.25<"; do
      if grep -qF "<title>$cell" "$maps_dir/layer.svg"; then
        echo "ok:   clattn-maps layer SVG has \"$cell\""
      else
        echo "FAIL: clattn-maps layer SVG lacks \"$cell\""
        failed=1
      fi
    done
    expect 2 "the input projection of $maps_dir/w has shape [24, 8]; this layer needs [36, 8]" \
      clattn-maps --x "$maps_dir/x.npy" --weights "$maps_dir/w" --heads 2 --head-dim 6
    rm -rf "$maps_dir/w" "$maps_dir/x.npy" "$maps_dir/layer.png" "$maps_dir/layer.svg"
  fi
  # Nothing half-written was left behind by the refusals.
  leftovers=$(find "$maps_dir" -name '*.tmp.*' -o -name 'm.png' -o -name 'm.svg' | wc -l)
  if [[ $leftovers -eq 0 ]]; then
    echo "ok:   clattn-maps left no output or temporary file after its refusals"
  else
    echo "FAIL: clattn-maps left $leftovers files in $maps_dir"
    failed=1
  fi
  rm -rf "$maps_dir"
fi

# json_check NAME PYTHON_ASSERTS ARGS...: clattn-bench ARGS (tiny shapes, one rep) prints one
# JSON object on stdout that parses; with a device it holds the run's results and the
# asserts (on `o`) hold, without one it is the {"ok": false} object. Needs python3 (skipped
# without it).
json_check() {
  local name=$1 asserts=$2
  shift 2
  if ! command -v python3 >/dev/null; then
    echo "skip: $name (no python3)"
    return
  fi
  "$dir/clattn-bench" "$@" >"$out" 2>/dev/null
  local rc=$?
  if python3 - "$out" "$rc" "$asserts" <<'PY'; then
import json, sys
with open(sys.argv[1]) as f:
    lines = [l for l in f.read().splitlines() if l.strip()]
assert len(lines) == 1, f"{len(lines)} lines on stdout"
o = json.loads(lines[0])
if o.get("ok") is False:
    assert sys.argv[2] != "0", "ok false with exit status 0"
else:
    assert sys.argv[2] == "0", f"exit status {sys.argv[2]}"
    exec(sys.argv[3])
PY
    echo "ok:   $name"
  else
    echo "FAIL: $name: clattn-bench $* exited $rc and printed on stdout:"
    sed -n '1,3p' "$out"
    failed=1
  fi
}
tiny=(--json --no-peak --bandwidth-mb 1 --heads 2 --head-dim 16 --reps 1 --warmup 1)
json_check "--decode --json: K/V bytes, GB/s and bandwidth shares" '
assert o["mode"] == "decode", o["mode"]
s = o["shape"]
assert (s["seq_q"], s["seq_kv"], s["heads_q"], s["head_dim"]) == (1, 64, 2, 16), s
assert o["kv_bytes_per_call"] == 2 * 1 * 2 * 64 * 16 * 4
bw = o["bandwidth"]
assert bw["copy"]["counts"] == "bytes_read+bytes_written" and bw["read"]["counts"] == "bytes_read"
assert bw["copy"]["bytes_read"] == bw["copy"]["bytes_written"] == 1 << 20
assert bw["read"]["bytes_read"] == 2 << 20
assert o["copy_gbps"] == bw["copy"]["gbps"] > 0 and o["read_gbps"] == bw["read"]["gbps"] > 0
r = o["results"]
assert [x["impl"] for x in r] == ["fused"], r
f = r[0]
assert abs(f["kv_gbps"] - o["kv_bytes_per_call"] / (f["ms"] * 1e6)) <= 1e-4 * f["kv_gbps"]
assert abs(f["pct_copy_bandwidth"] - 100 * f["kv_gbps"] / o["copy_gbps"]) <= 1e-3 * f["pct_copy_bandwidth"]
assert f["pct_read_bandwidth"] > 0 and f["config"]["num_splits"] >= 0
' --decode --seq-kv 64 --impl fused "${tiny[@]}"
# --decode's default implementations: plain buffers and the KV cache, both checked against
# the reference (err/tol below 1) on a ragged shape (B=3, GQA, Nkv not a block multiple).
json_check "--decode --json: fused and cached" '
assert [x["impl"] for x in o["results"]] == ["fused", "cached"], (o["results"], o["skipped"])
for x in o["results"]:
    assert x["max_err_over_tol"] < 1 and x["nan_count"] == 0 and x["kv_gbps"] > 0, x
c = o["results"][1]["config"]["kv_cache"]
assert c["block_tokens"] == 8 and c["tokens_used"] == 3 * 37, c
assert o["kv_bytes_per_call"] == 2 * 3 * 1 * 37 * 16 * 4
assert "fused_speedup_over_cached" in o["ratios"]
' --decode --seq-kv 37 --batch 3 --kv-heads 1 --block-tokens 8 "${tiny[@]}"
json_check "--no-bandwidth --json: bandwidth null, no decode fields in core mode" '
assert o["mode"] == "core" and o["bandwidth"] is None and o["copy_gbps"] is None
assert "kv_bytes_per_call" not in o and all("kv_gbps" not in x for x in o["results"])
' --seq 16 --impl fused --no-bandwidth "${tiny[@]}"
exit $failed
