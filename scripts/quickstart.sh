#!/usr/bin/env bash
# clattn quickstart: installs the Debian packages it needs, builds, and runs.
#
#   bash scripts/quickstart.sh [run] [ARGS...]  build, then ./build/tools/clattn-run ARGS...
#   bash scripts/quickstart.sh test [ARGS...]   the same run, then the whole CTest suite
#   bash scripts/quickstart.sh deps             only install the missing packages
#
# Environment: CLATTN_CMAKE_ARGS   extra arguments for the CMake configure step
#              CLATTN_BUILD_DIR    build directory (default: build, in the repository)
#              CLATTN_SKIP_DEPS=1  do not check or install packages
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build_dir=${CLATTN_BUILD_DIR:-build}

mode=run
case "${1:-}" in
  run | test | deps) mode=$1; shift ;;
esac

packages=(build-essential cmake pkg-config pocl-opencl-icd ocl-icd-opencl-dev opencl-headers
  libclblast-dev libcriterion-dev libcjson-dev clinfo oclgrind clang-format
  valgrind libpng-dev)

log() { printf '\n== %s\n' "$*"; }

install_packages() {
  if [[ "${CLATTN_SKIP_DEPS:-0}" == 1 ]]; then return 0; fi
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "quickstart: not a Debian-based system; install the equivalents of:" >&2
    echo "  ${packages[*]}" >&2
    return 0
  fi
  local missing=() p
  for p in "${packages[@]}"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]]; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} == 0)); then
    log "all packages present"
    return 0
  fi
  log "installing: ${missing[*]}"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "quickstart: need root or sudo to install packages" >&2; exit 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
}

build() {
  local jobs
  jobs=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
  # shellcheck disable=SC2206  # CLATTN_CMAKE_ARGS is a space-separated argument list
  local extra=(${CLATTN_CMAKE_ARGS:-})
  log "configure $build_dir (Release) ${extra[*]}"
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${extra[@]}"
  log "build with $jobs jobs"
  cmake --build "$build_dir" --parallel "$jobs"
}

run_main() {
  log "clattn-run $*"
  "$build_dir/tools/clattn-run" "$@"
}

install_packages
case "$mode" in
  deps) ;;
  run)
    build
    run_main "$@"
    ;;
  test)
    build
    run_main "$@"
    log "ctest"
    ctest --test-dir "$build_dir" --output-on-failure --parallel "$(nproc 2>/dev/null || echo 2)"
    ;;
esac
