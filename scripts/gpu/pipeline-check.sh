#!/usr/bin/env bash
# Florence-2 on the TensorRT backend over the stand-in libnvinfer (test/e2e/tensorrt_pipeline.test.ts), on an NVIDIA
# GPU machine that has no Node, no node_modules and no TensorRT:
#
#   scripts/gpu/pipeline-check.sh pack   here: build, pack Node and node_modules (make-carry.sh) and the stand-in
#                                        library into .devcarry/ (git-ignored)
#   scripts/gpu/pipeline-check.sh run    there, from the repository with .devcarry, dist/src and dist/test carried:
#                                        the test, its log also in $OUT/tensorrt-pipeline.log when $OUT is set
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
pack)
  npx tsc -p . >/dev/null
  bash scripts/gpu/make-carry.sh
  cc -shared -fPIC -O1 -Wl,-soname,libnvinfer.so.10 -o .devcarry/libnvinfer.so.10 test/support/standin_nvinfer.c
  echo "carry: .devcarry dist/src dist/test"
  ;;
run)
  [ -f .devcarry/node.xz ] && [ -f dist/test/e2e/tensorrt_pipeline.test.js ] || { echo "pipeline-check: carry .devcarry, dist/src and dist/test (run '$0 pack' first)" >&2; exit 2; }
  node=$(command -v node || true)
  if [ -z "$node" ]; then
    node=/tmp/pipeline-node
    xz -dc .devcarry/node.xz >"$node"
    chmod +x "$node"
  fi
  if [ ! -d node_modules ]; then
    tar xJf .devcarry/nm.tar.xz -C /tmp
    ln -s /tmp/node_modules node_modules
  fi
  log=${OUT:-/tmp}/tensorrt-pipeline.log
  # the backend finds libnvinfer by soname, as on a real machine: the stand-in's folder goes on the loader's path
  LD_LIBRARY_PATH="$PWD/.devcarry${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" FLORENCE_EDGE_STANDIN_LIB="$PWD/.devcarry/libnvinfer.so.10" "$node" dist/test/e2e/tensorrt_pipeline.test.js 2>&1 | tee "$log" || true
  grep -q "Passed:" "$log" && ! grep -q "FAIL\|SKIPPED" "$log"
  ;;
*)
  echo "usage: $0 pack|run" >&2
  exit 2
  ;;
esac
