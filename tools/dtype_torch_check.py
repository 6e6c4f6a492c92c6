#!/usr/bin/env python3
"""Checks clattn's host conversions (clattn_convert) bit for bit against PyTorch's Tensor.to.

Not part of CI (PyTorch is a peer, never a dependency). Run it with a virtual environment
outside the repository that has torch and numpy:

  python3 -m venv ~/venv-torch && ~/venv-torch/bin/pip install torch numpy
  ~/venv-torch/bin/python tools/dtype_torch_check.py --lib build/libclattn.so

What it compares:
  - widening: all 65,536 f16 patterns and all 65,536 bf16 patterns to float32;
  - narrowing: a sweep of float32 values (every exponent, random significands, the halfway
    points between neighbouring 16-bit values and the floats either side of them, the
    subnormal and overflow boundaries, signed zeros and infinities) to f16 and to bf16;
  - f16 <-> bf16 on all patterns.
Non-NaN results must be identical bits. A NaN must stay a NaN; its bits are not compared:
PyTorch's own NaN bits differ between its scalar and vectorised conversions (a bf16 NaN is
0x7fc0 from c10::BFloat16 and 0xffff from the AVX-512 path).
Exit status 0 when everything matches, 1 otherwise.
"""
import argparse
import ctypes
import sys

import numpy as np
import torch

DTYPES = {"f32": 0, "f16": 1, "bf16": 2}
TORCH = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
NP_BITS = {"f32": np.uint32, "f16": np.uint16, "bf16": np.uint16}
TORCH_BITS = {"f32": torch.int32, "f16": torch.int16, "bf16": torch.int16}


def clattn_convert(lib, src_bits, src, dst):
    """clattn_convert over a numpy array of src's bit patterns; returns dst's bit patterns."""
    src_bits = np.ascontiguousarray(src_bits.astype(NP_BITS[src]))
    out = np.zeros(src_bits.shape, dtype=NP_BITS[dst])
    st = lib.clattn_convert(src_bits.ctypes.data_as(ctypes.c_void_p), DTYPES[src],
                            out.ctypes.data_as(ctypes.c_void_p), DTYPES[dst],
                            ctypes.c_size_t(src_bits.size))
    if st != 0:
        raise RuntimeError(f"clattn_convert returned {st}")
    return out


def torch_convert(src_bits, src, dst):
    signed = src_bits.astype(NP_BITS[src]).view(np.int32 if src == "f32" else np.int16)
    t = torch.from_numpy(signed.copy()).view(TORCH[src]).to(TORCH[dst])
    bits = t.view(TORCH_BITS[dst]).numpy()
    return bits.view(NP_BITS[dst])


def is_nan(bits, dtype):
    b = bits.astype(np.uint64)
    if dtype == "f32":
        return (b & 0x7fffffff) > 0x7f800000
    if dtype == "f16":
        return (b & 0x7fff) > 0x7c00
    return (b & 0x7fff) > 0x7f80


def compare(name, src_bits, src, dst, lib):
    ours = clattn_convert(lib, src_bits, src, dst)
    theirs = torch_convert(src_bits, src, dst)
    nan_ours, nan_theirs = is_nan(ours, dst), is_nan(theirs, dst)
    nan_mismatch = np.count_nonzero(nan_ours != nan_theirs)
    both = ~nan_ours & ~nan_theirs
    bit_mismatch = np.count_nonzero(ours[both] != theirs[both])
    print(f"{name:<34} {src_bits.size:>10} values: {int(np.count_nonzero(nan_theirs)):>8} NaN, "
          f"{bit_mismatch} bit mismatches, {nan_mismatch} NaN mismatches")
    if bit_mismatch or nan_mismatch:
        idx = np.nonzero((ours != theirs) & both | (nan_ours != nan_theirs))[0][:5]
        for i in idx:
            print(f"   {src} 0x{int(src_bits[i]):x}: clattn 0x{int(ours[i]):x}, "
                  f"torch 0x{int(theirs[i]):x}")
        return False
    return True


def float_sweep(count, seed):
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 2**32, size=count, dtype=np.uint64).astype(np.uint32)
    parts = [r]
    # Every exponent with random significands (both signs).
    exps = np.arange(256, dtype=np.uint32)
    sig = rng.integers(0, 2**23, size=(256, 64), dtype=np.uint64).astype(np.uint32)
    sign = rng.integers(0, 2, size=(256, 64), dtype=np.uint64).astype(np.uint32) << 31
    parts.append((sign | (exps[:, None] << 23) | sig).ravel())
    # Halfway points of f16 normals (13 dropped bits) and of bf16 (16), and their neighbours.
    base = rng.integers(0, 2**32, size=count // 4, dtype=np.uint64).astype(np.uint32)
    f16_exp = rng.integers(98, 146, size=base.size, dtype=np.uint64).astype(np.uint32)
    f16_half = (base & 0x807fe000) | (f16_exp << 23) | 0x1000
    bf16_half = (base & 0xffff0000) | 0x8000
    for h in (f16_half, bf16_half):
        parts += [h, h - 1, h + 1]
    # f16's subnormal and overflow boundaries; zeros and infinities.
    edges = [0x33000000, 0x33000001, 0x32ffffff, 0x387fc000, 0x38800000, 0x477fe000, 0x477ff000,
             0x477fefff, 0x477ff001, 0x7f7fffff, 0x7f7f8000, 0x7f7f7fff, 0x00000001, 0x007fffff,
             0x00000000, 0x7f800000, 0x7fc00000, 0x7f800001]
    e = np.array(edges, dtype=np.uint32)
    parts += [e, e | 0x80000000]
    return np.concatenate(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default="build/libclattn.so", help="path to libclattn.so")
    ap.add_argument("--count", type=int, default=4_000_000, help="random floats in the sweep")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    lib = ctypes.CDLL(args.lib)
    lib.clattn_convert.restype = ctypes.c_int
    lib.clattn_convert.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                   ctypes.c_size_t]
    print(f"torch {torch.__version__}, numpy {np.__version__}, {args.lib}")
    every16 = np.arange(65536, dtype=np.uint32)
    floats = float_sweep(args.count, args.seed)
    ok = True
    ok &= compare("f16 -> f32, every pattern", every16, "f16", "f32", lib)
    ok &= compare("bf16 -> f32, every pattern", every16, "bf16", "f32", lib)
    ok &= compare("f32 -> f16, sweep", floats, "f32", "f16", lib)
    ok &= compare("f32 -> bf16, sweep", floats, "f32", "bf16", lib)
    ok &= compare("f16 -> bf16, every pattern", every16, "f16", "bf16", lib)
    ok &= compare("bf16 -> f16, every pattern", every16, "bf16", "f16", lib)
    print("all match" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
