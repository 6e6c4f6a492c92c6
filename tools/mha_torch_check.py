#!/usr/bin/env python3
"""Compares clattn's multi-head attention layer with PyTorch's nn.MultiheadAttention.

For each shape, builds an nn.MultiheadAttention (batch_first) with PyTorch's own random
initialisation plus random biases, runs it in float64 as the reference and in float32, and
runs clattn_mha_forward_host (through ctypes on libclattn.so) with the same weights: packed
in_proj_weight where PyTorch has one, q/k/v_proj_weight otherwise. Prints the largest
absolute error of clattn and of PyTorch float32 against the float64 result, relative to
max |y|. Rows whose keys are all masked are left out (PyTorch gives NaN there, clattn
out_proj.bias).

With --dtype f16 or bf16 both run in that storage type: the module's weights and x are
rounded to it (PyTorch's Module.to), clattn gets the same values as a 16-bit layer, and the
float64 reference runs on those rounded values. PyTorch computes in the 16-bit type; clattn
in float32, rounding y once. The check then asks clattn's error to be at most PyTorch's own
(in that dtype, against the same float64 reference).

Needs torch (CPU is enough) and numpy; not part of CI.
    python3 tools/mha_torch_check.py --lib build/libclattn.so [--dtype f16|bf16] [--json]
Exit status 0 when every clattn error is below 1e-4 of max |y| (float32), or at most
PyTorch's error in the same dtype (f16, bf16); 1 otherwise.
"""
import argparse
import ctypes as C
import json
import sys

import numpy as np
import torch

from clattn_ctypes import DTYPES, Clattn, ForwardDesc, fptr, from_storage, storage


def clattn_forward(cl, m, x, kv, lengths, causal, dtype="f32"):
    """clattn's y (float64) for module m, its weights, x and kv in dtype's storage."""
    mha = cl.layer(m, dtype)
    B, N, E = x.shape
    Nkv = kv.shape[1] if kv is not None else 0
    fwd = ForwardDesc(C.sizeof(ForwardDesc), B, N, Nkv, 1 if causal else 0)
    xa = storage(x, dtype)
    ka = storage(kv, dtype) if kv is not None else None
    y = np.empty((B, N, E), dtype=np.float32 if dtype == "f32" else np.uint16)
    la = np.ascontiguousarray(np.array(lengths, dtype=np.int32)) if lengths else None
    st = cl.lib.clattn_mha_forward_host(mha, C.byref(fwd), fptr(xa),
                                        fptr(ka) if ka is not None else None, None, fptr(y),
                                        fptr(la) if la is not None else None)
    cl.lib.clattn_mha_destroy(mha)
    cl.check(st, "mha_forward_host")
    return from_storage(y, dtype)


def torch_forward(m, x, kv, lengths, causal, dtype):
    m = m.to(dtype)
    x = x.to(dtype)
    kv = kv.to(dtype) if kv is not None else x
    B, N, _ = x.shape
    Nkv = kv.shape[1]
    mask = None
    if lengths:
        mask = torch.arange(Nkv)[None, :] >= torch.tensor(lengths)[:, None]
    attn_mask = None
    if causal:  # bottom-right aligned, as clattn
        i = torch.arange(N)[:, None]
        j = torch.arange(Nkv)[None, :]
        attn_mask = j > i + (Nkv - N)
    with torch.no_grad():
        y, _ = m(x, kv, kv, key_padding_mask=mask, attn_mask=attn_mask, need_weights=False)
    return y.to(torch.float64).numpy()


SHAPES = [
    # E, H, B, N, Nkv (0: self), causal, lengths, bias, kdim
    dict(E=384, H=12, B=2, N=128, causal=True),
    dict(E=512, H=8, B=3, N=200, lengths=[200, 150, 37]),
    dict(E=768, H=12, B=1, N=512, causal=True),
    dict(E=768, H=12, B=2, N=64, Nkv=300, lengths=[300, 10]),
    dict(E=64, H=1, B=4, N=33),
    dict(E=256, H=8, B=2, N=50, Nkv=70, kdim=96, bias=False),
    dict(E=1024, H=16, B=1, N=256, causal=True),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build/libclattn.so")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="f32",
                    help="storage type of both (f32)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tdtype = DTYPES[args.dtype][1]
    cl = Clattn(args.lib, args.device)
    torch.manual_seed(0)
    ok = True
    for s in SHAPES:
        E, H, B, N = s["E"], s["H"], s["B"], s["N"]
        Nkv, causal, lengths = s.get("Nkv", 0), s.get("causal", False), s.get("lengths")
        bias, kdim = s.get("bias", True), s.get("kdim")
        m = torch.nn.MultiheadAttention(E, H, bias=bias, batch_first=True, kdim=kdim, vdim=kdim)
        if bias:  # PyTorch initialises biases to 0; random ones test them
            with torch.no_grad():
                m.in_proj_bias.uniform_(-0.5, 0.5)
                m.out_proj.bias.uniform_(-0.5, 0.5)
        m.eval()
        x = torch.rand(B, N, E) * 2 - 1
        kv = torch.rand(B, Nkv, kdim or E) * 2 - 1 if Nkv else None
        if args.dtype != "f32":
            # Both sides get the dtype's values: the module, x and kv rounded to it.
            m = m.to(tdtype).to(torch.float32)
            x = x.to(tdtype).to(torch.float32)
            kv = kv.to(tdtype).to(torch.float32) if kv is not None else None
        ref = torch_forward(m, x, kv, lengths, causal, torch.float64)
        tt = torch_forward(m, x, kv, lengths, causal, tdtype)
        m = m.to(torch.float32)
        y = clattn_forward(cl, m, x, kv, lengths, causal, args.dtype)
        finite = np.isfinite(ref)
        scale = np.abs(ref[finite]).max()
        err = np.abs(y - ref)[finite].max()
        errt = np.abs(tt - ref)[finite].max()
        res = dict(shape=s, dtype=args.dtype, max_abs_y=scale, clattn_max_err=err,
                   clattn_rel=err / scale, torch_max_err=errt, torch_rel=errt / scale)
        ok = ok and (err / scale < 1e-4 if args.dtype == "f32" else err <= errt)
        if args.json:
            print(json.dumps(res))
        else:
            print("%-70s clattn %.2e (rel %.2e)   torch %s %.2e (rel %.2e)" %
                  (json.dumps(s), err, err / scale, args.dtype, errt, errt / scale))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
