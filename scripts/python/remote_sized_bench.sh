# Run on the GPU machine (its CPUs): a random-weight Florence-2 at the real model's size → florence-edge parity with
# HF there and the CPU benchmark (end to end vs bare ONNX Runtime session time).
#
# Needs, carried from the workstation (see scripts/gpu/make-carry.sh): .devcarry/node.xz (a Node binary),
# .devcarry/nm.tar.xz (the runtime's node_modules for linux-x64) and dist/ (npm run build).
#   SIZE=base RUNS=10 [BENCH=0 for parity only] bash scripts/python/remote_sized_bench.sh
set -u
SIZE=${SIZE:-base}
RUNS=${RUNS:-10}
MODEL=/tmp/florence-2-$SIZE-random
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/nb
xz -dc .devcarry/node.xz > /tmp/nb/node && chmod +x /tmp/nb/node
tar xJf .devcarry/nm.tar.xz -C /tmp/nb && rm -rf node_modules && ln -s /tmp/nb/node_modules node_modules
NODE=/tmp/nb/node
echo "node $($NODE --version), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

python3 scripts/python/make_sized_model.py --size "$SIZE" --out "$MODEL" > "$OUT/make-$SIZE.log" 2>&1; echo "make rc=$?"; tail -1 "$OUT/make-$SIZE.log"

# parity: florence-edge infer --json against HF generate for every recorded case
python3 - "$MODEL" "$NODE" <<'EOF'
import json, subprocess, sys
model, node = sys.argv[1], sys.argv[2]
cases = json.load(open(f"{model}/reference/generate.json"))
ok = 0
for c in cases:
    kw = c["generate_kwargs"]
    # HF-native integer coordinates; transformers 5's default image processor is the torchvision backend
    cmd = [node, "dist/src/bin.js", "infer", "--model", model, "--image", f"{model}/reference/images/{c['images'][0]}",
           "--task", c["task"], "--coordinates", "int", "--resize", "torchvision", "--json"]
    for key, flag in (("num_beams", "--num-beams"), ("max_new_tokens", "--max-new-tokens")):
        if key in kw:
            cmd += [flag, str(kw[key])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("FAIL", c["id"], r.stderr[-500:]); continue
    got = json.loads(r.stdout)
    same = (got["generated_ids"] == c["generated_ids"][0], got["text"] == c["text"][0], got["result"] == c["result"][0])
    ok += all(same)
    print("ids/text/result", "exact" if all(same) else f"DIFFER {same}", c["id"], len(c["generated_ids"][0]), "tokens",
          "margin", c.get("min_top2_margin"), "timings", got.get("timings_ms"))
print(f"parity {ok}/{len(cases)} cases exact")
EOF

[ "${BENCH:-1}" = 1 ] || exit 0
IMAGE=$MODEL/reference/images/street.jpg
for threads in 2 16; do
  cpus=$([ "$threads" = 2 ] && echo 0,1 || echo 0-15)
  taskset -c "$cpus" $NODE dist/scripts/bench-vs-transformersjs.js --side ours --model "$MODEL" --image "$IMAGE" \
    --task "<CAPTION>" --runs "$RUNS" --warmup 2 --threads "$threads" --no-multi > "$OUT/bench-$SIZE-$threads.txt" 2>&1
  echo "bench threads=$threads rc=$?"; grep -E "median|end to end|stages|by graph" "$OUT/bench-$SIZE-$threads.txt"
done
ls -la "$MODEL/onnx"
