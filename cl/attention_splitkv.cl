/* Split-KV ("flash-decoding") attention for few query rows per key/value head. Each work-item
 * owns one (split, row chunk, kv head, batch): ROWS query rows of the group that shares kv
 * head hk (row r of the group is query head hk * group + r / seq_q, position r % seq_q) held
 * as float vectors along the head dim, and one contiguous range of keys, which it walks
 * BLOCK_N keys per online-softmax step: each step's K and V rows (head dim contiguous, vloadN)
 * come from memory once, for the first row, and from the cache for the other rows, which
 * keeps each row's Q and accumulators in registers. A row reads only the keys it sees (a
 * prefix of each step), so a key no row can see is never read. With one split
 * the work-item writes O and LSE itself; otherwise it writes its unnormalised accumulator
 * and running (max, sum) to the workspace and clattn_splitkv_merge combines the splits.
 *
 * K and V come either from the usual strided tensors or from a KV cache's block pools
 * (paged != 0): token j of batch b is row j % block_tokens of block
 * block_table[seq_ids[b] * table_stride + j / block_tokens], whose rows start at
 * block * block_stride + hk * k_sh; the table is read once per run of keys within a block.
 *
 * Workspace (floats from ws_off), for R = batch * heads_q * seq_q rows and S splits:
 * acc[R][S][HEAD_DIM], then ml[R][S][2] (running max in log2 units, sum).
 *
 * Build macros: HEAD_DIM, ROWS (query rows per work-item), BLOCK_N (keys per step),
 * VEC (16, 8, 4, 2 or 1: the widest that divides HEAD_DIM). */

#define DV (HEAD_DIM / VEC)

/* VEC elements of Q or O (QO_DTYPE), of K or V (KV_DTYPE), and of the float workspace. */
#define VLOAD_Q(i, p) LOAD_QO(VEC, i, p)
#define VSTORE_O(x, i, p) STORE_QO(VEC, x, i, p)
#define VLOAD_KV(i, p) LOAD_KV(VEC, i, p)
#define VLOAD_WS(i, p) CLATTN_LOAD(0, VEC, i, p)
#define VSTORE_WS(x, i, p) CLATTN_STORE(0, VEC, x, i, p)

__kernel void clattn_attention_splitkv(CLATTN_ATTENTION_ARGS, __global float* restrict ws,
                                       uint ws_off, uint ml_off, uint num_splits,
                                       __global const int* restrict block_table, uint table_stride,
                                       uint block_tokens, uint block_stride,
                                       __global const int* restrict seq_ids, int paged) {
  const uint split = get_global_id(0);
  const uint heads_kv = heads_q / group;
  const uint chunk = get_global_id(1) / heads_kv;
  const uint hk = get_global_id(1) % heads_kv;
  const uint b = get_global_id(2);
  const uint rows = group * seq_q;
  const int kv_len = clattn_kv_len(kv_lengths, has_lengths, b, seq_kv);

  vec_t qv[ROWS][DV], acc[ROWS][DV];
  float m[ROWS], l[ROWS];
  int limit[ROWS];
  int max_limit = 0;
  for (int r = 0; r < ROWS; ++r) {
    const uint gr = chunk * ROWS + (uint)r;
    m[r] = CLATTN_MASKED;
    l[r] = 0.0f;
    for (int i = 0; i < DV; ++i) acc[r][i] = (vec_t)(0.0f);
    if (gr < rows) {
      const uint h = hk * group + gr / seq_q;
      const uint qi = gr % seq_q;
      limit[r] = clattn_row_limit((int)qi, seq_q, seq_kv, kv_len, causal);
      __global const QO_T* qrow = q + q_off + b * q_sb + h * q_sh + qi * q_sn;
      for (int i = 0; i < DV; ++i) qv[r][i] = VLOAD_Q(i, qrow) * scale_log2;
    } else {
      limit[r] = 0;
      for (int i = 0; i < DV; ++i) qv[r][i] = (vec_t)(0.0f);
    }
    max_limit = max(max_limit, limit[r]);
  }

  /* This split's keys: an equal share of the keys some row sees, in whole steps (whole
   * blocks when paged, so that a split starts at a block boundary). */
  const int align = paged ? (int)block_tokens : BLOCK_N;
  int span = (max_limit + (int)num_splits - 1) / (int)num_splits;
  span = (span + align - 1) / align * align;
  const int jb = min((int)split * span, max_limit);
  const int je = min(jb + span, max_limit);

  int j = jb;
  while (j < je) {
    /* One run of keys contiguous in memory: the rest of the split, or of a block. */
    int run_end = je;
    uint kbase, vbase;
    if (paged) {
      const int first = j / (int)block_tokens * (int)block_tokens;
      const uint block = (uint)block_table[(uint)seq_ids[b] * table_stride + j / block_tokens];
      run_end = min(je, first + (int)block_tokens);
      kbase = k_off + block * block_stride + hk * k_sh + (uint)(j - first) * k_sn;
      vbase = v_off + block * block_stride + hk * v_sh + (uint)(j - first) * v_sn;
    } else {
      kbase = k_off + b * k_sb + hk * k_sh + (uint)j * k_sn;
      vbase = v_off + b * v_sb + hk * v_sh + (uint)j * v_sn;
    }
    while (j < run_end) {
      const int n = min(BLOCK_N, run_end - j);
      /* Row by row, so that a row's Q and accumulators stay in registers: the step's K and V
       * rows come from memory for the first row and from the cache for the others. Row r sees
       * the first nr keys of the step (visibility is a prefix), and touches no other. */
      for (int r = 0; r < ROWS; ++r) {
        const int nr = clamp(limit[r] - j, 0, n);
        if (nr == 0) continue;
        vec_t qr[DV], a[DV];
#pragma unroll
        for (int i = 0; i < DV; ++i) qr[i] = qv[r][i];
        float s[BLOCK_N];
        for (int jj = 0; jj < nr; ++jj) {
          __global const KV_T* krow = k + kbase + (uint)jj * k_sn;
          vec_t t = qr[0] * VLOAD_KV(0, krow);
#pragma unroll
          for (int i = 1; i < DV; ++i) t = fma(qr[i], VLOAD_KV(i, krow), t);
          s[jj] = vsum(t);
        }
        /* Online softmax: the step's maximum, the old state rescaled, the weights. */
        float mx = m[r], sum = 0.0f, corr;
#if BLOCK_N % 16 == 0
        if (nr == BLOCK_N) {
          /* A whole step: in vectors of 16 scores. */
          float16 vm = (float16)(mx);
          for (int c = 0; c < BLOCK_N / 16; ++c) vm = max(vm, vload16(c, s));
          mx = hmax16(vm);
          corr = exp2(m[r] - mx);
          float16 vs = (float16)(0.0f);
          for (int c = 0; c < BLOCK_N / 16; ++c) {
            const float16 e = exp2(vload16(c, s) - (float16)(mx));
            vstore16(e, c, s);
            vs += e;
          }
          sum = hsum16(vs);
        } else
#endif
        {
          for (int jj = 0; jj < nr; ++jj) mx = max(mx, s[jj]);
          corr = exp2(m[r] - mx);
          for (int jj = 0; jj < nr; ++jj) {
            const float e = exp2(s[jj] - mx);
            s[jj] = e;
            sum += e;
          }
        }
        l[r] = l[r] * corr + sum;
        m[r] = mx;
        /* O += P V over the row's keys. */
#pragma unroll
        for (int i = 0; i < DV; ++i) a[i] = acc[r][i] * corr;
        for (int jj = 0; jj < nr; ++jj) {
          __global const KV_T* vrow = v + vbase + (uint)jj * v_sn;
          const vec_t p = (vec_t)(s[jj]);
#pragma unroll
          for (int i = 0; i < DV; ++i) a[i] = fma(p, VLOAD_KV(i, vrow), a[i]);
        }
#pragma unroll
        for (int i = 0; i < DV; ++i) acc[r][i] = a[i];
      }
      j += n;
      kbase += (uint)n * k_sn;
      vbase += (uint)n * v_sn;
    }
  }

  for (int r = 0; r < ROWS; ++r) {
    const uint gr = chunk * ROWS + (uint)r;
    if (gr >= rows) break;
    const uint h = hk * group + gr / seq_q;
    const uint qi = gr % seq_q;
    const uint row = (b * heads_q + h) * seq_q + qi;
    if (num_splits == 1) {
      const float inv = clattn_inv_sum(l[r]);
      __global QO_T* orow = o + o_off + b * o_sb + h * o_sh + qi * o_sn;
      for (int i = 0; i < DV; ++i) VSTORE_O(acc[r][i] * inv, i, orow);
      if (has_lse) lse[lse_off + row] = clattn_lse(m[r], l[r]);
    } else {
      const uint slot = row * num_splits + split;
      __global float* a = ws + ws_off + slot * HEAD_DIM;
      for (int i = 0; i < DV; ++i) VSTORE_WS(acc[r][i], i, a);
      ws[ml_off + 2 * slot] = m[r];
      ws[ml_off + 2 * slot + 1] = l[r];
    }
  }
}

/* One work-item per output row (batch, head, position): combines the row's splits exactly,
 * each weighted by 2^(m_s - M) with M the largest running maximum. A split that saw no key
 * has l = 0 and acc = 0 and adds nothing; a row no split saw writes 0 and LSE -INFINITY. */
__kernel void clattn_splitkv_merge(__global QO_T* restrict o, uint o_off, uint o_sb, uint o_sh,
                                   uint o_sn, __global float* restrict lse, uint lse_off,
                                   int has_lse, uint heads_q, uint seq_q,
                                   __global const float* restrict ws, uint ws_off, uint ml_off,
                                   uint num_splits) {
  const uint row = get_global_id(0);
  const uint qi = row % seq_q;
  const uint h = row / seq_q % heads_q;
  const uint b = row / seq_q / heads_q;
  __global const float* ml = ws + ml_off + 2 * row * num_splits;
  float mx = CLATTN_MASKED;
  for (uint s = 0; s < num_splits; ++s) mx = max(mx, ml[2 * s]);
  vec_t acc[DV];
  for (int i = 0; i < DV; ++i) acc[i] = (vec_t)(0.0f);
  float l = 0.0f;
  for (uint s = 0; s < num_splits; ++s) {
    const float w = exp2(ml[2 * s] - mx);
    l = fma(ml[2 * s + 1], w, l);
    __global const float* a = ws + ws_off + (row * num_splits + s) * HEAD_DIM;
    for (int i = 0; i < DV; ++i) acc[i] = fma((vec_t)(w), VLOAD_WS(i, a), acc[i]);
  }
  const float inv = clattn_inv_sum(l);
  __global QO_T* orow = o + o_off + b * o_sb + h * o_sh + qi * o_sn;
  for (int i = 0; i < DV; ++i) VSTORE_O(acc[i] * inv, i, orow);
  if (has_lse) lse[lse_off + row] = clattn_lse(mx, l);
}
