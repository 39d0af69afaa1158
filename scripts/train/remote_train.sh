#!/usr/bin/env bash
# One device run of the florence-2-shapes recipe (see scripts/train/README.md). On the GPU machine, from the repo:
#   SEED_BASE=100 SECONDS_TO_TRAIN=120 RESUME=0 FINISH=0 [STAGE1_SECONDS=60] [INIT=ckpt.tar] [TRAIN_ARGS="--lr 6e-4"] \
#     bash scripts/train/remote_train.sh
# CALL_SECONDS (default 570): the whole script's wall time; training stops FINISH_RESERVE (default 130) seconds before
# it, so that saving, the quick evaluation, the export and packing end inside a device call of 595 s (in session 8 the
# plan's fixed times overran the call's limit, which killed it before anything was saved).
# STAGE1_SECONDS (with RESUME=0): first train only the vision tower and projector with the auxiliary loss
# (train_shapes.py --vision-only), then the whole model from there. STAGE1_ARGS default to "--batch 32": many small
# steps, as on the CPU where stage 1 worked (in session 8, 154 steps of 256 images taught the cells nothing).
# INIT (with RESUME=1 on a fresh machine): the checkpoint tar to start from (default .train/ckpt-small.tar).
# W: the working folder (default /tmp/shapes).
# Needs .devcarry/world.tar.xz (scripts/train/make-world-carry.sh), dist/src and dist/scripts carried.
# Leaves the checkpoint in $W/ckpt (a following run on the same warm machine resumes from it; a fresh
# machine resumes from a carried .train/ckpt-small.tar) and copies to $OUT: the log, ckpt-small.tar (bf16
# weights + tokenizer/processor) and, with FINISH=1, the exported model and HF references (model.tar.part-*).
set -u
T0=$(date +%s)
DEADLINE=$(( T0 + ${CALL_SECONDS:-570} - ${FINISH_RESERVE:-130} ))
OUT=${OUT:-/tmp/out}
W=${W:-/tmp/shapes}
mkdir -p "$OUT" "$W/data" "$W/ckpt"
exec > >(tee -a "$OUT/log.txt") 2>&1
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader) $(nproc) CPUs; seed base ${SEED_BASE:-100}"
[ -x "$W/node" ] || tar xJf .devcarry/world.tar.xz -C "$W"
rm -rf node_modules && ln -s "$W/node_modules" node_modules
NODE=$W/node
INIT=${INIT:-.train/ckpt-small.tar}
if [ "${RESUME:-0}" = 1 ] && [ ! -f "$W/ckpt/train_state.pt" ] && [ -f "$INIT" ]; then
  echo "fresh machine: resuming from $INIT"; tar xf "$INIT" -C "$W/ckpt"
fi
[ -f "$W/heldout/examples-0.jsonl" ] || $NODE dist/scripts/train/world-stills.js --held-out --seed 1 --start 0 --count 96 --out "$W/heldout"

# twelve writers, each a run of 400-image shards of its own seed, until 300 shards (120,000 images, the store's
# capacity; ~17 GB of disk) exist; a later run on the same machine reuses them
have=$(ls "$W/data" | wc -l)
per=$(( (300 - have) / 12 ))
for p in $(seq 0 11); do
  [ "$per" -gt 0 ] || break
  seed=$(( ${SEED_BASE:-100} + p ))
  ( for k in $(seq 0 $((per - 1))); do
      nice -n 15 $NODE dist/scripts/train/world-stills.js --seed $seed --start $((k * 400)) --count 400 --out "$W/data/s$seed-$k" > /dev/null || break
    done ) &
done
resume=()
[ "${RESUME:-0}" = 1 ] && resume=(--resume)
if [ "${RESUME:-0}" != 1 ] && [ "${STAGE1_SECONDS:-0}" != 0 ]; then
  PYTHONUNBUFFERED=1 python3 scripts/train/train_shapes.py --data "$W/data" --heldout "$W/heldout" --ckpt "$W/ckpt" \
    --vision-only --seconds "$STAGE1_SECONDS" --deadline "$DEADLINE" ${STAGE1_ARGS:---batch 32}
  echo "stage 1 rc=$?"
  resume=(--resume)
fi
PYTHONUNBUFFERED=1 python3 scripts/train/train_shapes.py --data "$W/data" --heldout "$W/heldout" --ckpt "$W/ckpt" \
  --seconds "${SECONDS_TO_TRAIN:-300}" --deadline "$DEADLINE" --total-seconds "${TOTAL_SECONDS:-1000}" "${resume[@]}" \
  ${TRAIN_ARGS:-}
echo "train rc=$? after $(( $(date +%s) - T0 ))s of the call"
kill $(jobs -p) 2>/dev/null; pkill -f world-stills.js 2>/dev/null
python3 - "$W/ckpt" <<'PY'
import sys, torch
ck = sys.argv[1]
s = torch.load(f"{ck}/train_state.pt", map_location="cpu")
small = lambda state: {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
torch.save({"model": small(s["model"]), **({"aux": small(s["aux"])} if "aux" in s else {}),
            "step": s["step"], "trained_s": s["trained_s"]}, f"{ck}/weights-bf16.pt")
PY
( cd "$W/ckpt" && cp weights-bf16.pt /tmp/train_state.pt && tar cf "$OUT/ckpt-small.tar" -C /tmp train_state.pt \
    -C "$W/ckpt" $(ls | grep -E '\.json$|\.txt$') )
if [ "${FINISH:-0}" = 1 ]; then
  rm -rf /tmp/final
  PYTHONUNBUFFERED=1 python3 scripts/train/finish_shapes.py --ckpt "$W/ckpt" --heldout "$W/heldout" --out /tmp/final
  echo "finish rc=$? after $(( $(date +%s) - T0 ))s of the call"
  tar cf - -C /tmp/final florence-2-shapes shapes-reference | xz -1 -T0 | split -b 15m - "$OUT/model.tar.xz.part-"
fi
ls -la "$OUT"
