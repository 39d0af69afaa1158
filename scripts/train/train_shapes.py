#!/usr/bin/env python3
"""Train florence-2-shapes: Hugging Face's own Florence2ForConditionalGeneration, small, on the shapes world.

    python3 scripts/train/train_shapes.py --data /tmp/world --ckpt /tmp/ckpt --seconds 480 [--resume | --vision-only]

The recipe (scripts/train/README.md has the whole procedure and the times it took):
  - data: shards of stills drawn by the project's generator (node dist/scripts/train/world-stills.js), each image
    with its training examples for all 15 tasks (src/world/targets.ts); shards are picked up while they are
    written, decoded and resized to the processor's 384 x 384 (PIL bicubic) and kept on the GPU as uint8.
  - tokenizer: byte-level BPE (400 merges' vocabulary) trained on the examples' prompts and answers, plus
    Florence's task tokens, <loc_0>..<loc_999> and <image> (scripts/python/make_fixtures.py make_tokenizer).
  - model: DaViT [32, 64, 128, 192] x depths [1, 1, 2, 1], window 12; BART d_model 192, 2 encoder + 2 decoder
    layers, 4 heads, FFN 768; 145 image tokens.
  - initialisation: HF's, except <loc_N> embeddings (shared with the output layer) start as sinusoids of N
    (init_loc_embeddings), so neighbouring bins start alike, and the projector's row and column position embeddings
    start as sinusoids of the cell's centre in the same bins (init_image_positions).
  - data on the GPU: images as uint8, examples as int16 padded to PROMPT_MAX / TARGET_MAX tokens (fixed shapes), a
    batch gathered by index (Store.sample, collate); an eager step cuts the batch to its longest row (trim_padding).
  - optimisation: fused AdamW (0.9, 0.98), weight decay 0.01, peak LR 1e-3 after 300 warm-up steps, cosine to 5 % over
    the planned --total-seconds of training (the schedule follows training time so it spans resumed runs),
    batch 256 rows: 64 images drawn uniformly from those loaded so far, 4 of each image's examples (different tasks)
    per image, its features computed once (batch_loss); bf16 autocast, gradient clip 1.0, seed 1234; the step
    runs eager (--compile to try torch.compile: a compiler fault falls back to eager, but on a fresh H100 the
    compile took 175 s for a step barely faster).
  - run length: --seconds of training, cut short at --deadline (a Unix time) so that a device call always ends with
    a saved, exported model; train_state.pt is also saved every --save-every seconds.
  - auxiliary loss (training only, never exported; --aux-weight 1): a linear head on each grid cell's projected image
    feature predicts the colour, shape and word of the object there and its box edges (AuxHead, cell_targets), the
    word also averaged over word cells alone (else "no word" wins: words cover few cells).
    Optional stage 1 (--vision-only): the vision tower and projector learn from it alone before the full training;
    optional --freeze-vision afterwards: the language model learns on each image's cached features (kept between
    runs with --feature-cache).
Checkpoints (--ckpt): train_state.pt (weights, optimiser, step, seconds trained) plus the tokenizer and
processor; --resume continues from them.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import florence_export  # noqa: E402
import make_fixtures as fx  # noqa: E402

SIDE = 384
IMAGE_TOKENS = (SIDE // 32) ** 2 + 1
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
PAD, BOS, EOS = 1, 0, 2


def load_resized(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((SIDE, SIDE), Image.BICUBIC), dtype=np.uint8)


def read_records(jsonl: str) -> list[dict]:
    with open(jsonl) as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------------------- tokenizer, model

def corpus_from(records: list[dict]) -> list[str]:
    import re
    texts = []
    for r in records:
        for e in r["examples"]:
            for t in (e["prompt"], e["target"]):
                t = re.sub(r"<loc_\d+>|<sep>", " ", t).strip()
                if t:
                    texts.append(t)
    return texts


def make_model(tokenizer):
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, GenerationConfig

    d = 192
    text_config = BartConfig(
        vocab_size=len(tokenizer), d_model=d, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d, max_position_embeddings=256,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS, forced_eos_token_id=EOS,
        forced_bos_token_id=BOS, scale_embedding=False, activation_function="gelu", dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, num_beams=3)
    vision_config = dict(depths=[1, 1, 2, 1], embed_dim=[32, 64, 128, 192], num_heads=[1, 2, 4, 8],
                         num_groups=[1, 2, 4, 8], window_size=12, projection_dim=d, drop_path_rate=0.0,
                         patch_size=[7, 3, 3, 3], patch_stride=[4, 2, 2, 2], patch_padding=[3, 1, 1, 1],
                         patch_prenorm=[False, True, True, True], max_position_embeddings=50,
                         max_temporal_embeddings=100)
    config = Florence2Config(text_config=text_config.to_dict(), vision_config=vision_config,
                             image_token_id=tokenizer.image_token_id)
    model = Florence2ForConditionalGeneration(config)
    # The world's answers end well inside 160 tokens; no n-gram ban (polygons repeat bins, captions repeat words).
    model.generation_config = GenerationConfig(
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, decoder_start_token_id=EOS, forced_bos_token_id=BOS,
        forced_eos_token_id=EOS, num_beams=3, early_stopping=True, max_length=160, no_repeat_ngram_size=0)
    return model


def sinusoids(positions: torch.Tensor, d: int) -> torch.Tensor:
    """A transformer's sinusoidal encoding of `positions` in d dimensions (sin in even, cos in odd columns)."""
    rate = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    angles = positions[:, None] * rate
    ruler = torch.zeros(len(positions), d)
    ruler[:, 0::2] = torch.sin(angles)[:, : (d + 1) // 2]
    ruler[:, 1::2] = torch.cos(angles)[:, : d // 2]
    return ruler


def init_loc_embeddings(model, tokenizer) -> None:
    """Starts <loc_0>..<loc_999> from sinusoids of their bin (as a transformer's position encoding), at the scale of
    the other embeddings' initialisation, so that neighbouring bins start alike: the shared embedding is also the
    output layer, so both reading a region prompt and writing a coordinate start from a smooth ruler instead of 1000
    unrelated vectors. Only the initialisation; the model is HF's own."""
    weight = model.get_input_embeddings().weight
    ids = torch.tensor(tokenizer.convert_tokens_to_ids([f"<loc_{i}>" for i in range(1000)]))
    ruler = sinusoids(torch.arange(1000, dtype=torch.float32), weight.shape[1])
    with torch.no_grad():
        weight[ids] = ruler * (weight.std() / ruler.std()) + 0.25 * weight[ids]


def init_image_positions(model) -> None:
    """Starts the projector's learned 2-D position embeddings (a row and a column table, HF's
    Florence2VisionLearnedAbsolutePositionEmbedding2D) as sinusoids of the cell's centre in <loc_N> bins, instead of
    HF's small random normal: from the first step every image token says where it is, which the answers' coordinates
    need. Only the initialisation."""
    embed = model.model.multi_modal_projector.image_position_embed
    cells = SIDE // 32
    for table in (embed.row_embeddings.weight, embed.column_embeddings.weight):
        n, d = table.shape
        centre = (torch.arange(n, dtype=torch.float32) + 0.5) * (1000.0 / cells)
        with torch.no_grad():
            table.copy_(sinusoids(centre, d))


# ----------------------------------------------------------------------------------------------- data

PROMPT_MAX = 40  # prompt tokens (the world's longest are about 30) and answer tokens (about 90): fixed shapes, so
TARGET_MAX = 128  # a compiled step never recompiles; longer examples are skipped and counted
EXAMPLES_MAX = 24  # examples of one image (the world makes 15 or 16)
CELLS = SIDE // 32  # the image tokens after the first are a CELLS x CELLS grid, row by row
COLOUR_CLASSES = ["red", "green", "blue", "yellow", "purple", "orange"]  # class 0: nothing, last: a word
SHAPE_CLASSES = ["circle", "square", "triangle", "star"]
WORD_CLASSES = ("STOP EXIT OPEN PARK GATE DOOR SHOP CAFE TAXI HOTEL POLICE BUS TRAIN BANK PUSH PULL WAIT SLOW LEFT "
                "RIGHT NORTH SOUTH EAST WEST ZONE AREA DOCK LOAD FIRE WATER POWER GAS").split()  # the world's; 0: none


def cell_targets(truth: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training-only targets for the auxiliary loss (AuxHead) of one image, per grid cell: the colour class, the
    shape class and the word class of the object whose box holds the cell's centre (or whose box's centre lies in
    the cell), and that box's edges relative to the cell's centre as fractions of the image (left, top, right,
    bottom). In this world a shape's polygon follows from its shape and box, so these say all an answer needs."""
    w, h = truth["width"], truth["height"]
    centres = (np.arange(CELLS) + 0.5) / CELLS
    cx = np.tile(centres, CELLS) * w
    cy = np.repeat(centres, CELLS) * h
    colour = np.zeros(CELLS * CELLS, dtype=np.int8)
    shape = np.zeros(CELLS * CELLS, dtype=np.int8)
    word = np.zeros(CELLS * CELLS, dtype=np.int8)
    box = np.zeros((CELLS * CELLS, 4), dtype=np.float16)
    objects = [(COLOUR_CLASSES.index(s["colour"]) + 1, SHAPE_CLASSES.index(s["shape"]) + 1, 0, s["box"])
               for s in truth["shapes"]]
    objects += [(len(COLOUR_CLASSES) + 1, len(SHAPE_CLASSES) + 1, WORD_CLASSES.index(wd["text"]) + 1, wd["box"])
                for wd in truth["words"]]
    for c, k, t, (x1, y1, x2, y2) in objects:
        inside = (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
        col = min(CELLS - 1, int((x1 + x2) / 2 / w * CELLS))
        row = min(CELLS - 1, int((y1 + y2) / 2 / h * CELLS))
        inside[row * CELLS + col] = True
        colour[inside] = c
        shape[inside] = k
        word[inside] = t
        box[inside] = np.stack([(cx[inside] - x1) / w, (cy[inside] - y1) / h, (x2 - cx[inside]) / w,
                                (y2 - cy[inside]) / h], axis=1)
    return colour, shape, word, box


class AuxHead(torch.nn.Module):
    """Training only, never exported: reads each grid cell's projected image feature (what the language model sees)
    and predicts cell_targets. Its loss gives the vision tower a direct, dense signal about what is where from the
    first step, instead of only through the decoder's answers."""

    def __init__(self, d: int):
        super().__init__()
        self.colour = torch.nn.Linear(d, len(COLOUR_CLASSES) + 2)
        self.shape = torch.nn.Linear(d, len(SHAPE_CLASSES) + 2)
        self.word = torch.nn.Linear(d, len(WORD_CLASSES) + 1)
        self.box = torch.nn.Linear(d, 4)

    def forward(self, cells: torch.Tensor, colour: torch.Tensor, shape: torch.Tensor, word: torch.Tensor,
                box: torch.Tensor):
        cells = cells.float()
        ce = torch.nn.functional.cross_entropy
        words = self.word(cells)
        loss = (ce(self.colour(cells).flatten(0, 1), colour.flatten())
                + ce(self.shape(cells).flatten(0, 1), shape.flatten())
                + ce(words.flatten(0, 1), word.flatten()))
        # A word covers about 2.5 x 0.7 of the 144 cells, so over all cells "no word" is nearly always right and the
        # term above taught the tower where words are but not which (2 % of word cells right after stage 1, chance
        # 3 %): the word cells' own mean makes reading them count as much as the rest.
        on_word = word > 0
        if bool(on_word.any()):
            loss = loss + ce(words[on_word], word[on_word])
        occupied = (colour > 0).unsqueeze(-1).float()
        l1 = ((self.box(cells) - box).abs() * occupied).sum() / occupied.sum().clamp(min=1.0) / 4
        return loss + 10.0 * l1


class Store:
    """Images (uint8) and tokenized examples (int16, padded to fixed lengths), all on the device, growing while shards
    arrive: a batch is gathered there by index, with no Python loop over its rows. An image's examples are contiguous
    (ex_start, ex_count)."""

    def __init__(self, capacity: int, device, tokenizer, data_dirs: list[str]):
        self.device = device
        self.images = torch.empty((capacity, SIDE, SIDE, 3), dtype=torch.uint8, device=device)
        ex_capacity = capacity * EXAMPLES_MAX
        self.prompts = torch.full((ex_capacity, PROMPT_MAX), PAD, dtype=torch.int16, device=device)
        self.targets = torch.full((ex_capacity, TARGET_MAX), -100, dtype=torch.int16, device=device)
        self.ex_start = torch.zeros(capacity, dtype=torch.long, device=device)
        self.ex_count = torch.zeros(capacity, dtype=torch.long, device=device)
        self.cell_colour = torch.zeros((capacity, CELLS * CELLS), dtype=torch.int8, device=device)
        self.cell_shape = torch.zeros((capacity, CELLS * CELLS), dtype=torch.int8, device=device)
        self.cell_word = torch.zeros((capacity, CELLS * CELLS), dtype=torch.int8, device=device)
        self.cell_box = torch.zeros((capacity, CELLS * CELLS, 4), dtype=torch.float16, device=device)
        self.features = None  # --freeze-vision: each image's projected features, computed once (fill_features)
        self.paths: list[str] = []  # each image's file, in store order
        self.cache_index: dict[str, int] = {}  # --feature-cache: image file -> row of cache_features
        self.cache_features = None
        self.filled = 0
        self.count = 0
        self.n_examples = 0
        self.skipped = 0
        self.first_examples: list[tuple[str, str]] = []  # (task, prompt) of the first few, for checks
        self.tokenizer = tokenizer
        self.dirs = data_dirs
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.stop = False
        self.pool = Pool(4, initializer=os.nice, initargs=(10,))  # decoding must not starve the training thread

    def poll_once(self, max_shards: int = 1_000_000) -> int:
        added = 0
        shards = 0
        for d in self.dirs:
            for jsonl in sorted(glob.glob(f"{d}/*/examples-*.jsonl")):
                if jsonl in self.seen or self.count >= self.images.shape[0] or shards >= max_shards:
                    continue
                shards += 1
                self.seen.add(jsonl)
                records = read_records(jsonl)[: self.images.shape[0] - self.count]
                base = os.path.dirname(jsonl)
                arrays = self.pool.map(load_resized, [f"{base}/{r['file']}" for r in records], chunksize=16)
                prompts, targets, owner = [], [], []
                for i, r in enumerate(records):
                    for e in r["examples"][:EXAMPLES_MAX]:
                        prompts.append(e["prompt"])
                        targets.append(e["target"])
                        owner.append(i)
                        if len(self.first_examples) < 40:
                            self.first_examples.append((e["task"], e["prompt"]))
                p_ids = self.tokenizer(prompts)["input_ids"]
                t_ids = self.tokenizer(targets)["input_ids"]
                keep = [k for k in range(len(owner)) if len(p_ids[k]) <= PROMPT_MAX and len(t_ids[k]) <= TARGET_MAX]
                self.skipped += len(owner) - len(keep)
                p_arr = np.full((len(keep), PROMPT_MAX), PAD, dtype=np.int16)
                t_arr = np.full((len(keep), TARGET_MAX), -100, dtype=np.int16)
                per_image = np.zeros(len(records), dtype=np.int64)
                for row, k in enumerate(keep):
                    p_arr[row, :len(p_ids[k])] = p_ids[k]
                    t_arr[row, :len(t_ids[k])] = t_ids[k]
                    per_image[owner[k]] += 1
                starts = self.n_examples + np.concatenate([[0], np.cumsum(per_image)[:-1]])
                cells = [cell_targets(r["truth"]) for r in records]
                start = self.count
                n = self.n_examples
                self.paths.extend(f"{base}/{r['file']}" for r in records)
                self.images[start:start + len(arrays)] = torch.from_numpy(np.stack(arrays)).to(self.device)
                self.prompts[n:n + len(keep)] = torch.from_numpy(p_arr).to(self.device)
                self.targets[n:n + len(keep)] = torch.from_numpy(t_arr).to(self.device)
                self.ex_start[start:start + len(arrays)] = torch.from_numpy(starts).to(self.device)
                self.ex_count[start:start + len(arrays)] = torch.from_numpy(per_image).to(self.device)
                for slot, part in enumerate((self.cell_colour, self.cell_shape, self.cell_word, self.cell_box)):
                    values = np.stack([c[slot] for c in cells])
                    part[start:start + len(arrays)] = torch.from_numpy(values).to(self.device)
                if self.device.type == "cuda":
                    torch.cuda.current_stream(self.device).synchronize()  # written before sample() can pick them
                with self.lock:
                    self.n_examples = n + len(keep)
                    self.count = start + len(arrays)
                added += len(arrays)
        return added

    def watch(self):
        while not self.stop:
            if self.poll_once() == 0:
                time.sleep(1.0)

    def start_watching(self):
        self.watcher = threading.Thread(target=self.watch, daemon=True)
        self.watcher.start()

    def stop_watching(self):
        """Ends the watcher before anything else is torn down: a thread still copying a shard to the device while
        the interpreter exits can abort the process (seen on the CPU: "terminate called without an active
        exception", rc 134)."""
        self.stop = True
        self.watcher.join()

    def close(self):
        self.pool.terminate()

    def sample(self, images: int, per_image: int, gen: torch.Generator):
        """Row indices into the example tensors: `per_image` different examples (tasks) of each of `images` images
        drawn uniformly from those loaded (the vision tower then runs once per image for several rows), and for each
        row the index of its image within the batch."""
        with self.lock:
            count = self.count if self.features is None else self.filled
        picked = torch.randint(0, count, (images,), device=self.device, generator=gen)
        n = self.ex_count[picked]
        keys = torch.rand((images, EXAMPLES_MAX), device=self.device, generator=gen)
        keys = keys.masked_fill(torch.arange(EXAMPLES_MAX, device=self.device) >= n[:, None], 2.0)
        offsets = keys.argsort(dim=1)[:, :per_image] % n.clamp(min=1)[:, None]  # distinct examples of the image
        rows = (self.ex_start[picked, None] + offsets).reshape(-1)
        row_image = torch.arange(images, device=self.device).repeat_interleave(per_image)
        return picked, rows, row_image

    @torch.no_grad()
    def fill_features(self, model, chunk: int) -> int:
        """--freeze-vision: the frozen vision tower and projector run once per image, `chunk` images a call, as
        the images arrive; sample() then draws only images whose features are ready. Returns how many are."""
        with self.lock:
            count = self.count
        if self.features is None:
            d = model.config.text_config.d_model
            self.features = torch.empty((self.images.shape[0], IMAGE_TOKENS, d), dtype=torch.bfloat16,
                                        device=self.device)
        while self.filled < count and self.paths[self.filled] in self.cache_index:  # computed by an earlier run
            self.features[self.filled] = self.cache_features[self.cache_index[self.paths[self.filled]]]
            self.filled += 1
        end = min(count, self.filled + chunk)
        if end > self.filled:
            was = model.training
            model.eval()
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                self.features[self.filled:end] = florence_export.image_features(
                    model, pixels(self.images[self.filled:end])).to(torch.bfloat16)
            model.train(was)
            self.filled = end
        return self.filled

    def load_feature_cache(self, path: Path, digest: str) -> int:
        """--feature-cache: features an earlier run computed with the same frozen vision weights (`digest`), by
        image file; fill_features copies them instead of running the vision tower (about 0.13 s an image on a
        2-core CPU). Returns how many it holds."""
        if not path.exists():
            return 0
        saved = torch.load(path, map_location=self.device)
        if saved["vision"] != digest:
            print(f"feature cache {path} was made with other vision weights; not used", flush=True)
            return 0
        self.cache_index = {p: i for i, p in enumerate(saved["paths"])}
        self.cache_features = saved["features"]
        return len(self.cache_index)

    def save_feature_cache(self, path: Path, digest: str) -> None:
        """Writes the features of every image filled so far (a copy: a slice would save the whole table)."""
        torch.save({"vision": digest, "paths": self.paths[:self.filled],
                    "features": self.features[:self.filled].clone()}, path)


def vision_digest(model) -> str:
    """A fingerprint of the vision tower's and projector's weights: cached features are valid only for these."""
    import hashlib
    h = hashlib.sha256()
    for part in (model.model.vision_tower, model.model.multi_modal_projector):
        for name, value in sorted(part.state_dict().items()):
            h.update(name.encode())
            h.update(value.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 to the processor's normalised N x 3 x H x W."""
    device = images.device
    return ((images.permute(0, 3, 1, 2).float() / 255.0) - MEAN.to(device)) / STD.to(device)


def collate(store: Store, picked, rows, row_image, image_token_id: int):
    device = store.device
    if store.features is not None:
        image = dict(features=store.features[picked])
    else:
        image = dict(pixel_values=pixels(store.images[picked]))
    prompts = store.prompts[rows].long()
    labels = store.targets[rows].long()
    input_ids = torch.cat([torch.full((len(rows), IMAGE_TOKENS), image_token_id, dtype=torch.long, device=device),
                           prompts], dim=1)
    decoder_input_ids = torch.cat([torch.full((len(rows), 1), EOS, dtype=torch.long, device=device),
                                   labels[:, :-1].masked_fill(labels[:, :-1] == -100, PAD)], dim=1)
    return dict(**image, row_image=row_image, input_ids=input_ids,
                attention_mask=(input_ids != PAD).long(), decoder_input_ids=decoder_input_ids, labels=labels,
                **cell_batch(store, picked))


def trim_padding(batch: dict) -> dict:
    """Cuts the batch's prompts and answers to its longest row (eager steps only: a compiled step needs fixed
    shapes). Answers average 16 tokens against TARGET_MAX's 128, so the decoder's work halves; the loss is the same,
    since the cut positions are padding the encoder masks out and the decoder's labels ignore (-100)."""
    answer = int((batch["labels"] != -100).sum(1).max())
    prompt = int((batch["input_ids"] != PAD).sum(1).max())
    cut = dict(labels=batch["labels"][:, :answer].contiguous(),
               decoder_input_ids=batch["decoder_input_ids"][:, :answer],
               input_ids=batch["input_ids"][:, :prompt], attention_mask=batch["attention_mask"][:, :prompt])
    return {**batch, **cut}


def cell_batch(store: Store, picked) -> dict:
    return dict(cell_colour=store.cell_colour[picked].long(), cell_shape=store.cell_shape[picked].long(),
                cell_word=store.cell_word[picked].long(), cell_box=store.cell_box[picked].float())


def batch_loss(model, aux, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Florence2ForConditionalGeneration's own loss, with each image's features computed once and placed into every
    row that asks about that image: exactly what the model's forward does with pixel_values (the image features
    replace the <image> placeholders of the input embeddings), without running the vision tower per row; and the
    auxiliary head's loss on the same features (zero without a head)."""
    if "features" in batch:  # --freeze-vision: computed once per image by Store.fill_features
        per_image = batch["features"]
    else:
        per_image = florence_export.image_features(model, batch["pixel_values"])
    features = per_image[batch["row_image"]]
    embeds = model.get_input_embeddings()(batch["input_ids"])
    mask = (batch["input_ids"] == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))
    lm = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
               decoder_input_ids=batch["decoder_input_ids"], labels=batch["labels"]).loss
    if aux is None:
        return lm, torch.zeros_like(lm)
    return lm, aux_loss_of(aux, per_image, batch)


def aux_loss_of(aux, per_image: torch.Tensor, batch: dict) -> torch.Tensor:
    return aux(per_image[:, 1:], batch["cell_colour"], batch["cell_shape"], batch["cell_word"], batch["cell_box"])


def vision_loss(model, aux, batch: dict) -> torch.Tensor:
    """The auxiliary loss alone, for --vision-only: the vision tower and projector learn what is where before the
    language model is trained at all."""
    return aux_loss_of(aux, florence_export.image_features(model, batch["pixel_values"]), batch)


def check_prompt_layout(processor, store: Store):
    """Our encoder input must be exactly what Florence2Processor builds: image tokens, then <s> prompt </s>."""
    image = Image.new("RGB", (64, 48), (90, 90, 90))
    checked = 0
    for task, prompt in store.first_examples:
        if task in ("<OD>", "<CAPTION>", "<OCR>"):
            got = processor(text=task, images=image, return_tensors="pt")["input_ids"][0].tolist()
            want = [processor.tokenizer.image_token_id] * IMAGE_TOKENS + store.tokenizer(prompt)["input_ids"]
            assert got == want, f"prompt layout differs for {task}: {got[-20:]} vs {want[-20:]}"
            checked += 1
    print(f"prompt layout checked against Florence2Processor ({checked} prompts)", flush=True)


# ----------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def quick_eval(model, store: Store, records: list[dict], processor, device, per_task: int = 12):
    """Greedy answers on held-out examples: the share of exact target texts per task."""
    model.eval()
    by_task: dict[str, list] = {}
    for rec_i, r in enumerate(records):
        for e in r["examples"]:
            by_task.setdefault(e["task"], []).append((rec_i, e))
    scores = {}
    for task, items in sorted(by_task.items()):
        items = items[:per_task]
        imgs = torch.from_numpy(np.stack([records[i]["_array"] for i, _ in items])).to(device)
        pv = pixels(imgs)
        enc = processor.tokenizer([e["prompt"] for _, e in items], padding=True, return_tensors="pt")
        image_ids = torch.full((len(items), IMAGE_TOKENS), processor.tokenizer.image_token_id)
        ids = torch.cat([image_ids, enc["input_ids"]], 1)
        att = torch.cat([torch.ones((len(items), IMAGE_TOKENS), dtype=torch.long), enc["attention_mask"]], 1)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model.generate(input_ids=ids.to(device), pixel_values=pv, attention_mask=att.to(device),
                                 num_beams=1, max_new_tokens=150, do_sample=False)
        texts = processor.tokenizer.batch_decode(out, skip_special_tokens=False)
        exact = 0
        for text, (_, e) in zip(texts, items):
            clean = text.replace("</s>", "").replace("<s>", "").replace("<pad>", "")
            exact += clean == e["target"]
        scores[task] = exact / len(items)
        print(f"  {task:38s} exact {exact}/{len(items)}   e.g. {texts[0][:110]!r}", flush=True)
    model.train()
    return scores


def adamw(params, args, device) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01, fused=device.type == "cuda")


def learning_rate(args, step: int, progress: float) -> float:
    """Linear warm-up over args.warmup steps, then cosine from args.lr to 5 % of it as progress goes from 0 to 1."""
    return args.lr * min(1.0, (step + 1) / args.warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def cell_accuracy(model, aux, records: list[dict], device) -> dict:
    """The auxiliary head on held-out images: the share of occupied cells whose colour and shape classes it gets
    right, the share of word cells whose word it gets right (over all occupied cells, "no word" would score well
    without reading any), and its box edges' mean error in pixels of a 1000-wide image (a <loc_N> bin is 1)."""
    model.eval()
    hits = np.zeros(3)
    occupied = 0
    word_cells = 0
    box_error = 0.0
    for i in range(0, len(records), 32):
        chunk = records[i:i + 32]
        pv = pixels(torch.from_numpy(np.stack([r["_array"] for r in chunk])).to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            cells = florence_export.image_features(model, pv)[:, 1:].float()
        for j, r in enumerate(chunk):
            colour, shape, word, box = cell_targets(r["truth"])
            on = colour > 0
            on_word = word > 0
            guesses = [head(cells[j]).argmax(-1) for head in (aux.colour, aux.shape, aux.word)]
            for k, (guess, truth) in enumerate(zip(guesses, (colour, shape, word))):
                where = on if k < 2 else on_word
                hits[k] += (guess.cpu().numpy()[where] == truth[where]).sum()
            occupied += on.sum()
            word_cells += on_word.sum()
            box_error += np.abs(aux.box(cells[j]).cpu().numpy()[on] - box[on].astype(np.float32)).sum() * 1000 / 4
    model.train()
    n = max(occupied, 1)
    return {"colour": hits[0] / n, "shape": hits[1] / n, "word_of_word_cells": hits[2] / max(word_cells, 1),
            "box_error_bins": box_error / n}


def past(deadline: float) -> bool:
    return deadline > 0 and time.time() >= deadline


def pretrain_vision(args, model, aux, store: Store, heldout: list[dict], gen, ckpt: Path, device) -> int:
    """--vision-only (stage 1): the vision tower and projector, with the auxiliary head, learn what is where; the
    language model is not touched. Saves the whole model (text side as initialised) at step 0 for the full training
    to resume from (train_state.pt without an optimiser: stage 2 starts its own warm-up and schedule)."""
    params = list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
    opt = adamw(params + list(aux.parameters()), args, device)
    done = 0  # uncompiled: stage 1 is short, and compiling would take much of it
    if (ckpt / "vision_state.pt").exists():  # a second stage 1 in the same folder continues the first
        saved = torch.load(ckpt / "vision_state.pt", map_location=device)
        model.load_state_dict(saved["model"])
        aux.load_state_dict(saved["aux"])
        opt.load_state_dict(saved["opt"])
        done = saved["step"]
        print(f"stage 1 resumed at step {done}", flush=True)
    model.train()
    start = last_log = time.time()
    losses = []
    step = done
    while time.time() - start < args.seconds and not past(args.deadline):
        progress = min(1.0, (time.time() - start) / args.seconds)
        lr = learning_rate(args, step, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        with store.lock:
            count = store.count
        picked = torch.randint(0, count, (args.batch,), device=device, generator=gen)
        batch = dict(pixel_values=pixels(store.images[picked]), **cell_batch(store, picked))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = vision_loss(model, aux, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 10 == 0:
            losses.append(loss.item())
        if time.time() - last_log > 60 and losses:
            print(f"stage 1 step {step} aux loss {np.mean(losses[-30:]):.4f} lr {lr:.2e} images {store.count} "
                  f"run {time.time() - start:.0f}s", flush=True)
            last_log = time.time()
    store.stop_watching()
    torch.save({"model": model.state_dict(), "aux": aux.state_dict(), "opt": opt.state_dict(), "step": step},
               ckpt / "vision_state.pt")
    torch.save({"model": model.state_dict(), "aux": aux.state_dict(), "step": 0, "trained_s": 0.0,
                "vision_steps": step}, ckpt / "train_state.pt")
    print(f"stage 1 saved after {step} steps ({step * args.batch} images)", flush=True)
    if heldout:
        print("held-out cells:", json.dumps(cell_accuracy(model, aux, heldout, device)), flush=True)
    store.close()
    return 0


# ----------------------------------------------------------------------------------------------- main

def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder whose subfolders are shards being written")
    ap.add_argument("--heldout", help="a shard of held-out stills for the quick evaluation")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seconds", type=float, required=True, help="train this long in this run")
    ap.add_argument("--deadline", type=float, default=0.0, help="Unix time at which training stops whatever "
                    "--seconds says (remote_train.sh sets it so that saving and exporting end inside the device call)")
    ap.add_argument("--save-every", type=float, default=90.0, help="also save train_state.pt every this many "
                    "seconds of training, so that a run cut short still leaves a checkpoint")
    ap.add_argument("--total-seconds", type=float, default=960.0, help="planned training time over all runs")
    ap.add_argument("--batch", type=int, default=256, help="rows (examples) per step")
    ap.add_argument("--per-image", type=int, default=4, help="examples (different tasks) per image in a step")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                    help="torch.compile the loss, forward and backward (falls back to eager on error). Off by default: "
                    "on a fresh H100 the first step took 175 s to compile, for a step barely faster than eager")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode: default, reduce-overhead (CUDA "
                    "graphs), max-autotune-no-cudagraphs")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--aux-weight", type=float, default=1.0, help="weight of the auxiliary per-cell loss (AuxHead, "
                    "training only); 0 turns it off")
    ap.add_argument("--vision-only", action="store_true", help="stage 1: train only the vision tower and projector "
                    "with the auxiliary loss, then save a checkpoint for the full training to resume from")
    ap.add_argument("--freeze-vision", action="store_true", help="stage 2 with the vision tower and projector "
                    "frozen (after stage 1): each image's features are computed once and cached, so a step runs only "
                    "the language model; the auxiliary head is not trained")
    ap.add_argument("--feature-cache", help="with --freeze-vision: a file of image features kept between runs (by "
                    "image file, valid only for the same vision weights); read at the start, rewritten at the end")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--capacity", type=int, default=120_000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cuda", help="cuda (training); cpu only to smoke-test the script")
    args = ap.parse_args(argv)
    started = time.time()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(args.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed + int(time.time()) if args.resume else args.seed)
    ckpt = Path(args.ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)

    from transformers import Florence2Processor
    first = None
    while first is None:
        found = sorted(glob.glob(f"{args.data}/*/examples-*.jsonl"))
        if found:
            first = found[0]
        elif time.time() - started > 180:
            print(f"no shard in {args.data} after 180 s: are the writers (world-stills.js) running?", flush=True)
            return 1
        else:
            time.sleep(0.5)
    if args.resume and (ckpt / "tokenizer_config.json").exists():
        processor = Florence2Processor.from_pretrained(str(ckpt))
        tokenizer = processor.tokenizer
    else:
        tokenizer = fx.make_tokenizer(400, ckpt / ".work", corpus_from(read_records(first)))
        processor = fx.make_processor(tokenizer, SIDE)
        processor.save_pretrained(str(ckpt))
        processor = Florence2Processor.from_pretrained(str(ckpt))
        tokenizer = processor.tokenizer
    print(f"tokenizer: {len(tokenizer)} tokens; first shard after {time.time() - started:.1f}s", flush=True)

    saved = None
    if args.resume and (ckpt / "train_state.pt").exists():
        saved = torch.load(ckpt / "train_state.pt", map_location=device)
    elif args.resume:
        print(f"--resume: no train_state.pt in {ckpt}, so training starts from fresh weights", flush=True)
    model = make_model(tokenizer)
    if saved is None:  # only fresh weights get the initialisation; resumed ones are overwritten below
        init_loc_embeddings(model, tokenizer)
        init_image_positions(model)
    model = model.to(device)
    state = {"step": 0, "trained_s": 0.0}
    if args.freeze_vision:
        model.model.vision_tower.requires_grad_(False)
        model.model.multi_modal_projector.requires_grad_(False)
    opt = adamw([p for p in model.parameters() if p.requires_grad], args, device)
    if saved is not None:
        model.load_state_dict(saved["model"])
        try:
            if "opt" in saved:
                opt.load_state_dict(saved["opt"])
        except ValueError:  # saved with another set of trainable parameters (--freeze-vision changed)
            print("optimiser state not resumed: the trainable parameters differ from the checkpoint's", flush=True)
        state = {"step": saved["step"], "trained_s": saved["trained_s"]}
        print(f"resumed at step {state['step']}, {state['trained_s']:.0f}s trained", flush=True)
    aux = aux_opt = None
    if args.aux_weight > 0:
        aux = AuxHead(model.config.text_config.d_model).to(device)
        aux_opt = adamw(aux.parameters(), args, device)  # its own, so checkpoints without a head still resume
        if saved is not None and "aux" in saved:
            aux.load_state_dict(saved["aux"])
            if "aux_opt" in saved:
                aux_opt.load_state_dict(saved["aux_opt"])
    trained_aux = None if args.freeze_vision else aux  # frozen features: the head only reports held-out cells
    params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {params / 1e6:.2f} M", flush=True)

    store = Store(args.capacity, device, tokenizer, [args.data])
    store.poll_once(max_shards=3)
    check_prompt_layout(processor, store)
    store.start_watching()

    heldout = []
    if args.heldout:
        for jsonl in sorted(glob.glob(f"{args.heldout}/examples-*.jsonl")):
            for r in read_records(jsonl):
                r["_array"] = load_resized(f"{args.heldout}/{r['file']}")
                heldout.append(r)

    if args.vision_only:
        return pretrain_vision(args, model, aux, store, heldout, gen, ckpt, device)
    model.train()
    losses = []
    aux_losses = []
    optimisers = [opt] + ([aux_opt] if trained_aux else [])
    images_per_step = args.batch // args.per_image
    digest = vision_digest(model) if args.freeze_vision and args.feature_cache else ""
    if digest:
        print(f"feature cache: {store.load_feature_cache(Path(args.feature_cache), digest)} images' features "
              f"from {args.feature_cache}", flush=True)
    if args.freeze_vision:  # enough cached features for the first steps; the rest follow, a chunk per step
        while store.fill_features(model, 2 * images_per_step) < min(store.count, 4 * images_per_step):
            pass
        print(f"vision frozen: features of {store.filled} images cached; the rest follow, "
              f"{2 * images_per_step} per step", flush=True)
    run_start = time.time()
    last_log = run_start
    parts: list[np.ndarray] = []
    last_save = run_start

    def save_state(ran: float):
        """train_state.pt with the training time so far (run time `ran` not yet added to state)."""
        extra = {"aux": aux.state_dict(), "aux_opt": aux_opt.state_dict()} if aux else {}
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), **extra, "step": state["step"],
                    "trained_s": state["trained_s"] + ran}, ckpt / "train_state.pt")

    # every batch has the same shapes (fixed rows, PROMPT_MAX, TARGET_MAX), so a compiled step compiles once
    step_loss = torch.compile(batch_loss, dynamic=False, mode=args.compile_mode) if args.compile else batch_loss
    while True:
        now = time.time()
        ran = now - run_start
        if ran >= args.seconds or past(args.deadline):
            break
        if now - last_save > args.save_every:
            save_state(ran)
            last_save = now
        progress = min(1.0, (state["trained_s"] + ran) / args.total_seconds)
        lr = learning_rate(args, state["step"], progress)
        for o in optimisers:
            for g in o.param_groups:
                g["lr"] = lr
        timing = state["step"] % 50 == 0  # every 50th step is synchronised and timed part by part
        marks = [time.time()]
        if args.freeze_vision:
            store.fill_features(model, 2 * images_per_step)
        batch = collate(store, *store.sample(images_per_step, args.per_image, gen),
                        tokenizer.image_token_id)
        if step_loss is batch_loss:
            batch = trim_padding(batch)
        if timing:
            sync()
            marks.append(time.time())
        def forward_backward(fn):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                lm, extra = fn(model, trained_aux, batch)
            if timing:
                sync()
                marks.append(time.time())
            for o in optimisers:
                o.zero_grad(set_to_none=True)
            (lm + args.aux_weight * extra).backward()
            return lm, extra

        try:
            lm_loss, aux_loss = forward_backward(step_loss)
        except Exception as error:  # a compiler fault (forward or backward) must not cost the device run
            if step_loss is batch_loss:
                raise
            print(f"torch.compile failed ({type(error).__name__}: {str(error)[:300]}); training uncompiled",
                  flush=True)
            step_loss = batch_loss
            del marks[2:]
            lm_loss, aux_loss = forward_backward(step_loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for o in optimisers:
            o.step()
        if timing:
            sync()
            marks.append(time.time())
            parts.append(np.diff(marks) * 1000)
        state["step"] += 1
        if state["step"] % 10 == 0:
            losses.append(lm_loss.item())
            aux_losses.append(aux_loss.item())
        if now - last_log > 30 and losses:
            recent = losses[-30:]
            ms = np.median(parts[-10:], axis=0) if parts else [0, 0, 0]
            print(f"step {state['step']} loss {np.mean(recent):.4f} aux {np.mean(aux_losses[-30:]):.4f} lr {lr:.2e} "
                  f"images {store.count} examples "
                  f"{store.n_examples} (skipped {store.skipped}) run {ran:.0f}s total {state['trained_s'] + ran:.0f}s; "
                  f"ms per step: data {ms[0]:.0f} forward {ms[1]:.0f} backward+step {ms[2]:.0f}", flush=True)
            last_log = now
    ran = time.time() - run_start
    save_state(ran)
    state["trained_s"] += ran
    store.stop_watching()
    if digest:
        store.save_feature_cache(Path(args.feature_cache), digest)
        print(f"feature cache: {store.filled} images' features written to {args.feature_cache}", flush=True)
    model.save_pretrained(str(ckpt / "hf"), safe_serialization=True)
    processor.save_pretrained(str(ckpt / "hf"))
    print(f"saved step {state['step']} after {state['trained_s']:.0f}s of training "
          f"({state['step'] * args.batch} examples); images loaded {store.count}", flush=True)
    if heldout:
        if aux:
            print("held-out cells:", json.dumps(cell_accuracy(model, aux, heldout, device)), flush=True)
        scores = quick_eval(model, store, heldout, processor, device)
        print("held-out exact-answer rate (greedy):", json.dumps(scores), flush=True)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
