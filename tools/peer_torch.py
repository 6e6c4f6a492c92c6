#!/usr/bin/env python3
"""clattn beside PyTorch on the CPU: one shape, timed by both, interleaved in rounds.

Each round runs clattn-bench once in a subprocess (--json --impl fused, with the shape flags
given here) and then times PyTorch on the same shape in this process, so that a change of
load on a shared machine hits both alike. The shape PyTorch runs is read back from
clattn-bench's JSON, so the two cannot differ.

  core  (default)  torch.nn.functional.scaled_dot_product_attention on q [B, H, Nq, D],
                   k and v [B, Hkv, Nkv, D] (enable_gqa when Hkv < H), inputs in [-1, 1];
                   a causal mask is aligned bottom-right, as clattn's is
                   (torch.nn.attention.bias.causal_lower_right when Nq != Nkv).
  decode (--decode) the core at a decode step: clattn-bench --decode (one query row per
                   sequence, --seq 1, against --seq-kv 4096 keys, 32 heads of 128 unless
                   given) and the same scaled_dot_product_attention on q [B, H, 1, D], k and
                   v [B, Hkv, Nkv, D]. Also reported: the bytes of K and V one call reads
                   (2*B*Hkv*Nkv*D*4), the GB/s each side makes of them, and their share of the
                   copy bandwidth clattn-bench measured in the same run (a share that means
                   something for PyTorch only when clattn-bench's device is this CPU).
                   --impl fused,cached times clattn through plain buffers and through its
                   KV cache, both in each clattn-bench run.
  layer (--mha)    torch.nn.MultiheadAttention(E, H, bias=True, batch_first=True) in eval
                   mode, called as mha(x, x, x, need_weights=False) on x [B, N, E]
                   (self-attention, as clattn-bench --mha), with a causal attn_mask and
                   is_causal=True for --causal. It has no grouped key/value heads and
                   needs head_dim = d_model / heads, so --kv-heads and --head-dim are
                   refused there.

--dtype f16|bf16 runs both in that storage type: clattn-bench --dtype, and PyTorch's
tensors (and, with --mha, the module) in torch.float16 or torch.bfloat16; the byte counts
follow (2 bytes an element).

PyTorch runs under torch.no_grad() with torch.set_num_threads(--threads, default 2). Its
time is the wall clock of one call (the CPU computes synchronously), the median of --reps
calls after --warmup; clattn's is clattn-bench's median for fused (the call + clFinish).

Prints per round and overall (the median of the rounds): clattn's median ms (that of the
first --impl, fused by default; the others beside it), PyTorch's median ms, torch_ms /
clattn_ms (above 1: clattn is faster), clattn's share of the FMA peak that clattn-bench
measured in the same run (decode: the K/V GB/s and shares of the copy bandwidth instead),
and the exact commands. --json prints one JSON object instead.

Examples:
  python tools/peer_torch.py --seq 1024 --heads 8 --head-dim 64 --causal
  python tools/peer_torch.py --mha --d-model 768 --heads 12 --seq 512 --rounds 5 --json
  python tools/peer_torch.py --decode --batch 8 --seq-kv 16384 --impl fused,cached

Needs PyTorch (CPU is enough), which is not a dependency of clattn: install it in a virtual
environment outside the repository, e.g.
  python3 -m venv ~/torchenv && ~/torchenv/bin/pip install torch numpy
and run this script with ~/torchenv/bin/python. Not part of CI.

Exit status: 0 done, 1 when clattn-bench or PyTorch fails (or PyTorch is missing), 2 on a
bad command line.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import warnings

INSTALL_HINT = ("install it in a virtual environment outside the repository, e.g.\n"
                "  python3 -m venv ~/torchenv && ~/torchenv/bin/pip install torch numpy\n"
                "and run this script with ~/torchenv/bin/python")


def positive_int(text):
    try:
        v = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: '{text}'")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def visible_pairs(seq_q, seq_kv, causal):
    """Query-key pairs a bottom-right aligned causal mask leaves visible (all if not causal)."""
    if not causal:
        return seq_q * seq_kv
    return sum(min(max(i + seq_kv - seq_q + 1, 0), seq_kv) for i in range(seq_q))


def bench_command(args):
    """The clattn-bench command line of one round."""
    cmd = [args.bench, "--json", "--impl", ",".join(args.impl), "--reps", str(args.reps),
           "--warmup", str(args.warmup), "--seed", str(args.seed)]
    for flag in ("batch", "heads", "kv_heads", "seq", "seq_kv", "head_dim", "d_model"):
        value = getattr(args, flag)
        if value is not None:
            cmd += ["--" + flag.replace("_", "-"), str(value)]
    if args.causal:
        cmd.append("--causal")
    if args.mha:
        cmd.append("--mha")
    if args.decode:
        cmd.append("--decode")
    if args.device:
        cmd += ["--device", args.device]
    if args.dtype != "f32":
        cmd += ["--dtype", args.dtype]
    for extra in args.bench_arg or []:
        cmd += shlex.split(extra)
    return cmd


def run_bench(cmd, impls):
    """One clattn-bench run: its JSON object, and its result of each of impls by name."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"clattn-bench exited with status {proc.returncode}:\n"
                           f"{proc.stderr.strip()}")
    line = next((l for l in proc.stdout.splitlines() if l.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"clattn-bench printed no JSON object:\n{proc.stdout.strip()}")
    out = json.loads(line)
    results = {r.get("impl"): r for r in out.get("results", [])}
    missing = [i for i in impls if i not in results]
    if missing:
        reasons = "; ".join(f"{s['impl']}: {s['reason']}" for s in out.get("skipped", []))
        raise RuntimeError(f"clattn-bench has no result for {', '.join(missing)} "
                           f"({reasons or 'no reason'})")
    return out, {i: results[i] for i in impls}


class TorchCore:
    """scaled_dot_product_attention on the shape of a clattn-bench core run."""

    def __init__(self, torch, shape, seed, dtype):
        self.torch = torch
        import torch.nn.functional as F
        self.F = F
        b, h, hkv = shape["batch"], shape["heads_q"], shape["heads_kv"]
        nq, nkv, d = shape["seq_q"], shape["seq_kv"], shape["head_dim"]
        causal = shape["causal"]
        g = torch.Generator().manual_seed(seed)

        def uniform(*size):  # [-1, 1), as clattn-bench's inputs
            return (torch.rand(*size, generator=g, dtype=torch.float32) * 2 - 1).to(dtype)

        self.q = uniform(b, h, nq, d)
        self.k = uniform(b, hkv, nkv, d)
        self.v = uniform(b, hkv, nkv, d)
        self.kwargs = {}
        mask_text = ""
        if causal:
            if nq == nkv:  # top-left and bottom-right alignment agree
                self.kwargs["is_causal"] = True
                mask_text = ", is_causal=True"
            else:
                from torch.nn.attention.bias import causal_lower_right
                # Rows that see no key (Nq > Nkv) are NaN in PyTorch and 0 in clattn; only
                # the time is compared here, so the warning about them is noise.
                warnings.filterwarnings("ignore", message="Lower right causal bias")
                self.kwargs["attn_mask"] = causal_lower_right(nq, nkv)
                mask_text = f", attn_mask=causal_lower_right({nq}, {nkv})"
        if hkv != h:
            self.kwargs["enable_gqa"] = True
            mask_text += ", enable_gqa=True"
        self.command = (f"torch.nn.functional.scaled_dot_product_attention(q, k, v{mask_text}) "
                        f"with q [{b}, {h}, {nq}, {d}], k and v [{b}, {hkv}, {nkv}, {d}], "
                        f"{str(dtype).replace('torch.', '')}")

    def __call__(self):
        return self.F.scaled_dot_product_attention(self.q, self.k, self.v, **self.kwargs)


class TorchLayer:
    """nn.MultiheadAttention on the shape of a clattn-bench --mha run."""

    def __init__(self, torch, shape, seed, dtype):
        self.torch = torch
        b, n, e = shape["batch"], shape["seq_q"], shape["d_model"]
        h, hkv, d = shape["heads_q"], shape["heads_kv"], shape["head_dim"]
        if hkv != h:
            raise RuntimeError("nn.MultiheadAttention has no grouped key/value heads "
                               f"(--kv-heads {hkv} with --heads {h})")
        if h * d != e:
            raise RuntimeError(f"nn.MultiheadAttention needs head_dim = d_model / heads "
                               f"({e} / {h}), not {d}")
        torch.manual_seed(seed)
        self.m = torch.nn.MultiheadAttention(e, h, bias=True, batch_first=True).eval().to(dtype)
        g = torch.Generator().manual_seed(seed)
        self.x = (torch.rand(b, n, e, generator=g, dtype=torch.float32) * 2 - 1).to(dtype)
        self.kwargs = {"need_weights": False}
        mask_text = ""
        if shape["causal"]:
            self.kwargs["attn_mask"] = torch.ones(n, n, dtype=torch.bool).triu(1)
            self.kwargs["is_causal"] = True
            mask_text = (f", attn_mask=torch.ones({n}, {n}, dtype=torch.bool).triu(1), "
                         "is_causal=True")
        self.command = (f"torch.nn.MultiheadAttention({e}, {h}, bias=True, batch_first=True)"
                        f".eval()(x, x, x, need_weights=False{mask_text}) with x [{b}, {n}, {e}], "
                        f"{str(dtype).replace('torch.', '')}")

    def __call__(self):
        return self.m(self.x, self.x, self.x, **self.kwargs)[0]


def time_torch(torch, fn, reps, warmup):
    """Median and minimum wall-clock ms of reps calls after warmup calls."""
    with torch.no_grad():
        for _ in range(max(warmup, 1)):
            fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def layer_flops(shape):
    b, n, e = shape["batch"], shape["seq_q"], shape["d_model"]
    h, hkv, d = shape["heads_q"], shape["heads_kv"], shape["head_dim"]
    rows = b * n
    return (2.0 * rows * e * (h + 2 * hkv) * d + 4.0 * b * h * d *
            visible_pairs(n, n, shape["causal"]) + 2.0 * rows * h * d * e)


ITEM_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


def kv_bytes(shape):
    """Bytes of K and V one call reads at least: 2*B*Hkv*Nkv*D*(bytes an element)."""
    return (2.0 * shape["batch"] * shape["heads_kv"] * shape["seq_kv"] * shape["head_dim"] *
            ITEM_BYTES[shape.get("dtype", "f32")])


def pct(part, whole):
    return 100.0 * part / whole if part is not None and whole else None


def impl_list(text):
    names = text.split(",")
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a comma-separated list of distinct names, got '{text}'")
    return names


def fmt(v, spec):
    """v formatted by spec, or "-" as wide as spec asks for when there is no value."""
    width = int(spec.split(".")[0] or 0)
    return "-".rjust(width) if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join("build", "tools", "clattn-bench"),
                    help="clattn-bench to run (default: build/tools/clattn-bench)")
    ap.add_argument("--mha", action="store_true", help="the whole layer (needs --d-model)")
    ap.add_argument("--decode", action="store_true",
                    help="a decode step: clattn-bench --decode (Nq 1, Nkv 4096, H 32, D 128 "
                         "unless given)")
    ap.add_argument("--impl", type=impl_list, default=["fused"],
                    help="clattn-bench implementations, the first one compared (fused; "
                         "e.g. fused,cached)")
    ap.add_argument("--d-model", type=positive_int, help="the layer's model width E")
    ap.add_argument("--batch", type=positive_int, help="batch (clattn-bench's default: 1)")
    ap.add_argument("--heads", type=positive_int, help="query heads (clattn-bench's: 8)")
    ap.add_argument("--kv-heads", type=positive_int, help="key/value heads (= heads)")
    ap.add_argument("--seq", type=positive_int,
                    help="query length (clattn-bench's: 1024; --decode: 1)")
    ap.add_argument("--seq-kv", type=positive_int,
                    help="key/value length, core only (= seq; --decode: 4096)")
    ap.add_argument("--head-dim", type=positive_int,
                    help="head dimension (clattn-bench's: 64, or d_model / heads with --mha; "
                         "--decode: 128)")
    ap.add_argument("--causal", action="store_true", help="causal mask, bottom-right aligned")
    ap.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32",
                    help="storage type, for both (f32)")
    ap.add_argument("--rounds", type=positive_int, default=3,
                    help="clattn-bench runs and PyTorch timings, alternately (3)")
    ap.add_argument("--reps", type=positive_int, default=10,
                    help="timed calls per round, for both (10)")
    ap.add_argument("--warmup", type=positive_int, default=2,
                    help="untimed calls first, for both (2)")
    ap.add_argument("--threads", type=positive_int, default=2,
                    help="torch.set_num_threads (2)")
    ap.add_argument("--seed", type=int, default=1, help="input seed, for both (1)")
    ap.add_argument("--device", help="clattn-bench --device SPEC")
    ap.add_argument("--bench-arg", action="append",
                    help="more clattn-bench flags, e.g. --bench-arg='--variant tiled' "
                         "(repeatable)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.mha and args.d_model is None:
        ap.error("--mha needs --d-model")
    if args.d_model is not None:
        args.mha = True
    if args.mha and args.decode:
        ap.error("--decode times the attention core: drop --mha / --d-model")
    if args.mha and args.seq_kv is not None and args.seq_kv != args.seq:
        ap.error("--mha times self-attention: --seq-kv must equal --seq")
    # What nn.MultiheadAttention cannot run, refused before clattn-bench runs (TorchLayer
    # checks again on the shape clattn-bench reports).
    heads = args.heads or 8
    if args.mha and args.kv_heads is not None and args.kv_heads != heads:
        ap.error("nn.MultiheadAttention has no grouped key/value heads: drop --kv-heads")
    if args.mha and args.head_dim is not None and args.head_dim * heads != args.d_model:
        ap.error("nn.MultiheadAttention needs head_dim = d_model / heads: drop --head-dim")
    if not os.access(args.bench, os.X_OK):
        ap.error(f"no clattn-bench at {args.bench} (build it, or give --bench PATH)")

    try:
        import torch
    except Exception as e:  # noqa: BLE001 - report any import failure
        print(f"peer_torch: cannot import torch ({e}); {INSTALL_HINT}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)

    cmd = bench_command(args)
    mode = "layer" if args.mha else "decode" if args.decode else "core"
    rounds = []
    model = None
    try:
        for r in range(args.rounds):
            out, results = run_bench(cmd, args.impl)
            fused = results[args.impl[0]]
            if model is None:
                shape = out["shape"]
                torch_dtype = {"f32": torch.float32, "f16": torch.float16,
                               "bf16": torch.bfloat16}[args.dtype]
                model = (TorchLayer if args.mha else TorchCore)(torch, shape, args.seed,
                                                                torch_dtype)
                flops = out["flops_per_call"]
                first = out
            torch_ms, torch_min = time_torch(torch, model, args.reps, args.warmup)
            clattn_ms = fused["ms"]
            row = {
                "round": r + 1,
                "clattn_ms": clattn_ms,
                "clattn_ms_min": fused.get("ms_min"),
                "torch_ms": torch_ms,
                "torch_ms_min": torch_min,
                "torch_over_clattn": torch_ms / clattn_ms if clattn_ms else None,
                "clattn_pct_peak": fused.get("pct_peak"),
                "peak_gflops": out.get("peak_gflops"),
                "clattn_gflops": flops / (clattn_ms * 1e6) if clattn_ms else None,
                "torch_gflops": flops / (torch_ms * 1e6),
                "clattn": {name: {k: r.get(k) for k in ("ms", "ms_min", "kv_gbps",
                                                         "pct_copy_bandwidth",
                                                         "pct_read_bandwidth")
                                  if k in r}
                           for name, r in results.items()},
            }
            if args.decode:
                kv = out.get("kv_bytes_per_call", kv_bytes(shape))
                row.update({
                    "copy_gbps": out.get("copy_gbps"),
                    "read_gbps": out.get("read_gbps"),
                    "clattn_kv_gbps": fused.get("kv_gbps"),
                    "clattn_pct_copy_bandwidth": fused.get("pct_copy_bandwidth"),
                    "torch_kv_gbps": kv / (torch_ms * 1e6),
                    "torch_pct_copy_bandwidth": pct(kv / (torch_ms * 1e6), out.get("copy_gbps")),
                    "torch_pct_read_bandwidth": pct(kv / (torch_ms * 1e6), out.get("read_gbps")),
                })
            rounds.append(row)
    except (RuntimeError, OSError) as e:
        print(f"peer_torch: {e}", file=sys.stderr)
        return 1

    def med(key):
        values = [x[key] for x in rounds if x[key] is not None]
        return statistics.median(values) if values else None

    overall = {k: med(k) for k in ("clattn_ms", "torch_ms", "clattn_pct_peak", "peak_gflops")}
    overall["clattn"] = {}
    for name in args.impl:
        values = {}
        for k in ("ms", "kv_gbps", "pct_copy_bandwidth", "pct_read_bandwidth"):
            xs = [x["clattn"][name][k] for x in rounds if x["clattn"][name].get(k) is not None]
            if xs:
                values[k] = statistics.median(xs)
        overall["clattn"][name] = values
    if args.decode:
        for k in ("copy_gbps", "read_gbps", "clattn_kv_gbps", "clattn_pct_copy_bandwidth",
                  "torch_kv_gbps", "torch_pct_copy_bandwidth", "torch_pct_read_bandwidth"):
            overall[k] = med(k)
    overall["torch_over_clattn"] = (overall["torch_ms"] / overall["clattn_ms"]
                                    if overall["clattn_ms"] else None)
    overall["clattn_gflops"] = (flops / (overall["clattn_ms"] * 1e6) if overall["clattn_ms"]
                                else None)
    overall["torch_gflops"] = flops / (overall["torch_ms"] * 1e6)
    expected_flops = (layer_flops(shape) if args.mha else
                      4.0 * shape["batch"] * shape["heads_q"] * shape["head_dim"] *
                      visible_pairs(shape["seq_q"], shape["seq_kv"], shape["causal"]))
    result = {
        "tool": "peer_torch",
        "mode": mode,
        "shape": shape,
        "flops_per_call": flops,
        "device": first.get("device"),
        "torch": {"version": torch.__version__, "threads": torch.get_num_threads()},
        "commands": {"clattn_bench": shlex.join(cmd), "torch": model.command},
        "reps": args.reps,
        "warmup": args.warmup,
        "rounds": rounds,
        "overall": overall,
    }
    warnings_ = []
    if abs(expected_flops - flops) > 1e-6 * flops:
        warnings_.append(f"clattn-bench counts {flops:.6g} flops per call, this script "
                         f"{expected_flops:.6g}")
    if args.decode:
        result["kv_bytes_per_call"] = first.get("kv_bytes_per_call")
        if first.get("kv_bytes_per_call") != kv_bytes(shape):
            warnings_.append(f"clattn-bench counts {first.get('kv_bytes_per_call')} bytes of K "
                             f"and V per call, this script {kv_bytes(shape):.17g}")
        if first.get("device_type") != "CPU":
            warnings_.append("clattn-bench's device is not a CPU: PyTorch's share of its copy "
                             "bandwidth compares different memories")
    if warnings_:
        result["warning"] = "; ".join(warnings_)

    if args.json:
        print(json.dumps(result))
        return 0
    s = shape
    if args.mha:
        what = (f"layer d_model={s['d_model']} H={s['heads_q']} D={s['head_dim']} "
                f"B={s['batch']} N={s['seq_q']}")
    else:
        what = (f"{mode} B={s['batch']} Hq={s['heads_q']} Hkv={s['heads_kv']} Nq={s['seq_q']} "
                f"Nkv={s['seq_kv']} D={s['head_dim']}")
    print(f"shape         {what}{', causal' if s['causal'] else ''}, {args.dtype}; "
          f"{flops * 1e-9:.4g} GFLOP per call"
          + (f", {result['kv_bytes_per_call'] / 2**20:.4g} MB of K and V read" if args.decode
             else ""))
    print(f"clattn        {first.get('device')}: {shlex.join(cmd)}")
    print(f"torch         {torch.__version__}, {torch.get_num_threads()} threads, no_grad: "
          f"{model.command}")
    others = args.impl[1:]
    head = f"\n{'round':<7} {args.impl[0] + ' ms':>14}"
    head += "".join(f" {o + ' ms':>14}" for o in others)
    head += f" {'torch ms':>10} {'torch/clattn':>13}"
    if args.decode:
        head += (f" {'clattn GB/s':>12} {'torch GB/s':>11} {'copy GB/s':>10} {'clattn % copy':>14} "
                 f"{'torch % copy':>13}")
    else:
        head += f" {'clattn % peak':>14} {'peak GFLOP/s':>13}"
    print(head)

    def pct_text(v):
        return "-" if v is None else f"{v:.1f}%"

    for x in rounds + [dict(overall, round="all")]:
        line = f"{str(x['round']):<7} {fmt(x['clattn_ms'], '14.3f')}"
        for o in others:
            line += f" {fmt(x['clattn'][o].get('ms'), '14.3f')}"
        line += f" {fmt(x['torch_ms'], '10.3f')} {fmt(x['torch_over_clattn'], '13.2f')}"
        if args.decode:
            line += (f" {fmt(x['clattn_kv_gbps'], '12.2f')} {fmt(x['torch_kv_gbps'], '11.2f')} "
                     f"{fmt(x['copy_gbps'], '10.1f')} "
                     f"{pct_text(x['clattn_pct_copy_bandwidth']):>14} "
                     f"{pct_text(x['torch_pct_copy_bandwidth']):>13}")
        else:
            line += f" {pct_text(x['clattn_pct_peak']):>14} {fmt(x['peak_gflops'], '13.1f')}"
        print(line)
    print(f"\nmedians of {args.reps} calls per round ({args.warmup} warm-up); 'all' is the median "
          f"of the rounds. torch/clattn above 1: {args.impl[0]} is faster."
          + (" GB/s: bytes of K and V read per call over the median time; copy GB/s counts "
             "bytes read + written (clattn-bench's copy kernel, same run)." if args.decode else ""))
    if "warning" in result:
        print(f"warning: {result['warning']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
