/* Prepended by the host to every clattn kernel file. OpenCL C 1.2. */

/* A masked score: a large finite negative, never -INFINITY, so that max() and differences
 * stay finite and a row with no visible key cannot produce NaN. */
#define CLATTN_MASKED (-FLT_MAX)

/* The arguments every attention variant takes first, in this order (src/attention.c sets
 * them). Offsets and strides are in elements; the head_dim stride is 1. lse and kv_lengths
 * may be NULL, with has_lse / has_lengths 0. */
#define CLATTN_ATTENTION_ARGS                                                             \
  __global const float *restrict q, uint q_off, uint q_sb, uint q_sh, uint q_sn,          \
      __global const float *restrict k, uint k_off, uint k_sb, uint k_sh, uint k_sn,      \
      __global const float *restrict v, uint v_off, uint v_sb, uint v_sh, uint v_sn,      \
      __global float *restrict o, uint o_off, uint o_sb, uint o_sh, uint o_sn,            \
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
