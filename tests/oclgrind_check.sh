#!/usr/bin/env bash
# Runs every kernel variant on tiny shapes (tails, causal, GQA, LSE, head dims 1 and 256),
# the probabilities recomputed from the LSE, and the multi-head attention layer, under
# Oclgrind with data-race and bounds checking.
# Fails on any Oclgrind report, and on a result outside the reference's tolerance.
#   tests/oclgrind_check.sh OCLGRIND CLATTN_RUN
set -u
oclgrind=$1
run=$2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0
# Tails (lengths no tile size divides), causal masks in both alignments, GQA and MQA, a
# batch, both layouts, LSE on and off, head dims 1 and 256, a decode shape; each variant also
# in f16 and bf16 storage.
shapes=(
  "--seq 37 --seq-kv 45 --head-dim 8 --heads 4 --kv-heads 2 --causal --lse"
  "--seq 45 --seq-kv 37 --head-dim 1 --heads 2 --kv-heads 1 --causal --batch 2 --lse"
  "--seq 20 --seq-kv 17 --head-dim 256 --heads 1 --lse"
  "--seq 33 --seq-kv 33 --head-dim 80 --heads 2 --layout bnhd --causal"
  "--seq 3 --seq-kv 300 --head-dim 16 --heads 8 --kv-heads 2 --causal --lse"
)
configs=(
  "--variant regblock"
  "--variant regblock --rows-per-item 3 --block-n 16"
  "--variant tiled"
  "--variant tiled --block-m 8 --threads-per-row 4 --block-n 8"
  "--variant splitkv"
  "--variant splitkv --rows-per-item 3 --block-n 7 --num-splits 4"
  "--variant regblock --dtype f16"
  "--variant tiled --dtype bf16"
  "--variant splitkv --num-splits 3 --dtype f16"
  "--variant splitkv --rows-per-item 2 --block-n 5 --dtype bf16"
)
for shape in "${shapes[@]}"; do
  for config in "${configs[@]}"; do
    # shellcheck disable=SC2086  # shape and config are argument lists
    "$oclgrind" --data-races --check-api "$run" --core $shape $config --reps 1 --warmup 0 >"$log" 2>&1
    rc=$?
    if ((rc != 0)) || grep -qiE 'invalid (read|write)|data race|uninitiali|error' "$log"; then
      echo "FAIL: $shape $config (exit $rc)"
      sed -n '1,40p' "$log"
      failed=1
    else
      echo "ok:   $shape $config"
    fi
  done
done
# The probabilities (attention maps, cl/attention_probs.cl) of the whole matrix and of an
# interior block, recomputed from the LSE, on the same shapes.
for shape in "${shapes[@]}"; do
  # shellcheck disable=SC2086  # shape is an argument list
  "$oclgrind" --data-races --check-api "$run" --core $shape --probs --reps 1 --warmup 0 >"$log" 2>&1
  rc=$?
  if ((rc != 0)) || grep -qiE 'invalid (read|write)|data race|uninitiali|error' "$log"; then
    echo "FAIL: probs $shape (exit $rc)"
    sed -n '1,40p' "$log"
    failed=1
  else
    echo "ok:   probs $shape"
  fi
done
# The multi-head attention layer (clattn-run's default mode): projection GEMMs, bias rows,
# the core on strided heads, self- and cross-attention, the attention weights (per head and
# their mean); 16-bit layers add the conversion kernels. Oclgrind's device is a GPU, so its
# GEMMs are CLBlast's; a case starting CLATTN_GEMM=clattn runs clattn's GEMM kernel (CPU
# devices' default) instead: row blocks past the last row, column panels past the last
# column (widths 24 and 40), full panels (64), biases and none.
layers=(
  "CLATTN_GEMM=clattn --d-model 24 --heads 3 --batch 2 --seq 5 --seq-kv 11"
  "CLATTN_GEMM=clattn --d-model 64 --heads 4 --kv-heads 2 --batch 2 --seq 9 --causal --no-bias"
  "CLATTN_GEMM=clattn --d-model 40 --heads 2 --seq 13 --dtype bf16 --weights"
  "--d-model 32 --heads 4 --kv-heads 2 --batch 2 --seq 9 --causal"
  "--d-model 24 --heads 3 --batch 2 --seq 5 --seq-kv 11"
  "--d-model 16 --heads 2 --seq 7 --no-bias"
  "--d-model 32 --heads 4 --kv-heads 2 --batch 2 --seq 9 --causal --weights"
  "--d-model 24 --heads 3 --batch 2 --seq 5 --seq-kv 11 --weights"
  "--d-model 32 --heads 4 --kv-heads 2 --batch 2 --seq 9 --causal --dtype f16"
  "--d-model 24 --heads 3 --batch 2 --seq 5 --seq-kv 11 --dtype bf16 --weights"
)
for layer in "${layers[@]}"; do
  gemm=()
  if [[ $layer == CLATTN_GEMM=* ]]; then
    gemm=("${layer%% *}")
    layer=${layer#* }
  fi
  # shellcheck disable=SC2086  # layer is an argument list
  env "${gemm[@]}" "$oclgrind" --data-races --check-api "$run" $layer --reps 1 --warmup 0 \
    >"$log" 2>&1
  rc=$?
  if ((rc != 0)) || grep -qiE 'invalid (read|write)|data race|uninitiali|error' "$log"; then
    echo "FAIL: layer ${gemm[*]} $layer (exit $rc)"
    sed -n '1,40p' "$log"
    failed=1
  else
    echo "ok:   layer ${gemm[*]} $layer"
  fi
done
exit $failed
