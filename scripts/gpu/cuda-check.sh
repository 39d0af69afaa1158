#!/usr/bin/env bash
# The GPU tests on an NVIDIA GPU machine that has a driver and a CUDA runtime but no Node, no node_modules and no
# TensorRT (CI machines never have a GPU): the CUDA layer (test/e2e/cuda.test.ts) and the TensorRT backend over the
# stand-in libnvinfer (test/e2e/tensorrt_standin.test.ts, test/support/trt_standin.ts).
#
#   scripts/gpu/cuda-check.sh pack [BUNDLE]   here: build, then put Node (xz), the compiled files and the few
#                                             packages the test needs into BUNDLE (default tmp/gpu-cuda, ignored)
#   scripts/gpu/cuda-check.sh run  [BUNDLE]   there: unpack Node, read the GPU's name and compute capability
#                                             from nvidia-smi, run the tests against them; with $OUT set, the
#                                             measured numbers go to $OUT/cuda-report.json and the logs to
#                                             $OUT/cuda.log and $OUT/tensorrt-standin.log
#
# Anything the bundle holds under extra/ with a run.sh is run afterwards with NODE and BUNDLE set (more checks
# of the same machine, e.g. the runtime against a stand-in libnvinfer).
set -euo pipefail
mode=${1:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle=${2:-$root/tmp/gpu-cuda}

case "$mode" in
pack)
  cd "$root"
  npx tsc -p . >/dev/null || true # other people's half-written files may not compile; ours are checked below
  for f in dist/src/engine/tensorrt/cuda.js dist/src/engine/tensorrt/ffi.js dist/src/engine/tensorrt/runtime.js dist/test/e2e/cuda.test.js dist/test/e2e/tensorrt_standin.test.js dist/test/support/trt_standin.js; do
    [ -f "$f" ] || { echo "cuda-check: $f was not built" >&2; exit 1; }
  done
  rm -rf "$bundle/dist" "$bundle/node_modules"
  mkdir -p "$bundle/dist/test/e2e" "$bundle/dist/test/support" "$bundle/node_modules/@koromix"
  cp -r dist/src "$bundle/dist/src"
  cp dist/test/e2e/cuda.test.js dist/test/e2e/tensorrt_standin.test.js "$bundle/dist/test/e2e/"
  cp dist/test/support/*.js "$bundle/dist/test/support/" # the stand-in and the helpers the tests import
  cc -shared -fPIC -O1 -Wl,-soname,libnvinfer.so.10 -o "$bundle/libnvinfer.so.10" test/support/standin_nvinfer.c
  for p in koffi @koromix/koffi-linux-x64 uvu dequal diff kleur sade mri; do cp -r "node_modules/$p" "$bundle/node_modules/$p"; done
  rm -rf "$bundle/node_modules/koffi/doc" "$bundle/node_modules/@koromix/koffi-linux-x64/musl_x64"
  echo '{ "type": "module" }' >"$bundle/package.json"
  [ -f "$bundle/node.xz" ] || xz -T2 -c "$(command -v node)" >"$bundle/node.xz"
  du -sh "$bundle"
  ;;
run)
  [ -d "$bundle/dist" ] || { echo "cuda-check: no bundle at $bundle — run '$0 pack' on a machine with Node first" >&2; exit 2; }
  bundle=$(cd "$bundle" && pwd)
  node=$(command -v node || true)
  if [ -z "$node" ]; then
    node=/tmp/cuda-check-node
    xz -dc "$bundle/node.xz" >"$node"
    chmod +x "$node"
  fi
  "$node" --version
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
  FLORENCE_EDGE_EXPECT_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' ')
  FLORENCE_EDGE_EXPECT_GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  export FLORENCE_EDGE_EXPECT_CC FLORENCE_EDGE_EXPECT_GPU
  [ -n "${OUT:-}" ] && export FLORENCE_EDGE_CUDA_REPORT="$OUT/cuda-report.json"
  status=0
  (cd "$bundle" && "$node" dist/test/e2e/cuda.test.js) 2>&1 | tee "${OUT:-/tmp}/cuda.log" || status=1
  grep -q "Passed:" "${OUT:-/tmp}/cuda.log" && ! grep -q "FAIL" "${OUT:-/tmp}/cuda.log" || status=1
  grep -q "SKIPPED" "${OUT:-/tmp}/cuda.log" && { echo "cuda-check: the test skipped on a GPU machine" >&2; status=1; }
  (cd "$bundle" && FLORENCE_EDGE_STANDIN_LIB="$bundle/libnvinfer.so.10" "$node" dist/test/e2e/tensorrt_standin.test.js) 2>&1 | tee "${OUT:-/tmp}/tensorrt-standin.log" || status=1
  grep -q "Passed:" "${OUT:-/tmp}/tensorrt-standin.log" && ! grep -q "FAIL\|SKIPPED" "${OUT:-/tmp}/tensorrt-standin.log" || status=1
  if [ -x "$bundle/extra/run.sh" ]; then
    NODE="$node" BUNDLE="$bundle" "$bundle/extra/run.sh" || status=1
  fi
  exit $status
  ;;
*)
  echo "usage: $0 pack|run [BUNDLE]" >&2
  exit 2
  ;;
esac
