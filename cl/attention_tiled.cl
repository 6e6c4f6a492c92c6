/* GPU-style fused attention. One work-group owns BLOCK_M query rows of one (batch, head);
 * TPR work-items share each row, each keeping an interleaved slice of the head dim
 * (d = t + TPR * i) of the query and of the output accumulator in registers. The group
 * walks the keys BLOCK_N at a time, staging the K and V tiles in local memory. Each
 * work-item computes partial dot products over its slice; with TPR > 1 they are summed
 * through local memory, so every work-item of a row holds the row's scores and runs the
 * same online softmax (FlashAttention-2) before adding P·V on its slice. No N x N buffer.
 *
 * Build macros: HEAD_DIM, BLOCK_M (rows per work-group), BLOCK_N (keys per tile),
 * TPR (work-items per row, a power of two). The work-group has BLOCK_M * TPR work-items. */

#define SLICE ((HEAD_DIM + TPR - 1) / TPR) /* head-dim elements per work-item */
#define DPAD (SLICE * TPR)                 /* tile row pitch, zero-padded past HEAD_DIM */
#define GROUP (BLOCK_M * TPR)
/* Partial sums of row r, key j, slice t at red[r * RED_PITCH + j * TPR + t]; the pitch's
 * extra TPR puts the rows of a warp in different banks. */
#define RED_PITCH (BLOCK_N * TPR + TPR)

__kernel __attribute__((reqd_work_group_size(GROUP, 1, 1))) void clattn_attention_tiled(
    CLATTN_ATTENTION_ARGS) {
  __local float ks[BLOCK_N * DPAD];
  __local float vs[BLOCK_N * DPAD];
#if TPR > 1
  __local float red[BLOCK_M * RED_PITCH];
#endif

  const int lid = (int)get_local_id(0);
  const int lrow = lid / TPR;
  const int t = lid % TPR;
  const int first_row = (int)get_group_id(0) * BLOCK_M;
  const int row = first_row + lrow;
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

  float qr[SLICE];
  float acc[SLICE];
  for (int i = 0; i < SLICE; ++i) {
    const int d = t + TPR * i;
    qr[i] = 0.0f;
    acc[i] = 0.0f;
    if (row < (int)seq_q && d < HEAD_DIM) {
      qr[i] = q[q_off + b * q_sb + h * q_sh + (uint)row * q_sn + (uint)d] * scale_log2;
    }
  }
  float m = CLATTN_MASKED; /* running max, log2 units */
  float l = 0.0f;          /* running sum of exp2(score - m) */

  for (int j0 = 0; j0 < group_limit; j0 += BLOCK_N) {
    barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile is no longer read */
    for (int idx = lid; idx < BLOCK_N * DPAD; idx += GROUP) {
      const int j = j0 + idx / DPAD;
      const int d = idx % DPAD;
      float kx = 0.0f, vx = 0.0f;
      if (j < group_limit && d < HEAD_DIM) {
        kx = k[kbase + (uint)j * k_sn + (uint)d];
        vx = v[vbase + (uint)j * v_sn + (uint)d];
      }
      ks[idx] = kx;
      vs[idx] = vx;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    float s[BLOCK_N];
    for (int jj = 0; jj < BLOCK_N; ++jj) {
      float dot = 0.0f;
      for (int i = 0; i < SLICE; ++i) dot = fma(qr[i], ks[jj * DPAD + t + TPR * i], dot);
      s[jj] = dot;
    }
#if TPR > 1
    for (int jj = 0; jj < BLOCK_N; ++jj) red[lrow * RED_PITCH + jj * TPR + t] = s[jj];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int jj = 0; jj < BLOCK_N; ++jj) {
      float dot = 0.0f;
      for (int u = 0; u < TPR; ++u) dot += red[lrow * RED_PITCH + jj * TPR + u];
      s[jj] = dot;
    }
    /* red is written again only after the next tile's two barriers. */
#endif

    float tile_max = CLATTN_MASKED;
    for (int jj = 0; jj < BLOCK_N; ++jj) {
      if (j0 + jj >= row_limit) s[jj] = CLATTN_MASKED;
      tile_max = fmax(tile_max, s[jj]);
    }
    const float m_new = fmax(m, tile_max);
    const float corr = exp2(m - m_new);
    l *= corr;
    for (int i = 0; i < SLICE; ++i) acc[i] *= corr;
    for (int jj = 0; jj < BLOCK_N; ++jj) {
      const float p = j0 + jj < row_limit ? exp2(s[jj] - m_new) : 0.0f;
      l += p;
      for (int i = 0; i < SLICE; ++i) acc[i] = fma(p, vs[jj * DPAD + t + TPR * i], acc[i]);
    }
    m = m_new;
  }

  if (row < (int)seq_q) {
    const float inv = clattn_inv_sum(l);
    __global float* orow = o + o_off + b * o_sb + h * o_sh + (uint)row * o_sn;
    for (int i = 0; i < SLICE; ++i) {
      const int d = t + TPR * i;
      if (d < HEAD_DIM) orow[d] = acc[i] * inv;
    }
    if (has_lse && t == 0) {
      lse[lse_off + (b * heads_q + h) * seq_q + (uint)row] = clattn_lse(m, l);
    }
  }
}
