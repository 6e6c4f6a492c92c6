/* CPU-style fused attention, with no barrier at all. K is first staged transposed
 * (clattn_stage_kt: per (batch, kv head), tiles of HEAD_DIM x BLOCK_N, keys contiguous, zero-padded
 * to a multiple of BLOCK_N), so 16 keys load as one float16. Each work-item then keeps
 * ROWS query rows and their output accumulators in registers and walks the keys BLOCK_N at
 * a time: scores as outer products (one K vector times ROWS broadcast query values), an
 * online softmax per row, and P·V in vectors of PV_VEC along the head dim.
 *
 * Build macros: HEAD_DIM, ROWS (query rows per work-item), BLOCK_N (keys per step, a
 * multiple of 16), PV_VEC (16, 8, 4, 2 or 1: a divisor of HEAD_DIM). */

#define KEY_VECS (BLOCK_N / 16)

#if PV_VEC == 16
typedef float16 pv_t;
#elif PV_VEC == 8
typedef float8 pv_t;
#elif PV_VEC == 4
typedef float4 pv_t;
#elif PV_VEC == 2
typedef float2 pv_t;
#else
typedef float pv_t;
#endif
/* PV_VEC values of V (storage KV_DTYPE; PV_LOAD_F: from its float copy, or from V itself
 * when that is float) and of O (storage QO_DTYPE). */
#define PV_LOAD(i, p) LOAD_KV(PV_VEC, i, p)
#define PV_LOAD_F(i, p) CLATTN_LOAD(0, PV_VEC, i, p)
#define PV_STORE(x, i, p) STORE_QO(PV_VEC, x, i, p)

#define PV_VECS (HEAD_DIM / PV_VEC)

/* Head-dim slices P·V updates per pass over a tile's keys: two where the ROWS x 2
 * accumulators fit the registers beside the loads (ROWS <= 8 on AVX-512's 32 registers). */
#if PV_VECS % 2 == 0 && ROWS <= 8
#define PV_STEP 2
#else
#define PV_STEP 1
#endif

/* One work-item per (16 keys, dim, batch * heads_kv): Kᵀ is stored tile by tile, so that the
 * BLOCK_N x HEAD_DIM block a step of the main kernel reads is contiguous:
 * kt[bh][j / BLOCK_N][d][j % BLOCK_N] = K[b][hk][j][d], zero for j >= seq_kv. Each work-item
 * writes 16 consecutive keys of one dim as one vector (BLOCK_N is a multiple of 16). */
__kernel void clattn_stage_kt(__global const KV_T* restrict k, uint k_off, uint k_sb, uint k_sh,
                              uint k_sn, uint heads_kv, uint seq_kv, __global float* restrict kt,
                              uint kt_off, uint kt_stride) {
  const uint j0 = get_global_id(0) * 16;
  const uint d = get_global_id(1);
  const uint bh = get_global_id(2);
  const uint b = bh / heads_kv;
  const uint hk = bh % heads_kv;
  __global const KV_T* src = k + k_off + b * k_sb + hk * k_sh + d;
  float x[16];
#pragma unroll
  for (int t = 0; t < 16; ++t) x[t] = j0 + t < seq_kv ? LOAD_KV(1, (j0 + t) * k_sn, src) : 0.0f;
  const float16 v = (float16)(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9], x[10],
                              x[11], x[12], x[13], x[14], x[15]);
  vstore16(v, 0,
           kt + kt_off + bh * HEAD_DIM * kt_stride + (j0 / BLOCK_N) * (HEAD_DIM * BLOCK_N) +
               d * BLOCK_N + j0 % BLOCK_N);
}

/* 16-bit K and V (KV_DTYPE != 0) also have V staged as float, row by row beside Kᵀ:
 * vt[bh][j][d] = V[b][hk][j][d] for j < seq_kv (rows_per_bh rows apart per bh), so that the
 * P·V loop, which reads every value once per block of ROWS query rows, widens each only once.
 * One work-item per key row. */
__kernel void clattn_stage_v(__global const KV_T* restrict v, uint v_off, uint v_sb, uint v_sh,
                             uint v_sn, uint heads_kv, uint seq_kv, __global float* restrict vt,
                             uint vt_off, uint rows_per_bh) {
  const uint j = get_global_id(0);
  const uint bh = get_global_id(2);
  if (j >= seq_kv) return;
  const uint b = bh / heads_kv;
  const uint hk = bh % heads_kv;
  __global const KV_T* src = v + v_off + b * v_sb + hk * v_sh + j * v_sn;
  __global float* dst = vt + vt_off + (bh * rows_per_bh + j) * HEAD_DIM;
  for (int i = 0; i < PV_VECS; ++i) CLATTN_STORE(0, PV_VEC, PV_LOAD(i, src), i, dst);
}

/* One row's online-softmax step over a tile of scores s[r] (see the main kernel): new running
 * maximum, the correction of the old sum and accumulators, and the weights p[r]. With MASK,
 * keys from limit[r] on get a score of CLATTN_MASKED and a weight of exactly 0. */
#define SOFTMAX_ROW(r, MASK)                                                              \
  do {                                                                                    \
    float16 vmax = (float16)(CLATTN_MASKED);                                              \
    _Pragma("unroll") for (int c = 0; c < KEY_VECS; ++c) {                                \
      if (MASK) {                                                                         \
        const int16 hidden = (lane + (int16)(j0 + 16 * c)) >= (int16)(limit[r]);          \
        s[r][c] = select(s[r][c], (float16)(CLATTN_MASKED), hidden);                      \
      }                                                                                   \
      vmax = max(vmax, s[r][c]);                                                          \
    }                                                                                     \
    /* One horizontal reduction per row and tile: lanes first, then across the vector. */ \
    const float m_new = max(m[r], hmax16(vmax));                                          \
    const float corr = exp2(m[r] - m_new);                                                \
    float16 vsum = (float16)(0.0f);                                                       \
    _Pragma("unroll") for (int c = 0; c < KEY_VECS; ++c) {                                \
      float16 e = exp2(s[r][c] - (float16)(m_new));                                       \
      if (MASK) {                                                                         \
        const int16 hidden = (lane + (int16)(j0 + 16 * c)) >= (int16)(limit[r]);          \
        e = select(e, (float16)(0.0f), hidden);                                           \
      }                                                                                   \
      vsum += e;                                                                          \
      vstore16(e, c, p[r]);                                                               \
    }                                                                                     \
    l[r] = l[r] * corr + hsum16(vsum);                                                    \
    m[r] = m_new;                                                                         \
    scale_by[r] = corr;                                                                   \
  } while (0)

__kernel void clattn_attention_regblock(CLATTN_ATTENTION_ARGS, __global const float* restrict kt,
                                        uint kt_off, uint kt_stride,
                                        __global const float* restrict vt, uint vt_off) {
  const int row0 = (int)(get_global_id(0) * ROWS);
  const uint h = get_global_id(1);
  const uint b = get_global_id(2);
  const uint hk = h / group;
  const uint heads_kv = heads_q / group;

  const int kv_len = clattn_kv_len(kv_lengths, has_lengths, b, seq_kv);
  /* Rows are consecutive, so the first row has the smallest limit and the last real row the
   * largest: keys below min_limit need no mask, keys from max_limit on are never read. */
  const int min_limit = clattn_row_limit(row0, seq_q, seq_kv, kv_len, causal);
  const int max_limit =
      clattn_row_limit(min(row0 + ROWS, (int)seq_q) - 1, seq_q, seq_kv, kv_len, causal);

  __global const float* ktb = kt + kt_off + (b * heads_kv + hk) * HEAD_DIM * kt_stride;
#if KV_DTYPE == 0
  __global const float* vb = v + v_off + b * v_sb + hk * v_sh;
  const uint v_step = v_sn;
  (void)vt;
  (void)vt_off;
#else
  /* V's float copy (clattn_stage_v): kt_stride rows per (batch, kv head), HEAD_DIM apart. */
  __global const float* vb = vt + vt_off + (b * heads_kv + hk) * kt_stride * HEAD_DIM;
  const uint v_step = HEAD_DIM;
#endif

  float qr[ROWS][HEAD_DIM];
  pv_t acc[ROWS][PV_VECS];
  float m[ROWS], l[ROWS];
  int limit[ROWS];
  for (int r = 0; r < ROWS; ++r) {
    const int row = row0 + r;
    limit[r] = clattn_row_limit(row, seq_q, seq_kv, kv_len, causal);
    m[r] = CLATTN_MASKED;
    l[r] = 0.0f;
    for (int i = 0; i < PV_VECS; ++i) acc[r][i] = (pv_t)(0.0f);
    if (row < (int)seq_q) {
      __global const QO_T* qrow = q + q_off + b * q_sb + h * q_sh + (uint)row * q_sn;
      for (int d = 0; d < HEAD_DIM; ++d) qr[r][d] = LOAD_QO(1, d, qrow) * scale_log2;
    } else {
      for (int d = 0; d < HEAD_DIM; ++d) qr[r][d] = 0.0f;
    }
  }

  const int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  float p[ROWS][BLOCK_N];
  float scale_by[ROWS];

  for (int j0 = 0; j0 < max_limit; j0 += BLOCK_N) {
    /* The loops over rows and key vectors are unrolled so that s stays in registers. */
    float16 s[ROWS][KEY_VECS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int c = 0; c < KEY_VECS; ++c) s[r][c] = (float16)(0.0f);

    /* S = Q Kᵀ as HEAD_DIM outer products of ROWS query values and BLOCK_N keys. */
    for (int d = 0; d < HEAD_DIM; ++d) {
      __global const float* kd = ktb + (uint)j0 * HEAD_DIM + (uint)d * BLOCK_N;
      float16 kv[KEY_VECS];
#pragma unroll
      for (int c = 0; c < KEY_VECS; ++c) kv[c] = vload16(c, kd);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const float16 qd = (float16)(qr[r][d]);
#pragma unroll
        for (int c = 0; c < KEY_VECS; ++c) s[r][c] = fma(qd, kv[c], s[r][c]);
      }
    }

    /* Online softmax per row; masked lanes get a finite score and a weight of exactly 0.
     * Tiles with no masked key (all but the last of a row, causal or not) take a copy of the
     * loop without the mask, so they pay for no compare. */
    const int masked = j0 + BLOCK_N > min_limit;
    if (masked) {
#pragma unroll
      for (int r = 0; r < ROWS; ++r) SOFTMAX_ROW(r, 1);
    } else {
#pragma unroll
      for (int r = 0; r < ROWS; ++r) SOFTMAX_ROW(r, 0);
    }

    /* O += P V over the keys some row can see, PV_STEP slices of PV_VEC along the head dim
     * at a time so that the ROWS x PV_STEP accumulators stay in registers and each value
     * vector and broadcast weight loaded feeds several multiply-adds. */
    const int n = min(BLOCK_N, max_limit - j0);
    __global const float* vcol = vb + (uint)j0 * v_step;
    for (int i = 0; i < PV_VECS; i += PV_STEP) {
      pv_t a[ROWS][PV_STEP];
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int t = 0; t < PV_STEP; ++t) a[r][t] = acc[r][i + t] * scale_by[r];
      if (masked) {
        /* A key a row cannot see leaves its accumulator as it is rather than adding 0 times
         * the value: a NaN or Inf in a masked key's value must not reach the row. */
        for (int jj = 0; jj < n; ++jj) {
          pv_t vv[PV_STEP];
#pragma unroll
          for (int t = 0; t < PV_STEP; ++t)
            vv[t] = PV_LOAD_F(0, vcol + (uint)jj * v_step + (i + t) * PV_VEC);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            const pv_t pr = (pv_t)(p[r][jj]);
            const int seen = j0 + jj < limit[r];
#pragma unroll
            for (int t = 0; t < PV_STEP; ++t) {
              const pv_t next = fma(pr, vv[t], a[r][t]);
              a[r][t] = seen ? next : a[r][t];
            }
          }
        }
      } else {
        for (int jj = 0; jj < n; ++jj) {
          pv_t vv[PV_STEP];
#pragma unroll
          for (int t = 0; t < PV_STEP; ++t)
            vv[t] = PV_LOAD_F(0, vcol + (uint)jj * v_step + (i + t) * PV_VEC);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            const pv_t pr = (pv_t)(p[r][jj]);
#pragma unroll
            for (int t = 0; t < PV_STEP; ++t) a[r][t] = fma(pr, vv[t], a[r][t]);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int t = 0; t < PV_STEP; ++t) acc[r][i + t] = a[r][t];
    }
  }

  for (int r = 0; r < ROWS; ++r) {
    const int row = row0 + r;
    if (row >= (int)seq_q) break;
    const float inv = clattn_inv_sum(l[r]);
    __global QO_T* orow = o + o_off + b * o_sb + h * o_sh + (uint)row * o_sn;
    for (int i = 0; i < PV_VECS; ++i) PV_STORE(acc[r][i] * inv, i, orow);
    if (has_lse) lse[lse_off + (b * heads_q + h) * seq_q + (uint)row] = clattn_lse(m[r], l[r]);
  }
}
