#!/usr/bin/env python3
"""A random-weight Florence-2 with the real model's dimensions, for benchmarks and parity at full size.

    python3 scripts/python/make_sized_model.py --size base --out /tmp/florence-2-base-random [--cases 4]

Florence-2-base: DaViT [128, 256, 512, 1024] x depths [1, 1, 9, 1] and BART-base (d_model 768, 6 + 6 layers,
12 heads, FFN 3072, vocabulary 51289); Florence-2-large: DaViT [256, 512, 1024, 2048] and BART-large (1024, 12 + 12,
16 heads, FFN 4096). Weights are random (HF's own initialisation); the tokenizer is the small BPE of the fixtures
(make_fixtures.py), and the output layer's bias keeps generation inside it, so every generated id decodes while
the vocabulary-sized matrices cost what the real ones cost. The end-of-sequence bias is low, so greedy runs reach
max_new_tokens (benchmarks time the same number of steps every run).

Writes the onnx-community layout in fp32 (what the CPU benchmark and the TensorRT build take) and
reference/generate.json with HF `generate` for a few cases (greedy and beam 3), as make_fixtures.py records them.
Runs on the CPU in float32 (deterministic, what ONNX Runtime's CPU results are compared with).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import florence_export  # noqa: E402
import make_fixtures as fx  # noqa: E402

SIZES = {
    "base": dict(d_model=768, layers=6, heads=12, ffn=3072, vision_dims=[128, 256, 512, 1024],
                 vision_heads=[4, 8, 16, 32], depths=[1, 1, 9, 1]),
    "large": dict(d_model=1024, layers=12, heads=16, ffn=4096, vision_dims=[256, 512, 1024, 2048],
                  vision_heads=[8, 16, 32, 64], depths=[1, 1, 9, 1]),
}
VOCAB = 51289


def make_model(tokenizer, size: dict, seed: int):
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, GenerationConfig

    d = size["d_model"]
    text_config = BartConfig(
        vocab_size=VOCAB, d_model=d, encoder_layers=size["layers"], decoder_layers=size["layers"],
        encoder_attention_heads=size["heads"], decoder_attention_heads=size["heads"], encoder_ffn_dim=size["ffn"],
        decoder_ffn_dim=size["ffn"], max_position_embeddings=1024, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_eos_token_id=2, forced_bos_token_id=0, scale_embedding=False,
        activation_function="gelu", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        no_repeat_ngram_size=3, num_beams=3)
    vd = size["vision_dims"]
    vision_config = dict(depths=size["depths"], embed_dim=vd, num_heads=size["vision_heads"],
                         num_groups=size["vision_heads"], window_size=12, projection_dim=d, drop_path_rate=0.0,
                         patch_size=[7, 3, 3, 3], patch_stride=[4, 2, 2, 2], patch_padding=[3, 1, 1, 1],
                         patch_prenorm=[False, True, True, True], max_position_embeddings=50,
                         max_temporal_embeddings=100)
    config = Florence2Config(text_config=text_config.to_dict(), vision_config=vision_config,
                             image_token_id=tokenizer.image_token_id)
    fx.set_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.generation_config = GenerationConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2, forced_bos_token_id=0,
        forced_eos_token_id=2, no_repeat_ngram_size=3, num_beams=3, early_stopping=True, max_length=1025)
    # the fixtures' logit shaping, scaled to this width (random logits grow with sqrt(d_model)), then every id
    # past the tokenizer pushed far down
    shaping = argparse.Namespace(d_model=d, seed=seed, embed_std=0.6 * (64 / d) ** 0.5, bias_std=2.0,
                                 loc_boost=1.5, eos_bias=-4.0)
    fx.shape_logits(model, tokenizer, shaping)
    with torch.no_grad():
        emb = model.model.language_model.shared.weight
        emb[len(tokenizer):, d - 1] = -60.0
        if model.lm_head.weight.data_ptr() != emb.data_ptr():
            model.lm_head.weight.copy_(emb)
    return model


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="base")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--cases", type=int, default=4, help="HF generate cases to record (0 for none)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(16, os.cpu_count() or 1)))
    started = time.time()
    out = Path(args.out)
    ref = out / "reference"
    (ref / "images").mkdir(parents=True, exist_ok=True)

    from transformers import Florence2Processor

    tokenizer = fx.make_tokenizer(600, out / ".work")
    processor = fx.make_processor(tokenizer)
    model = make_model(tokenizer, SIZES[args.size], args.seed)
    params = sum(t.numel() for t in model.parameters())
    fx.make_images(ref / "images", args.seed)
    model.save_pretrained(str(out), safe_serialization=True)
    for weights in out.glob("*.safetensors"):
        weights.unlink()
    processor.save_pretrained(str(out))
    processor = Florence2Processor.from_pretrained(str(out))
    (out / "onnx").mkdir(exist_ok=True)
    t0 = time.time()
    florence_export.export_fp32(model, out / "onnx", (768, 768))
    export_s = time.time() - t0

    # greedy first, then beam 3: <CAPTION> and <OD> on street.jpg, 24 new tokens
    cases = [c for c in fx.generation_cases(["street.jpg"])
             if c["task"] in ("<CAPTION>", "<OD>") and c["id"].startswith("street.jpg|")]
    cases = sorted(cases, key=lambda c: c["generate_kwargs"]["num_beams"])[: args.cases]
    t0 = time.time()
    gen = fx.run_generation(model, processor, ref / "images", cases) if cases else []
    (ref / "generate.json").write_text(json.dumps(gen, ensure_ascii=False))
    summary = {"out": str(out), "size": args.size, "parameters": params, "vocab": VOCAB,
               "tokenizer_tokens": len(tokenizer), "export_s": round(export_s, 1),
               "generate_s": round(time.time() - t0, 1), "seconds": round(time.time() - started, 1),
               "cases": [{"id": c["id"], "tokens": len(c["generated_ids"][0]),
                          "min_top2_margin": c.get("min_top2_margin")} for c in gen],
               "onnx_mb": {f.name: round(f.stat().st_size / 2**20, 1) for f in sorted((out / "onnx").glob("*.onnx"))}}
    (ref / "meta.json").write_text(json.dumps(summary, indent=1))
    import shutil
    shutil.rmtree(out / ".work", ignore_errors=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
