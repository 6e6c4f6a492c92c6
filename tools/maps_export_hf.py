#!/usr/bin/env python3
"""Exports one attention layer of a Hugging Face model, run on a sentence, for clattn-maps.

    python3 tools/maps_export_hf.py MODEL "The cat sat on the mat." --layer 3 --out DIR
    ./build/tools/clattn-maps --x DIR/x.npy --weights DIR/weights --heads H \\
        --labels DIR/tokens.txt [--causal] --output DIR/maps.png --svg DIR/maps.svg
    python3 tools/maps_export_hf.py --check DIR/maps.svg DIR/reference.npy

MODEL is a name or a local directory that transformers' from_pretrained can load (this
script fetches nothing itself). Writes to DIR:
  x.npy          [1, N, E] float32, what the layer's attention reads: the hidden states
                 entering layer L (BERT-style encoders), or ln_1 of them (GPT-2)
  weights/       in_proj_weight.npy, in_proj_bias.npy, out_proj.weight.npy,
                 out_proj.bias.npy: the layer's projections in nn.MultiheadAttention's names
  tokens.txt     the tokens, one a line
  reference.npy  [H, N, N] the model's own attention probabilities of layer L
                 (output_attentions), for --check
and prints the clattn-maps command line. Models: BERT-style encoders (BERT, RoBERTa, ...,
whose layers hold attention.self.query/key/value and attention.output.dense) and GPT-2
(causal; its Conv1D weights are transposed). --check compares the values an SVG's cells
show (printed to 6 digits) with reference.npy and prints the largest difference.
Needs numpy; exporting also needs torch and transformers.
"""
import argparse
import os
import re
import sys

import numpy as np


def layer_of(model, index):
    """(kind, layer, the attention's Q/K/V/O weights and biases as numpy, E->out rows)."""
    if hasattr(model, "encoder") and hasattr(model.encoder, "layer"):
        layers = model.encoder.layer
        if index >= len(layers):
            sys.exit(f"the model has {len(layers)} layers (0..{len(layers) - 1})")
        att = layers[index].attention
        q, k, v = att.self.query, att.self.key, att.self.value
        w_in = np.concatenate([m.weight.detach().numpy() for m in (q, k, v)])
        b_in = np.concatenate([m.bias.detach().numpy() for m in (q, k, v)])
        w_out = att.output.dense.weight.detach().numpy()
        b_out = att.output.dense.bias.detach().numpy()
        return "encoder", layers[index], w_in, b_in, w_out, b_out
    if hasattr(model, "h"):
        layers = model.h
        if index >= len(layers):
            sys.exit(f"the model has {len(layers)} layers (0..{len(layers) - 1})")
        attn = layers[index].attn
        # Conv1D holds [in, out]: y = x @ W + b.
        w_in = attn.c_attn.weight.detach().numpy().T
        b_in = attn.c_attn.bias.detach().numpy()
        w_out = attn.c_proj.weight.detach().numpy().T
        b_out = attn.c_proj.bias.detach().numpy()
        return "gpt2", layers[index], w_in, b_in, w_out, b_out
    sys.exit("not a BERT-style encoder or GPT-2: no encoder.layer or h in the model")


def export(args):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, attn_implementation="eager")
    model.eval()
    enc = tok(args.sentence, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True, output_attentions=True)
    kind, layer, w_in, b_in, w_out, b_out = layer_of(model, args.layer)
    hidden = out.hidden_states[args.layer]
    if kind == "gpt2":
        with torch.no_grad():
            hidden = layer.ln_1(hidden)
    heads = model.config.num_attention_heads if kind == "encoder" else model.config.n_head
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0].tolist())

    os.makedirs(os.path.join(args.out, "weights"), exist_ok=True)
    np.save(os.path.join(args.out, "x.npy"), hidden.numpy().astype(np.float32))
    for name, a in (("in_proj_weight", w_in), ("in_proj_bias", b_in),
                    ("out_proj.weight", w_out), ("out_proj.bias", b_out)):
        np.save(os.path.join(args.out, "weights", name + ".npy"),
                np.ascontiguousarray(a, dtype=np.float32))
    with open(os.path.join(args.out, "tokens.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t.replace("\n", " ") + "\n" for t in tokens))
    np.save(os.path.join(args.out, "reference.npy"), out.attentions[args.layer][0].numpy())
    d = args.out
    print(f"{len(tokens)} tokens, {heads} heads, d_model {w_in.shape[1]}, layer {args.layer} "
          f"({kind}); now:")
    print(f"./build/tools/clattn-maps --x {d}/x.npy --weights {d}/weights --heads {heads} "
          f"--labels {d}/tokens.txt{' --causal' if kind == 'gpt2' else ''} --mean "
          f"--output {d}/maps.png --svg {d}/maps.svg")


def check(svg, reference):
    ref = np.load(reference)
    cell = re.compile(r"<title>(?:head (\d+)[^:]*|mean of \d+ heads): q (\d+)[^,]*, k (\d+)"
                      r"[^<]*: ([^<:]+)</title>")
    worst, count = 0.0, 0
    with open(svg, encoding="utf-8") as f:
        for m in cell.finditer(f.read()):
            i, j, v = int(m.group(2)), int(m.group(3)), float(m.group(4))
            r = ref[:, i, j].mean() if m.group(1) is None else ref[int(m.group(1)), i, j]
            worst, count = max(worst, abs(v - float(r))), count + 1
    if count == 0:
        sys.exit(f"no cells found in {svg}")
    print(f"{count} cells, largest |clattn-maps - reference| = {worst:.3g}")
    return 0 if worst < 1e-4 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?")
    p.add_argument("sentence", nargs="?")
    p.add_argument("--layer", type=int, default=0, help="layer index (0)")
    p.add_argument("--out", default="maps-export", help="output directory (maps-export)")
    p.add_argument("--check", nargs=2, metavar=("SVG", "REFERENCE"),
                   help="compare an SVG's cells with reference.npy instead")
    args = p.parse_args()
    if args.check:
        return check(*args.check)
    if not args.model or not args.sentence:
        p.error("MODEL and SENTENCE are needed (or --check SVG REFERENCE)")
    export(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
