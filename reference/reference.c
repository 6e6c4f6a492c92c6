/* CPU reference for the attention core, in double precision (see reference.h).
 *
 * Deliberately independent of the library: shapes, default strides and masks are derived
 * here from the descriptor alone, so a bug shared by the library's validation and its
 * kernels cannot hide in the comparison. */
#include "reference.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Unit roundoff of float32 (round to nearest). */
#define REF_U (1.0 / 16777216.0)

/* Everything a row computation needs, resolved from a descriptor. */
typedef struct ref_geometry {
  size_t batch, heads_q, heads_kv, seq_q, seq_kv, head_dim;
  size_t group; /* heads_q / heads_kv */
  double scale;
  int causal;
  clattn_strides q, k, v, o;
} ref_geometry;

/* The header's strides rule: all three 0 means derived from the layout. */
static clattn_strides ref_strides(clattn_strides given, clattn_layout layout, size_t heads,
                                  size_t seq, size_t head_dim) {
  if (given.batch != 0 || given.head != 0 || given.seq != 0) return given;
  clattn_strides s;
  if (layout == CLATTN_LAYOUT_BHND) {
    s.seq = head_dim;
    s.head = seq * head_dim;
    s.batch = heads * seq * head_dim;
  } else {
    s.head = head_dim;
    s.seq = heads * head_dim;
    s.batch = seq * heads * head_dim;
  }
  return s;
}

clattn_strides clattn_ref_strides(const clattn_attention_desc* desc, char which) {
  const int is_q = which == 'q' || which == 'o';
  const size_t heads = is_q ? desc->heads_q : (desc->heads_kv ? desc->heads_kv : desc->heads_q);
  const size_t seq = is_q ? desc->seq_q : desc->seq_kv;
  const clattn_strides given = which == 'q'   ? desc->q_strides
                               : which == 'k' ? desc->k_strides
                               : which == 'v' ? desc->v_strides
                                              : desc->o_strides;
  return ref_strides(given, desc->layout, heads, seq, desc->head_dim);
}

static int ref_geometry_init(const clattn_attention_desc* desc, ref_geometry* g) {
  if (desc == NULL) return -1;
  if (desc->struct_size < offsetof(clattn_attention_desc, o_strides) + sizeof(clattn_strides)) {
    return -1;
  }
  /* The inputs are the float values of any storage type (exact for 16-bit ones). */
  if (desc->dtype != CLATTN_DTYPE_F32 && desc->dtype != CLATTN_DTYPE_F16 &&
      desc->dtype != CLATTN_DTYPE_BF16) {
    return -1;
  }
  if (desc->layout != CLATTN_LAYOUT_BHND && desc->layout != CLATTN_LAYOUT_BNHD) return -1;
  g->batch = desc->batch;
  g->heads_q = desc->heads_q;
  g->heads_kv = desc->heads_kv == 0 ? desc->heads_q : desc->heads_kv;
  g->seq_q = desc->seq_q;
  g->seq_kv = desc->seq_kv;
  g->head_dim = desc->head_dim;
  if (g->batch == 0 || g->heads_q == 0 || g->seq_q == 0 || g->seq_kv == 0 || g->head_dim == 0 ||
      g->head_dim > 256 || g->heads_q % g->heads_kv != 0) {
    return -1;
  }
  if (!isfinite(desc->scale)) return -1;
  g->group = g->heads_q / g->heads_kv;
  g->scale = desc->scale == 0.0f ? 1.0 / sqrt((double)g->head_dim) : (double)desc->scale;
  g->causal = desc->causal != 0;
  g->q = ref_strides(desc->q_strides, desc->layout, g->heads_q, g->seq_q, g->head_dim);
  g->k = ref_strides(desc->k_strides, desc->layout, g->heads_kv, g->seq_kv, g->head_dim);
  g->v = ref_strides(desc->v_strides, desc->layout, g->heads_kv, g->seq_kv, g->head_dim);
  g->o = ref_strides(desc->o_strides, desc->layout, g->heads_q, g->seq_q, g->head_dim);
  return 0;
}

/* Key length of batch b: kv_lengths[b] clamped to [0, seq_kv], or seq_kv without lengths. */
static size_t ref_key_length(const ref_geometry* g, const int32_t* kv_lengths, size_t b) {
  if (kv_lengths == NULL) return g->seq_kv;
  int32_t len = kv_lengths[b];
  if (len < 0) return 0;
  if ((size_t)len > g->seq_kv) return g->seq_kv;
  return (size_t)len;
}

/* Number of visible keys of row i: keys 0 .. n-1, where n is the smaller of the key length
 * and the causal limit. Causal: j <= i + (seq_kv - seq_q), in signed arithmetic, so with
 * seq_q > seq_kv the first seq_q - seq_kv rows see nothing. */
static size_t ref_visible_keys(const ref_geometry* g, const int32_t* kv_lengths, size_t b,
                               size_t i) {
  size_t n = ref_key_length(g, kv_lengths, b);
  if (g->causal) {
    int64_t last = (int64_t)i + (int64_t)g->seq_kv - (int64_t)g->seq_q; /* last visible j */
    if (last < 0) return 0;
    if ((uint64_t)last + 1 < (uint64_t)n) n = (size_t)last + 1;
  }
  return n;
}

static double ref_dot(const float* a, const float* b, size_t n) {
  double s = 0.0;
  for (size_t d = 0; d < n; ++d) s += (double)a[d] * (double)b[d];
  return s;
}

int clattn_ref_attention(const clattn_attention_desc* desc, const float* q, const float* k,
                         const float* v, const int32_t* kv_lengths, double* o, double* lse,
                         size_t rows_step) {
  ref_geometry g;
  if (ref_geometry_init(desc, &g) != 0) return -1;
  if (q == NULL || k == NULL || v == NULL || o == NULL) return -1;
  if (rows_step == 0) rows_step = 1;
  const size_t dim = g.head_dim;

  double* score = malloc(g.seq_kv * sizeof(double));
  if (score == NULL) return -1;
  double acc[256];

  for (size_t b = 0; b < g.batch; ++b) {
    for (size_t h = 0; h < g.heads_q; ++h) {
      const size_t hk = h / g.group;
      const float* kbase = k + b * g.k.batch + hk * g.k.head;
      const float* vbase = v + b * g.v.batch + hk * g.v.head;
      for (size_t i = 0; i < g.seq_q; i += rows_step) {
        const float* qrow = q + b * g.q.batch + h * g.q.head + i * g.q.seq;
        double* orow = o + b * g.o.batch + h * g.o.head + i * g.o.seq;
        const size_t n = ref_visible_keys(&g, kv_lengths, b, i);
        double row_lse = -INFINITY;
        for (size_t d = 0; d < dim; ++d) acc[d] = 0.0;
        if (n > 0) {
          double m = -INFINITY;
          for (size_t j = 0; j < n; ++j) {
            score[j] = g.scale * ref_dot(qrow, kbase + j * g.k.seq, dim);
            if (score[j] > m) m = score[j];
          }
          double l = 0.0;
          for (size_t j = 0; j < n; ++j) {
            const double p = exp(score[j] - m);
            const float* vrow = vbase + j * g.v.seq;
            l += p;
            for (size_t d = 0; d < dim; ++d) acc[d] += p * (double)vrow[d];
          }
          for (size_t d = 0; d < dim; ++d) acc[d] /= l;
          row_lse = m + log(l);
        }
        for (size_t d = 0; d < dim; ++d) orow[d] = acc[d];
        if (lse != NULL) lse[(b * g.heads_q + h) * g.seq_q + i] = row_lse;
      }
    }
  }
  free(score);
  return 0;
}

/* Error bound for one output row of a float32 kernel against this reference.
 *
 * First order in u = 2^-24 (float32 unit roundoff). For the row, let V be its visible keys,
 * n = |V|, S = max_{j in V} |scale| * sum_d |q_d k_jd| (the size of the score's terms) and
 * Vmax = max_{j in V, d} |v_jd|. The exact output is o = sum_j p_j v_j / sum_j p_j with
 * p_j = exp(s_j - m) for any shift m.
 *
 * 1. Scores. A D-term dot product, the scale multiply and a possible log2(e) prescale
 *    (exp2 form) give |t_j - s_j| <= (D + 2) u S (Higham's gamma_{D+2}, any summation
 *    order, FMA or not).
 * 2. Weights. The kernel forms exp(t_j - m) with its own running max m. The shift cancels in
 *    the ratio as long as numerator and denominator use the same m, which online softmax
 *    guarantees (rescales by exp(m_old - m_new) multiply both accumulators by the same
 *    rounded factor, so only the multiplications round; counted in 3). What remains per
 *    weight is a relative error eta <= (D + 2) u S from the score, 2 roundings of an argument
 *    |t_j - m| <= 2S (subtraction, log2(e) multiply: 4 u S) and the exp itself, which we
 *    allow 16 ulps (OpenCL's exp/exp2 allow 3-4; native and relaxed-math forms more):
 *        eta = (D + 6) u S + 16 u.
 *    Perturbing each weight by (1 + eta_j), |eta_j| <= eta, moves a weighted mean by
 *    sum_j w_j eta_j (v_j - o) / (1 + ...), and |v_j - o| <= 2 Vmax, so by <= 2 eta Vmax.
 * 3. Accumulation. Numerator and denominator are float sums of n nonnegative-weight terms,
 *    with one rounding per product and at most ceil(n / 16) rescales (block_n >= 16). Each
 *    then carries a relative error <= (n + ceil(n/16) + 2) u against sum_j p_j |v_j| <=
 *    Vmax * sum_j p_j and sum_j p_j respectively; the quotient's error is at most the sum
 *    of both, times Vmax, plus u |o| for the division:
 *        a = 2 (n + ceil(n/16) + 2) u + u.
 * Total, with a safety factor of 2 for second-order terms and the kernel's free choice of
 * summation order, plus an absolute floor of 1e-6 Vmax for exp implementations looser
 * than the 16 ulps above:
 *        tol = 2 Vmax (2 eta + a) + 1e-6 Vmax.
 * A row with no visible key (or all-zero values) gets 0: the kernel must then produce
 * exactly 0.
 *
 * Why it still catches broken kernels: with inputs in [-1, 1], S is about sqrt(D)/4 and
 * the bound comes to 1e-5..2e-4 for n <= 300 and D <= 128, and 6e-4 at n = 1000, D = 256,
 * while a correct float kernel stays around 1e-7 (about 1% of the bound). A wrong scale, head,
 * batch, layout or mask moves outputs by O(0.1). A single missed key, the subtlest bug, moves
 * a row by about |v_j - o| / n: measured on uniform inputs it exceeds this bound at least
 * 2.7 times for every D <= 256 and n <= 1000 (hundreds of times for n <= 64), and the LSE
 * check in the tests, with its own bound, at least 8 times. */
double clattn_ref_row_tolerance(const clattn_attention_desc* desc, const float* q, const float* k,
                                const float* v, const int32_t* kv_lengths, size_t b, size_t h,
                                size_t i) {
  ref_geometry g;
  if (ref_geometry_init(desc, &g) != 0 || q == NULL || k == NULL || v == NULL) return NAN;
  if (b >= g.batch || h >= g.heads_q || i >= g.seq_q) return NAN;
  const size_t dim = g.head_dim;
  const size_t hk = h / g.group;
  const float* qrow = q + b * g.q.batch + h * g.q.head + i * g.q.seq;
  const size_t n = ref_visible_keys(&g, kv_lengths, b, i);
  double s_max = 0.0, v_max = 0.0;
  for (size_t j = 0; j < n; ++j) {
    const float* krow = k + b * g.k.batch + hk * g.k.head + j * g.k.seq;
    const float* vrow = v + b * g.v.batch + hk * g.v.head + j * g.v.seq;
    double s = 0.0;
    for (size_t d = 0; d < dim; ++d) {
      s += fabs((double)qrow[d] * (double)krow[d]);
      if (fabs((double)vrow[d]) > v_max) v_max = fabs((double)vrow[d]);
    }
    s *= fabs(g.scale);
    if (s > s_max) s_max = s;
  }
  const double u = REF_U;
  const double nd = (double)n;
  const double eta = ((double)dim + 6.0) * u * s_max + 16.0 * u;
  const double a = 2.0 * (nd + ceil(nd / 16.0) + 2.0) * u + u;
  return 2.0 * v_max * (2.0 * eta + a) + 1e-6 * v_max;
}

/* xorshift64* (Vigna): fixed seeds give the same data on every platform. */
void clattn_ref_fill_uniform(float* x, size_t n, float lo, float hi, uint64_t* state) {
  uint64_t s = *state != 0 ? *state : 0x9E3779B97F4A7C15ull; /* zero is a fixed point */
  const double width = (double)hi - (double)lo;
  for (size_t i = 0; i < n; ++i) {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    const uint64_t r = s * 0x2545F4914F6CDD1Dull;
    const double unit = (double)(r >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
    float value = (float)((double)lo + width * unit);
    if (value >= hi && hi > lo) value = nextafterf(hi, lo); /* rounding may reach hi */
    x[i] = value;
  }
  *state = s;
}

/* ------------------------------------------------------------ the multi-head attention layer */

/* The layer's bound is statistical, not worst-case: a worst-case bound of the layer sums
 * every rounding error with the same sign through three matrix products and the softmax, and
 * at d_model 768 it allows a quarter of |y|, far above the effect of real bugs (one missed key
 * moves y by 2e-3). Instead, following Higham and Mary's probabilistic rounding error
 * analysis (SIAM J. Sci. Comput. 41(5), 2019), rounding errors are modelled as independent
 * and zero-mean, and the reference propagates a standard deviation sigma through the layer
 * to first order in u = 2^-24; the tolerance is REF_MHA_LAMBDA sigma.
 *
 * 1. Projections (GEMMs, any summation order): an n-term dot product plus bias, stored in
 *    float, commits n + 2 roundings, each at most u times a partial sum <= sum |terms|:
 *    sigma <= sqrt(n + 2) u sum |terms| (uniform roundings give sqrt(1/3) of that).
 * 2. Scores s_j = scale q·k_j: sigma_s^2 = scale^2 sum_d (sq_d^2 k_jd^2 + q_d^2 sk_jd^2)
 *    + ((D + 2) u S_j)^2, the last the core's own rounding (worst case, S_j = |scale| sum |q k|).
 * 3. Attention output O_d = sum_j p_j v_jd: a score error moves O_d by
 *    sum_j p_j ds_j (v_jd - O_d), a value error by sum_j p_j dv_jd, so
 *    A_d = sum_j p_j^2 sigma_s_j^2 (v_jd - O_d)^2 and B_d = sum_j p_j^2 sigma_v_jd^2. The
 *    core's own exp and accumulation roundings add (Vmax (16 u + 2 sqrt(n + n/16 + 2) u))^2
 *    to B_d (the core's worst-case terms of clattn_ref_row_tolerance, with sqrt(n) for n).
 * 4. Output y_c = sum_k O_k Wo_ck + bo_c: sigma_y^2 = D sum_k A_k Wo_ck^2 (score errors are
 *    shared by the D elements of a head: Cauchy-Schwarz) + sum_k B_k Wo_ck^2
 *    + (sqrt(H·D + 2) u (sum_k |O_k Wo_ck| + |bo_c|))^2 (the GEMM's roundings, as in 1).
 * REF_MHA_LAMBDA = 10 standard deviations; a row that sees no key has O = 0 exactly, so
 * y = bo up to the GEMM's rounding. Measured: the layer on PoCL lands at 0.5-2% of this
 * tolerance on every test shape, while dropping one key moves y by 24 tolerances (d_model
 * 768, 512 keys) to 280 (d_model 512, 65 keys). */
#define REF_MHA_LAMBDA 10.0

/* out[r, c] = sum_e in[r, e] w[c, e] + bias[c] for rows r < rows, c < cols, in double, and
 * sig[r, c] = sqrt(width + 2) u sum |terms| (point 1 above). */
static void ref_linear(const float* in, size_t rows, size_t width, const float* w,
                       const float* bias, size_t cols, double* out, double* sig) {
  const double root = sqrt((double)width + 2.0) * REF_U;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = in + r * width;
    for (size_t c = 0; c < cols; ++c) {
      const float* wc = w + c * width;
      double s = bias != NULL ? (double)bias[c] : 0.0;
      double a = fabs(s);
      for (size_t e = 0; e < width; ++e) {
        const double t = (double)xr[e] * (double)wc[e];
        s += t;
        a += fabs(t);
      }
      out[r * cols + c] = s;
      sig[r * cols + c] = root * a;
    }
  }
}

/* Rotates the heads of x [rows, heads·D] (sig its standard deviations, rotated alike) by
 * position row % seq, as reference.h describes. The rotation is orthogonal, so the
 * projection's errors keep their size: sig_a'^2 = c^2 sig_a^2 + s^2 sig_b^2. A float32
 * implementation adds its own errors: cos and sin of the angle are each within 16 u (OpenCL's
 * 4 ulp, plus the angle's own rounding after a careful reduction of large angles), and the two
 * products and the sum of a rotated element round once each, so an element is within
 * (16 + 3) u (|a| + |b|); counted here, with a factor 2 to spare, as one more independent
 * term of standard deviation 40 u (|a| + |b|) (a worst case taken as one sigma, as point 2 of
 * the model above does for the core's own rounding). */
static void ref_rope(const clattn_ref_mha_layer* L, size_t rows, size_t seq, size_t heads,
                     double* x, double* sig) {
  const size_t D = L->head_dim, dims = L->rope_dims != 0 ? L->rope_dims : D, half = dims / 2;
  const double theta = L->rope_theta != 0.0 ? L->rope_theta : 10000.0;
  const int neox = L->rope == CLATTN_ROPE_NEOX;
  for (size_t r = 0; r < rows; ++r) {
    const double pos = (double)(r % seq);
    for (size_t h = 0; h < heads; ++h) {
      double* xh = x + (r * heads + h) * D;
      double* sh = sig + (r * heads + h) * D;
      for (size_t i = 0; i < half; ++i) {
        const double angle = pos * pow(theta, -2.0 * (double)i / (double)dims);
        const double c = cos(angle), s = sin(angle);
        const size_t ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
        const double a = xh[ia], b = xh[ib], sa = sh[ia], sb = sh[ib];
        const double own = 40.0 * REF_U * (fabs(a) + fabs(b));
        xh[ia] = a * c - b * s;
        xh[ib] = a * s + b * c;
        sh[ia] = sqrt(c * c * sa * sa + s * s * sb * sb + own * own);
        sh[ib] = sqrt(s * s * sa * sa + c * c * sb * sb + own * own);
      }
    }
  }
}

/* Keys query row i of sequence b of a layer call sees (a prefix 0 .. n-1): its key length
 * (clamped to [0, seq_kv]), and with causal masks j <= i + seq_kv - seq. */
static size_t ref_mha_visible(size_t seq, size_t seq_kv, int causal, const int32_t* kv_lengths,
                              size_t b, size_t i) {
  size_t n = seq_kv;
  if (kv_lengths != NULL) {
    n = kv_lengths[b] < 0 ? 0 : (size_t)kv_lengths[b];
    if (n > seq_kv) n = seq_kv;
  }
  if (causal) {
    const int64_t last = (int64_t)i + (int64_t)seq_kv - (int64_t)seq;
    if (last < 0) {
      n = 0;
    } else if ((uint64_t)last + 1 < (uint64_t)n) {
      n = (size_t)last + 1;
    }
  }
  return n;
}

/* K or V stored in a 16-bit type: each element rounds once more, by up to half an ulp (at most
 * clattn_ref_dtype_rounding), a worst case counted as one more independent term of that
 * standard deviation (as point 2 of the model counts the core's own rounding). */
static void ref_storage(clattn_dtype dtype, size_t n, const double* x, double* sig) {
  if (dtype == CLATTN_DTYPE_F32) return;
  for (size_t i = 0; i < n; ++i) {
    const double r = clattn_ref_dtype_rounding(dtype, fabs(x[i]));
    sig[i] = sqrt(sig[i] * sig[i] + r * r);
  }
}

int clattn_ref_mha_forward(const clattn_ref_mha_layer* L, size_t batch, size_t seq, size_t seq_kv,
                           int causal, const float* x, const float* key, const float* value,
                           const int32_t* kv_lengths, double* y, double* tol) {
  if (L == NULL || x == NULL || y == NULL || L->wq == NULL || L->wk == NULL || L->wv == NULL ||
      L->wo == NULL) {
    return -1;
  }
  const int self = key == NULL && value == NULL;
  if (self) seq_kv = seq;
  if (!self && (key == NULL || value == NULL)) return -1;
  const size_t E = L->d_model, H = L->heads, D = L->head_dim;
  const size_t Hkv = L->heads_kv != 0 ? L->heads_kv : H;
  const size_t kd = self ? E : L->k_dim, vd = self ? E : L->v_dim;
  if (E == 0 || H == 0 || D == 0 || H % Hkv != 0 || batch == 0 || seq == 0 || seq_kv == 0 ||
      kd == 0 || vd == 0) {
    return -1;
  }
  const size_t rope_dims = L->rope_dims != 0 ? L->rope_dims : D;
  if (L->rope != 0 && (rope_dims % 2 != 0 || rope_dims > D || !(L->rope_theta >= 0.0))) return -1;
  const size_t HD = H * D, KD = Hkv * D, group = H / Hkv;
  const double scale = L->scale != 0.0 ? L->scale : 1.0 / sqrt((double)D);
  const size_t rows = batch * seq, rows_kv = batch * seq_kv;
  double* q = malloc(rows * HD * sizeof(double));
  double* sq = malloc(rows * HD * sizeof(double));
  double* k = malloc(rows_kv * KD * sizeof(double));
  double* sk = malloc(rows_kv * KD * sizeof(double));
  double* v = malloc(rows_kv * KD * sizeof(double));
  double* sv = malloc(rows_kv * KD * sizeof(double));
  double* o = malloc(rows * HD * sizeof(double));
  double* va = malloc(rows * HD * sizeof(double)); /* A_k: score-error variance of O_k */
  double* vb = malloc(rows * HD * sizeof(double)); /* B_k: the rest */
  double* score = malloc(seq_kv * sizeof(double));
  double* ss = malloc(seq_kv * sizeof(double)); /* sigma_s_j^2 */
  int rc = -1;
  if (!q || !sq || !k || !sk || !v || !sv || !o || !va || !vb || !score || !ss) goto done;

  ref_linear(x, rows, E, L->wq, L->bq, HD, q, sq);
  ref_linear(self ? x : key, rows_kv, kd, L->wk, L->bk, KD, k, sk);
  ref_linear(self ? x : value, rows_kv, vd, L->wv, L->bv, KD, v, sv);
  if (L->rope != 0) {
    ref_rope(L, rows, seq, H, q, sq);
    ref_rope(L, rows_kv, seq_kv, Hkv, k, sk);
  }
  ref_storage(L->kv_storage, rows_kv * KD, k, sk);
  ref_storage(L->kv_storage, rows_kv * KD, v, sv);

  const double u = REF_U;
  for (size_t b = 0; b < batch; ++b) {
    for (size_t i = 0; i < seq; ++i) {
      const size_t n = ref_mha_visible(seq, seq_kv, causal, kv_lengths, b, i);
      const size_t r = b * seq + i;
      for (size_t h = 0; h < H; ++h) {
        const double* qr = q + r * HD + h * D;
        const double* sqr = sq + r * HD + h * D;
        double* orow = o + r * HD + h * D;
        double* arow = va + r * HD + h * D;
        double* brow = vb + r * HD + h * D;
        for (size_t d = 0; d < D; ++d) orow[d] = arow[d] = brow[d] = 0.0;
        if (n == 0) continue;
        const size_t col = (h / group) * D;
        double m = -INFINITY, v_max = 0.0;
        for (size_t j = 0; j < n; ++j) {
          const size_t rk = (b * seq_kv + j) * KD + col;
          double s = 0.0, sa = 0.0, var = 0.0;
          for (size_t d = 0; d < D; ++d) {
            s += qr[d] * k[rk + d];
            sa += fabs(qr[d] * k[rk + d]);
            var +=
                sqr[d] * sqr[d] * k[rk + d] * k[rk + d] + qr[d] * qr[d] * sk[rk + d] * sk[rk + d];
            if (fabs(v[rk + d]) > v_max) v_max = fabs(v[rk + d]);
          }
          score[j] = s * scale;
          if (score[j] > m) m = score[j];
          const double own = ((double)D + 2.0) * u * sa * fabs(scale);
          ss[j] = scale * scale * var + own * own;
        }
        double l = 0.0;
        for (size_t j = 0; j < n; ++j) {
          score[j] = exp(score[j] - m); /* now the unnormalised weight */
          l += score[j];
          const double* vr = v + (b * seq_kv + j) * KD + col;
          for (size_t d = 0; d < D; ++d) orow[d] += score[j] * vr[d];
        }
        for (size_t d = 0; d < D; ++d) orow[d] /= l;
        const double nd = (double)n;
        const double core = v_max * (16.0 * u + 2.0 * sqrt(nd + ceil(nd / 16.0) + 2.0) * u);
        for (size_t j = 0; j < n; ++j) {
          const double p = score[j] / l, p2 = p * p;
          const size_t rk = (b * seq_kv + j) * KD + col;
          for (size_t d = 0; d < D; ++d) {
            const double dv = v[rk + d] - orow[d];
            arow[d] += p2 * ss[j] * dv * dv;
            brow[d] += p2 * sv[rk + d] * sv[rk + d];
          }
        }
        for (size_t d = 0; d < D; ++d) brow[d] += core * core;
      }
    }
  }

  const double root = sqrt((double)HD + 2.0) * u;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < E; ++c) {
      const float* wc = L->wo + c * HD;
      double s = L->bo != NULL ? (double)L->bo[c] : 0.0;
      double a = fabs(s), var = 0.0;
      for (size_t kk = 0; kk < HD; ++kk) {
        const double wv = (double)wc[kk];
        const double t = o[r * HD + kk] * wv;
        s += t;
        a += fabs(t);
        var += ((double)D * va[r * HD + kk] + vb[r * HD + kk]) * wv * wv;
      }
      y[r * E + c] = s;
      if (tol != NULL) tol[r * E + c] = REF_MHA_LAMBDA * sqrt(var + root * root * a * a);
    }
  }
  rc = 0;
done:
  free(q);
  free(sq);
  free(k);
  free(sk);
  free(v);
  free(sv);
  free(o);
  free(va);
  free(vb);
  free(score);
  free(ss);
  return rc;
}

double clattn_ref_dtype_rounding(clattn_dtype dtype, double x) {
  /* Unit roundoff 2^-p for p significand bits (24, 11, 8), and half the subnormal spacing
   * 2^(emin - p + 1) / 2 (emin -126, -14, -126). */
  double u, floor_abs;
  switch (dtype) {
    case CLATTN_DTYPE_F32:
      u = ldexp(1.0, -24);
      floor_abs = ldexp(1.0, -150);
      break;
    case CLATTN_DTYPE_F16:
      u = ldexp(1.0, -11);
      floor_abs = ldexp(1.0, -25);
      break;
    case CLATTN_DTYPE_BF16:
      u = ldexp(1.0, -8);
      floor_abs = ldexp(1.0, -134);
      break;
    default:
      return NAN;
  }
  const double r = u * fabs(x);
  return r > floor_abs ? r : floor_abs;
}

/* ------------------------------------------------------------ probabilities (attention maps) */

int clattn_ref_attention_probs(const clattn_attention_desc* desc, const float* q, const float* k,
                               const int32_t* kv_lengths, size_t head_begin, size_t heads,
                               size_t row_begin, size_t rows, size_t col_begin, size_t cols,
                               double* p) {
  ref_geometry g;
  if (ref_geometry_init(desc, &g) != 0 || q == NULL || k == NULL || p == NULL) return -1;
  if (heads == 0 || rows == 0 || cols == 0 || head_begin >= g.heads_q ||
      heads > g.heads_q - head_begin || row_begin >= g.seq_q || rows > g.seq_q - row_begin ||
      col_begin >= g.seq_kv || cols > g.seq_kv - col_begin) {
    return -1;
  }
  double* score = malloc(g.seq_kv * sizeof(double));
  if (score == NULL) return -1;
  for (size_t b = 0; b < g.batch; ++b) {
    for (size_t hh = 0; hh < heads; ++hh) {
      const size_t h = head_begin + hh, hk = h / g.group;
      for (size_t r = 0; r < rows; ++r) {
        const size_t i = row_begin + r;
        const float* qrow = q + b * g.q.batch + h * g.q.head + i * g.q.seq;
        double* prow = p + ((b * heads + hh) * rows + r) * cols;
        for (size_t c = 0; c < cols; ++c) prow[c] = 0.0;
        /* The softmax over the row's visible keys (all of them, not only the block's). */
        const size_t n = ref_visible_keys(&g, kv_lengths, b, i);
        if (n == 0) continue;
        double m = -INFINITY;
        for (size_t j = 0; j < n; ++j) {
          score[j] =
              g.scale * ref_dot(qrow, k + b * g.k.batch + hk * g.k.head + j * g.k.seq, g.head_dim);
          if (score[j] > m) m = score[j];
        }
        double l = 0.0;
        for (size_t j = 0; j < n; ++j) l += exp(score[j] - m);
        for (size_t c = 0; c < cols && col_begin + c < n; ++c) {
          prow[c] = exp(score[col_begin + c] - m) / l;
        }
      }
    }
  }
  free(score);
  return 0;
}

/* The layer's weights: projections (and rotations) as clattn_ref_mha_forward's, then per row
 * the softmax p_j of the visible scores. Tolerance, in the statistical model above: a score
 * error ds_j moves p_j by p_j (ds_j - sum_k p_k ds_k), so with the scores' standard deviations
 * sigma_k (point 2) sigma_p_j^2 <= p_j^2 (sigma_j^2 + sum_k p_k^2 sigma_k^2) (the cross term
 * -2 p_j sigma_j^2 dropped, which only enlarges it). The probability kernel's own rounding is
 * relative to p_j: its exp2 (16 u, as clattn_ref_row_tolerance allows), the rounding of its
 * exponent (the score's, counted in sigma_j, and 2 u (|s_j| + |lse|) for the product by
 * log2(e) and the subtraction) and the fused core's LSE, whose float sum of n terms commits
 * (n + ceil(n/16) + 2) u relative at worst and its log 8 u (|lse| + 1) (as in
 * test_lse_tolerance); these worst cases join as one more standard deviation, as point 2 does
 * for the core's dot product. tol_j = REF_MHA_LAMBDA sigma_p_j. The mean over heads sums H
 * independent errors (sqrt(sum_h sigma_h^2) / H) plus its own float sum, at most (H + 1) u of
 * the mean. */
int clattn_ref_mha_weights(const clattn_ref_mha_layer* L, size_t batch, size_t seq, size_t seq_kv,
                           int causal, const float* x, const float* key, const float* value,
                           const int32_t* kv_lengths, double* w, double* w_tol, double* mean,
                           double* mean_tol) {
  (void)value; /* the weights do not depend on the values */
  if (L == NULL || x == NULL || L->wq == NULL || L->wk == NULL) return -1;
  const int self = key == NULL;
  if (self) seq_kv = seq;
  const size_t E = L->d_model, H = L->heads, D = L->head_dim;
  const size_t Hkv = L->heads_kv != 0 ? L->heads_kv : H;
  const size_t kd = self ? E : L->k_dim;
  if (E == 0 || H == 0 || D == 0 || H % Hkv != 0 || batch == 0 || seq == 0 || seq_kv == 0 ||
      kd == 0) {
    return -1;
  }
  const size_t rope_dims = L->rope_dims != 0 ? L->rope_dims : D;
  if (L->rope != 0 && (rope_dims % 2 != 0 || rope_dims > D || !(L->rope_theta >= 0.0))) return -1;
  const size_t HD = H * D, KD = Hkv * D, group = H / Hkv;
  const double scale = L->scale != 0.0 ? L->scale : 1.0 / sqrt((double)D);
  const size_t rows = batch * seq, rows_kv = batch * seq_kv;
  double* q = malloc(rows * HD * sizeof(double));
  double* sq = malloc(rows * HD * sizeof(double));
  double* k = malloc(rows_kv * KD * sizeof(double));
  double* sk = malloc(rows_kv * KD * sizeof(double));
  double* score = malloc(seq_kv * sizeof(double));
  double* ss = malloc(seq_kv * sizeof(double));  /* sigma_s_j^2 */
  double* var = malloc(seq_kv * sizeof(double)); /* a row's summed variances over heads */
  int rc = -1;
  if (!q || !sq || !k || !sk || !score || !ss || !var) goto done;
  ref_linear(x, rows, E, L->wq, L->bq, HD, q, sq);
  ref_linear(self ? x : key, rows_kv, kd, L->wk, L->bk, KD, k, sk);
  if (L->rope != 0) {
    ref_rope(L, rows, seq, H, q, sq);
    ref_rope(L, rows_kv, seq_kv, Hkv, k, sk);
  }
  ref_storage(L->kv_storage, rows_kv * KD, k, sk);
  const double u = REF_U;
  for (size_t b = 0; b < batch; ++b) {
    for (size_t i = 0; i < seq; ++i) {
      const size_t n = ref_mha_visible(seq, seq_kv, causal, kv_lengths, b, i);
      const size_t r = b * seq + i;
      double* mrow = mean != NULL ? mean + r * seq_kv : NULL;
      double* mtol = mean_tol != NULL ? mean_tol + r * seq_kv : NULL;
      for (size_t j = 0; j < seq_kv; ++j) {
        var[j] = 0.0;
        if (mrow != NULL) mrow[j] = 0.0;
        if (mtol != NULL) mtol[j] = 0.0;
      }
      for (size_t h = 0; h < H; ++h) {
        double* wrow = w != NULL ? w + ((b * H + h) * seq + i) * seq_kv : NULL;
        double* trow = w_tol != NULL ? w_tol + ((b * H + h) * seq + i) * seq_kv : NULL;
        for (size_t j = 0; j < seq_kv; ++j) {
          if (wrow != NULL) wrow[j] = 0.0;
          if (trow != NULL) trow[j] = 0.0;
        }
        if (n == 0) continue;
        const double* qr = q + r * HD + h * D;
        const double* sqr = sq + r * HD + h * D;
        const size_t col = (h / group) * D;
        double m = -INFINITY;
        for (size_t j = 0; j < n; ++j) {
          const size_t rk = (b * seq_kv + j) * KD + col;
          double s = 0.0, sa = 0.0, v2 = 0.0;
          for (size_t d = 0; d < D; ++d) {
            s += qr[d] * k[rk + d];
            sa += fabs(qr[d] * k[rk + d]);
            v2 += sqr[d] * sqr[d] * k[rk + d] * k[rk + d] + qr[d] * qr[d] * sk[rk + d] * sk[rk + d];
          }
          score[j] = s * scale;
          if (score[j] > m) m = score[j];
          const double own = ((double)D + 2.0) * u * sa * fabs(scale);
          ss[j] = scale * scale * v2 + own * own;
        }
        double l = 0.0;
        for (size_t j = 0; j < n; ++j) l += exp(score[j] - m);
        const double lse = m + log(l), nd = (double)n;
        double shared = 0.0; /* sum_k p_k^2 sigma_k^2 */
        for (size_t j = 0; j < n; ++j) {
          const double pj = exp(score[j] - m) / l;
          shared += pj * pj * ss[j];
        }
        for (size_t j = 0; j < n; ++j) {
          const double pj = exp(score[j] - m) / l;
          const double own = 16.0 * u + 2.0 * u * (fabs(score[j]) + fabs(lse)) +
                             (nd + ceil(nd / 16.0) + 2.0) * u + 8.0 * u * (fabs(lse) + 1.0);
          const double v = pj * pj * (ss[j] + shared + own * own);
          if (wrow != NULL) wrow[j] = pj;
          if (trow != NULL) trow[j] = REF_MHA_LAMBDA * sqrt(v);
          if (mrow != NULL) mrow[j] += pj;
          var[j] += v;
        }
      }
      for (size_t j = 0; j < n && mrow != NULL; ++j) {
        mrow[j] /= (double)H;
        if (mtol != NULL) {
          mtol[j] = REF_MHA_LAMBDA * sqrt(var[j]) / (double)H + ((double)H + 1.0) * u * mrow[j];
        }
      }
    }
  }
  rc = 0;
done:
  free(q);
  free(sq);
  free(k);
  free(sk);
  free(score);
  free(ss);
  free(var);
  return rc;
}
