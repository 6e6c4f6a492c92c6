/* CPU-style single-precision GEMM for the layer's projections (src/gemm.c): row-major
 *   C [m, n] = A [m, k] · B [k, n] (+ bias [n] on every row) (+ C),
 * with no transposes and no copies. Each work-item keeps a block of ROWS rows × 16·NV
 * columns of C in float16 accumulators and walks k one step at a time: NV vectors of one row
 * of B times ROWS broadcast values of A (outer products, as the register-blocked attention
 * kernel computes its scores), with no barrier and no local memory. Work-items along dim 0
 * take consecutive row blocks of one column panel, so the panel of B stays in the cache
 * while A streams.
 *
 * Edges: a block past the last row reads the last row again (clamped) and stores only its
 * own rows; a column panel past n reads its lanes one by one, clamped, and stores only the
 * lanes inside. Every element of C is written by exactly one work-item.
 *
 * Build macros: ROWS (1 to 16), NV (1 to 4). OpenCL C 1.2. */

#define COLS (16 * NV)

/* flags */
#define GEMM_BIAS 1       /* add bias [n] to every row */
#define GEMM_ACCUMULATE 2 /* add C's old value */

/* One step of k for the block: b_row(v) gives the v-th float16 of B's row kk. */
#define GEMM_STEP(b_row)                                                                    \
  do {                                                                                      \
    float16 bv[NV];                                                                         \
    _Pragma("unroll") for (int v = 0; v < NV; ++v) bv[v] = b_row(v);                        \
    _Pragma("unroll") for (int r = 0; r < ROWS; ++r) {                                      \
      const float16 av = (float16)(a[arow[r] + kk]);                                        \
      _Pragma("unroll") for (int v = 0; v < NV; ++v) acc[r][v] = fma(av, bv[v], acc[r][v]); \
    }                                                                                       \
  } while (0)

/* 16 lanes of a row of B (or of the bias) from column j, each lane clamped to column last. */
inline float16 clattn_gather16(__global const float* p, uint j, uint last) {
  float x[16];
#pragma unroll
  for (int t = 0; t < 16; ++t) x[t] = p[min(j + t, last)];
  return (float16)(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9], x[10], x[11], x[12],
                   x[13], x[14], x[15]);
}

__kernel void clattn_gemm_nn(uint m, uint n, uint k, __global const float* restrict a, uint a_off,
                             uint lda, __global const float* restrict b, uint b_off, uint ldb,
                             __global float* restrict c, uint c_off, uint ldc,
                             __global const float* restrict bias, uint bias_off, int flags) {
  const uint r0 = get_global_id(0) * ROWS;
  const uint j0 = get_global_id(1) * COLS;
  if (r0 >= m || j0 >= n) return;
  uint arow[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) arow[r] = a_off + min(r0 + r, m - 1) * lda;
  float16 acc[ROWS][NV];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
#pragma unroll
    for (int v = 0; v < NV; ++v) acc[r][v] = (float16)(0.0f);
  }
  __global const float* bp = b + b_off + j0;
  const int full = j0 + COLS <= n;
  if (full) {
#define B_FULL(v) vload16((v), bp + kk * ldb)
    for (uint kk = 0; kk < k; ++kk) GEMM_STEP(B_FULL);
#undef B_FULL
  } else {
    const uint last = n - 1 - j0;
#define B_EDGE(v) clattn_gather16(bp + kk * ldb, 16 * (v), last)
    for (uint kk = 0; kk < k; ++kk) GEMM_STEP(B_EDGE);
#undef B_EDGE
  }
  float16 bias_v[NV];
#pragma unroll
  for (int v = 0; v < NV; ++v) {
    bias_v[v] = (float16)(0.0f);
    if (flags & GEMM_BIAS) {
      __global const float* q = bias + bias_off + j0;
      bias_v[v] = full ? vload16(v, q) : clattn_gather16(q, 16 * v, n - 1 - j0);
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    if (r0 + r >= m) break;
    __global float* cp = c + c_off + (r0 + r) * ldc + j0;
#pragma unroll
    for (int v = 0; v < NV; ++v) {
      float16 x = acc[r][v] + bias_v[v];
      if (full) {
        if (flags & GEMM_ACCUMULATE) x += vload16(v, cp);
        vstore16(x, v, cp);
      } else {
        const float* lanes = (const float*)&x;
        for (uint t = 0; t < 16 && j0 + 16 * v + t < n; ++t) {
          const uint i = 16 * v + t;
          cp[i] = (flags & GEMM_ACCUMULATE) ? cp[i] + lanes[t] : lanes[t];
        }
      }
    }
  }
}
