#!/usr/bin/env bash
# Installs a finished florence-2-shapes from a device run's files (`cat` the model.tar.xz.part-* of FOLDER and
# unpack) or from finish_shapes.py's --out FOLDER (florence-2-shapes/ and shapes-reference/ in it), checks the size
# rules (every file under 16 MB, the model under 40 MB), then copies the model to assets/ and HF's reference answers
# to test/fixtures/. Run `florence-edge eval` and `npm test` after it.
#   bash scripts/train/install-model.sh /work/.device/N       or       bash scripts/train/install-model.sh /tmp/final
set -euo pipefail
from=$(realpath "${1:?usage: install-model.sh FOLDER (model.tar.xz.part-* or florence-2-shapes/ and shapes-reference/)}")
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ls "$from"/model.tar.xz.part-* > /dev/null 2>&1; then
  cat "$from"/model.tar.xz.part-* | tar xJf - -C "$work"
elif [ -d "$from/florence-2-shapes" ] && [ -d "$from/shapes-reference" ]; then
  cp -r "$from/florence-2-shapes" "$from/shapes-reference" "$work/"
else
  echo "$from holds neither model.tar.xz.part-* nor florence-2-shapes/ with shapes-reference/" >&2
  exit 1
fi
[ -f "$work/florence-2-shapes/world.json" ] || { echo "no florence-2-shapes/world.json in $from" >&2; exit 1; }
big=$(find "$work/florence-2-shapes" -type f -size +15999999c)
[ -z "$big" ] || { echo "files of 16 MB or more: $big" >&2; exit 1; }
total=$(du -sb "$work/florence-2-shapes" | cut -f1)
[ "$total" -lt 40000000 ] || { echo "the model is $total bytes, over 40 MB" >&2; exit 1; }
rm -rf assets/florence-2-shapes test/fixtures/shapes-reference
cp -r "$work/florence-2-shapes" assets/
cp -r "$work/shapes-reference" test/fixtures/
echo "installed assets/florence-2-shapes ($total bytes) and test/fixtures/shapes-reference"
find assets/florence-2-shapes -type f -printf '%10s  %p\n' | sort -k2
