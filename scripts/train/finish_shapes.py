#!/usr/bin/env python3
"""Export a trained florence-2-shapes checkpoint and record Hugging Face's answers on held-out stills.

    python3 scripts/train/finish_shapes.py --ckpt /tmp/ckpt --heldout /tmp/heldout --out /tmp/final

Writes
  OUT/florence-2-shapes/            the model in the onnx-community layout (config, generation_config, processor and
                                    tokenizer files; onnx/{vision_encoder,embed_tokens,encoder_model,
                                    decoder_model_merged}{,_fp16,_quantized}.onnx) — the project's own exporter
                                    (scripts/python/florence_export.py)
  OUT/shapes-reference/             reference/images/* (held-out stills) and reference/generate.json: HF PyTorch
                                    (float32, CPU) generate ids, text and post_process_generation result for all 15
                                    tasks, greedy and beam 3 (the model's generation_config otherwise), in the
                                    format of the random-weight fixtures, so the same parity tests read it
"""
from __future__ import annotations

import argparse
import glob
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import florence_export  # noqa: E402
import make_fixtures as fx  # noqa: E402

KEEP = ("vision_encoder", "embed_tokens", "encoder_model", "decoder_model_merged")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=6)
    args = ap.parse_args(argv)
    from transformers import Florence2ForConditionalGeneration, Florence2Processor

    torch.set_num_threads(8)
    t0 = time.time()
    hf = Path(args.ckpt) / "hf"
    out = Path(args.out)
    model_dir = out / "florence-2-shapes"
    shutil.rmtree(model_dir, ignore_errors=True)
    (model_dir / "onnx").mkdir(parents=True)
    model = Florence2ForConditionalGeneration.from_pretrained(str(hf), dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    processor = Florence2Processor.from_pretrained(str(hf))
    model.save_pretrained(str(model_dir), safe_serialization=True)
    for weights in model_dir.glob("*.safetensors"):
        weights.unlink()
    processor.save_pretrained(str(model_dir))
    size = processor.image_processor.size
    florence_export.export_fp32(model, model_dir / "onnx", (size["height"], size["width"]))
    notes = florence_export.make_precisions(model_dir / "onnx", ["fp32", "fp16", "quantized"])
    for f in (model_dir / "onnx").glob("*.onnx"):
        stem = f.stem.replace("_fp16", "").replace("_quantized", "")
        if stem not in KEEP:
            f.unlink()
    # marks a model of the shapes world: `florence-edge test-hardware` then checks its accuracy on TensorRT too
    (model_dir / "world.json").write_text(json.dumps({"world": "shapes", "spec_version": 1, "image_side": size["height"],
                                                     "held_out_seed_base": 1_000_000}, indent=1) + "\n")
    print("export notes:", notes, "in", round(time.time() - t0, 1), "s", flush=True)
    print({f.name: round(f.stat().st_size / 2**20, 2) for f in sorted((model_dir / "onnx").glob("*.onnx"))}, flush=True)

    # HF's answers on held-out stills: every task with the inputs the generator chose, greedy and beam 3
    ref = out / "shapes-reference" / "reference"
    (ref / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for jsonl in sorted(glob.glob(f"{args.heldout}/examples-*.jsonl")):
        records += [json.loads(line) for line in open(jsonl) if line.strip()]
    records = records[: args.images]
    cases = []
    for r in records:
        shutil.copy(f"{args.heldout}/{r['file']}", ref / "images" / r["file"])
        seen = set()
        for e in r["examples"]:
            if e["task"] in seen:
                continue
            seen.add(e["task"])
            for mode, kwargs in (("greedy", {"num_beams": 1}), ("beam3", {"num_beams": 3})):
                cases.append({"id": f"{r['file']}|{e['task']}|{mode}", "images": [r["file"]],
                              "prompt": e["task"] + e["input"], "task": e["task"], "text_input": e["input"] or None,
                              "generate_kwargs": kwargs, "world_target": e["target"]})
    t1 = time.time()
    gen = fx.run_generation(model, processor, ref / "images", cases)
    (ref / "generate.json").write_text(json.dumps(gen, ensure_ascii=False))
    exact = sum(c["text"][0].replace("</s>", "").replace("<s>", "") == c["world_target"] for c in gen)
    print(f"reference: {len(gen)} HF generations in {time.time() - t1:.1f}s; {exact}/{len(gen)} equal the world's "
          f"answer text", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
