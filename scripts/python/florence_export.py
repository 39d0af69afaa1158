#!/usr/bin/env python3
"""Export a Hugging Face Florence-2 checkpoint to the onnx-community layout.

    python3 scripts/python/florence_export.py --model DIR_OR_HUB_ID --out OUT_DIR [--precisions fp32,fp16,quantized]

Writes OUT_DIR/onnx/{vision_encoder,embed_tokens,encoder_model,decoder_model,decoder_with_past_model,
decoder_model_merged}{,_fp16,_quantized,_int8}.onnx plus the model's config.json, generation_config.json,
tokenizer and processor files, so florence-edge (and transformers.js) can load the folder.

Needs PyTorch, transformers >= 4.56 (native Florence2ForConditionalGeneration), onnx and onnxruntime.
Works for any Florence-2 checkpoint in the HF-native format: base, large, or a user's fine-tune.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

OPSET = 17
GRAPHS = ("vision_encoder", "embed_tokens", "encoder_model", "decoder_model", "decoder_with_past_model",
          "decoder_model_merged")
DECODER_PARTS = ("decoder_model", "decoder_with_past_model")


def _freeze(model: torch.nn.Module) -> None:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def _text_config(model):
    return model.config.text_config


def _kv_names(num_layers: int, prefix: str, kinds=("decoder", "encoder")) -> list[str]:
    names = []
    for layer in range(num_layers):
        for kind in kinds:
            names += [f"{prefix}.{layer}.{kind}.key", f"{prefix}.{layer}.{kind}.value"]
    return names


def image_features(model, pixel_values):
    """The projected image features: a tensor in transformers 4.x, `.pooler_output` of an output object in 5.x."""
    out = model.get_image_features(pixel_values)
    return out.pooler_output if hasattr(out, "pooler_output") else out


class VisionEncoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return image_features(self.model, pixel_values)


class EmbedTokens(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.embed = model.get_input_embeddings()

    def forward(self, input_ids):
        return self.embed(input_ids)


class Encoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, inputs_embeds, attention_mask):
        return self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, return_dict=True).last_hidden_state


def _decoder(model):
    language_model = model.model.language_model
    return language_model.decoder if hasattr(language_model, "decoder") else model.get_decoder()


def _new_cache():
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


class _DecoderStep(torch.nn.Module):
    """One decoder pass over a cache; subclasses fill the cache and pick which presents to return."""

    with_cross_presents = True

    def __init__(self, model):
        super().__init__()
        self.decoder = _decoder(model)
        self.lm_head = model.lm_head
        self.num_layers = _text_config(model).decoder_layers

    def _run(self, encoder_attention_mask, encoder_hidden_states, inputs_embeds, cache):
        out = self.decoder(inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
                           encoder_attention_mask=encoder_attention_mask, past_key_values=cache, use_cache=True,
                           return_dict=True)
        logits = self.lm_head(out.last_hidden_state)
        cache = out.past_key_values
        presents = []
        for layer in range(self.num_layers):
            self_layer = cache.self_attention_cache.layers[layer]
            presents += [self_layer.keys, self_layer.values]
            if self.with_cross_presents:
                cross_layer = cache.cross_attention_cache.layers[layer]
                presents += [cross_layer.keys, cross_layer.values]
        return (logits, *presents)


class DecoderFirstStep(_DecoderStep):
    """Decoder without past: returns logits and the self- and cross-attention caches."""

    def forward(self, encoder_attention_mask, encoder_hidden_states, inputs_embeds):
        return self._run(encoder_attention_mask, encoder_hidden_states, inputs_embeds, _new_cache())


class DecoderWithPast(_DecoderStep):
    """Decoder step with past: returns logits and the grown self-attention cache."""

    with_cross_presents = False

    def forward(self, encoder_attention_mask, encoder_hidden_states, inputs_embeds, *past):
        cache = _new_cache()
        for layer in range(self.num_layers):
            dk, dv, ek, ev = past[4 * layer: 4 * layer + 4]
            cache.self_attention_cache.update(dk, dv, layer)
            cache.cross_attention_cache.update(ek, ev, layer)
            if hasattr(cache, "is_updated"):
                cache.is_updated[layer] = True
        return self._run(encoder_attention_mask, encoder_hidden_states, inputs_embeds, cache)


def _export(module, args, path: Path, input_names, output_names, dynamic_axes) -> None:
    torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)


def export_fp32(model, onnx_dir: Path, image_size: tuple[int, int]) -> None:
    model = copy.deepcopy(model)  # the caller's model keeps its attention implementation
    _freeze(model)
    # eager attention traces to plain MatMul/Softmax with the masks as data; SDPA bakes mask decisions into the trace
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:
        model.config._attn_implementation = "eager"
    cfg = _text_config(model)
    d_model = cfg.d_model
    layers = cfg.decoder_layers
    heads = cfg.decoder_attention_heads
    head_dim = d_model // heads
    height, width = image_size
    batch, prompt, past = 2, 9, 5
    with torch.no_grad():
        pixel_values = torch.randn(batch, 3, height, width)
        _export(VisionEncoder(model), (pixel_values,), onnx_dir / "vision_encoder.onnx", ["pixel_values"],
                ["image_features"], {"pixel_values": {0: "batch_size"}, "image_features": {0: "batch_size"}})
        input_ids = torch.randint(0, cfg.vocab_size, (batch, prompt))
        _export(EmbedTokens(model), (input_ids,), onnx_dir / "embed_tokens.onnx", ["input_ids"], ["inputs_embeds"],
                {"input_ids": {0: "batch_size", 1: "sequence_length"},
                 "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})
        embeds = torch.randn(batch, prompt, d_model)
        mask = torch.ones(batch, prompt, dtype=torch.long)
        _export(Encoder(model), (embeds, mask), onnx_dir / "encoder_model.onnx", ["inputs_embeds", "attention_mask"],
                ["last_hidden_state"],
                {"inputs_embeds": {0: "batch_size", 1: "encoder_sequence_length"},
                 "attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
                 "last_hidden_state": {0: "batch_size", 1: "encoder_sequence_length"}})
        encoder_hidden = torch.randn(batch, prompt, d_model)
        decoder_embeds = torch.randn(batch, 1, d_model)
        base_inputs = ["encoder_attention_mask", "encoder_hidden_states", "inputs_embeds"]
        base_axes = {"encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
                     "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
                     "inputs_embeds": {0: "batch_size", 1: "decoder_sequence_length"},
                     "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
        present_all = _kv_names(layers, "present")
        axes = dict(base_axes)
        for name in present_all:
            axes[name] = {0: "batch_size", 2: "past_decoder_sequence_length + 1" if ".decoder." in name
                          else "encoder_sequence_length_out"}
        _export(DecoderFirstStep(model), (mask, encoder_hidden, decoder_embeds), onnx_dir / "decoder_model.onnx",
                base_inputs, ["logits", *present_all], axes)
        past_names = _kv_names(layers, "past_key_values")
        past_tensors = []
        for name in past_names:
            length = past if ".decoder." in name else prompt
            past_tensors.append(torch.randn(batch, heads, length, head_dim))
        present_self = _kv_names(layers, "present", kinds=("decoder",))
        axes = dict(base_axes)
        for name in past_names:
            axes[name] = {0: "batch_size", 2: "past_decoder_sequence_length" if ".decoder." in name
                          else "encoder_sequence_length_out"}
        for name in present_self:
            axes[name] = {0: "batch_size", 2: "past_decoder_sequence_length + 1"}
        _export(DecoderWithPast(model), (mask, encoder_hidden, decoder_embeds, *past_tensors),
                onnx_dir / "decoder_with_past_model.onnx", base_inputs + past_names, ["logits", *present_self], axes)
    merge_decoders(onnx_dir / "decoder_model.onnx", onnx_dir / "decoder_with_past_model.onnx",
                   onnx_dir / "decoder_model_merged.onnx")


def _prefix_graph(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> None:
    """Renames every value and node of a graph that is not an outer input, so two graphs can share one scope."""
    rename = {}
    for init in graph.initializer:
        rename[init.name] = prefix + init.name
    for node in graph.node:
        for out in node.output:
            if out and out not in keep:
                rename[out] = prefix + out
        node.name = prefix + node.name
    for init in graph.initializer:
        init.name = rename[init.name]
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        node.output[:] = [rename.get(name, name) for name in node.output]
    for value in graph.value_info:
        value.name = rename.get(value.name, value.name)
    for out in graph.output:
        out.name = rename.get(out.name, out.name)


def initializer_digest(init: TensorProto) -> str:
    """The identity of an initializer's value: type, shape and data, not its name (the two decoders' copies of a
    weight carry different prefixes, and the serialised name's length byte would otherwise tell them apart)."""
    unnamed = copy.copy(init)
    unnamed.name = ""
    return hashlib.sha256(unnamed.SerializeToString()).hexdigest()


def merge_decoders(no_past_path: Path, with_past_path: Path, merged_path: Path) -> None:
    """Builds decoder_model_merged: one graph whose If node on `use_cache_branch` runs either decoder.

    As in optimum's merged decoders, the with-past branch returns the past cross-attention caches unchanged for the
    present.*.encoder.* outputs; runtimes keep the first step's cross-attention cache.
    """
    no_past = onnx.load(str(no_past_path))
    with_past = onnx.load(str(with_past_path))
    outer_inputs = {i.name: i for i in with_past.graph.input}
    for i in no_past.graph.input:
        outer_inputs.setdefault(i.name, i)
    keep = set(outer_inputs)

    shared: dict[str, TensorProto] = {}
    by_digest: dict[str, str] = {}

    def lift(graph: onnx.GraphProto) -> None:
        rename = {}
        for init in graph.initializer:
            digest = initializer_digest(init)
            if digest in by_digest:
                rename[init.name] = by_digest[digest]
            else:
                by_digest[digest] = init.name
                shared[init.name] = copy.deepcopy(init)
        del graph.initializer[:]
        for node in graph.node:
            node.input[:] = [rename.get(name, name) for name in node.input]

    present_names = [o.name for o in no_past.graph.output]
    _prefix_graph(no_past.graph, "no_past/", keep)
    _prefix_graph(with_past.graph, "with_past/", keep)
    lift(no_past.graph)
    lift(with_past.graph)

    with_past_outputs = {o.name.split("with_past/", 1)[-1]: o for o in with_past.graph.output}
    then_graph = helper.make_graph([], "with_past_branch", [], [])
    then_graph.node.extend(with_past.graph.node)
    for name in present_names:
        if name in with_past_outputs:
            out = with_past_outputs[name]
            identity_src = out.name
        else:
            past_name = name.replace("present.", "past_key_values.")
            identity_src = past_name
        branch_out = "with_past_out/" + name
        then_graph.node.append(helper.make_node("Identity", [identity_src], [branch_out]))
        then_graph.output.append(helper.make_tensor_value_info(branch_out, TensorProto.FLOAT, None))
    else_graph = helper.make_graph([], "no_past_branch", [], [])
    else_graph.node.extend(no_past.graph.node)
    no_past_outputs = {o.name.split("no_past/", 1)[-1]: o for o in no_past.graph.output}
    for name in present_names:
        src = no_past_outputs[name].name
        branch_out = "no_past_out/" + name
        else_graph.node.append(helper.make_node("Identity", [src], [branch_out]))
        else_graph.output.append(helper.make_tensor_value_info(branch_out, TensorProto.FLOAT, None))

    if_node = helper.make_node("If", ["use_cache_branch"], present_names, name="optimum::if",
                               then_branch=then_graph, else_branch=else_graph)
    inputs = [outer_inputs[n] for n in ["encoder_attention_mask", "encoder_hidden_states", "inputs_embeds"]]
    inputs += [i for i in with_past.graph.input if i.name.startswith("past_key_values.")]
    inputs.append(helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1]))
    outputs = [copy.deepcopy(o) for o in onnx.load(str(no_past_path)).graph.output]
    graph = helper.make_graph([if_node], "decoder_model_merged", inputs, outputs, initializer=list(shared.values()))
    merged = helper.make_model(graph, opset_imports=no_past.opset_import, producer_name="florence-edge")
    merged.ir_version = no_past.ir_version
    onnx.checker.check_model(merged)
    onnx.save(merged, str(merged_path))


def make_precisions(onnx_dir: Path, precisions: list[str]) -> list[str]:
    """Writes the other precisions of every graph; returns a note per precision that could not be made."""
    notes = []
    # the merged decoder last: its quantized form is made from the quantized parts
    names = sorted((p.stem for p in onnx_dir.glob("*.onnx") if p.stem in GRAPHS), key=lambda n: (n == "decoder_model_merged", n))
    for precision in precisions:
        if precision == "fp32":
            continue
        for name in names:
            src = onnx_dir / f"{name}.onnx"
            dst = onnx_dir / f"{name}_{precision}.onnx"
            try:
                if precision == "fp16":
                    from onnxruntime.transformers.float16 import convert_float_to_float16
                    model = onnx.load(str(src))
                    converted = convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=True,
                                                         op_block_list=["Range", "CumSum"])
                    onnx.save(converted, str(dst))
                elif precision in ("quantized", "uint8", "int8") and name == "decoder_model_merged" and all(
                        (onnx_dir / f"{part}_{precision}.onnx").exists() for part in DECODER_PARTS):
                    # ONNX Runtime's quantizer leaves the If branches' weights in float: merge the quantized parts
                    merge_decoders(*(onnx_dir / f"{part}_{precision}.onnx" for part in DECODER_PARTS), dst)
                elif precision in ("quantized", "uint8", "int8"):
                    from onnxruntime.quantization import QuantType, quantize_dynamic
                    weight_type = QuantType.QInt8 if precision == "int8" else QuantType.QUInt8
                    quantize_dynamic(str(src), str(dst), weight_type=weight_type)
                else:
                    notes.append(f"{precision}: not made by this exporter")
                    break
            except Exception as err:  # noqa: BLE001 - report and go on with the other graphs
                notes.append(f"{name}_{precision}: {type(err).__name__}: {err}")
                if dst.exists():
                    dst.unlink()
    return notes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="HF-native Florence-2 checkpoint folder or hub id")
    parser.add_argument("--out", required=True, help="output folder (onnx-community layout)")
    parser.add_argument("--precisions", default="fp32,fp16,quantized", help="comma list: fp32,fp16,quantized,int8,uint8")
    args = parser.parse_args(argv)
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    out = Path(args.out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    model = Florence2ForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(args.model)
    model.save_pretrained(str(out), safe_serialization=True)
    for weights in out.glob("*.safetensors"):
        weights.unlink()  # ONNX graphs carry the weights; keep the folder small
    processor.save_pretrained(str(out))
    size = processor.image_processor.size
    export_fp32(model, out / "onnx", (size["height"], size["width"]))
    notes = make_precisions(out / "onnx", args.precisions.split(","))
    for note in notes:
        print("note:", note, file=sys.stderr)
    print(json.dumps({"out": str(out), "graphs": sorted(p.name for p in (out / "onnx").glob("*.onnx"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
