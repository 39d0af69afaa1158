#!/usr/bin/env python3
"""Where a training step of florence-2-shapes spends its time (GPU machine): the full step (4 rows per image, as
train_shapes.py trains) and the vision tower alone, at a few batch sizes and input sides, the profiler's top
operators, and the step under torch.compile.
    python3 scripts/train/profile_step.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import florence_export  # noqa: E402
import make_fixtures as fx  # noqa: E402
import train_shapes as ts  # noqa: E402

dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = True
tok = fx.make_tokenizer(400, Path("/tmp/prof-tok"), ["A red circle, a blue square and a green star.", "SOUTH BUS", "Locate the objects"] * 50)
model = ts.make_model(tok).to(dev)
aux = ts.AuxHead(model.config.text_config.d_model).to(dev)
opt = torch.optim.AdamW(list(model.parameters()) + list(aux.parameters()), lr=1e-4)


def batch(n, side, per_image=4, plen=12, tlen=40):
    tokens = (side // 32) ** 2 + 1
    images, cells = n // per_image, tokens - 1
    ids = torch.full((n, tokens + plen), 5, dtype=torch.long, device=dev)
    ids[:, :tokens] = tok.image_token_id
    return dict(pixel_values=torch.randn(images, 3, side, side, device=dev), input_ids=ids,
                row_image=torch.arange(n, device=dev) // per_image,
                attention_mask=torch.ones_like(ids), decoder_input_ids=torch.randint(3, 50, (n, tlen), device=dev),
                labels=torch.randint(3, 50, (n, tlen), device=dev),
                cell_colour=torch.randint(0, 8, (images, cells), device=dev),
                cell_shape=torch.randint(0, 6, (images, cells), device=dev),
                cell_word=torch.randint(0, 33, (images, cells), device=dev),
                cell_box=torch.rand(images, cells, 4, device=dev))


def timed(fn, reps=6):
    fn(); fn()
    torch.cuda.synchronize()
    t = time.time()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.time() - t) / reps * 1000


def full_step(b):
    def go():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = sum(ts.batch_loss(model, aux, b))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return go


def vision_step(b):
    def go():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            f = florence_export.image_features(model, b["pixel_values"])
        f.float().mean().backward()
    return go


for side in (384, 256):
    for n in (64, 192):
        b = batch(n, side)
        print(f"side {side} batch {n}: full step {timed(full_step(b)):.1f} ms, vision fwd+bwd {timed(vision_step(b)):.1f} ms", flush=True)

b = batch(192, 384)
from torch.profiler import ProfilerActivity, profile  # noqa: E402
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(3):
        full_step(b)()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60), flush=True)
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=10, max_name_column_width=60), flush=True)
print(f"max memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)

t = time.time()
cm = torch.compile(ts.batch_loss, dynamic=False)
b = batch(192, 384)
def cstep():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = sum(cm(model, aux, b))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
try:
    cstep()
    torch.cuda.synchronize()
    print(f"compiled in {time.time() - t:.0f}s; compiled full step {timed(cstep):.1f} ms", flush=True)
except Exception as err:  # noqa: BLE001
    print("compile failed:", type(err).__name__, str(err)[:300], flush=True)
