/* GPU-style fused attention: one work-group of BLOCK_M work-items owns BLOCK_M query rows of
 * one (batch, head), one row per work-item. The group walks the keys BLOCK_N at a time,
 * staging the K and V tiles in local memory; each work-item keeps its query row and output
 * accumulator in registers and updates an online softmax (FlashAttention-2). No N x N buffer.
 *
 * Build macros: HEAD_DIM, BLOCK_M (work-group size), BLOCK_N (keys per tile). */

__kernel __attribute__((reqd_work_group_size(BLOCK_M, 1, 1))) void clattn_attention_tiled(
    CLATTN_ATTENTION_ARGS) {
  __local float ks[BLOCK_N * HEAD_DIM];
  __local float vs[BLOCK_N * HEAD_DIM];

  const uint lid = get_local_id(0);
  const int first_row = (int)(get_group_id(0) * BLOCK_M);
  const int row = first_row + (int)lid;
  const uint h = get_global_id(1);
  const uint b = get_global_id(2);
  const uint hk = h / group;

  const int kv_len = clattn_kv_len(kv_lengths, has_lengths, b, seq_kv);
  const int row_limit = clattn_row_limit(row, seq_q, seq_kv, kv_len, causal);
  /* The whole group walks to the limit of its last real row, so barriers stay uniform. */
  const int last_row = min(first_row + BLOCK_M, (int)seq_q) - 1;
  const int group_limit = clattn_row_limit(last_row, seq_q, seq_kv, kv_len, causal);

  const uint kbase = k_off + b * k_sb + hk * k_sh;
  const uint vbase = v_off + b * v_sb + hk * v_sh;

  float qr[HEAD_DIM];
  float acc[HEAD_DIM];
  if (row < (int)seq_q) {
    __global const float* qrow = q + q_off + b * q_sb + h * q_sh + (uint)row * q_sn;
    for (int d = 0; d < HEAD_DIM; ++d) qr[d] = qrow[d] * scale_log2;
  } else {
    for (int d = 0; d < HEAD_DIM; ++d) qr[d] = 0.0f;
  }
  for (int d = 0; d < HEAD_DIM; ++d) acc[d] = 0.0f;
  float m = CLATTN_MASKED; /* running max, log2 units */
  float l = 0.0f;          /* running sum of exp2(score - m) */

  for (int j0 = 0; j0 < group_limit; j0 += BLOCK_N) {
    barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile is no longer read */
    for (int idx = (int)lid; idx < BLOCK_N * HEAD_DIM; idx += BLOCK_M) {
      const int j = j0 + idx / HEAD_DIM;
      const int d = idx % HEAD_DIM;
      float kx = 0.0f, vx = 0.0f;
      if (j < group_limit) {
        kx = k[kbase + (uint)j * k_sn + (uint)d];
        vx = v[vbase + (uint)j * v_sn + (uint)d];
      }
      ks[idx] = kx;
      vs[idx] = vx;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    float s[BLOCK_N];
    float tile_max = CLATTN_MASKED;
    for (int jj = 0; jj < BLOCK_N; ++jj) {
      float dot = 0.0f;
      for (int d = 0; d < HEAD_DIM; ++d) dot = fma(qr[d], ks[jj * HEAD_DIM + d], dot);
      s[jj] = j0 + jj < row_limit ? dot : CLATTN_MASKED;
      tile_max = fmax(tile_max, s[jj]);
    }
    const float m_new = fmax(m, tile_max);
    const float corr = exp2(m - m_new);
    l *= corr;
    for (int d = 0; d < HEAD_DIM; ++d) acc[d] *= corr;
    for (int jj = 0; jj < BLOCK_N; ++jj) {
      const float p = j0 + jj < row_limit ? exp2(s[jj] - m_new) : 0.0f;
      l += p;
      for (int d = 0; d < HEAD_DIM; ++d) acc[d] = fma(p, vs[jj * HEAD_DIM + d], acc[d]);
    }
    m = m_new;
  }

  if (row < (int)seq_q) {
    const float inv = clattn_inv_sum(l);
    __global float* orow = o + o_off + b * o_sb + h * o_sh + (uint)row * o_sn;
    for (int d = 0; d < HEAD_DIM; ++d) orow[d] = acc[d] * inv;
    if (has_lse) lse[lse_off + (b * heads_q + h) * seq_q + (uint)row] = clattn_lse(m, l);
  }
}
