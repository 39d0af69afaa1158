#!/usr/bin/env python3
"""Checks florence_export.py end to end on an HF checkpoint folder: export with the CLI, then compare ONNX Runtime
greedy decoding on the exported graphs with HF generate, step by step.

    python3 scripts/python/check_export.py --checkpoint DIR --out EXPORT_DIR --images DIR
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--images", required=True)
    args = p.parse_args()
    subprocess.run([sys.executable, str(Path(__file__).with_name("florence_export.py")), "--model", args.checkpoint,
                    "--out", args.out, "--precisions", "fp32,quantized"], check=True)
    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration
    import make_fixtures
    model = Florence2ForConditionalGeneration.from_pretrained(args.checkpoint, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(args.out)
    images = sorted(p.name for p in Path(args.images).iterdir())
    cases = [c for c in make_fixtures.generation_cases(images) if c["generate_kwargs"].get("num_beams") == 1][:6]
    report = make_fixtures.onnx_check(model, processor, Path(args.out) / "onnx", Path(args.images), cases)
    files = sorted(p.name for p in Path(args.out).iterdir()) + sorted("onnx/" + p.name for p in (Path(args.out) / "onnx").iterdir())
    worst = max(c["decoder_logits_max_abs_diff"] for c in report["cases"])
    vision = max(c["vision_max_abs_diff"] for c in report["cases"])
    print(json.dumps({"files": files, "cases": len(report["cases"]), "steps": [c["steps"] for c in report["cases"]],
                      "max_decoder_logits_abs_diff": worst, "max_vision_abs_diff": vision,
                      "max_split_vs_merged_abs_diff": max(c["split_vs_merged_max_abs_diff"] for c in report["cases"]),
                      "ok": worst < 1e-3}))
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
