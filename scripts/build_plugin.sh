#!/usr/bin/env bash
# Build the sigmapot LAMMPS plugin and the compiled operators into build/plugin/ and copy them to
# python/sigmapot/lib/ (sigmapotplugin.so, libsigmapot_ops.so).
# Usage: scripts/build_plugin.sh [extra cmake -D options]   (env: PYTHON, BUILD_DIR, JOBS, BUILD_TYPE)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
BUILD_DIR="${BUILD_DIR:-$ROOT/build/plugin}"
JOBS="${JOBS:-2}"
BIN_DIR="$(dirname "$PYTHON")"
export PATH="$BIN_DIR:$PATH"     # cmake, ninja, mpicxx of the venv
GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
# keep the generator of an existing build folder
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]]; then GEN=(); fi

cmake -S "$ROOT" -B "$BUILD_DIR" "${GEN[@]}" \
  -DPython_EXECUTABLE="$PYTHON" \
  -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@"
cmake --build "$BUILD_DIR" -j "$JOBS"
mkdir -p "$ROOT/python/sigmapot/lib"
cp -f "$BUILD_DIR/sigmapotplugin.so" "$BUILD_DIR/libsigmapot_ops.so" "$ROOT/python/sigmapot/lib/"
echo "sigmapot plugin: $ROOT/python/sigmapot/lib/sigmapotplugin.so"
