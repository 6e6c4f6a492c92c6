"""libclattn through ctypes, for the comparison scripts beside it (mha_torch_check.py,
attn_weights_torch_check.py): the descriptor structs of clattn.h, storage conversions between
torch tensors and clattn's dtypes, and a context that makes layers from nn.MultiheadAttention
modules. Needs numpy and torch; not part of the library or of CI."""
import ctypes as C

import numpy as np
import torch

size_t = C.c_size_t


class ContextOptions(C.Structure):
    _fields_ = [("struct_size", size_t), ("device", C.c_char_p), ("kernel_dir", C.c_char_p)]


class MhaDesc(C.Structure):  # clattn_mha_desc as 0.4 has it
    _fields_ = [(n, size_t) for n in ("struct_size", "d_model", "heads", "heads_kv", "head_dim",
                                      "k_dim", "v_dim")] + [
        ("scale", C.c_float), ("rope", C.c_int), ("rope_dims", size_t), ("rope_theta", C.c_float),
        ("dtype", C.c_int)]


class Tensor(C.Structure):
    _fields_ = [("host", C.c_void_p), ("mem", C.c_void_p), ("offset", size_t)]


WEIGHT_FIELDS = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight",
                 "v_proj_weight", "q_proj_bias", "k_proj_bias", "v_proj_bias", "out_proj_weight",
                 "out_proj_bias")


class Weights(C.Structure):
    _fields_ = [("struct_size", size_t)] + [(n, Tensor) for n in WEIGHT_FIELDS]


class ForwardDesc(C.Structure):
    _fields_ = [("struct_size", size_t), ("batch", size_t), ("seq", size_t), ("seq_kv", size_t),
                ("causal", C.c_int)]


# clattn_dtype values and the torch dtypes they store.
DTYPES = {"f32": (0, torch.float32), "f16": (1, torch.float16), "bf16": (2, torch.bfloat16)}


def fptr(a):
    return a.ctypes.data_as(C.c_void_p)


def storage(tensor, dtype="f32"):
    """A tensor's elements in clattn's storage of dtype: float32, or the 16-bit patterns."""
    t = tensor.detach().to(DTYPES[dtype][1]).contiguous()
    if dtype == "f32":
        return np.ascontiguousarray(t.numpy())
    return np.ascontiguousarray(t.view(torch.int16).numpy().view(np.uint16))


def from_storage(a, dtype="f32"):
    """float64 values of an array in clattn's storage of dtype."""
    if dtype == "f32":
        return a.astype(np.float64)
    t = torch.from_numpy(a.view(np.int16).copy()).view(DTYPES[dtype][1])
    return t.to(torch.float64).numpy()


class Clattn:
    """A clattn context on the library at `path` (device: a selector, or None)."""

    def __init__(self, path, device):
        self.lib = C.CDLL(path)
        L = self.lib
        for name in ("clattn_context_create", "clattn_mha_create", "clattn_mha_forward_host",
                     "clattn_mha_forward_weights_host", "clattn_mha_destroy",
                     "clattn_context_destroy", "clattn_context_get_last_error"):
            getattr(L, name).restype = C.c_int
        L.clattn_status_name.restype = C.c_char_p
        opts = ContextOptions(C.sizeof(ContextOptions), device.encode() if device else None, None)
        self.ctx = C.c_void_p()
        self.check(L.clattn_context_create(C.byref(opts), C.byref(self.ctx)), "context_create")

    def check(self, st, what):
        if st != 0:
            buf = C.create_string_buffer(2048)
            self.lib.clattn_context_get_last_error(self.ctx, buf, C.c_size_t(2048), None)
            raise RuntimeError("%s: %s (%s)" % (what, self.lib.clattn_status_name(st).decode(),
                                                buf.value.decode()))

    def layer(self, m, dtype="f32"):
        """A clattn_mha of module m's weights (packed in_proj_weight where m has one,
        q/k/v_proj_weight otherwise) in dtype's storage; destroy it with
        lib.clattn_mha_destroy."""
        desc = MhaDesc(C.sizeof(MhaDesc), m.embed_dim, m.num_heads, 0, 0, m.kdim, m.vdim, 0.0, 0,
                       0, 0.0, DTYPES[dtype][0])
        keep = []

        def t(tensor):
            if tensor is None:
                return Tensor(None, None, 0)
            a = storage(tensor, dtype)
            keep.append(a)
            return Tensor(fptr(a), None, 0)

        w = Weights(C.sizeof(Weights))
        if m._qkv_same_embed_dim:
            w.in_proj_weight = t(m.in_proj_weight)
        else:
            w.q_proj_weight = t(m.q_proj_weight)
            w.k_proj_weight = t(m.k_proj_weight)
            w.v_proj_weight = t(m.v_proj_weight)
        w.in_proj_bias = t(m.in_proj_bias)
        w.out_proj_weight = t(m.out_proj.weight)
        w.out_proj_bias = t(m.out_proj.bias)
        mha = C.c_void_p()
        self.check(self.lib.clattn_mha_create(self.ctx, C.byref(desc), C.byref(w), C.byref(mha)),
                   "mha_create")
        return mha
