#!/usr/bin/env bash
# gpu-check.sh: checks clattn on a machine with an NVIDIA GPU and compares it with PyTorch.
#
# Run from anywhere; it works in the repository root. Expects a build folder (BUILD_DIR,
# default ./build) made elsewhere, and optionally .gpu/ with the OpenCL runtime libraries the
# machine may lack (unpacked .debs: ocl-icd-libopencl1, libclblast1, libcjson1, libcriterion3 and its
# dependencies; .deb files found there are unpacked in place first).
#
# Steps: report NVIDIA's OpenCL driver (and register it with the ICD loader if no vendor
# file names it), clattn-info, the device tests, clattn-run and clattn-bench on a few shapes, then
# tools/sdpa_torch.py on the same shapes. Each step runs under `timeout`; a failing step does
# not stop the others; a summary comes at the end. With $OUT set, everything is also written
# to $OUT/gpu-check.log, and the JSON results to $OUT/*.json*.
#
# Environment: BUILD_DIR, CLATTN_DEVICE (default NVIDIA), GPU_CHECK_BUDGET (seconds for the
# whole run, default 340), GPU_CHECK_TEST_TIMEOUT (seconds for the tests, default 150),
# GPU_CHECK_QUICK=1 (skip the tests), GPU_CHECK_SWEEP=0 (skip the tile-size sweep).
#
# `bash tools/gpu-check.sh prepare` (on the Debian build machine, not the GPU machine)
# downloads those runtime .debs with apt-get and unpacks them into .gpu/.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
BUDGET=${GPU_CHECK_BUDGET:-340}
RESULTS=${OUT:-/tmp/clattn-gpu-check}
mkdir -p "$RESULTS"

STEP_NAMES=()
STEP_RESULTS=()
START=$SECONDS

# step NAME TIMEOUT COMMAND...: runs COMMAND under timeout, capped by what is left of the
# budget, and records PASS, FAIL (rc), TIMEOUT or SKIP.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  echo
  echo "==== $name ($(date +%H:%M:%S), ${left}s of budget left)"
  if ((left < 5)); then
    echo "skipped: out of time"
    STEP_NAMES+=("$name")
    STEP_RESULTS+=("SKIP (out of time)")
    return 0
  fi
  ((limit > left)) && limit=$left
  local t0=$SECONDS rc=0
  if [[ $(type -t "$1") == function ]]; then
    # timeout runs programs, not shell functions: run it in a child bash (functions and
    # the variables they use are exported in main).
    timeout --kill-after=10 "$limit" bash -c '"$@"' bash "$@" || rc=$?
  else
    timeout --kill-after=10 "$limit" "$@" || rc=$?
  fi
  local took=$((SECONDS - t0)) result
  case $rc in
    0) result="PASS" ;;
    124 | 137) result="TIMEOUT after ${limit}s" ;;
    *) result="FAIL (rc=$rc)" ;;
  esac
  echo "---- $name: $result in ${took}s"
  STEP_NAMES+=("$name")
  STEP_RESULTS+=("$result, ${took}s")
  return 0
}

skip() {
  echo
  echo "==== $1: skipped ($2)"
  STEP_NAMES+=("$1")
  STEP_RESULTS+=("SKIP ($2)")
}

prepend_ld() {
  export LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

find_tool() {
  local name=$1 dir
  for dir in "$BUILD_DIR/tools" "$BUILD_DIR/bin" "$BUILD_DIR"; do
    if [[ -x "$dir/$name" ]]; then
      echo "$dir/$name"
      return 0
    fi
  done
  find "$BUILD_DIR" -maxdepth 3 -type f -name "$name" -perm -u+x 2>/dev/null | head -n 1
}

setup_runtime() {
  echo "==== environment"
  echo "host: $(uname -srm), $(nproc) CPUs"
  nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not available"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null

  # Carried Debian runtime libraries.
  if [[ -d "$ROOT/.gpu" ]]; then
    local deb
    for deb in "$ROOT"/.gpu/*.deb; do
      [[ -e "$deb" ]] || continue
      dpkg -x "$deb" "$ROOT/.gpu" 2>/dev/null || echo "warning: could not unpack $deb"
    done
    if [[ -d "$ROOT/.gpu/usr/lib/x86_64-linux-gnu" ]]; then
      prepend_ld "$ROOT/.gpu/usr/lib/x86_64-linux-gnu"
      echo "added .gpu/usr/lib/x86_64-linux-gnu to LD_LIBRARY_PATH"
    fi
  else
    echo "no .gpu/ folder: using the system's OpenCL loader and libraries"
  fi
  # The build's own libraries, in case its RPATH points at the machine it was built on.
  local libdir
  while IFS= read -r libdir; do
    prepend_ld "$libdir"
  done < <(find "$BUILD_DIR" -maxdepth 3 -name 'libclattn*.so*' -printf '%h\n' 2>/dev/null | sort -u)

  echo
  echo "==== NVIDIA OpenCL driver"
  echo "-- /etc/OpenCL/vendors:"
  local icd cand
  for icd in /etc/OpenCL/vendors/*.icd; do
    [[ -e "$icd" ]] || { echo "(no .icd files)"; break; }
    echo "$icd: $(cat "$icd")"
  done
  echo "-- libnvidia-opencl:"
  local found=()
  for cand in /usr/lib/x86_64-linux-gnu/libnvidia-opencl* /usr/local/nvidia/lib64/libnvidia-opencl* \
    /usr/local/nvidia/lib/libnvidia-opencl* /usr/lib64/libnvidia-opencl*; do
    [[ -e "$cand" ]] && found+=("$cand")
  done
  if ((${#found[@]})); then ls -l "${found[@]}"; else echo "(none in the usual folders)"; fi
  echo "-- ldconfig -p | grep -i opencl:"
  ldconfig -p 2>/dev/null | grep -i opencl || echo "(none)"

  local lib=""
  for cand in /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1 \
    /usr/local/nvidia/lib64/libnvidia-opencl.so.1 /usr/local/nvidia/lib/libnvidia-opencl.so.1 \
    /usr/lib64/libnvidia-opencl.so.1; do
    if [[ -e "$cand" ]]; then
      lib=$cand
      break
    fi
  done
  if [[ -z "$lib" ]]; then
    lib=$(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so\.1 / {print $NF; exit}')
  fi
  if [[ -z "$lib" ]]; then
    echo "NVIDIA OpenCL driver: NOT FOUND (libnvidia-opencl.so.1 is missing)"
    NVIDIA_OPENCL=0
    return
  fi
  NVIDIA_OPENCL=1
  echo "NVIDIA OpenCL driver: $lib"
  # Its dependencies (libcuda) live beside it.
  prepend_ld "$(dirname "$lib")"
  if grep -qs nvidia /etc/OpenCL/vendors/*.icd; then
    echo "an ICD file in /etc/OpenCL/vendors names it"
  else
    local vendors=/tmp/clattn-opencl-vendors
    mkdir -p "$vendors"
    # OCL_ICD_VENDORS replaces /etc/OpenCL/vendors, so keep the ICDs that are there.
    cp /etc/OpenCL/vendors/*.icd "$vendors/" 2>/dev/null
    echo "$lib" >"$vendors/nvidia.icd"
    export OCL_ICD_VENDORS=$vendors
    echo "no ICD file names it: wrote $vendors/nvidia.icd and set OCL_ICD_VENDORS=$vendors"
  fi
}

# Makes ctest's absolute paths valid here when the build was made elsewhere: links the
# build and source folders recorded in CMakeCache.txt to the ones here. Prints "direct"
# when that cannot be done (then the test executables are run one by one).
fix_ctest_paths() {
  local cache="$BUILD_DIR/CMakeCache.txt" old_build old_src
  [[ -f "$cache" ]] || { echo direct; return; }
  old_build=$(sed -n 's/^CMAKE_CACHEFILE_DIR:INTERNAL=//p' "$cache")
  old_src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$cache")
  local ok=1 pair from to
  # The source folder first: the build folder is often inside it.
  for pair in "$old_src|$ROOT" "$old_build|$BUILD_DIR"; do
    from=${pair%%|*}
    to=${pair#*|}
    [[ -n "$from" ]] || continue
    if [[ -e "$from" ]]; then
      [[ "$(realpath "$from")" == "$(realpath "$to")" ]] || ok=0
    else
      mkdir -p "$(dirname "$from")" && ln -s "$to" "$from" 2>/dev/null || ok=0
    fi
  done
  ((ok)) && command -v ctest >/dev/null && echo ctest || echo direct
}

run_tests() {
  local mode
  mode=$(fix_ctest_paths)
  if [[ $mode == ctest ]]; then
    local n
    n=$(ctest --test-dir "$BUILD_DIR" -N -L device 2>/dev/null | sed -n 's/^Total Tests: //p')
    if [[ "${n:-0}" -gt 0 ]]; then
      ctest --test-dir "$BUILD_DIR" --output-on-failure -L device --timeout 300
    else
      echo "(no test labelled 'device': running them all)"
      ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 300
    fi
    return
  fi
  echo "(ctest's recorded paths do not fit here: running the test executables directly)"
  local rc=0 exe
  while IFS= read -r exe; do
    echo "-- $exe"
    timeout 150 "$exe" || rc=1
  done < <(find "$BUILD_DIR" -path '*tests*' -type f -perm -u+x -name 'test*' 2>/dev/null | sort)
  return $rc
}

# clattn-run with --json; the JSON line also goes to clattn-run.jsonl.
# clattn-bench with --json (all implementations; the CPU reference only on small shapes);
# the JSON line also goes to bench.jsonl.
run_bench() {
  local out rc=0
  out=$("$CLATTN_BENCH" --json --reps 20 --max-seconds 20 "$@") || rc=$?
  echo "$out"
  echo "$out" | grep '^{' >>"$RESULTS/bench.jsonl"
  return $rc
}

run_clattn() {
  local out rc=0
  out=$("$CLATTN_RUN" --core --json "$@") || rc=$?
  echo "$out"
  echo "$out" | grep '^{' >>"$RESULTS/clattn-run.jsonl"
  return $rc
}

# The multi-head attention layer (clattn-run's default mode); JSON lines go to mha.jsonl.
run_layer() {
  local out rc=0
  out=$("$CLATTN_RUN" --json "$@") || rc=$?
  echo "$out"
  echo "$out" | grep '^{' >>"$RESULTS/mha.jsonl"
  return $rc
}

# Runs the tiled variant over block_m x threads_per_row x block_n at N=4096 (no check: the
# default-config runs above check results) and prints one line per config.
sweep_tiled() {
  local d bm tpr bn out
  printf '%-5s %-8s %-16s %-8s %10s %10s\n' D block_m threads_per_row block_n "ms" "GFLOP/s"
  for d in 64 128; do
    for tpr in 1 2 4; do
      for bm in 32 64 128; do
        ((bm * tpr > 1024)) && continue
        for bn in 16 32 64; do
          out=$("$CLATTN_RUN" --core --json --no-check --batch 1 --heads 8 --seq 4096 --head-dim "$d" \
            --variant tiled --block-m "$bm" --threads-per-row "$tpr" --block-n "$bn" --reps 5 \
            --warmup 1 2>/dev/null)
          echo "$out" | python3 -c '
import json, sys
try:
    r = json.loads(sys.stdin.read())
    ms = (r.get("device_ms") or r.get("kernel_ms") or r["wall_ms"])["median"]
    g = r["gflops"]
    print("%-5s %-8s %-16s %-8s %10.3f %10.1f" % (sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], ms,
          g.get("device_median") or g.get("wall_median")))
except Exception:
    print("%-5s %-8s %-16s %-8s %10s" % (sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], "n/a"))
' "$d" "$bm" "$tpr" "$bn"
        done
      done
    done
  done
}

summary_table() {
  python3 - "$RESULTS/clattn-run.jsonl" "$RESULTS/sdpa.jsonl" <<'EOF'
import json, sys
def load(path):
    try:
        return [json.loads(l) for l in open(path) if l.startswith("{")]
    except OSError:
        return []
runs, sdpa = load(sys.argv[1]), load(sys.argv[2])
print("clattn-run (float32 arithmetic; device = all commands of a call, profiled):")
print(f"  {'shape':<26} {'variant':<17} {'wall ms':>9} {'device ms':>10} {'GFLOP/s':>9} {'err/tol':>8}")
def fmt(v, f):
    return "-" if v is None else format(v, f)
for r in runs:
    if not r.get("ok"):
        e = r.get("error", {})
        print(f"  error: {e.get('call')} {e.get('status')} {e.get('detail', '')[:80]}")
        continue
    s = r["shape"]
    shape = (f"B{s['batch']} H{s['heads_q']} N{s['seq_q']} D{s['head_dim']}" + (" causal" if s["causal"] else "")
             + ("" if s.get("dtype", "f32") == "f32" else " " + s["dtype"]))
    dev = (r.get("device_ms") or r.get("kernel_ms") or {}).get("median")
    g = r["gflops"]
    c = r.get("check") or {}
    print(f"  {shape:<26} {r['config']['variant']:<17} {fmt(r['wall_ms']['median'], '9.3f')} "
          f"{fmt(dev, '10.3f')} {fmt(g.get('device_median') or g.get('wall_median'), '9.1f')} "
          f"{fmt(c.get('max_err_over_tol'), '8.2g')}")
print("PyTorch SDPA (default backend):")
for r in sdpa:
    if r.get("backend") != "default" or "median_ms" not in r:
        continue
    shape = f"B{r['batch']} H{r['heads']} N{r['seq_q']} D{r['head_dim']}" + (" causal" if r["causal"] else "")
    print(f"  {shape:<26} {r['dtype']:<5} {r['median_ms']:9.3f} ms {r['gflops']:9.1f} GFLOP/s")
EOF
}

# Runtime packages the build links against that a CUDA image may lack (Debian 12 names).
GPU_DEBS=(ocl-icd-libopencl1 libclblast1 libcjson1 libcriterion3 libgit2-1.5 libnanomsg5 libmbedtls14
  libmbedx509-1 libmbedcrypto7 libhttp-parser2.9 libssh2-1)

prepare() {
  mkdir -p "$ROOT/.gpu" && cd "$ROOT/.gpu" || return 1
  apt-get download "${GPU_DEBS[@]}" || return 1
  local deb
  for deb in ./*.deb; do dpkg -x "$deb" . || return 1; done
  du -sh "$ROOT/.gpu"
  if ! grep -qsx '/.gpu/' "$ROOT/.git/info/exclude"; then
    echo "note: add '/.gpu/' to .git/info/exclude so that it travels only when carried"
  fi
}

# Lists the shared libraries that the built programs cannot find here.
report_missing_libs() {
  local exe missing
  while IFS= read -r exe; do
    missing=$(ldd "$exe" 2>/dev/null | grep 'not found')
    [[ -n "$missing" ]] && printf 'missing libraries of %s:\n%s\n' "$exe" "$missing"
  done < <(find "$BUILD_DIR/tools" "$BUILD_DIR/tests" -maxdepth 1 -type f -perm -u+x 2>/dev/null)
  return 0
}

main() {
  echo "clattn gpu-check, $(date -u +%Y-%m-%dT%H:%M:%SZ), repo $ROOT, build $BUILD_DIR"
  NVIDIA_OPENCL=0
  setup_runtime
  report_missing_libs
  export CLATTN_DEVICE=${CLATTN_DEVICE:-NVIDIA}
  echo "CLATTN_DEVICE=$CLATTN_DEVICE"
  rm -f "$RESULTS/clattn-run.jsonl" "$RESULTS/sdpa.jsonl" "$RESULTS/mha.jsonl"

  local info device_ok=0
  info=$(find_tool clattn-info)
  CLATTN_RUN=$(find_tool clattn-run)
  export ROOT BUILD_DIR RESULTS CLATTN_RUN
  export -f run_tests fix_ctest_paths run_clattn run_bench sweep_tiled
  if [[ -n "$info" ]]; then
    step "clattn-info" 60 "$info"
    timeout 30 "$info" --json >"$RESULTS/clattn-info.json" 2>/dev/null && device_ok=1
  else
    skip "clattn-info" "no clattn-info under $BUILD_DIR"
  fi
  if ((!device_ok)); then
    echo
    echo "WARNING: clattn finds no device for CLATTN_DEVICE=$CLATTN_DEVICE" \
      "(NVIDIA OpenCL driver found: $NVIDIA_OPENCL); skipping the device steps"
  fi

  if ((!device_ok)); then
    skip "tests" "no device"
  elif [[ "${GPU_CHECK_QUICK:-0}" == 1 ]]; then
    skip "tests" "GPU_CHECK_QUICK=1"
  else
    step "tests" "${GPU_CHECK_TEST_TIMEOUT:-150}" run_tests
  fi

  if ((!device_ok)) || [[ -z "$CLATTN_RUN" ]]; then
    skip "clattn-run" "no device or no clattn-run"
  else
    local common=(--batch 1 --heads 8 --reps 20 --warmup 3)
    step "clattn-run N=1024 D=64" 60 run_clattn "${common[@]}" --seq 1024 --head-dim 64
    step "clattn-run N=1024 D=64 causal" 60 run_clattn "${common[@]}" --seq 1024 --head-dim 64 \
      --causal
    step "clattn-run N=4096 D=64" 60 run_clattn "${common[@]}" --seq 4096 --head-dim 64
    step "clattn-run N=4096 D=64 causal" 60 run_clattn "${common[@]}" --seq 4096 --head-dim 64 \
      --causal
    step "clattn-run N=4096 D=128" 60 run_clattn "${common[@]}" --seq 4096 --head-dim 128
    step "clattn-run N=4096 D=128 causal" 60 run_clattn "${common[@]}" --seq 4096 \
      --head-dim 128 --causal
    # 16-bit storage (float32 arithmetic), beside sdpa_torch's fp16 and bf16.
    step "clattn-run N=4096 D=64 f16" 60 run_clattn "${common[@]}" --seq 4096 --head-dim 64 \
      --dtype f16
    step "clattn-run N=4096 D=64 bf16" 60 run_clattn "${common[@]}" --seq 4096 --head-dim 64 \
      --dtype bf16
    step "clattn-run layer E=768 H=12 B=4 N=512" 90 run_layer --batch 4 --seq 512 --reps 20 \
      --warmup 3
    step "clattn-run layer E=1024 H=16 N=4096 causal" 90 run_layer --d-model 1024 --heads 16 \
      --seq 4096 --causal --reps 20 --warmup 3 --no-check
    # Tile sizes of the GPU-style variant, to choose defaults for this device.
    if [[ "${GPU_CHECK_SWEEP:-1}" == 1 ]]; then
      step "tiled config sweep" 150 sweep_tiled
    else
      skip "tiled config sweep" "GPU_CHECK_SWEEP=0"
    fi
    # The CPU-style variant on the GPU, for comparison (work-groups of one item: slow there).
    step "clattn-run N=1024 D=64 regblock" 60 run_clattn --batch 1 --heads 8 --reps 5 \
      --warmup 1 --seq 1024 --head-dim 64 --variant regblock
  fi

  # clattn-bench: fused beside unfused CLBlast, naive and the device's FMA peak, and the layer;
  # its JSON objects go to bench.jsonl.
  CLATTN_BENCH=$(find_tool clattn-bench)
  export CLATTN_BENCH
  if ((!device_ok)) || [[ -z "$CLATTN_BENCH" ]]; then
    skip "clattn-bench" "no device or no clattn-bench"
  else
    rm -f "$RESULTS/bench.jsonl"
    local shape
    for shape in "--seq 1024" "--seq 4096" "--seq 4096 --causal" "--seq 4096 --head-dim 128" \
      "--seq 4096 --dtype f16" "--decode --seq-kv 16384" "--decode --seq-kv 16384 --dtype f16" \
      "--mha --d-model 512 --heads 8 --seq 1024"; do
      # shellcheck disable=SC2086  # shape is an argument list
      step "clattn-bench $shape" 120 run_bench $shape
    done
  fi

  if command -v python3 >/dev/null; then
    step "sdpa_torch" 120 env PYTHONUNBUFFERED=1 python3 "$ROOT/tools/sdpa_torch.py" \
      --jsonl "$RESULTS/sdpa.jsonl"
  else
    skip "sdpa_torch" "no python3"
  fi

  echo
  echo "==== summary ($((SECONDS - START))s)"
  local i failed=0
  for i in "${!STEP_NAMES[@]}"; do
    printf '  %-36s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"
    [[ "${STEP_RESULTS[$i]}" == PASS* ]] || failed=1
  done
  echo
  summary_table 2>&1 || true
  return $failed
}

if [[ "${1:-}" == prepare ]]; then
  prepare
  exit
fi
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  main "$@" 2>&1 | tee "$OUT/gpu-check.log"
  exit "${PIPESTATUS[0]}"
else
  main "$@"
fi
