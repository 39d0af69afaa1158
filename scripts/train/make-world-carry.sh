#!/usr/bin/env bash
# Packs what the GPU machine needs to draw the shapes world into .devcarry/world.tar.xz (git-ignored): this
# machine's Node binary (stripped) and the node_modules the generator uses (sharp + libvips, opentype.js).
# Carry it with dist/src and dist/scripts (npm run build first); scripts/train/remote_train.sh unpacks it.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d node_modules/opentype.js ] || { echo "run npm ci first" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/node_modules/@img"
cp -r node_modules/sharp node_modules/detect-libc node_modules/semver node_modules/opentype.js "$work/node_modules/"
cp -r node_modules/@img/colour node_modules/@img/sharp-linux-x64 node_modules/@img/sharp-libvips-linux-x64 "$work/node_modules/@img/"
rm -rf "$work/node_modules/opentype.js/dist/"*.min.* "$work/node_modules/opentype.js/dist/"*.map
cp "$(readlink -f "$(command -v node)")" "$work/node"
strip "$work/node" 2>/dev/null || true
mkdir -p .devcarry
tar cf - -C "$work" node node_modules | xz -6 -T0 > .devcarry/world.tar.xz
du -b .devcarry/world.tar.xz
