# Run on the GPU machine: tiny models the tests have never seen (other seeds, sizes, vocabularies), fp32 only.
set -u
mkdir -p /tmp/fx
python3 scripts/python/make_fixtures.py --out /tmp/fx/holdout-seed7 --seed 7 --d-model 48 --layers 3 --heads 3 \
  --vocab 900 --vision-dims 16,32,32,48 --max-length 24 --precisions fp32 > /tmp/fx/log7.txt 2>&1; echo "seed7 rc=$?"; tail -1 /tmp/fx/log7.txt
python3 scripts/python/make_fixtures.py --out /tmp/fx/holdout-seed11 --seed 11 --d-model 96 --layers 1 --heads 6 \
  --vocab 400 --vision-dims 32,32,64,96 --max-length 40 --bias-std 3.0 --precisions fp32 > /tmp/fx/log11.txt 2>&1; echo "seed11 rc=$?"; tail -1 /tmp/fx/log11.txt
for s in 7 11; do rm -rf /tmp/fx/holdout-seed$s/reference/pixels/*.pil.png; tar czf $OUT/holdout-seed$s.tgz -C /tmp/fx holdout-seed$s; done
ls -la $OUT
