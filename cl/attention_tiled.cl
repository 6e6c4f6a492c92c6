/* GPU-style fused attention. One work-group owns BLOCK_M query rows of one (batch, head);
 * TPR work-items share each row, each keeping an interleaved slice of the head dim in float4
 * chunks (chunk t + TPR * i) of the query and of the output accumulator in registers. Tiles
 * are read from local memory as float4, four multiply-adds per load. The group
 * walks the keys BLOCK_N at a time, staging the K and V tiles in local memory. Each
 * work-item computes partial dot products over its slice; with TPR > 1 they are summed
 * through local memory, so every work-item of a row holds the row's scores and runs the
 * same online softmax (FlashAttention-2) before adding P·V on its slice. No N x N buffer.
 *
 * Build macros: HEAD_DIM, BLOCK_M (rows per work-group), BLOCK_N (keys per tile),
 * TPR (work-items per row, a power of two). The work-group has BLOCK_M * TPR work-items. */

#define SLICE ((HEAD_DIM + 4 * TPR - 1) / (4 * TPR)) /* float4 chunks per work-item */
#define DPAD4 (SLICE * TPR)                          /* tile row pitch in float4 */
#define DPAD (DPAD4 * 4)                             /* in floats, zero-padded past HEAD_DIM */
#define GROUP (BLOCK_M * TPR)
/* Partial sums of row r, key j, slice t at red[r * RED_PITCH + j * TPR + t]; the pitch's
 * extra TPR puts the rows of a warp in different banks. */
#define RED_PITCH (BLOCK_N * TPR + TPR)

__kernel __attribute__((reqd_work_group_size(GROUP, 1, 1))) void clattn_attention_tiled(
    CLATTN_ATTENTION_ARGS) {
  __local float4 ks4[BLOCK_N * DPAD4];
  __local float4 vs4[BLOCK_N * DPAD4];
  __local float* ks = (__local float*)ks4;
  __local float* vs = (__local float*)vs4;
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

  float4 qr[SLICE];
  float4 acc[SLICE];
  __global const QO_T* qrow = q + q_off + b * q_sb + h * q_sh + (uint)row * q_sn;
  for (int i = 0; i < SLICE; ++i) {
    const int d = 4 * (t + TPR * i);
    float4 x = (float4)(0.0f);
    if (row < (int)seq_q) {
      if (d < HEAD_DIM) x.s0 = LOAD_QO(1, d, qrow);
      if (d + 1 < HEAD_DIM) x.s1 = LOAD_QO(1, d + 1, qrow);
      if (d + 2 < HEAD_DIM) x.s2 = LOAD_QO(1, d + 2, qrow);
      if (d + 3 < HEAD_DIM) x.s3 = LOAD_QO(1, d + 3, qrow);
    }
    qr[i] = x * scale_log2;
    acc[i] = (float4)(0.0f);
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
        kx = LOAD_KV(1, kbase + (uint)j * k_sn + (uint)d, k);
        vx = LOAD_KV(1, vbase + (uint)j * v_sn + (uint)d, v);
      }
      ks[idx] = kx;
      vs[idx] = vx;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    float s[BLOCK_N];
    for (int jj = 0; jj < BLOCK_N; ++jj) {
      float4 dot4 = (float4)(0.0f);
      for (int i = 0; i < SLICE; ++i) dot4 = fma(qr[i], ks4[jj * DPAD4 + t + TPR * i], dot4);
      s[jj] = (dot4.s0 + dot4.s1) + (dot4.s2 + dot4.s3);
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
    /* Keys this row cannot see are skipped, not weighted by 0: a NaN or Inf in a masked
     * key's value must not reach the row (0 * Inf is NaN). */
    for (int jj = 0; jj < BLOCK_N; ++jj) {
      if (j0 + jj >= row_limit) continue;
      const float p = exp2(s[jj] - m_new);
      l += p;
      for (int i = 0; i < SLICE; ++i)
        acc[i] = fma((float4)(p), vs4[jj * DPAD4 + t + TPR * i], acc[i]);
    }
    m = m_new;
  }

  if (row < (int)seq_q) {
    const float inv = clattn_inv_sum(l);
    __global QO_T* orow = o + o_off + b * o_sb + h * o_sh + (uint)row * o_sn;
    for (int i = 0; i < SLICE; ++i) {
      const int d = 4 * (t + TPR * i);
      const float4 x = acc[i] * inv;
      if (d < HEAD_DIM) STORE_QO(1, x.s0, d, orow);
      if (d + 1 < HEAD_DIM) STORE_QO(1, x.s1, d + 1, orow);
      if (d + 2 < HEAD_DIM) STORE_QO(1, x.s2, d + 2, orow);
      if (d + 3 < HEAD_DIM) STORE_QO(1, x.s3, d + 3, orow);
    }
    if (has_lse && t == 0) {
      lse[lse_off + (b * heads_q + h) * seq_q + (uint)row] = clattn_lse(m, l);
    }
  }
}
