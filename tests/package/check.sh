#!/usr/bin/env bash
# Installs a clattn build tree into a temporary prefix, then builds and runs a consumer
# (main.c) against it twice: with find_package(clattn) in CMake (shared and static) and
# with plain `cc $(pkg-config --cflags --libs clattn)`.
#
# Usage: check.sh BUILD_DIR [CONFIG]   (run by CTest as the test "package")
set -euo pipefail

build_dir=$(cd "${1:?usage: check.sh BUILD_DIR [CONFIG]}" && pwd)
config=${2:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmake=${CMAKE_COMMAND:-cmake}
cc=${CC:-cc}

work=$(mktemp -d "${TMPDIR:-/tmp}/clattn-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

echo "== install to $prefix"
config_args=()
if [[ -n "$config" ]]; then config_args=(--config "$config"); fi
"$cmake" --install "$build_dir" --prefix "$prefix" "${config_args[@]}" >"$work/install.log" ||
  { cat "$work/install.log"; exit 1; }

for f in include/clattn/clattn.h include/clattn/clattn_tuning.h include/clattn/clattn_export.h \
  include/clattn/clattn_version.h; do
  [[ -f "$prefix/$f" ]] || { echo "missing after install: $f"; exit 1; }
done
lib=$(find "$prefix" -name 'libclattn.so' -print -quit)
pc=$(find "$prefix" -name 'clattn.pc' -print -quit)
config_file=$(find "$prefix" -name 'clattnConfig.cmake' -print -quit)
[[ -n "$lib" && -n "$pc" && -n "$config_file" ]] ||
  { echo "install is missing libclattn.so, clattn.pc or clattnConfig.cmake"; exit 1; }
libdir=$(dirname "$lib")
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== CMake consumer (find_package(clattn))"
"$cmake" -S "$here" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER="$cc" >"$work/consumer.log" ||
  { cat "$work/consumer.log"; exit 1; }
"$cmake" --build "$work/consumer" >>"$work/consumer.log" 2>&1 ||
  { cat "$work/consumer.log"; exit 1; }
"$work/consumer/consumer_shared"
"$work/consumer/consumer_static"
# The shared consumer must use the installed library, not the build tree's.
if command -v ldd >/dev/null; then
  # Capture first: grep -q may exit before ldd has written everything, and pipefail would
  # then report ldd's SIGPIPE as a failure.
  deps=$(ldd "$work/consumer/consumer_shared")
  grep -q "$libdir/libclattn.so" <<<"$deps" ||
    { echo "consumer_shared does not load $libdir/libclattn.so"; echo "$deps"; exit 1; }
fi

echo "== pkg-config consumer"
PKG_CONFIG_PATH="$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
echo "pkg-config --cflags --libs clattn: $(pkg-config --cflags --libs clattn)"
# shellcheck disable=SC2046  # word splitting of the flags is intended
"$cc" -std=c11 -Wall -Wextra -Werror -o "$work/consumer_pc" "$here/main.c" \
  $(pkg-config --cflags --libs clattn) -lm
"$work/consumer_pc"

echo "package test passed"
