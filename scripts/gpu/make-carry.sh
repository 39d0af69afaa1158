#!/usr/bin/env bash
# Packs what the GPU machine lacks into .devcarry/ (git-ignored), to carry with the device tool together with dist/:
#   node.xz     this machine's Node binary (stripped)
#   nm.tar.xz   the runtime's node_modules for linux-x64 (onnxruntime-node CPU, sharp + libvips, koffi) and uvu,
#               no other platforms' binaries
# Then, there: xz -dc .devcarry/node.xz > /tmp/node; tar xJf .devcarry/nm.tar.xz -C /tmp; ln -s /tmp/node_modules node_modules
# (scripts/python/remote_sized_bench.sh does it). Keep the total under the device tool's 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d node_modules ] || { echo "run npm ci first" >&2; exit 1; }
[ -d dist ] || { echo "run npm run build first" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
nm=$work/node_modules
mkdir -p "$nm/@img" "$nm/onnxruntime-node/bin/napi-v6/linux"
cp -r node_modules/onnxruntime-common node_modules/sharp node_modules/detect-libc node_modules/semver "$nm/"
cp -r node_modules/@img/colour node_modules/@img/sharp-linux-x64 node_modules/@img/sharp-libvips-linux-x64 "$nm/@img/"
cp -r node_modules/onnxruntime-node/package.json node_modules/onnxruntime-node/dist "$nm/onnxruntime-node/"
cp -r node_modules/onnxruntime-node/bin/napi-v6/linux/x64 "$nm/onnxruntime-node/bin/napi-v6/linux/"
mkdir -p "$nm/@koromix"
cp -r node_modules/koffi "$nm/" && rm -rf "$nm/koffi/doc"
cp -r node_modules/@koromix/koffi-linux-x64 "$nm/@koromix/"
for p in uvu dequal diff kleur sade mri; do cp -r "node_modules/$p" "$nm/"; done # the test runner, for GPU-side tests
mkdir -p .devcarry
tar cf - -C "$work" node_modules | xz -9e -T0 > .devcarry/nm.tar.xz
cp "$(readlink -f "$(command -v node)")" "$work/node"
strip "$work/node" 2>/dev/null || true # debug symbols: 12 MB of the 98 MB
xz -9e -T0 -c "$work/node" > .devcarry/node.xz
du -b .devcarry/* dist/src dist/scripts | awk '{s+=$1; print} END {printf "%.1f MiB with dist/src and dist/scripts (carry those two, not dist/test)\n", s/1048576}'
