/* Attention probabilities of a block (attention maps): P[b, h, i, j] = exp(s_ij - lse_i) for
 * query heads [head_begin, head_begin + heads), query rows [row_begin, row_begin + rows) and
 * key columns [col_begin, col_begin + cols), recomputed from Q, K and the LSE a fused call
 * wrote, in log2 units as the fused kernels compute them: exp2(q·k·scale_log2 - lse·log2(e)).
 * Only the block is computed and written: no other score is formed.
 *
 * Work split: dimension 2 is (batch, head of the block) (clattn_probs) or the batch alone
 * (clattn_probs_mean, which walks the block's heads and writes their mean); dimension 1 a row
 * of the block; dimension 0 the columns: a work-group of L work-items covers L·TILE_N
 * consecutive columns, work-item t of it the columns t, t + L, ..., t + (TILE_N - 1)·L, so that
 * one step of the group stores a contiguous run. A work-item keeps its Q row (times
 * scale_log2) in registers, as vectors along the head dim, and reads the K rows of the columns
 * its row sees and no other: a masked key (causal, key length) is never read, and its
 * probability is written as exactly 0. A row whose LSE is -INFINITY (it sees no key) is all 0;
 * a NaN LSE makes the row's visible entries NaN.
 *
 * K comes from the usual strided tensor or from a KV cache's pools (paged != 0): token j of
 * batch b is row j % block_tokens of block block_table[seq_ids[b] * table_stride +
 * j / block_tokens], whose rows start at block * block_stride + hk * k_sh (as in
 * cl/attention_splitkv.cl).
 *
 * Output, float, contiguous from p_off: [batch][heads][rows][cols] (clattn_probs) or
 * [batch][rows][cols] (clattn_probs_mean). The host checks that every index fits 32 bits.
 *
 * Build macros: HEAD_DIM, VEC (16, 8, 4, 2 or 1: the widest that divides HEAD_DIM), TILE_N
 * (columns per work-item); QO_DTYPE and KV_DTYPE, the storage of Q and of K (common.cl). */

#define DV (HEAD_DIM / VEC)

/* What both kernels take after the core's argument list (whose v, o and has_lse they ignore):
 * the block, the output and the KV cache's paging. */
#define CLATTN_PROBS_ARGS                                                                          \
  CLATTN_ATTENTION_ARGS, uint head_begin, uint heads, uint row_begin, uint rows, uint col_begin,   \
      uint cols, __global float *restrict p, uint p_off, __global const int *restrict block_table, \
      uint table_stride, uint block_tokens, uint block_stride,                                     \
      __global const int *restrict seq_ids, int paged

/* Adds the probabilities of query head h, row `row` (of the whole matrix) of batch b to
 * acc[t], for this work-item's columns c0 + t·step of the block (t < TILE_N, c < cols). */
inline void probs_row(float acc[TILE_N], __global const QO_T* restrict q, uint q_off, uint q_sb,
                      uint q_sh, uint q_sn, __global const KV_T* restrict k, uint k_off, uint k_sb,
                      uint k_sh, uint k_sn, __global const float* restrict lse, uint lse_off,
                      __global const int* restrict kv_lengths, int has_lengths, uint heads_q,
                      uint group, uint seq_q, uint seq_kv, float scale_log2, int causal,
                      uint col_begin, uint cols, __global const int* restrict block_table,
                      uint table_stride, uint block_tokens, uint block_stride,
                      __global const int* restrict seq_ids, int paged, uint b, uint h, uint row,
                      uint c0, uint step) {
  const float l2 = lse[lse_off + (b * heads_q + h) * seq_q + row] * M_LOG2E_F;
  /* -INFINITY: the row sees no key (or only scores of -Inf), every entry is 0. */
  if (l2 == -INFINITY) return;
  const int kv_len = clattn_kv_len(kv_lengths, has_lengths, b, seq_kv);
  const int limit = clattn_row_limit((int)row, seq_q, seq_kv, kv_len, causal);
  /* Columns grow with t: the visible ones come first. */
  if ((int)(col_begin + c0) >= limit) return;
  const uint hk = h / group;
  __global const QO_T* qrow = q + q_off + b * q_sb + h * q_sh + row * q_sn;
  vec_t qv[DV];
  for (int i = 0; i < DV; ++i) qv[i] = LOAD_QO(VEC, i, qrow) * scale_log2;
  const uint seq = paged ? (uint)seq_ids[b] : 0u;
  for (int t = 0; t < TILE_N; ++t) {
    const uint c = c0 + (uint)t * step;
    const uint j = col_begin + c;
    if (c >= cols || (int)j >= limit) break;
    uint base;
    if (paged) {
      const uint block = (uint)block_table[seq * table_stride + j / block_tokens];
      base = k_off + block * block_stride + hk * k_sh + (j % block_tokens) * k_sn;
    } else {
      base = k_off + b * k_sb + hk * k_sh + j * k_sn;
    }
    __global const KV_T* krow = k + base;
    vec_t s = qv[0] * LOAD_KV(VEC, 0, krow);
    for (int i = 1; i < DV; ++i) s = fma(qv[i], LOAD_KV(VEC, i, krow), s);
    acc[t] += exp2(vsum(s) - l2);
  }
}

/* One (batch, head) of the block per index of dimension 2: P[b][h - head_begin][r][c]. */
__kernel void clattn_probs(CLATTN_PROBS_ARGS) {
  const uint r = get_global_id(1);
  const uint bh = get_global_id(2);
  if (r >= rows) return; /* no barrier in this kernel */
  const uint b = bh / heads, h = head_begin + bh % heads;
  const uint step = (uint)get_local_size(0);
  const uint c0 = (uint)get_group_id(0) * step * TILE_N + (uint)get_local_id(0);
  float acc[TILE_N];
  for (int t = 0; t < TILE_N; ++t) acc[t] = 0.0f;
  probs_row(acc, q, q_off, q_sb, q_sh, q_sn, k, k_off, k_sb, k_sh, k_sn, lse, lse_off, kv_lengths,
            has_lengths, heads_q, group, seq_q, seq_kv, scale_log2, causal, col_begin, cols,
            block_table, table_stride, block_tokens, block_stride, seq_ids, paged, b, h,
            row_begin + r, c0, step);
  __global float* out = p + p_off + (bh * rows + r) * cols;
  for (int t = 0; t < TILE_N; ++t) {
    const uint c = c0 + (uint)t * step;
    if (c >= cols) break;
    out[c] = acc[t];
  }
}

/* One batch index per index of dimension 2: the mean over the block's heads, the heads'
 * probabilities summed in float in head order and divided by their number. */
__kernel void clattn_probs_mean(CLATTN_PROBS_ARGS) {
  const uint r = get_global_id(1);
  const uint b = get_global_id(2);
  if (r >= rows) return; /* no barrier in this kernel */
  const uint step = (uint)get_local_size(0);
  const uint c0 = (uint)get_group_id(0) * step * TILE_N + (uint)get_local_id(0);
  float acc[TILE_N];
  for (int t = 0; t < TILE_N; ++t) acc[t] = 0.0f;
  for (uint hh = 0; hh < heads; ++hh) {
    probs_row(acc, q, q_off, q_sb, q_sh, q_sn, k, k_off, k_sb, k_sh, k_sn, lse, lse_off, kv_lengths,
              has_lengths, heads_q, group, seq_q, seq_kv, scale_log2, causal, col_begin, cols,
              block_table, table_stride, block_tokens, block_stride, seq_ids, paged, b,
              head_begin + hh, row_begin + r, c0, step);
  }
  const float n = (float)heads;
  __global float* out = p + p_off + (b * rows + r) * cols;
  for (int t = 0; t < TILE_N; ++t) {
    const uint c = c0 + (uint)t * step;
    if (c >= cols) break;
    out[c] = acc[t] / n;
  }
}
