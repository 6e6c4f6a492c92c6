#!/usr/bin/env python3
"""Compares the attention weights of clattn's layer with PyTorch's nn.MultiheadAttention.

For each shape, builds an nn.MultiheadAttention (batch_first) with PyTorch's own random
initialisation plus random biases, and runs it with need_weights=True, average_attn_weights
False (per head, [B, H, N, Nkv]) and True (their mean, [B, N, Nkv]), in float64 as the
reference and in float32; runs clattn_mha_forward_weights_host (through ctypes on
libclattn.so) with the same weights. Prints the largest absolute error of clattn's weights
and of PyTorch float32's against the float64 ones, and the largest error relative to each
entry among entries above 1e-6. Rows that see no key are left out of the comparison (PyTorch
gives NaN there); clattn must give exactly 0 in them, which is checked.

Shapes: self- and cross-attention, causal (bottom-right aligned, as clattn) and key padding
(lengths), one head and many, and "sharp" layers whose projection weights are scaled up so
that the softmax is peaked (logits of tens, probabilities down to 1e-20), as trained models'
heads often are.

Needs torch (CPU is enough) and numpy; not part of CI.
    python3 tools/attn_weights_torch_check.py --lib build/libclattn.so [--json]
Exit status 0 when, for every shape, clattn's largest error against PyTorch float64 is within
8 times PyTorch float32's own (plus 1e-7) and the fully masked rows are 0, 1 otherwise.
(clattn recomputes each weight from its score and the row's float32 LSE: for rows with large
logits the LSE's rounding, a few ulps of |lse|, dominates, so sharp heads land at 2-5 times
PyTorch float32's error.)
"""
import argparse
import ctypes as C
import json
import sys

import numpy as np
import torch

from clattn_ctypes import Clattn, ForwardDesc, fptr


def clattn_forward(cl, m, x, kv, lengths, causal):
    """clattn's y, weights [B, H, N, Nkv] and mean [B, N, Nkv] for module m."""
    H = m.num_heads
    mha = cl.layer(m)
    B, N, E = x.shape
    Nkv = kv.shape[1] if kv is not None else N
    fwd = ForwardDesc(C.sizeof(ForwardDesc), B, N, Nkv if kv is not None else 0,
                      1 if causal else 0)
    xa = np.ascontiguousarray(x.numpy().astype(np.float32))
    ka = np.ascontiguousarray(kv.numpy().astype(np.float32)) if kv is not None else None
    y = np.empty((B, N, E), dtype=np.float32)
    wts = np.full((B, H, N, Nkv), np.nan, dtype=np.float32)
    mean = np.full((B, N, Nkv), np.nan, dtype=np.float32)
    la = np.ascontiguousarray(np.array(lengths, dtype=np.int32)) if lengths else None
    st = cl.lib.clattn_mha_forward_weights_host(
        mha, C.byref(fwd), fptr(xa), fptr(ka) if ka is not None else None, None, fptr(y),
        fptr(la) if la is not None else None, fptr(wts), fptr(mean))
    cl.lib.clattn_mha_destroy(mha)
    cl.check(st, "mha_forward_weights_host")
    return y, wts, mean


def torch_forward(m, x, kv, lengths, causal, dtype):
    m = m.to(dtype)
    x = x.to(dtype)
    kv = kv.to(dtype) if kv is not None else x
    N, Nkv = x.shape[1], kv.shape[1]
    mask = None
    if lengths:
        mask = torch.arange(Nkv)[None, :] >= torch.tensor(lengths)[:, None]
    attn_mask = None
    if causal:  # bottom-right aligned, as clattn
        i = torch.arange(N)[:, None]
        j = torch.arange(Nkv)[None, :]
        attn_mask = j > i + (Nkv - N)
    with torch.no_grad():
        y, w = m(x, kv, kv, key_padding_mask=mask, attn_mask=attn_mask, need_weights=True,
                 average_attn_weights=False)
        _, mean = m(x, kv, kv, key_padding_mask=mask, attn_mask=attn_mask, need_weights=True,
                    average_attn_weights=True)
    f64 = lambda a: a.to(torch.float64).numpy()
    return f64(y), f64(w), f64(mean)


SHAPES = [
    # E, H, B, N, Nkv (0: self), causal, lengths, kdim, sharp (projection weights scaled up)
    dict(E=384, H=12, B=2, N=128, causal=True),
    dict(E=512, H=8, B=3, N=200, lengths=[200, 150, 37]),
    dict(E=768, H=12, B=1, N=256, causal=True),
    dict(E=768, H=12, B=2, N=64, Nkv=300, lengths=[300, 10]),
    dict(E=64, H=1, B=4, N=33),
    dict(E=256, H=8, B=2, N=50, Nkv=70, kdim=96),
    dict(E=128, H=4, B=2, N=40, Nkv=30, causal=True, lengths=[30, 0]),
    dict(E=768, H=12, B=1, N=128, causal=True, sharp=4.0),
    dict(E=256, H=4, B=2, N=96, lengths=[96, 50], sharp=6.0),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build/libclattn.so")
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cl = Clattn(args.lib, args.device)
    torch.manual_seed(0)
    ok = True
    for s in SHAPES:
        E, H, B, N = s["E"], s["H"], s["B"], s["N"]
        Nkv, causal, lengths = s.get("Nkv", 0), s.get("causal", False), s.get("lengths")
        kdim, sharp = s.get("kdim"), s.get("sharp", 1.0)
        m = torch.nn.MultiheadAttention(E, H, batch_first=True, kdim=kdim, vdim=kdim)
        with torch.no_grad():  # PyTorch initialises biases to 0; random ones test them
            m.in_proj_bias.uniform_(-0.5, 0.5)
            m.out_proj.bias.uniform_(-0.5, 0.5)
            if sharp != 1.0:
                for p in (m.in_proj_weight, m.q_proj_weight, m.k_proj_weight):
                    if p is not None:
                        p.mul_(sharp)
        m.eval()
        x = torch.rand(B, N, E) * 2 - 1
        kv = torch.rand(B, Nkv, kdim or E) * 2 - 1 if Nkv else None
        y64, w64, mean64 = torch_forward(m, x, kv, lengths, causal, torch.float64)
        y32, w32, mean32 = torch_forward(m, x, kv, lengths, causal, torch.float32)
        m = m.to(torch.float32)
        y, w, mean = clattn_forward(cl, m, x, kv, lengths, causal)
        res = dict(shape=s)
        # Rows PyTorch leaves NaN see no key: clattn's must be exactly 0.
        empty_w = np.isnan(w64).all(axis=-1)
        empty_mean = np.isnan(mean64).all(axis=-1)
        zeros_ok = bool((w[empty_w] == 0).all() and (mean[empty_mean] == 0).all())
        res["rows_without_keys"] = int(empty_w.sum())
        res["rows_without_keys_zero"] = zeros_ok
        worst_ratio = 0.0
        for name, got, ref, t32 in (("weights", w, w64, w32), ("mean", mean, mean64, mean32)):
            fin = np.isfinite(ref)
            err = np.abs(got.astype(np.float64) - ref)[fin]
            err32 = np.abs(t32 - ref)[fin]
            big = fin & (np.abs(ref) > 1e-6)
            rel = (np.abs(got.astype(np.float64) - ref)[big] / np.abs(ref[big]))
            rel32 = (np.abs(t32 - ref)[big] / np.abs(ref[big]))
            res[name] = dict(clattn_max_abs=float(err.max()), torch_f32_max_abs=float(err32.max()),
                             clattn_max_rel=float(rel.max()) if rel.size else 0.0,
                             torch_f32_max_rel=float(rel32.max()) if rel32.size else 0.0,
                             min_visible=float(ref[fin & (ref > 0)].min()))
            worst_ratio = max(worst_ratio, float(err.max()) / (8.0 * float(err32.max()) + 1e-7))
        fin = np.isfinite(y64)
        res["y_clattn_max_abs"] = float(np.abs(y.astype(np.float64) - y64)[fin].max())
        res["pass"] = worst_ratio <= 1.0 and zeros_ok
        ok = ok and res["pass"]
        if args.json:
            print(json.dumps(res))
        else:
            wr, mr = res["weights"], res["mean"]
            print("%-78s\n    weights: clattn %.2e (rel %.2e)  torch fp32 %.2e (rel %.2e);  "
                  "mean: clattn %.2e (rel %.2e)  torch fp32 %.2e (rel %.2e);  y %.2e;  "
                  "empty rows %d %s -> %s" %
                  (json.dumps(s), wr["clattn_max_abs"], wr["clattn_max_rel"],
                   wr["torch_f32_max_abs"], wr["torch_f32_max_rel"], mr["clattn_max_abs"],
                   mr["clattn_max_rel"], mr["torch_f32_max_abs"], mr["torch_f32_max_rel"],
                   res["y_clattn_max_abs"], res["rows_without_keys"],
                   "(all 0)" if zeros_ok else "(NOT 0)", "PASS" if res["pass"] else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
