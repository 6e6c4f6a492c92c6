#!/usr/bin/env python3
"""Times PyTorch's scaled_dot_product_attention on CUDA, for comparison with clattn-run.

Same shapes and flop count as clattn-run: 4 * B * Hq * D * (visible query-key pairs), where a
causal mask is aligned bottom-right (as clattn does). Each (shape, dtype, backend) is timed with
CUDA events: warm-up calls, then the median and minimum of --reps timed calls.

Prints a table, and with --json one JSON object per line (also written to --jsonl FILE).

Examples:
  python3 tools/sdpa_torch.py                       # the gpu-check shapes
  python3 tools/sdpa_torch.py --shape 1,8,4096,64 --causal --dtypes fp32
"""
import argparse
import contextlib
import json
import statistics
import sys
import warnings

DEFAULT_SHAPES = [
    # (batch, heads, seq, head_dim, causal)
    (1, 8, 1024, 64, False),
    (1, 8, 1024, 64, True),
    (1, 8, 4096, 64, False),
    (1, 8, 4096, 64, True),
    (1, 8, 4096, 128, False),
    (1, 8, 4096, 128, True),
]


def visible_pairs(seq_q, seq_kv, causal):
    """Query-key pairs a bottom-right aligned causal mask leaves visible (all if not causal)."""
    if not causal:
        return seq_q * seq_kv
    total = 0
    for i in range(seq_q):
        total += min(max(i + seq_kv - seq_q + 1, 0), seq_kv)
    return total


def parse_shape(text):
    parts = [int(x) for x in text.split(",")]
    if len(parts) not in (4, 5):
        raise argparse.ArgumentTypeError("shape is B,H,N,D or B,H,Nq,Nkv,D")
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=parse_shape, action="append",
                    help="B,H,N,D or B,H,Nq,Nkv,D (repeatable); default: the gpu-check set")
    ap.add_argument("--causal", action="store_true", help="causal mask for --shape entries")
    ap.add_argument("--dtypes", default="fp32,fp16,bf16", help="comma list of fp32,fp16,bf16")
    ap.add_argument("--backends", default="default,flash,efficient,cudnn,math",
                    help="comma list of default,flash,efficient,cudnn,math")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object per line")
    ap.add_argument("--jsonl", help="also append JSON lines to this file")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - report any import failure
        print(f"sdpa_torch: cannot import torch: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("sdpa_torch: CUDA is not available to PyTorch", file=sys.stderr)
        return 1

    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older PyTorch: only the default dispatch
        SDPBackend, sdpa_kernel = None, None
    try:
        from torch.nn.attention.bias import causal_lower_right
    except ImportError:
        causal_lower_right = None

    backend_map = {}
    if SDPBackend is not None:
        backend_map = {
            "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH,
        }
        if hasattr(SDPBackend, "CUDNN_ATTENTION"):
            backend_map["cudnn"] = SDPBackend.CUDNN_ATTENTION
    dtype_map = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

    if args.shape:
        shapes = []
        for s in args.shape:
            b, h, nq = s[0], s[1], s[2]
            nkv, d = (s[3], s[4]) if len(s) == 5 else (s[2], s[3])
            shapes.append((b, h, nq, nkv, d, args.causal))
    else:
        shapes = [(b, h, n, n, d, c) for (b, h, n, d, c) in DEFAULT_SHAPES]

    # A backend that cannot run a shape explains why in UserWarnings before it raises; the
    # table notes the error, so the warnings would only repeat it.
    warnings.filterwarnings("ignore", category=UserWarning)
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    print(f"device {props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}", flush=True)
    torch.manual_seed(args.seed)

    jsonl = open(args.jsonl, "a") if args.jsonl else None
    header = (f"{'B':>2} {'H':>3} {'Nq':>6} {'Nkv':>6} {'D':>4} {'causal':>6} {'dtype':>5} "
              f"{'backend':>9} {'median ms':>10} {'min ms':>9} {'GFLOP/s':>10}")
    print(header)
    failures = 0
    for (b, h, nq, nkv, d, causal) in shapes:
        flops = 4.0 * b * h * d * visible_pairs(nq, nkv, causal)
        for dname in [x for x in args.dtypes.split(",") if x]:
            dtype = dtype_map[dname]
            # Inputs in [-1, 1], as clattn-run uses.
            q = torch.rand(b, h, nq, d, device=dev, dtype=torch.float32).mul_(2).sub_(1).to(dtype)
            k = torch.rand(b, h, nkv, d, device=dev, dtype=torch.float32).mul_(2).sub_(1).to(dtype)
            v = torch.rand(b, h, nkv, d, device=dev, dtype=torch.float32).mul_(2).sub_(1).to(dtype)
            mask_kwargs = {}
            if causal:
                if nq == nkv or causal_lower_right is None:
                    # Top-left and bottom-right alignment agree when nq == nkv.
                    mask_kwargs = {"is_causal": True}
                else:
                    mask_kwargs = {"attn_mask": causal_lower_right(nq, nkv)}
            for bname in [x for x in args.backends.split(",") if x]:
                rec = {"tool": "sdpa_torch", "device": props.name, "batch": b, "heads": h,
                       "seq_q": nq, "seq_kv": nkv, "head_dim": d, "causal": causal,
                       "dtype": dname, "backend": bname, "flops": flops}
                if bname != "default" and bname not in backend_map:
                    rec["error"] = "backend not available in this PyTorch"
                else:
                    try:
                        # The backend choice wraps the whole loop so that entering it is not
                        # timed.
                        ctx = (contextlib.nullcontext() if bname == "default"
                               else sdpa_kernel([backend_map[bname]]))
                        with ctx:
                            for _ in range(max(args.warmup, 1)):
                                F.scaled_dot_product_attention(q, k, v, **mask_kwargs)
                            torch.cuda.synchronize()
                            times = []
                            for _ in range(args.reps):
                                start = torch.cuda.Event(enable_timing=True)
                                end = torch.cuda.Event(enable_timing=True)
                                start.record()
                                F.scaled_dot_product_attention(q, k, v, **mask_kwargs)
                                end.record()
                                end.synchronize()
                                times.append(start.elapsed_time(end))
                        med = statistics.median(times)
                        rec.update({"median_ms": med, "min_ms": min(times),
                                    "gflops": flops / (med * 1e6)})
                    except Exception as e:  # noqa: BLE001 - unsupported combos raise
                        msg = str(e).strip().splitlines()
                        rec["error"] = msg[0][:160] if msg else type(e).__name__
                if "error" in rec:
                    if bname == "default":
                        failures += 1
                    line = (f"{b:>2} {h:>3} {nq:>6} {nkv:>6} {d:>4} {str(causal):>6} {dname:>5} "
                            f"{bname:>9} {'-':>10} {'-':>9} {'-':>10}  ({rec['error'][:60]})")
                else:
                    line = (f"{b:>2} {h:>3} {nq:>6} {nkv:>6} {d:>4} {str(causal):>6} {dname:>5} "
                            f"{bname:>9} {rec['median_ms']:>10.4f} {rec['min_ms']:>9.4f} "
                            f"{rec['gflops']:>10.1f}")
                print(line, flush=True)
                if args.json:
                    print(json.dumps(rec), flush=True)
                if jsonl:
                    jsonl.write(json.dumps(rec) + "\n")
            del q, k, v
            torch.cuda.empty_cache()
    if jsonl:
        jsonl.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
