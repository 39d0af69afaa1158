# Run on the GPU machine: an HF checkpoint folder (with weights) → florence_export.py → parity with HF.
set -eu
mkdir -p /tmp/fx
[ -f /tmp/fx/ckpt/model.safetensors ] || python3 scripts/python/make_fixtures.py --out /tmp/fx/ckpt --seed 3 --d-model 32 --layers 2 --heads 2 --vocab 500 \
  --vision-dims 16,16,32,32 --no-onnx --keep-weights > /tmp/fx/ckpt.log 2>&1 || { tail -20 /tmp/fx/ckpt.log; exit 1; }
ls /tmp/fx/ckpt
python3 scripts/python/check_export.py --checkpoint /tmp/fx/ckpt --out /tmp/fx/exported --images /tmp/fx/ckpt/reference/images > /tmp/fx/check.log 2>&1 && rc=0 || rc=$?; tail -1 /tmp/fx/check.log; echo "check_export rc=$rc"; exit $rc
