/* Prepended by the host to every clattn kernel file. OpenCL C 1.2. */

/* Storage types. Build macros QO_DTYPE (Q and O) and KV_DTYPE (K and V), both 0 by default:
 * 0 float; 1 half (IEEE binary16, read through vload_half and written through
 * vstore_half_rte, which core OpenCL 1.2 has without cl_khr_fp16: a half is never a value of
 * the kernel, only a pointer's target); 2 bfloat16 (the upper half of a float's bits, held as
 * ushort: widened by a shift, stored rounded to nearest even, a NaN stored as 0x7fc0 as
 * PyTorch does). Every arithmetic operation is in float. QO_T and KV_T name the pointer
 * types; CLATTN_LOAD(dt, n, i, p) reads the n elements (1, 2, 4, 8 or 16) from element i * n
 * of p as a float or floatn, CLATTN_STORE(dt, n, x, i, p) writes them (global memory). */
#ifndef QO_DTYPE
#define QO_DTYPE 0
#endif
#ifndef KV_DTYPE
#define KV_DTYPE 0
#endif

#define CLATTN_CAT_(a, b) a##b
#define CLATTN_CAT(a, b) CLATTN_CAT_(a, b)

#define CLATTN_T_0 float
#define CLATTN_T_1 half
#define CLATTN_T_2 ushort
#define QO_T CLATTN_CAT(CLATTN_T_, QO_DTYPE)
#define KV_T CLATTN_CAT(CLATTN_T_, KV_DTYPE)

#define CLATTN_LOAD(dt, n, i, p) CLATTN_CAT(CLATTN_CAT(CLATTN_LD_, dt), CLATTN_CAT(_, n))(i, p)
#define CLATTN_STORE(dt, n, x, i, p) \
  CLATTN_CAT(CLATTN_CAT(CLATTN_ST_, dt), CLATTN_CAT(_, n))(x, i, p)

#define CLATTN_LD_0_1(i, p) ((p)[(i)])
#define CLATTN_LD_0_2(i, p) vload2((i), (p))
#define CLATTN_LD_0_4(i, p) vload4((i), (p))
#define CLATTN_LD_0_8(i, p) vload8((i), (p))
#define CLATTN_LD_0_16(i, p) vload16((i), (p))
#define CLATTN_ST_0_1(x, i, p) ((p)[(i)] = (x))
#define CLATTN_ST_0_2(x, i, p) vstore2((x), (i), (p))
#define CLATTN_ST_0_4(x, i, p) vstore4((x), (i), (p))
#define CLATTN_ST_0_8(x, i, p) vstore8((x), (i), (p))
#define CLATTN_ST_0_16(x, i, p) vstore16((x), (i), (p))

#define CLATTN_LD_1_1(i, p) vload_half((i), (p))
#define CLATTN_LD_1_2(i, p) vload_half2((i), (p))
#define CLATTN_LD_1_4(i, p) vload_half4((i), (p))
#define CLATTN_LD_1_8(i, p) vload_half8((i), (p))
#define CLATTN_LD_1_16(i, p) vload_half16((i), (p))
#define CLATTN_ST_1_1(x, i, p) vstore_half_rte((x), (i), (p))
#define CLATTN_ST_1_2(x, i, p) vstore_half2_rte((x), (i), (p))
#define CLATTN_ST_1_4(x, i, p) vstore_half4_rte((x), (i), (p))
#define CLATTN_ST_1_8(x, i, p) vstore_half8_rte((x), (i), (p))
#define CLATTN_ST_1_16(x, i, p) vstore_half16_rte((x), (i), (p))

#define CLATTN_LD_2_1(i, p) as_float((uint)(p)[(i)] << 16)
#define CLATTN_LD_2_2(i, p) as_float2(convert_uint2(vload2((i), (p))) << 16)
#define CLATTN_LD_2_4(i, p) as_float4(convert_uint4(vload4((i), (p))) << 16)
#define CLATTN_LD_2_8(i, p) as_float8(convert_uint8(vload8((i), (p))) << 16)
#define CLATTN_LD_2_16(i, p) as_float16(convert_uint16(vload16((i), (p))) << 16)
/* Round to nearest even: add 0x7fff plus the lowest kept bit, keep the upper half. */
#define CLATTN_BF16_ROUND(n, x)                                                            \
  convert_ushort##n(select((as_uint##n(x) + 0x7fffu + ((as_uint##n(x) >> 16) & 1u)) >> 16, \
                           (uint##n)(0x7fc0u), isnan(x)))
#define CLATTN_ST_2_1(x, i, p)           \
  ((p)[(i)] = isnan(x) ? (ushort)0x7fc0u \
                       : (ushort)((as_uint(x) + 0x7fffu + ((as_uint(x) >> 16) & 1u)) >> 16))
#define CLATTN_ST_2_2(x, i, p) vstore2(CLATTN_BF16_ROUND(2, x), (i), (p))
#define CLATTN_ST_2_4(x, i, p) vstore4(CLATTN_BF16_ROUND(4, x), (i), (p))
#define CLATTN_ST_2_8(x, i, p) vstore8(CLATTN_BF16_ROUND(8, x), (i), (p))
#define CLATTN_ST_2_16(x, i, p) vstore16(CLATTN_BF16_ROUND(16, x), (i), (p))

/* Shorthands for the attention tensors: Q and O in QO_DTYPE, K and V in KV_DTYPE. */
#define LOAD_QO(n, i, p) CLATTN_LOAD(QO_DTYPE, n, i, p)
#define LOAD_KV(n, i, p) CLATTN_LOAD(KV_DTYPE, n, i, p)
#define STORE_QO(n, x, i, p) CLATTN_STORE(QO_DTYPE, n, x, i, p)
#define STORE_KV(n, x, i, p) CLATTN_STORE(KV_DTYPE, n, x, i, p)

/* A masked score: a large finite negative, never -INFINITY, so that max() and differences
 * stay finite and a row with no visible key cannot produce NaN. */
#define CLATTN_MASKED (-FLT_MAX)

/* The arguments every attention variant takes first, in this order (src/attention.c sets
 * them). Offsets and strides are in elements; the head_dim stride is 1. lse and kv_lengths
 * may be NULL, with has_lse / has_lengths 0. */
#define CLATTN_ATTENTION_ARGS                                                             \
  __global const QO_T *restrict q, uint q_off, uint q_sb, uint q_sh, uint q_sn,           \
      __global const KV_T *restrict k, uint k_off, uint k_sb, uint k_sh, uint k_sn,       \
      __global const KV_T *restrict v, uint v_off, uint v_sb, uint v_sh, uint v_sn,       \
      __global QO_T *restrict o, uint o_off, uint o_sb, uint o_sh, uint o_sn,             \
      __global float *restrict lse, uint lse_off, int has_lse,                            \
      __global const int *restrict kv_lengths, int has_lengths, uint heads_q, uint group, \
      uint seq_q, uint seq_kv, float scale_log2, int causal

/* Number of keys of (batch b) visible at all: seq_kv, or the clamped key length. */
inline int clattn_kv_len(__global const int* kv_lengths, int has_lengths, uint b, uint seq_kv) {
  int n = (int)seq_kv;
  if (has_lengths) n = clamp(kv_lengths[b], 0, n);
  return n;
}

/* Exclusive key limit of query row `row`: keys j < limit are visible. Causal masks are
 * aligned bottom-right: j <= row + (seq_kv - seq_q) for causal 1, j <= row + (kv_len - seq_q)
 * for causal 2 (each sequence's own length: a KV cache). Rows past seq_q see nothing. */
inline int clattn_row_limit(int row, uint seq_q, uint seq_kv, int kv_len, int causal) {
  if (row >= (int)seq_q) return 0;
  int limit = kv_len;
  const int end = causal == 2 ? kv_len : (int)seq_kv;
  if (causal) limit = min(limit, row + end - (int)seq_q + 1);
  return max(limit, 0);
}

/* The row's outputs from its running state: O = acc / l and LSE = ln(sum exp(score)), with
 * m the running maximum in log2 units. A row that saw no key (l == 0) writes 0 and -inf; a
 * row whose sum is NaN (a NaN or +Inf score) writes NaN to both. */
inline float clattn_inv_sum(float l) { return l > 0.0f ? 1.0f / l : (l == 0.0f ? 0.0f : l); }

inline float clattn_lse(float m, float l) {
  return l > 0.0f ? (m + log2(l)) * M_LN2_F : (l == 0.0f ? -INFINITY : l);
}

/* Horizontal max and sum of 16 lanes. max, not fmax: a NaN score makes its row NaN either
 * way. */
inline float hmax16(float16 x) {
  float8 a = max(x.lo, x.hi);
  float4 b = max(a.lo, a.hi);
  float2 c = max(b.lo, b.hi);
  return max(c.x, c.y);
}

inline float hsum16(float16 x) {
  float8 a = x.lo + x.hi;
  float4 b = a.lo + a.hi;
  float2 c = b.lo + b.hi;
  return c.x + c.y;
}

/* Kernels built with -DVEC=n (16, 8, 4, 2 or 1) work in float vectors of n lanes along the
 * head dim: vec_t, and vsum, the sum of its lanes. */
#ifdef VEC
#if VEC == 16
typedef float16 vec_t;
inline float vsum(float16 x) {
  float8 a = x.lo + x.hi;
  float4 b = a.lo + a.hi;
  float2 c = b.lo + b.hi;
  return c.x + c.y;
}
#elif VEC == 8
typedef float8 vec_t;
inline float vsum(float8 x) {
  float4 b = x.lo + x.hi;
  float2 c = b.lo + b.hi;
  return c.x + c.y;
}
#elif VEC == 4
typedef float4 vec_t;
inline float vsum(float4 x) {
  float2 c = x.lo + x.hi;
  return c.x + c.y;
}
#elif VEC == 2
typedef float2 vec_t;
inline float vsum(float2 x) { return x.x + x.y; }
#else
typedef float vec_t;
inline float vsum(float x) { return x; }
#endif
#endif
