#!/usr/bin/env bash
# Runs clattn-info and clattn-run (both variants, a tail shape with a causal mask and LSE,
# the probabilities recomputed from it, and two rejected inputs), and clattn-maps where it is
# built, under valgrind memcheck. Fails on a memory error or a leak that is clattn's: one whose first three stack frames
# (below malloc or a libc string function) are in clattn's library, tools or reference.
# Reports from the dynamic loader, PoCL, LLVM and the ICD loader (without debug symbols
# valgrind's default suppressions do not cover them) stay in the logs but are not clattn's;
# an OpenCL object that clattn forgets to release is PoCL's allocation, and is caught by
# tests/test_faults.c, which counts them.
#   tests/valgrind_tools.sh BUILD_DIR [LOG_DIR]
set -u
build=${1:-build}
logs=${2:-$(mktemp -d)}
mkdir -p "$logs"
failed=0
runs=(
  "info|$build/tools/clattn-info"
  "info-json|$build/tools/clattn-info --json --device cpu"
  "run-regblock|$build/tools/clattn-run --core --seq 37 --seq-kv 45 --head-dim 24 --heads 2 --kv-heads 1 --causal --lse --variant regblock --reps 2 --warmup 1"
  "run-tiled|$build/tools/clattn-run --core --seq 37 --seq-kv 45 --head-dim 24 --heads 2 --kv-heads 1 --causal --lse --probs --variant tiled --reps 2 --warmup 1"
  "run-bad-args|$build/tools/clattn-run --core --head-dim 300"
  "run-bad-device|$build/tools/clattn-run --device 1:x"
)
# clattn-maps where it is built: the core's maps of every panel kind with labels, both
# outputs, and a refused labels file.
if [[ -x "$build/tools/clattn-maps" ]]; then
  printf 'a\nb\nc\nd\ne\nf\ng\nh\ni\n' >"$logs/labels9.txt"
  runs+=(
    "maps|$build/tools/clattn-maps --core --identity --heads 2 --kv-heads 1 --seq 9 --seq-kv 11 --kv-length 7 --causal --mean --labels $logs/labels9.txt --output $logs/maps.png --svg $logs/maps.svg"
    "maps-bad-labels|$build/tools/clattn-maps --core --seq 8 --labels $logs/labels9.txt --output $logs/none.png"
  )
fi
for entry in "${runs[@]}"; do
  name=${entry%%|*}
  cmd=${entry#*|}
  log="$logs/valgrind-$name.log"
  # shellcheck disable=SC2086  # cmd is an argument list
  valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
    --num-callers=30 --log-file="$log" $cmd >/dev/null 2>&1
  rc=$?
  # Records are paragraphs between "==PID== " lines; frames are "at"/"by" lines.
  ours=$(awk '
    function flush() { if (rec != "" && mine) print rec "\n"; rec = ""; frames = 0; mine = 0 }
    /^==[0-9]+== *$/ { flush(); next }
    {
      line = $0; sub(/^==[0-9]+== /, "", line)
      if (line ~ /^ +(at|by) /) {
        if (line ~ /vg_replace|in \/usr\/libexec\/valgrind/) next
        frames++
        if (frames <= 3 && line ~ /clattn|reference\.c|(flags|json|timing|problem|device)\.c/) mine = 1
      }
      rec = rec "\n" line
    }
    END { flush() }' "$log")
  errors=$(grep -E 'ERROR SUMMARY: [0-9]+' "$log" | tail -1 | sed 's/.*ERROR SUMMARY: \([0-9]*\).*/\1/')
  lost=$(grep -E 'definitely lost:' "$log" | tail -1 | sed 's/^==[0-9]*== *//')
  if [[ -n "$ours" ]]; then
    echo "FAIL: $name (valgrind exit $rc): clattn's own reports:"
    printf '%s\n' "$ours" | head -80
    failed=1
  else
    echo "ok:   $name (exit $rc; clattn's reports: none; all libraries: $errors memcheck errors, $lost)"
  fi
done
echo "logs in $logs"
exit $failed
