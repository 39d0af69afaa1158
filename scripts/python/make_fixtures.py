#!/usr/bin/env python3
"""Make a tiny random-weight Florence-2 with Hugging Face's own implementation and record HF's answers.

    python3 scripts/python/make_fixtures.py --out test/fixtures/tiny-seed0 [--seed 0] [--d-model 64] ...

The folder it writes is a model folder in the onnx-community layout (config.json, generation_config.json,
processor_config.json, tokenizer files, onnx/*.onnx in fp32, fp16 and quantized) plus `reference/`:

  reference/images/*            the input images (JPEG and PNG; RGB, RGBA, L, P, CMYK, I;16, EXIF-rotated, odd sizes)
  reference/preprocess.json     per image: HF pixel_values as the exact uint8 image they come from, plus stats
  reference/pixels/<img>.u8     that uint8 image, 3 x H x W, channel-major
  reference/tokenizer.json      strings -> ids and ids -> text, as HF's tokenizer gives them
  reference/generate.json       per case: prompt, input_ids, generation settings, HF generate ids, text, result
  reference/parse.json          hand-written raw outputs of every parse type -> HF post_process_generation
  reference/onnx_check.json     ONNX Runtime (CPU) vs PyTorch on the exported graphs
  reference/variants/           the same model's config and processor files in the Microsoft remote-code form,
                                and tokenizer.json with "a b" merges

Runs on the CPU (float32, deterministic); needs torch, transformers >= 5 (native Florence2), tokenizers, onnx,
onnxruntime and Pillow. The tests in test/ only read what this writes.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import florence_export  # noqa: E402

TASKS_NO_INPUT = ["<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>", "<DENSE_REGION_CAPTION>",
                  "<REGION_PROPOSAL>", "<OCR>", "<OCR_WITH_REGION>"]
TASK_INPUTS = {
    "<CAPTION_TO_PHRASE_GROUNDING>": "A red car parks beside a green tree and a dog",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "the red car",
    "<REGION_TO_SEGMENTATION>": "<loc_100><loc_200><loc_500><loc_700>",
    "<OPEN_VOCABULARY_DETECTION>": "car",
    "<REGION_TO_CATEGORY>": "<loc_52><loc_332><loc_932><loc_774>",
    "<REGION_TO_DESCRIPTION>": "<loc_0><loc_0><loc_999><loc_999>",
    "<REGION_TO_OCR>": "<loc_10><loc_20><loc_600><loc_300>",
}
ALL_TASKS = TASKS_NO_INPUT + list(TASK_INPUTS)

FLORENCE_TOKENS = (["<od>", "</od>", "<ocr>", "</ocr>"] + [f"<loc_{i}>" for i in range(1000)] +
                   ["<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>",
                    "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>",
                    "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>"])

BANNED_GROUNDING = ["it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they",
                    "them", "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "its", "myself",
                    "yourself", "himself", "herself", "itself", "ourselves", "yourselves", "themselves", "this",
                    "that", "these", "those", "who", "whom", "whose", "which", "what", "all", "another", "any",
                    "anybody", "anyone", "anything", "each", "everybody", "everyone", "everything", "few", "many",
                    "nobody", "none", "several", "some", "somebody", "someone", "something", "each other",
                    "one another", "the image", "image", "images", "the", "a", "an", "a group", "other objects",
                    "lots", "a set"]

POST_PROCESSOR_CONFIG = {
    "ocr": {"pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
            "area_threshold": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": BANNED_GROUNDING},
    "pure_text": {}, "description_with_bboxes": {}, "description_with_polygons": {}, "polygons": {}, "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

CORPUS = [
    "What is the text in the image?", "What is the text in the image, with regions?", "What does the image describe?",
    "Describe in detail what is shown in the image.", "Describe with a paragraph what is shown in the image.",
    "Locate the objects with category name in the image.", "Locate the objects in the image, with their descriptions.",
    "Locate the region proposals in the image.", "Locate the phrases in the caption:", "in the image with mask",
    "What is the polygon mask of region", "What is the region", "What does the region describe?",
    "What text is in the region", "A red car parks beside a green tree and a dog.", "a person riding a bicycle",
    "two cats sleeping on a sofa", "a stop sign at the corner of the street", "a man wearing a hat", "the red car",
    "car", "person", "dog", "tree", "building", "window", "traffic light", "bus", "truck", "bicycle", "license plate",
    "OPEN 24 HOURS", "EXIT", "Main Street 42", "café crème", "naïve façade", "Straße", "日本語のテキスト", "emoji 🚗🐕",
    "The quick brown fox jumps over the lazy dog.", "numbers 0123456789 and punctuation: ,.;!?()[]{}",
    "  leading and trailing spaces  ", "tabs\tand\nnewlines",
]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------- tokenizer

def make_tokenizer(vocab_size: int, work: Path, corpus: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    import transformers
    from transformers import AddedToken

    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((CORPUS if corpus is None else corpus) * 3, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "tokenizer_raw.json"
    tok.save(str(raw))
    cls = getattr(transformers, "BartTokenizerFast", None) or transformers.BartTokenizer
    tokenizer = cls(tokenizer_file=str(raw), bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                    unk_token="<unk>", pad_token="<pad>",
                    mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True))
    tokenizer.add_special_tokens({"additional_special_tokens": FLORENCE_TOKENS})
    tokenizer.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    if hasattr(tokenizer, "_set_model_specific_special_tokens"):  # transformers 5
        tokenizer._set_model_specific_special_tokens(special_tokens={"image_token": "<image>"})
    else:  # transformers 4.56+
        tokenizer.image_token = "<image>"
        tokenizer.extra_special_tokens = {"image_token": "<image>"}
    assert tokenizer.image_token == "<image>" and tokenizer.image_token_id == len(tokenizer) - 1, tokenizer.image_token_id
    tokenizer.model_max_length = 1024
    return tokenizer


def make_processor(tokenizer, side: int = 768):
    """Florence-2's processor: its image processor settings (768 x 768 bicubic, ImageNet mean/std, 577 image
    tokens) around `tokenizer`; `side` gives a smaller square input (image tokens: (side / 32)^2 + 1)."""
    from transformers import CLIPImageProcessor, Florence2Processor

    image_processor = CLIPImageProcessor(
        do_resize=True, size={"height": side, "width": side}, resample=3, do_center_crop=False,
        crop_size={"height": side, "width": side}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True)
    image_processor.image_seq_length = (side // 32) ** 2 + 1
    return Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                              post_processor_config=POST_PROCESSOR_CONFIG)


# ----------------------------------------------------------------------------------------------- model

def make_model(tokenizer, args):
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, GenerationConfig

    d = args.d_model
    text_config = BartConfig(
        vocab_size=len(tokenizer), d_model=d, encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=2 * d,
        decoder_ffn_dim=2 * d, max_position_embeddings=1024, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_eos_token_id=2, forced_bos_token_id=0, scale_embedding=False,
        activation_function="gelu", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        no_repeat_ngram_size=3, num_beams=3)
    vd = args.vision_dims
    vision_config = dict(depths=[1, 1, 1, 1], embed_dim=vd, num_heads=[max(1, x // 16) for x in vd],
                         num_groups=[max(1, x // 16) for x in vd], window_size=12, projection_dim=d,
                         drop_path_rate=0.0, patch_size=[7, 3, 3, 3], patch_stride=[4, 2, 2, 2],
                         patch_padding=[3, 1, 1, 1], patch_prenorm=[False, True, True, True],
                         max_position_embeddings=50, max_temporal_embeddings=100)
    config = Florence2Config(text_config=text_config.to_dict(), vision_config=vision_config,
                             image_token_id=tokenizer.image_token_id)
    set_seed(args.seed)
    model = Florence2ForConditionalGeneration(config).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.generation_config = GenerationConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2, forced_bos_token_id=0,
        forced_eos_token_id=2, no_repeat_ngram_size=3, num_beams=3, early_stopping=True,
        max_length=args.max_length)
    shape_logits(model, tokenizer, args)
    return model


def shape_logits(model, tokenizer, args, eos_bias=None):
    """Random weights give flat logits. Give the output layer a strong per-token bias through one hidden unit
    (the last decoder layer's final LayerNorm emits a constant 1 there), so generations mix words, location tokens
    and end-of-sequence like a real model, with wide top-2 margins that survive float32 reordering."""
    lm = model.model.language_model
    d = args.d_model
    unit = d - 1
    with torch.no_grad():
        ln = lm.decoder.layers[-1].final_layer_norm
        ln.weight[unit] = 0.0
        ln.bias[unit] = 1.0
        gen = torch.Generator().manual_seed(args.seed + 1)
        emb = lm.shared.weight
        emb.copy_(torch.randn(emb.shape, generator=gen) * args.embed_std)
        bias = torch.randn(emb.shape[0], generator=gen) * args.bias_std
        loc_ids = tokenizer.convert_tokens_to_ids([f"<loc_{i}>" for i in range(1000)])
        bias[loc_ids] += args.loc_boost
        for token in ["<pad>", "<s>", "<unk>", "<mask>", "<image>"]:
            bias[tokenizer.convert_tokens_to_ids(token)] = -8.0
        bias[2] = args.eos_bias if eos_bias is None else eos_bias
        emb[:, unit] = bias
        if model.lm_head.weight.data_ptr() != emb.data_ptr():
            model.lm_head.weight.copy_(emb)


# ----------------------------------------------------------------------------------------------- images

def make_images(folder: Path, seed: int) -> dict[str, dict]:
    rng = np.random.default_rng(seed + 7)
    folder.mkdir(parents=True, exist_ok=True)

    def scene(w, h):
        x = np.linspace(0, 1, w)[None, :]
        y = np.linspace(0, 1, h)[:, None]
        arr = np.stack([255 * x * np.ones_like(y), 255 * y * np.ones_like(x), 128 + 100 * np.sin(8 * x + 5 * y)], -1)
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 2)), int(rng.integers(0, h - 2))
            x1, y1 = int(rng.integers(x0 + 1, w)), int(rng.integers(y0 + 1, h))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x1, y1], fill=color)
        draw.text((w // 10, h // 2), "EXIT 42", fill=(255, 255, 255))
        return img

    images = {}

    def save(name, img, **kw):
        path = folder / name
        img.save(path, **kw)
        images[name] = {"mode": img.mode, "size": list(img.size)}

    save("street.jpg", scene(640, 480), quality=90)
    rgba = scene(517, 333).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 517, dtype=np.uint8)[None, :], (333, 1))
    rgba.putalpha(Image.fromarray(alpha, "L"))
    save("document_rgba.png", rgba)
    save("gray.png", scene(300, 200).convert("L"))
    save("wide.jpg", scene(1500, 90), quality=85)
    pal = scene(256, 256).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    save("palette.png", pal, transparency=3)
    save("cmyk.jpg", scene(320, 240).convert("CMYK"), quality=92)
    depth = (np.linspace(0, 65535, 160)[None, :] * np.linspace(0.2, 1, 120)[:, None]).astype(np.uint16)
    save("depth16.png", Image.fromarray(depth, "I;16"))
    exif_img = scene(400, 300)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rotated.jpg", exif_img, exif=exif.tobytes(), quality=90)
    save("tiny.png", scene(7, 5))
    save("la.png", scene(120, 80).convert("LA"))
    save("bilevel.png", scene(90, 60).convert("1"))
    return images


# ----------------------------------------------------------------------------------------------- references

def to_jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def _as_uint8(processor_like, pv, mean, std):
    u8 = np.rint((pv * std + mean) * 255.0).clip(0, 255).astype(np.uint8)
    recon = ((u8.astype(np.float32) * np.float32(processor_like.rescale_factor)) - mean) / std
    return u8, float(np.abs(recon - pv).max())


def record_preprocess(processor, image_dir: Path, out: Path) -> dict:
    """HF's pixel_values for every image, from the image processor that Florence2Processor.from_pretrained loads
    (the torchvision backend in transformers 5 when torchvision is installed) and from the PIL backend."""
    ip = processor.image_processor
    mean = np.array(ip.image_mean, dtype=np.float32)[:, None, None]
    std = np.array(ip.image_std, dtype=np.float32)[:, None, None]
    (out / "pixels").mkdir(parents=True, exist_ok=True)
    backends = {"default": ip}
    try:
        from transformers import CLIPImageProcessorPil
        settings = {k: v for k, v in ip.to_dict().items()
                    if k in ("size", "resample", "do_resize", "do_rescale", "rescale_factor", "do_normalize",
                             "image_mean", "image_std", "do_center_crop", "crop_size", "do_convert_rgb")}
        backends["pil"] = CLIPImageProcessorPil(**settings)
    except Exception as err:  # noqa: BLE001
        print("no PIL image processor backend:", err, file=sys.stderr)
    records = {"_backends": {name: type(b).__name__ for name, b in backends.items()}}
    for path in sorted(image_dir.iterdir()):
        rec = {"mode": Image.open(path).mode, "size": list(Image.open(path).size)}
        for name, backend in backends.items():
            pv = backend(Image.open(path), return_tensors="np")["pixel_values"][0].astype(np.float32)
            u8, err = _as_uint8(backend, pv, mean, std)
            assert err < 1e-5, f"{path.name}: pixel values are not an affine image of uint8 ({err})"
            Image.fromarray(np.ascontiguousarray(u8.transpose(1, 2, 0)), "RGB").save(
                out / "pixels" / f"{path.name}.{name}.png")
            rec[name] = {"shape": list(pv.shape), "sum": float(pv.astype(np.float64).sum()),
                         "first": pv.reshape(-1)[:8].tolist(), "recon_max_err": err}
        if "pil" in backends:
            a = np.asarray(Image.open(out / "pixels" / f"{path.name}.default.png")).astype(int)
            b = np.asarray(Image.open(out / "pixels" / f"{path.name}.pil.png")).astype(int)
            rec["default_vs_pil"] = {"max_abs_u8": int(np.abs(a - b).max()), "differing": int((a != b).sum())}
        records[path.name] = rec
    return records


def record_tokenizer(tokenizer) -> dict:
    strings = CORPUS + ["<s>What does the image describe?</s>", "<loc_0><loc_999> car<loc_5>", "a<sep>b<poly>c</poly>",
                        "<image><image><s>hi</s>", "unknown ĳ ligature and \u00a0nbsp", "  ", "", "a" * 60,
                        "<od>person<loc_1><loc_2><loc_3><loc_4></od>", "\u0000 control", "mixed 中文 and English"]
    encode = [{"text": s, "ids": tokenizer(s, add_special_tokens=False)["input_ids"],
               "ids_with_special": tokenizer(s)["input_ids"]} for s in strings]
    rng = random.Random(5)
    vocab = len(tokenizer)
    decode = []
    for n in range(40):
        ids = [rng.randrange(vocab) for _ in range(rng.randrange(1, 25))]
        if n % 3 == 0:
            ids = [2, 0] + ids + [2]
        decode.append({"ids": ids, "text": tokenizer.decode(ids, skip_special_tokens=False),
                       "text_skip_special": tokenizer.decode(ids, skip_special_tokens=True)})
    return {"vocab_size": vocab, "encode": encode, "decode": decode}


def parse_table(processor) -> list[dict]:
    sizes = [(640, 480), (517, 333), (1, 1), (1000, 1000)]
    raw = {
        "<OD>": ["</s><s>car<loc_52><loc_332><loc_932><loc_774>person<loc_1><loc_2><loc_3><loc_4></s>",
                 "car<loc_52><loc_332><loc_932><loc_774><loc_1><loc_2><loc_3><loc_4>dog<loc_0><loc_0><loc_999><loc_999>",
                 "", "</s><s></s>", "car<loc_52><loc_332><loc_932>", "car", "<loc_1><loc_2><loc_3><loc_4>",
                 "café<loc_10><loc_20><loc_30><loc_40>日本<loc_1><loc_2><loc_3><loc_4>",
                 "car<loc_1200><loc_2><loc_3><loc_4>", "  spaced  label <loc_5><loc_6><loc_7><loc_8>",
                 "a<od>b</od><loc_1><loc_2><loc_3><loc_4>", "car<loc_1><loc_2><loc_3><loc_4><loc_5>"],
        "<DENSE_REGION_CAPTION>": ["a red car<loc_52><loc_332><loc_932><loc_774>a green tree<loc_0><loc_0><loc_500><loc_500>"],
        "<REGION_PROPOSAL>": ["<loc_52><loc_332><loc_932><loc_774><loc_0><loc_0><loc_500><loc_500>",
                              "x<loc_1><loc_2><loc_3><loc_4>", "<loc_1><loc_2><loc_3>", ""],
        "<CAPTION_TO_PHRASE_GROUNDING>": [
            "A red car<loc_52><loc_332><loc_932><loc_774>a dog<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>",
            "it<loc_1><loc_2><loc_3><loc_4>the<loc_1><loc_2><loc_3><loc_4>the image<loc_5><loc_6><loc_7><loc_8>",
            "<ground>car<loc_1><loc_2><loc_3><loc_4>", "naïve café<loc_1><loc_2><loc_3><loc_4>", "no boxes here", ""],
        "<OCR_WITH_REGION>": [
            "</s><s>EXIT<loc_10><loc_20><loc_30><loc_20><loc_30><loc_40><loc_10><loc_40>OPEN 24<loc_100><loc_100><loc_200><loc_100><loc_200><loc_150><loc_100><loc_150></s>",
            "EXIT<loc_10><loc_20><loc_30>", "Straße<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>", ""],
        "<REFERRING_EXPRESSION_SEGMENTATION>": [
            "<loc_100><loc_100><loc_200><loc_100><loc_200><loc_200><loc_100><loc_200>",
            "<poly><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></poly><poly><loc_7><loc_8><loc_9><loc_10><loc_11><loc_12></poly>",
            "<loc_1><loc_2><loc_3><loc_4><loc_5><sep><loc_6><loc_7><loc_8><loc_9><loc_10><loc_11>",
            "<loc_1><loc_2><loc_3>", "", "car<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6>"],
        "<REGION_TO_SEGMENTATION>": ["<loc_10><loc_20><loc_30><loc_40><loc_50><loc_60><loc_70><loc_80><loc_90>"],
        "<OPEN_VOCABULARY_DETECTION>": [
            "car<loc_52><loc_332><loc_932><loc_774>", "car<poly><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></poly>",
            "car<loc_1><loc_2><loc_3><loc_4>truck<poly><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></poly>", ""],
        "<CAPTION>": ["</s><s>A car parked.</s>", "", "<pad><pad>text<pad>", "  spaces  "],
        "<OCR>": ["</s><s>EXIT 42</s>"],
        "<REGION_TO_CATEGORY>": ["car<loc_1><loc_2><loc_3><loc_4>"],
        "<REGION_TO_DESCRIPTION>": ["a red car"], "<REGION_TO_OCR>": ["EXIT"],
        "<DETAILED_CAPTION>": ["a"], "<MORE_DETAILED_CAPTION>": ["b"],
    }
    table = []
    for task, texts in raw.items():
        for i, text in enumerate(texts):
            size = sizes[i % len(sizes)]
            entry = {"task": task, "text": text, "image_size": list(size)}
            try:
                entry["expected"] = to_jsonable(processor.post_process_generation(text=text, task=task, image_size=size))
            except Exception as err:  # noqa: BLE001
                entry["error"] = f"{type(err).__name__}: {err}"
            table.append(entry)
    return table


def generation_cases(images: list[str]) -> list[dict]:
    cases = []
    for image in images[:3]:
        for task in ALL_TASKS:
            text = task + (TASK_INPUTS.get(task, ""))
            for mode, kwargs in (("greedy", {"num_beams": 1, "max_new_tokens": 24}),
                                 ("beam3", {"num_beams": 3, "max_new_tokens": 24})):
                cases.append({"id": f"{image}|{task}|{mode}", "images": [image], "prompt": text, "task": task,
                              "text_input": TASK_INPUTS.get(task), "generate_kwargs": kwargs})
    extra = [
        ("default-config", ["street.jpg"], "<CAPTION>", {}),
        ("beam4-lp0.6", ["street.jpg"], "<OD>", {"num_beams": 4, "length_penalty": 0.6, "max_new_tokens": 20}),
        ("beam3-lp2-noearly", ["gray.png"], "<DETAILED_CAPTION>", {"num_beams": 3, "length_penalty": 2.0,
                                                                   "early_stopping": False, "max_new_tokens": 20}),
        ("beam2-never", ["wide.jpg"], "<OCR>", {"num_beams": 2, "early_stopping": "never", "max_new_tokens": 16}),
        ("beam5-short", ["document_rgba.png"], "<CAPTION>", {"num_beams": 5, "max_new_tokens": 6}),
        ("greedy-ngram0", ["street.jpg"], "<MORE_DETAILED_CAPTION>", {"num_beams": 1, "no_repeat_ngram_size": 0,
                                                                      "max_new_tokens": 30}),
        ("greedy-long", ["palette.png"], "<DENSE_REGION_CAPTION>", {"num_beams": 1, "max_new_tokens": 64}),
        ("batch-greedy", ["street.jpg", "gray.png", "cmyk.jpg"], "<OD>", {"num_beams": 1, "max_new_tokens": 20}),
        ("batch-beam3", ["street.jpg", "wide.jpg"], "<CAPTION>", {"num_beams": 3, "max_new_tokens": 20}),
        ("exif", ["exif_rotated.jpg"], "<CAPTION>", {"num_beams": 1, "max_new_tokens": 12}),
        ("depth16", ["depth16.png"], "<OD>", {"num_beams": 3, "max_new_tokens": 12}),
        ("tiny", ["tiny.png"], "<REGION_PROPOSAL>", {"num_beams": 1, "max_new_tokens": 16}),
    ]
    for name, imgs, task, kwargs in extra:
        cases.append({"id": f"extra|{name}", "images": imgs, "prompt": task, "task": task, "text_input": None,
                      "generate_kwargs": kwargs})
    return cases


def run_generation(model, processor, image_dir: Path, cases: list[dict]) -> list[dict]:
    results = []
    for case in cases:
        pil = [Image.open(image_dir / name) for name in case["images"]]
        inputs = processor(images=pil if len(pil) > 1 else pil[0], text=[case["prompt"]] * len(pil),
                           return_tensors="pt")
        kwargs = dict(case["generate_kwargs"])
        with torch.no_grad():
            out = model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                 attention_mask=inputs.get("attention_mask"), output_scores=True,
                                 return_dict_in_generate=True, **kwargs)
        seqs = out.sequences
        texts = processor.batch_decode(seqs, skip_special_tokens=False)
        rec = dict(case)
        rec["input_ids"] = inputs["input_ids"][0].tolist()
        rec["prompt_ids"] = [t for t in rec["input_ids"] if t != processor.tokenizer.image_token_id]
        rec["generated_ids"] = seqs.tolist()
        rec["text"] = texts
        rec["image_sizes"] = [list(im.size) for im in pil]
        rec["result"] = [to_jsonable(processor.post_process_generation(t, task=case["task"], image_size=im.size))
                         for t, im in zip(texts, pil)]
        scores = torch.stack(out.scores, 1)  # batch*beams x steps x vocab (processed)
        if kwargs.get("num_beams", model.generation_config.num_beams) == 1:
            top2 = scores.topk(2, dim=-1).values
            finite = torch.isfinite(top2[..., 1])
            margin = torch.where(finite, top2[..., 0] - top2[..., 1], torch.full_like(top2[..., 0], 1e9))
            rec["min_top2_margin"] = float(margin.min())
            logp = torch.log_softmax(scores, -1)
            chosen = seqs[:, 1:1 + logp.shape[1]]
            rec["token_logprobs"] = logp.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()
        else:
            rec["sequences_scores"] = out.sequences_scores.tolist()
        results.append(rec)
    return results


def tune_eos(model, tokenizer, processor, image_dir: Path, args) -> float:
    """Picks the end-of-sequence bias so that about half the greedy generations end before the length limit."""
    probe = [c for c in generation_cases(sorted(p.name for p in image_dir.iterdir()))
             if c["generate_kwargs"].get("num_beams") == 1][:12]
    chosen = args.eos_bias
    for bias in [args.eos_bias + step for step in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)]:
        shape_logits(model, tokenizer, args, eos_bias=bias)
        ended = 0
        for case in probe:
            rec = run_generation(model, processor, image_dir, [case])[0]
            ended += int(len(rec["generated_ids"][0]) < 2 + case["generate_kwargs"]["max_new_tokens"])
        chosen = bias
        if ended >= len(probe) // 2:
            break
    shape_logits(model, tokenizer, args, eos_bias=chosen)
    return chosen


def onnx_check(model, processor, onnx_dir: Path, image_dir: Path, cases: list[dict]) -> dict:
    """Greedy decoding with ONNX Runtime on the exported graphs, compared with PyTorch step by step."""
    import onnxruntime as ort
    sess = {name: ort.InferenceSession(str(onnx_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"])
            for name in ("vision_encoder", "embed_tokens", "encoder_model", "decoder_model_merged", "decoder_model",
                         "decoder_with_past_model")}
    cfg = model.config.text_config
    heads, layers = cfg.decoder_attention_heads, cfg.decoder_layers
    head_dim = cfg.d_model // heads
    report = []
    for case in cases:
        pil = Image.open(image_dir / case["images"][0])
        inputs = processor(images=pil, text=case["prompt"], return_tensors="np")
        feats = sess["vision_encoder"].run(None, {"pixel_values": inputs["pixel_values"].astype(np.float32)})[0]
        with torch.no_grad():
            feats_pt = florence_export.image_features(model, torch.from_numpy(inputs["pixel_values"]))
        ids = inputs["input_ids"]
        image_mask = ids[0] == processor.tokenizer.image_token_id
        prompt_ids = ids[:, ~image_mask]
        emb = sess["embed_tokens"].run(None, {"input_ids": prompt_ids.astype(np.int64)})[0]
        enc_in = np.concatenate([feats, emb], 1)
        mask = np.ones(enc_in.shape[:2], dtype=np.int64)
        enc = sess["encoder_model"].run(None, {"inputs_embeds": enc_in, "attention_mask": mask})[0]
        with torch.no_grad():
            pt = model.generate(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(inputs["pixel_values"]),
                                num_beams=1, max_new_tokens=20, output_scores=True, return_dict_in_generate=True)
        tokens = [2]
        past = {}
        for layer in range(layers):
            for kind, length in (("decoder", 0), ("encoder", 0)):
                for kv in ("key", "value"):
                    past[f"past_key_values.{layer}.{kind}.{kv}"] = np.zeros((1, heads, length, head_dim), np.float32)
        max_diff = 0.0
        split_diff = 0.0
        split_past = None
        for step in range(20):
            tok_emb = sess["embed_tokens"].run(None, {"input_ids": np.array([[tokens[-1]]], np.int64)})[0]
            feed = {"encoder_attention_mask": mask, "encoder_hidden_states": enc, "inputs_embeds": tok_emb,
                    "use_cache_branch": np.array([step > 0]), **past}
            outs = sess["decoder_model_merged"].run(None, feed)
            names = [o.name for o in sess["decoder_model_merged"].get_outputs()]
            named = dict(zip(names, outs))
            # the split graphs must give the merged graph's logits
            if step == 0:
                split = sess["decoder_model"].run(None, {k: feed[k] for k in ("encoder_attention_mask",
                                                                             "encoder_hidden_states", "inputs_embeds")})
                split_names = [o.name for o in sess["decoder_model"].get_outputs()]
            else:
                wp_inputs = {i.name for i in sess["decoder_with_past_model"].get_inputs()}
                split = sess["decoder_with_past_model"].run(None, {k: v for k, v in {**feed, **split_past}.items()
                                                                   if k in wp_inputs})
                split_names = [o.name for o in sess["decoder_with_past_model"].get_outputs()]
            split_named = dict(zip(split_names, split))
            split_diff = max(split_diff, float(np.abs(split_named["logits"] - named["logits"]).max()))
            if split_past is None:
                split_past = {k.replace("present.", "past_key_values."): v for k, v in split_named.items()
                              if k.startswith("present.")}
            else:
                split_past.update({k.replace("present.", "past_key_values."): v for k, v in split_named.items()
                                   if k.startswith("present.")})
            logits = named["logits"][0, -1]
            scores_pt = pt.scores[step][0].numpy()
            finite = np.isfinite(scores_pt)
            if step > 0:
                pass
            for key, value in named.items():
                if key.startswith("present."):
                    if ".encoder." in key and step > 0:
                        continue
                    past[key.replace("present.", "past_key_values.")] = value
            # compare raw logits where HF's processors left them finite (processors only add -inf)
            raw_pt = None
            with torch.no_grad():
                raw_pt = model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(inputs["pixel_values"]),
                               decoder_input_ids=torch.tensor([tokens])).logits[0, -1].numpy()
            max_diff = max(max_diff, float(np.abs(raw_pt - logits).max()))
            next_token = int(pt.sequences[0, step + 1])
            tokens.append(next_token)
            if next_token == 2 and step > 0:
                break
        report.append({"case": case["id"], "vision_max_abs_diff": float(np.abs(feats - feats_pt.numpy()).max()),
                       "decoder_logits_max_abs_diff": max_diff, "split_vs_merged_max_abs_diff": split_diff,
                       "steps": len(tokens) - 1})
    return {"cases": report}


def remote_code_variants(model, processor, out: Path) -> None:
    """The same model described the way Microsoft's remote-code repositories (and onnx-community) describe it."""
    t = model.config.text_config
    v = model.config.vision_config
    gen = model.generation_config
    config = {
        "_name_or_path": "florence-edge/tiny-random", "architectures": ["Florence2ForConditionalGeneration"],
        "auto_map": {"AutoConfig": "configuration_florence2.Florence2Config",
                     "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"},
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "ignore_index": -100, "model_type": "florence2",
        "projection_dim": t.d_model, "is_encoder_decoder": True, "vocab_size": t.vocab_size,
        "torch_dtype": "float32", "transformers_version": "4.41.0",
        "text_config": {
            "model_type": "florence2_language", "vocab_size": t.vocab_size, "d_model": t.d_model,
            "encoder_layers": t.encoder_layers, "decoder_layers": t.decoder_layers,
            "encoder_attention_heads": t.encoder_attention_heads, "decoder_attention_heads": t.decoder_attention_heads,
            "encoder_ffn_dim": t.encoder_ffn_dim, "decoder_ffn_dim": t.decoder_ffn_dim,
            "max_position_embeddings": t.max_position_embeddings, "activation_function": t.activation_function,
            "scale_embedding": t.scale_embedding, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
            "decoder_start_token_id": gen.decoder_start_token_id, "forced_bos_token_id": gen.forced_bos_token_id,
            "forced_eos_token_id": gen.forced_eos_token_id, "no_repeat_ngram_size": gen.no_repeat_ngram_size,
            "num_beams": gen.num_beams, "early_stopping": gen.early_stopping, "is_encoder_decoder": True,
        },
        "vision_config": {
            "model_type": "davit", "dim_embed": list(v.embed_dim), "num_heads": list(v.num_heads),
            "num_groups": list(v.num_groups), "depths": list(v.depths), "patch_size": list(v.patch_size),
            "patch_stride": list(v.patch_stride), "patch_padding": list(v.patch_padding),
            "patch_prenorm": list(v.patch_prenorm), "window_size": v.window_size, "projection_dim": t.d_model,
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 50},
            "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 100},
            "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        },
    }
    variants = out / "variants"
    variants.mkdir(parents=True, exist_ok=True)
    (variants / "config.remote_code.json").write_text(json.dumps(config, indent=2))
    ip = processor.image_processor
    pre = {"_valid_processor_keys": [], "crop_size": {"height": 768, "width": 768}, "do_center_crop": False,
           "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
           "image_mean": list(ip.image_mean), "image_processor_type": "CLIPImageProcessor",
           "image_seq_length": 577, "image_std": list(ip.image_std), "processor_class": "Florence2Processor",
           "resample": 3, "rescale_factor": 0.00392156862745098, "size": dict(ip.size)}
    (variants / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    # generation_config.json as remote-code repositories ship it (no decoder_start_token_id at top level)
    (variants / "generation_config.remote_code.json").write_text(json.dumps(
        {"num_beams": 3, "early_stopping": True, "no_repeat_ngram_size": 3, "max_length": gen.max_length,
         "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "decoder_start_token_id": 2,
         "forced_bos_token_id": 0, "forced_eos_token_id": 2}, indent=2))


def string_merges_variant(model_dir: Path, out: Path) -> None:
    data = json.loads((model_dir / "tokenizer.json").read_text())
    merges = data["model"]["merges"]
    data["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (out / "variants" / "tokenizer.string_merges.json").write_text(json.dumps(data, ensure_ascii=False))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=600, help="BPE vocabulary before Florence's added tokens")
    p.add_argument("--vision-dims", default="16,32,48,64")
    p.add_argument("--max-length", type=int, default=30, help="generation_config.max_length")
    p.add_argument("--embed-std", type=float, default=0.6)
    p.add_argument("--bias-std", type=float, default=2.0)
    p.add_argument("--loc-boost", type=float, default=1.5)
    p.add_argument("--eos-bias", type=float, default=2.0)
    p.add_argument("--precisions", default="fp32,fp16,quantized")
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--keep-weights", action="store_true", help="keep model.safetensors (an HF checkpoint folder)")
    args = p.parse_args(argv)
    args.vision_dims = [int(x) for x in args.vision_dims.split(",")]
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    set_seed(args.seed)
    started = time.time()
    out = Path(args.out)
    ref = out / "reference"
    (ref / "images").mkdir(parents=True, exist_ok=True)

    import transformers
    from transformers import Florence2Processor

    tokenizer = make_tokenizer(args.vocab, out / ".work")
    processor = make_processor(tokenizer)
    model = make_model(tokenizer, args)

    images = make_images(ref / "images", args.seed)
    image_names = ["street.jpg", "document_rgba.png", "gray.png", "wide.jpg"]
    eos_bias = tune_eos(model, tokenizer, processor, ref / "images", args)

    model.save_pretrained(str(out), safe_serialization=True)
    if not args.keep_weights:
        for weights in out.glob("*.safetensors"):
            weights.unlink()
    processor.save_pretrained(str(out))
    # from here on, the processor a user gets from the saved folder
    processor = Florence2Processor.from_pretrained(str(out))
    if not args.no_onnx:
        (out / "onnx").mkdir(exist_ok=True)
        florence_export.export_fp32(model, out / "onnx", (768, 768))
        notes = florence_export.make_precisions(out / "onnx", args.precisions.split(","))
    else:
        notes = []

    meta = {"seed": args.seed, "args": {k: v for k, v in vars(args).items()}, "eos_bias": eos_bias,
            "transformers": transformers.__version__, "torch": torch.__version__, "export_notes": notes,
            "images": images, "image_token_id": tokenizer.image_token_id, "vocab_size": len(tokenizer),
            "image_processor_class": type(processor.image_processor).__name__,
            "tokenizer_class": type(processor.tokenizer).__name__}
    import onnx as _onnx
    import onnxruntime as _ort
    meta["onnx"] = _onnx.__version__
    meta["onnxruntime"] = _ort.__version__

    (ref / "preprocess.json").write_text(json.dumps(record_preprocess(processor, ref / "images", ref), indent=1))
    (ref / "tokenizer.json").write_text(json.dumps(record_tokenizer(tokenizer), ensure_ascii=False))
    (ref / "parse.json").write_text(json.dumps(parse_table(processor), ensure_ascii=False, indent=1))
    cases = generation_cases(image_names)
    gen = run_generation(model, processor, ref / "images", cases)
    (ref / "generate.json").write_text(json.dumps(gen, ensure_ascii=False))
    try:  # the same cases through the PIL image-processor backend (transformers 4.x, or 5.x without torchvision)
        from transformers import CLIPImageProcessorPil
        pil_image_processor = CLIPImageProcessorPil(**{k: v for k, v in processor.image_processor.to_dict().items()
                                                      if k in ("size", "resample", "do_resize", "do_rescale",
                                                               "rescale_factor", "do_normalize", "image_mean",
                                                               "image_std", "do_center_crop", "crop_size",
                                                               "do_convert_rgb")})
        pil_image_processor.image_seq_length = 577
        pil_processor = Florence2Processor(image_processor=pil_image_processor, tokenizer=processor.tokenizer,
                                           post_processor_config=POST_PROCESSOR_CONFIG)
        gen_pil = run_generation(model, pil_processor, ref / "images", cases)
        (ref / "generate_pil.json").write_text(json.dumps(gen_pil, ensure_ascii=False))
        meta_pil_differs = sum(a["generated_ids"] != b["generated_ids"] for a, b in zip(gen, gen_pil))
    except ImportError:
        meta_pil_differs = None
    margins = [c["min_top2_margin"] for c in gen if "min_top2_margin" in c]
    lengths = [len(c["generated_ids"][0]) for c in gen]
    meta["min_greedy_margin"] = min(margins) if margins else None
    meta["cases_where_pil_backend_changes_ids"] = meta_pil_differs
    meta["generated_lengths"] = {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)}
    if not args.no_onnx:
        check_cases = [c for c in cases if c["generate_kwargs"].get("num_beams") == 1 and len(c["images"]) == 1][:4]
        (ref / "onnx_check.json").write_text(json.dumps(onnx_check(model, processor, out / "onnx", ref / "images",
                                                                   check_cases), indent=1))
    remote_code_variants(model, processor, ref)
    string_merges_variant(out, ref)
    meta["seconds"] = time.time() - started
    (ref / "meta.json").write_text(json.dumps(to_jsonable(meta), indent=1, default=str))
    import shutil
    shutil.rmtree(out / ".work", ignore_errors=True)
    print(json.dumps({"out": str(out), "eos_bias": eos_bias, "min_greedy_margin": meta["min_greedy_margin"],
                      "lengths": meta["generated_lengths"], "seconds": round(meta["seconds"], 1),
                      "export_notes": notes}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
