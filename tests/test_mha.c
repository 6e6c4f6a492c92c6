/* The multi-head attention layer against the double-precision reference of the whole layer
 * (reference.c): PyTorch-sized shapes, GQA, causal, key lengths, cross-attention, biases or
 * none, packed or separate weights, host and device entry points, and bad input. */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn_tuning.h"
#include "reference.h"
#include "test_util.h"

/* ---------------------------------------------------------------- a layer with random weights */

typedef struct layer_case {
  size_t d_model, heads, heads_kv, head_dim; /* head_dim 0: d_model / heads */
  size_t k_dim, v_dim;                       /* cross-attention input widths, 0: d_model */
  size_t batch, seq, seq_kv;                 /* seq_kv 0: self-attention */
  int causal;
  int bias;    /* biases on every projection */
  int packed;  /* in_proj_weight / in_proj_bias instead of separate q/k/v */
  int lengths; /* 1: kv_lengths cycling through seq_kv, 0 and 2/3 of seq_kv */
  float scale; /* 0: 1/sqrt(head_dim) */
  uint64_t seed;
  clattn_rope_style rope; /* rotary embeddings: style, dims (0: head_dim), theta (0: 10000) */
  size_t rope_dims;
  float rope_theta;
  clattn_dtype dtype; /* the layer's storage: x, key, value, y and the weights */
} layer_case;

/* Host weights in PyTorch's layout, and the data of one call. */
typedef struct layer_data {
  size_t e, h, hkv, d, kd, vd, hd, kvd;
  float *w_in, *b_in; /* packed [Wq; Wk; Wv] and [bq; bk; bv] (Wk, Wv as [kvd, kd], [kvd, vd]) */
  float *wo, *bo;
  float *x, *key, *value, *y;
  int32_t* lengths;
  size_t rows, rows_kv;
} layer_data;

static float* alloc_uniform(size_t n, float bound, uint64_t* state) {
  float* p = malloc((n ? n : 1) * sizeof(float));
  cr_assert_not_null(p, "out of host memory");
  clattn_ref_fill_uniform(p, n, -bound, bound, state);
  return p;
}

static void data_init(layer_data* L, const layer_case* c) {
  memset(L, 0, sizeof *L);
  uint64_t state = c->seed;
  L->e = c->d_model;
  L->h = c->heads;
  L->hkv = c->heads_kv ? c->heads_kv : c->heads;
  L->d = c->head_dim ? c->head_dim : c->d_model / c->heads;
  L->kd = c->k_dim ? c->k_dim : c->d_model;
  L->vd = c->v_dim ? c->v_dim : L->kd;
  L->hd = L->h * L->d;
  L->kvd = L->hkv * L->d;
  /* Weights like PyTorch's default initialisation: uniform within 1/sqrt(fan_in). */
  const size_t wq_n = L->hd * L->e, wk_n = L->kvd * L->kd, wv_n = L->kvd * L->vd;
  L->w_in = malloc((wq_n + wk_n + wv_n) * sizeof(float));
  cr_assert_not_null(L->w_in);
  clattn_ref_fill_uniform(L->w_in, wq_n, -1.0f / sqrtf((float)L->e), 1.0f / sqrtf((float)L->e),
                          &state);
  clattn_ref_fill_uniform(L->w_in + wq_n, wk_n, -1.0f / sqrtf((float)L->kd),
                          1.0f / sqrtf((float)L->kd), &state);
  clattn_ref_fill_uniform(L->w_in + wq_n + wk_n, wv_n, -1.0f / sqrtf((float)L->vd),
                          1.0f / sqrtf((float)L->vd), &state);
  L->wo = alloc_uniform(L->e * L->hd, 1.0f / sqrtf((float)L->hd), &state);
  if (c->bias) {
    L->b_in = alloc_uniform(L->hd + 2 * L->kvd, 0.5f, &state);
    L->bo = alloc_uniform(L->e, 0.5f, &state);
  }
  L->rows = c->batch * c->seq;
  const size_t seq_kv = c->seq_kv ? c->seq_kv : c->seq;
  L->rows_kv = c->batch * seq_kv;
  L->x = alloc_uniform(L->rows * L->e, 1.0f, &state);
  if (c->seq_kv) {
    L->key = alloc_uniform(L->rows_kv * L->kd, 1.0f, &state);
    L->value =
        L->kd == L->vd && (c->seed & 1) ? L->key : alloc_uniform(L->rows_kv * L->vd, 1.0f, &state);
  }
  L->y = malloc(L->rows * L->e * sizeof(float));
  cr_assert_not_null(L->y);
  for (size_t i = 0; i < L->rows * L->e; ++i) L->y[i] = NAN;
  /* A 16-bit layer's inputs and weights are values of its dtype (the reference reads them
   * exactly). */
  test_round_to(L->w_in, wq_n + wk_n + wv_n, c->dtype);
  test_round_to(L->wo, L->e * L->hd, c->dtype);
  if (L->b_in) test_round_to(L->b_in, L->hd + 2 * L->kvd, c->dtype);
  if (L->bo) test_round_to(L->bo, L->e, c->dtype);
  test_round_to(L->x, L->rows * L->e, c->dtype);
  if (L->key) test_round_to(L->key, L->rows_kv * L->kd, c->dtype);
  if (L->value && L->value != L->key) test_round_to(L->value, L->rows_kv * L->vd, c->dtype);
  if (c->lengths) {
    L->lengths = malloc(c->batch * sizeof(int32_t));
    cr_assert_not_null(L->lengths);
    for (size_t b = 0; b < c->batch; ++b) {
      const size_t k = b % 3;
      L->lengths[b] = (int32_t)(k == 0 ? seq_kv : k == 1 ? 0 : (seq_kv * 2 + 2) / 3);
    }
  }
}

static void data_free(layer_data* L) {
  if (L->value != L->key) free(L->value);
  free(L->key);
  void* ptrs[] = {L->w_in, L->b_in, L->wo, L->bo, L->x, L->y, L->lengths};
  for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; ++i) free(ptrs[i]);
  memset(L, 0, sizeof *L);
}

static clattn_mha_desc data_desc(const layer_case* c) {
  clattn_mha_desc d = CLATTN_MHA_DESC_INIT;
  d.d_model = c->d_model;
  d.heads = c->heads;
  d.heads_kv = c->heads_kv;
  d.head_dim = c->head_dim;
  d.k_dim = c->k_dim;
  d.v_dim = c->v_dim;
  d.scale = c->scale;
  d.rope = c->rope;
  d.rope_dims = c->rope_dims;
  d.rope_theta = c->rope_theta;
  d.dtype = c->dtype;
  return d;
}

/* Host-array weights, packed or separate, the arrays holding elements of dtype. */
static clattn_mha_weights data_weights_typed(const layer_data* L, int packed, clattn_dtype dtype) {
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  size_t item = 0;
  clattn_dtype_size(dtype, &item);
  const char* w_in = (const char*)L->w_in;
  const char* b_in = (const char*)L->b_in;
  const size_t wk_at = L->hd * L->e, wv_at = wk_at + L->kvd * L->kd;
  if (packed) {
    w.in_proj_weight.host = w_in;
    w.in_proj_bias.host = b_in;
  } else {
    w.q_proj_weight.host = w_in;
    w.k_proj_weight.host = w_in + wk_at * item;
    w.v_proj_weight.host = w_in + wv_at * item;
    if (L->b_in) {
      w.q_proj_bias.host = b_in;
      w.k_proj_bias.host = b_in + L->hd * item;
      w.v_proj_bias.host = b_in + (L->hd + L->kvd) * item;
    }
  }
  w.out_proj_weight.host = L->wo;
  w.out_proj_bias.host = L->bo;
  return w;
}

/* Host-array float32 weights, packed or separate. */
static clattn_mha_weights data_weights(const layer_data* L, int packed) {
  return data_weights_typed(L, packed, CLATTN_DTYPE_F32);
}

/* Checks L->y against the reference; returns the largest |error| / tolerance. */
static double data_check(const layer_data* L, const layer_case* c, const char* label) {
  clattn_ref_mha_layer ref = {.d_model = L->e,
                              .heads = L->h,
                              .heads_kv = L->hkv,
                              .head_dim = L->d,
                              .k_dim = L->kd,
                              .v_dim = L->vd,
                              .scale = c->scale,
                              .wq = L->w_in,
                              .wk = L->w_in + L->hd * L->e,
                              .wv = L->w_in + L->hd * L->e + L->kvd * L->kd,
                              .wo = L->wo,
                              .bo = L->bo,
                              .rope = (int)c->rope,
                              .rope_dims = c->rope_dims,
                              .rope_theta = c->rope_theta};
  if (L->b_in) {
    ref.bq = L->b_in;
    ref.bk = L->b_in + L->hd;
    ref.bv = L->b_in + L->hd + L->kvd;
  }
  const size_t n = L->rows * L->e;
  double* want = malloc(n * sizeof(double));
  double* tol = malloc(n * sizeof(double));
  cr_assert(want && tol, "out of host memory");
  cr_assert_eq(clattn_ref_mha_forward(&ref, c->batch, c->seq, c->seq_kv, c->causal, L->x, L->key,
                                      L->value, L->lengths, want, tol),
               0, "%s: the reference rejected the case", label);
  size_t bad = 0;
  double worst = 0.0;
  char first[256] = "";
  for (size_t i = 0; i < n; ++i) {
    const double err = fabs((double)L->y[i] - want[i]);
    /* A 16-bit y is the float32 result rounded once more. */
    if (c->dtype != CLATTN_DTYPE_F32) {
      tol[i] += clattn_ref_dtype_rounding(c->dtype, fabs(want[i]) + tol[i]);
    }
    const double ratio = tol[i] > 0.0 ? err / tol[i] : (err == 0.0 ? 0.0 : INFINITY);
    if (!(ratio <= worst)) worst = ratio;
    if (!(err <= tol[i]) && bad++ == 0) {
      snprintf(first, sizeof first, "y[row %zu, col %zu] = %.9g, reference %.9g, tol %.3g",
               i / L->e, i % L->e, (double)L->y[i], want[i], tol[i]);
    }
  }
  free(want);
  free(tol);
  cr_assert_eq(bad, 0, "%s: %zu of %zu outputs out of tolerance; first: %s", label, bad, n, first);
  return worst;
}

static void case_label(char* buf, size_t size, const layer_case* c) {
  snprintf(buf, size,
           "E=%zu H=%zu Hkv=%zu D=%zu kdim=%zu vdim=%zu B=%zu N=%zu Nkv=%zu causal=%d bias=%d "
           "packed=%d lengths=%d rope=%d/%zu/%g %s",
           c->d_model, c->heads, c->heads_kv, c->head_dim, c->k_dim, c->v_dim, c->batch, c->seq,
           c->seq_kv, c->causal, c->bias, c->packed, c->lengths, (int)c->rope, c->rope_dims,
           (double)c->rope_theta, clattn_dtype_name(c->dtype));
}

/* Creates the layer from host weights, runs the host form and checks it. */
static void run_case(const layer_case* c) {
  layer_case small = *c;
  if (test_small()) { /* slow simulators (Oclgrind): the same layers on shorter sequences */
    if (small.seq > 16) small.seq = 16;
    if (small.seq_kv > 20) small.seq_kv = 20;
    /* and narrower: the same heads of 8 dims (the GEMMs dominate a simulated run) */
    if (small.d_model > 128 && !small.head_dim && !small.k_dim && !small.v_dim) {
      small.d_model = small.heads * 8;
    }
    c = &small;
  }
  char label[256];
  case_label(label, sizeof label, c);
  clattn_context* ctx = test_context(NULL);
  layer_data L;
  data_init(&L, c);
  const clattn_mha_desc desc = data_desc(c);
  /* The same data in the layer's storage (copies for float32). */
  layer_data B = L;
  const size_t w_in_n = L.hd * L.e + L.kvd * (L.kd + L.vd);
  B.w_in = test_to_dtype(L.w_in, w_in_n, c->dtype);
  B.wo = test_to_dtype(L.wo, L.e * L.hd, c->dtype);
  B.b_in = L.b_in ? test_to_dtype(L.b_in, L.hd + 2 * L.kvd, c->dtype) : NULL;
  B.bo = L.bo ? test_to_dtype(L.bo, L.e, c->dtype) : NULL;
  B.x = test_to_dtype(L.x, L.rows * L.e, c->dtype);
  B.key = L.key ? test_to_dtype(L.key, L.rows_kv * L.kd, c->dtype) : NULL;
  B.value = L.value ? test_to_dtype(L.value, L.rows_kv * L.vd, c->dtype) : NULL;
  B.y = test_to_dtype(L.y, L.rows * L.e, c->dtype);
  const clattn_mha_weights w = data_weights_typed(&B, c->packed, c->dtype);
  clattn_mha* mha = NULL;
  clattn_status st = clattn_mha_create(ctx, &desc, &w, &mha);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: clattn_mha_create: %s (%s)", label, clattn_status_name(st),
               test_last_error(ctx));
  clattn_mha_info info = CLATTN_MHA_INFO_INIT;
  cr_assert_eq(clattn_mha_get_info(mha, &info), CLATTN_SUCCESS);
  cr_assert_eq(info.dtype, c->dtype);
  cr_assert_eq(info.gemm_path,
               c->dtype == CLATTN_DTYPE_F32 ? CLATTN_MHA_GEMM_F32 : CLATTN_MHA_GEMM_F32_CONVERTED);
  clattn_device_info dev = CLATTN_DEVICE_INFO_INIT;
  cr_assert_eq(clattn_context_get_device_info(ctx, &dev), CLATTN_SUCCESS);
  const char* env = getenv("CLATTN_GEMM");
  const int own = env && *env ? strcmp(env, "clattn") == 0 : dev.type == CLATTN_DEVICE_TYPE_CPU;
  cr_assert_eq(info.gemm_kernel, own ? CLATTN_GEMM_CLATTN : CLATTN_GEMM_CLBLAST,
               "%s: gemm_kernel %d", label, (int)info.gemm_kernel);
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = c->batch;
  fwd.seq = c->seq;
  fwd.seq_kv = c->seq_kv;
  fwd.causal = c->causal;
  st = clattn_mha_forward_host(mha, &fwd, B.x, B.key, L.value == L.key ? B.key : B.value, B.y,
                               L.lengths);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: clattn_mha_forward_host: %s (%s)", label,
               clattn_status_name(st), test_last_error(ctx));
  clattn_convert(B.y, c->dtype, L.y, CLATTN_DTYPE_F32, L.rows * L.e);
  void* copies[] = {B.w_in, B.wo, B.b_in, B.bo, B.x, B.key, B.value, B.y};
  for (size_t i = 0; i < sizeof copies / sizeof copies[0]; ++i) free(copies[i]);
  const double worst = data_check(&L, c, label);
  cr_log_info("%s: largest error/tolerance %.3g", label, worst);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  data_free(&L);
}

/* ---------------------------------------------------------------- shapes */

static layer_case layer_cases[] = {
    /* PyTorch-sized layers, self-attention. */
    {.d_model = 384, .heads = 12, .batch = 2, .seq = 96, .causal = 1, .bias = 1, .packed = 1},
    {.d_model = 512, .heads = 8, .batch = 3, .seq = 65, .bias = 1, .lengths = 1},
    {.d_model = 768, .heads = 12, .batch = 1, .seq = 512, .causal = 1, .bias = 1},
    {.d_model = 64, .heads = 1, .batch = 3, .seq = 1, .bias = 1, .packed = 1},
    {.d_model = 64, .heads = 1, .batch = 2, .seq = 200, .causal = 1, .lengths = 1},
    /* No biases at all, packed weights. */
    {.d_model = 128, .heads = 4, .batch = 2, .seq = 33, .packed = 1},
    /* GQA and MQA. */
    {.d_model = 256,
     .heads = 8,
     .heads_kv = 2,
     .batch = 3,
     .seq = 70,
     .causal = 1,
     .bias = 1,
     .lengths = 1},
    {.d_model = 192, .heads = 6, .heads_kv = 1, .batch = 1, .seq = 40, .bias = 1, .packed = 1},
    /* A head dim that does not divide d_model. */
    {.d_model = 96, .heads = 4, .head_dim = 40, .batch = 2, .seq = 17, .causal = 1, .bias = 1},
    /* A scale of one's own. */
    {.d_model = 128, .heads = 2, .batch = 2, .seq = 24, .bias = 1, .scale = 0.3f},
    /* Cross-attention: one input for keys and values (odd seeds) or two. */
    {.d_model = 384,
     .heads = 12,
     .batch = 2,
     .seq = 50,
     .seq_kv = 70,
     .bias = 1,
     .lengths = 1,
     .seed = 1},
    {.d_model = 256,
     .heads = 8,
     .heads_kv = 4,
     .batch = 2,
     .seq = 30,
     .seq_kv = 45,
     .causal = 1,
     .bias = 1,
     .packed = 1,
     .seed = 2},
    {.d_model = 128,
     .heads = 4,
     .k_dim = 96,
     .v_dim = 80,
     .batch = 3,
     .seq = 20,
     .seq_kv = 9,
     .bias = 1,
     .lengths = 1,
     .seed = 3},
    {.d_model = 64, .heads = 2, .batch = 1, .seq = 12, .seq_kv = 5, .causal = 1, .seed = 5},
};

/* The cases with their seeds: given, or 1000 + 2i (even: separate key and value inputs). */
static layer_case* layer_cases_seeded(size_t* n) {
  *n = sizeof layer_cases / sizeof layer_cases[0];
  for (size_t i = 0; i < *n; ++i) {
    if (!layer_cases[i].seed) layer_cases[i].seed = 1000 + 2 * i;
  }
  return layer_cases;
}

ParameterizedTestParameters(mha, layer) {
  size_t n;
  layer_case* cases = layer_cases_seeded(&n);
  return cr_make_param_array(layer_case, cases, n);
}

ParameterizedTest(layer_case* c, mha, layer, .timeout = 600.0) { run_case(c); }

/* 16-bit layers (weights, x, key, value and y in f16 or bf16; float32 inside): self- and
 * cross-attention, GQA, causal, key lengths, packed and separate weights, with and without
 * biases, a rotation. */
ParameterizedTestParameters(mha, dtype) {
  static layer_case cases[] = {
      {.d_model = 384, .heads = 12, .batch = 2, .seq = 96, .causal = 1, .bias = 1, .packed = 1},
      {.d_model = 256,
       .heads = 8,
       .heads_kv = 2,
       .batch = 3,
       .seq = 70,
       .causal = 1,
       .bias = 1,
       .lengths = 1},
      {.d_model = 128,
       .heads = 4,
       .k_dim = 96,
       .v_dim = 80,
       .batch = 3,
       .seq = 20,
       .seq_kv = 9,
       .bias = 1,
       .lengths = 1},
      {.d_model = 256,
       .heads = 8,
       .heads_kv = 4,
       .batch = 2,
       .seq = 30,
       .seq_kv = 45,
       .causal = 1,
       .packed = 1,
       .seed = 7},
      {.d_model = 128, .heads = 4, .batch = 2, .seq = 40, .bias = 1, .rope = CLATTN_ROPE_NEOX},
  };
  enum { N = sizeof cases / sizeof cases[0] };
  static layer_case typed[2 * N];
  for (size_t t = 0; t < 2; ++t) {
    for (size_t i = 0; i < N; ++i) {
      typed[t * N + i] = cases[i];
      typed[t * N + i].dtype = t ? CLATTN_DTYPE_BF16 : CLATTN_DTYPE_F16;
      if (!typed[t * N + i].seed) typed[t * N + i].seed = 2000 + 2 * i;
    }
  }
  return cr_make_param_array(layer_case, typed, 2 * N);
}

ParameterizedTest(layer_case* c, mha, dtype, .timeout = 600.0) { run_case(c); }

/* Rotary embeddings on Q and K (reference.c rotates the double-precision projections by the
 * formula and carries their error through the rotation): both styles, over all of each
 * head's dims and over part of them, GQA and MQA, cross-attention (keys at their own
 * positions), a theta of one's own, and positions past 500 (angles of hundreds of turns). */
ParameterizedTestParameters(mha, rope) {
  static layer_case cases[] = {
      {.d_model = 128,
       .heads = 4,
       .batch = 2,
       .seq = 37,
       .causal = 1,
       .bias = 1,
       .rope = CLATTN_ROPE_NEOX},
      {.d_model = 128,
       .heads = 4,
       .batch = 2,
       .seq = 37,
       .causal = 1,
       .bias = 1,
       .rope = CLATTN_ROPE_GPTJ},
      /* Partial: the first 16 (NEOX) or 8 (GPTJ) of 32 dims rotate, the rest pass through. */
      {.d_model = 128,
       .heads = 4,
       .batch = 2,
       .seq = 29,
       .bias = 1,
       .packed = 1,
       .rope = CLATTN_ROPE_NEOX,
       .rope_dims = 16},
      {.d_model = 128,
       .heads = 4,
       .batch = 1,
       .seq = 29,
       .causal = 1,
       .rope = CLATTN_ROPE_GPTJ,
       .rope_dims = 8,
       .rope_theta = 500000.0f},
      /* GQA and MQA (head_dim 64, Llama's), and a head dim that does not divide d_model. */
      {.d_model = 256,
       .heads = 8,
       .heads_kv = 2,
       .batch = 3,
       .seq = 45,
       .causal = 1,
       .bias = 1,
       .lengths = 1,
       .rope = CLATTN_ROPE_NEOX},
      {.d_model = 256,
       .heads = 4,
       .heads_kv = 1,
       .batch = 2,
       .seq = 33,
       .causal = 1,
       .rope = CLATTN_ROPE_GPTJ},
      {.d_model = 96,
       .heads = 4,
       .head_dim = 40,
       .heads_kv = 2,
       .batch = 2,
       .seq = 17,
       .bias = 1,
       .rope = CLATTN_ROPE_NEOX,
       .rope_dims = 20,
       .rope_theta = 100.0f},
      /* Cross-attention: queries at 0 .. seq-1, keys at 0 .. seq_kv-1. */
      {.d_model = 128,
       .heads = 4,
       .heads_kv = 2,
       .k_dim = 96,
       .v_dim = 80,
       .batch = 2,
       .seq = 20,
       .seq_kv = 31,
       .causal = 1,
       .bias = 1,
       .rope = CLATTN_ROPE_NEOX},
      /* Positions up to 599: the fastest pair turns 95 times. */
      {.d_model = 64,
       .heads = 2,
       .batch = 1,
       .seq = 600,
       .causal = 1,
       .bias = 1,
       .rope = CLATTN_ROPE_NEOX},
  };
  const size_t n = sizeof cases / sizeof cases[0];
  for (size_t i = 0; i < n; ++i) cases[i].seed = 3000 + 2 * i;
  return cr_make_param_array(layer_case, cases, n);
}

ParameterizedTest(layer_case* c, mha, rope, .timeout = 600.0) { run_case(c); }

/* The rotation matters: the same layer without it, or with the other style, is far from the
 * result with it (the reference's tolerance separates them). */
Test(mha, rope_is_applied, .timeout = 600.0) {
  clattn_context* ctx = test_context(NULL);
  layer_case c = {.d_model = 64,
                  .heads = 2,
                  .batch = 1,
                  .seq = 24,
                  .causal = 1,
                  .bias = 1,
                  .rope = CLATTN_ROPE_NEOX,
                  .seed = 31};
  layer_data L;
  data_init(&L, &c);
  const clattn_mha_weights w = data_weights(&L, 1);
  const size_t n = L.rows * L.e;
  float* ys[3];
  const clattn_rope_style styles[3] = {CLATTN_ROPE_NEOX, CLATTN_ROPE_GPTJ, CLATTN_ROPE_NONE};
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = c.batch;
  fwd.seq = c.seq;
  fwd.causal = c.causal;
  for (int i = 0; i < 3; ++i) {
    layer_case ci = c;
    ci.rope = styles[i];
    const clattn_mha_desc desc = data_desc(&ci);
    clattn_mha* mha = NULL;
    cr_assert_eq(clattn_mha_create(ctx, &desc, &w, &mha), CLATTN_SUCCESS, "%s",
                 test_last_error(ctx));
    ys[i] = malloc(n * sizeof(float));
    cr_assert_not_null(ys[i]);
    cr_assert_eq(clattn_mha_forward_host(mha, &fwd, L.x, NULL, NULL, ys[i], NULL), CLATTN_SUCCESS,
                 "%s", test_last_error(ctx));
    clattn_mha_destroy(mha);
  }
  for (int i = 1; i < 3; ++i) {
    double diff = 0.0;
    for (size_t j = 0; j < n; ++j) diff = fmax(diff, fabs((double)ys[0][j] - (double)ys[i][j]));
    cr_expect_gt(diff, 1e-3, "rope %d gives y within %g of NEOX's", (int)styles[i], diff);
  }
  /* The first row is at position 0: no rotation, so all three agree there (one key, its
   * own, whatever its rotation: the output is its V). */
  for (int i = 1; i < 3; ++i) {
    for (size_t j = 0; j < L.e; ++j) {
      cr_expect(fabs((double)ys[0][j] - (double)ys[i][j]) < 1e-5, "row 0, col %zu: %g vs %g", j,
                (double)ys[0][j], (double)ys[i][j]);
    }
  }
  for (int i = 0; i < 3; ++i) free(ys[i]);
  data_free(&L);
  clattn_context_destroy(ctx);
}

/* Bad rotary fields are refused at creation, each with a message. */
Test(mha, rope_bad_input) {
  clattn_context* ctx = test_context(NULL);
  layer_case c = {.d_model = 64, .heads = 4, .batch = 1, .seq = 4, .seed = 12};
  layer_data L;
  data_init(&L, &c);
  const clattn_mha_weights w = data_weights(&L, 1);
  struct {
    int rope;
    size_t dims;
    float theta;
    clattn_status want;
    const char* says;
  } bad[] = {
      {3, 0, 0.0f, CLATTN_ERROR_INVALID_ARGUMENT, "rope is 3"},
      {-1, 0, 0.0f, CLATTN_ERROR_INVALID_ARGUMENT, "rope is -1"},
      {CLATTN_ROPE_NEOX, 7, 0.0f, CLATTN_ERROR_INVALID_SHAPE, "rope_dims 7"},
      {CLATTN_ROPE_GPTJ, 18, 0.0f, CLATTN_ERROR_INVALID_SHAPE, "rope_dims 18"},
      {CLATTN_ROPE_NEOX, 0, -1.0f, CLATTN_ERROR_INVALID_ARGUMENT, "rope_theta"},
      {CLATTN_ROPE_NEOX, 0, NAN, CLATTN_ERROR_INVALID_ARGUMENT, "rope_theta"},
      {CLATTN_ROPE_GPTJ, 8, INFINITY, CLATTN_ERROR_INVALID_ARGUMENT, "rope_theta"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    clattn_mha_desc desc = data_desc(&c);
    desc.rope = (clattn_rope_style)bad[i].rope;
    desc.rope_dims = bad[i].dims;
    desc.rope_theta = bad[i].theta;
    clattn_mha* mha = (clattn_mha*)&desc;
    cr_expect_eq(clattn_mha_create(ctx, &desc, &w, &mha), bad[i].want, "case %zu", i);
    cr_expect_null(mha, "case %zu", i);
    cr_expect(strstr(test_last_error(ctx), bad[i].says) != NULL, "case %zu: %s", i,
              test_last_error(ctx));
  }
  /* rope_dims 0 means head_dim, which must then be even. */
  layer_case odd = {.d_model = 63, .heads = 7, .batch = 1, .seq = 4, .seed = 14};
  layer_data O;
  data_init(&O, &odd);
  const clattn_mha_weights wo = data_weights(&O, 1);
  clattn_mha_desc desc = data_desc(&odd);
  desc.rope = CLATTN_ROPE_NEOX;
  clattn_mha* mha = NULL;
  cr_expect_eq(clattn_mha_create(ctx, &desc, &wo, &mha), CLATTN_ERROR_INVALID_SHAPE);
  cr_expect(strstr(test_last_error(ctx), "odd") != NULL, "%s", test_last_error(ctx));
  desc.rope_dims = 8;
  cr_expect_eq(clattn_mha_create(ctx, &desc, &wo, &mha), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  clattn_mha_destroy(mha);
  data_free(&O);
  data_free(&L);
  clattn_context_destroy(ctx);
}

/* N from 1 upward on one small layer, causal and not. */
Test(mha, sequence_lengths, .timeout = 600.0) {
  static const size_t seqs[] = {1, 2, 7, 16, 31, 64, 129};
  for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; ++i) {
    for (int causal = 0; causal < 2; ++causal) {
      layer_case c = {.d_model = 64,
                      .heads = 4,
                      .batch = 2,
                      .seq = seqs[i],
                      .causal = causal,
                      .bias = 1,
                      .packed = (int)(i & 1),
                      .lengths = causal,
                      .seed = 77 + 2 * i};
      run_case(&c);
    }
  }
}

/* Packed and separate weights give the same layer (bit for bit: same buffers, same GEMMs). */
Test(mha, packed_equals_separate) {
  clattn_context* ctx = test_context(NULL);
  layer_case c = {.d_model = 96, .heads = 3, .batch = 2, .seq = 21, .bias = 1, .seed = 9};
  layer_data L;
  data_init(&L, &c);
  const clattn_mha_desc desc = data_desc(&c);
  float* y2 = malloc(L.rows * L.e * sizeof(float));
  cr_assert_not_null(y2);
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = c.batch;
  fwd.seq = c.seq;
  for (int packed = 0; packed < 2; ++packed) {
    const clattn_mha_weights w = data_weights(&L, packed);
    clattn_mha* mha = NULL;
    cr_assert_eq(clattn_mha_create(ctx, &desc, &w, &mha), CLATTN_SUCCESS, "%s",
                 test_last_error(ctx));
    cr_assert_eq(clattn_mha_forward_host(mha, &fwd, L.x, NULL, NULL, packed ? y2 : L.y, NULL),
                 CLATTN_SUCCESS, "%s", test_last_error(ctx));
    clattn_mha_destroy(mha);
  }
  cr_assert_eq(memcmp(L.y, y2, L.rows * L.e * sizeof(float)), 0);
  data_check(&L, &c, "packed_equals_separate");
  free(y2);
  data_free(&L);
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- device entry point */

static cl_mem device_buffer(cl_context cl_ctx, size_t floats);

static cl_mem device_buffer(cl_context cl_ctx, size_t floats) {
  cl_int err;
  cl_mem m = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, floats * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  return m;
}

/* Weights from cl_mem at offsets, x at an offset, y prefilled with NaN, a user event in the
 * wait list, an event out; the workspace grows (big call after small) and is reused (small
 * after big); y may be x itself. */
Test(mha, device_buffers, .timeout = 600.0) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx;
  cl_command_queue queue;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, &queue), CLATTN_SUCCESS);
  layer_case big = {.d_model = 128,
                    .heads = 4,
                    .heads_kv = 2,
                    .batch = 2,
                    .seq = 80,
                    .causal = 1,
                    .bias = 1,
                    .lengths = 1,
                    .seed = 42};
  layer_data L;
  data_init(&L, &big);
  const size_t pad = 5, f = sizeof(float);
  const size_t n_in = L.hd * L.e + 2 * L.kvd * L.e;
  /* Every weight in one buffer, at odd offsets. */
  const size_t at_in = pad, at_bin = at_in + n_in + pad, at_wo = at_bin + L.hd + 2 * L.kvd + pad,
               at_bo = at_wo + L.e * L.hd + pad, total = at_bo + L.e;
  cl_mem wbuf = device_buffer(cl_ctx, total);
  cr_assert_eq(
      clEnqueueWriteBuffer(queue, wbuf, CL_TRUE, at_in * f, n_in * f, L.w_in, 0, NULL, NULL),
      CL_SUCCESS);
  cr_assert_eq(clEnqueueWriteBuffer(queue, wbuf, CL_TRUE, at_bin * f, (L.hd + 2 * L.kvd) * f,
                                    L.b_in, 0, NULL, NULL),
               CL_SUCCESS);
  cr_assert_eq(
      clEnqueueWriteBuffer(queue, wbuf, CL_TRUE, at_wo * f, L.e * L.hd * f, L.wo, 0, NULL, NULL),
      CL_SUCCESS);
  cr_assert_eq(clEnqueueWriteBuffer(queue, wbuf, CL_TRUE, at_bo * f, L.e * f, L.bo, 0, NULL, NULL),
               CL_SUCCESS);
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight = (clattn_mha_tensor){.mem = wbuf, .offset = at_in};
  w.in_proj_bias = (clattn_mha_tensor){.mem = wbuf, .offset = at_bin};
  w.out_proj_weight = (clattn_mha_tensor){.mem = wbuf, .offset = at_wo};
  w.out_proj_bias = (clattn_mha_tensor){.mem = wbuf, .offset = at_bo};
  const clattn_mha_desc desc = data_desc(&big);
  clattn_mha* mha = NULL;
  cr_assert_eq(clattn_mha_create(ctx, &desc, &w, &mha), CLATTN_SUCCESS, "%s", test_last_error(ctx));
  clReleaseMemObject(wbuf); /* the layer keeps its own copy */

  size_t ws_big = 0, ws_small = 0;
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = big.batch;
  fwd.seq = big.seq;
  fwd.causal = 1;
  cr_assert_eq(clattn_mha_workspace_size(mha, &fwd, 0, &ws_big), CLATTN_SUCCESS);
  cr_assert_geq(ws_big, big.batch * big.seq * (L.hd + 2 * L.kvd) * f);
  /* Q, K, V and O, plus CLBlast's copies of one GEMM's A and C where they are not multiples
   * of its tiles (rows and widths padded, to at most 256 here). */
  const size_t rows_up = (big.batch * big.seq + 255) / 256 * 256,
               width_up = ((L.e > L.hd ? L.e : L.hd) + 255) / 256 * 256;
  cr_assert_leq(ws_big, (big.batch * big.seq * (2 * L.hd + 2 * L.kvd) + 2 * rows_up * width_up) * f,
                "O(B·N·E) workspace");

  const size_t x_off = 3, io = L.rows * L.e;
  cl_int err;
  cl_mem x = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, (x_off + io) * f, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_mem y = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, io * f, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_mem lengths = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                  big.batch * sizeof(int32_t), L.lengths, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cr_assert_eq(clEnqueueWriteBuffer(queue, x, CL_TRUE, x_off * f, io * f, L.x, 0, NULL, NULL),
               CL_SUCCESS);
  cr_assert_eq(clEnqueueWriteBuffer(queue, y, CL_TRUE, 0, io * f, L.y, 0, NULL, NULL),
               CL_SUCCESS); /* NaN */

  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = x;
  b.x_offset = x_off;
  b.y = y;
  b.kv_lengths = lengths;

  /* A small call first (workspace made), then the big one (grown), then small (reused). */
  for (int round = 0; round < 3; ++round) {
    layer_case c = big;
    if (round != 1) {
      c.batch = 1;
      c.seq = 9;
    }
    fwd.batch = c.batch;
    fwd.seq = c.seq;
    cr_assert_eq(clattn_mha_workspace_size(mha, &fwd, 0, &ws_small), CLATTN_SUCCESS);
    cl_event gate = clCreateUserEvent(cl_ctx, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_event done = NULL;
    clattn_status st = clattn_mha_forward(mha, &fwd, &b, queue, 1, &gate, &done);
    cr_assert_eq(st, CLATTN_SUCCESS, "forward: %s (%s)", clattn_status_name(st),
                 test_last_error(ctx));
    cr_assert_not_null(done);
    cl_int state = CL_QUEUED;
    clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof state, &state, NULL);
    cr_assert_neq(state, CL_COMPLETE, "the layer ran before its wait list completed");
    clSetUserEventStatus(gate, CL_COMPLETE);
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
    clReleaseEvent(gate);
    float* got = malloc(io * f);
    cr_assert_not_null(got);
    cr_assert_eq(
        clEnqueueReadBuffer(queue, y, CL_TRUE, 0, c.batch * c.seq * L.e * f, got, 0, NULL, NULL),
        CL_SUCCESS);
    /* The small call reads the first rows of x and lengths: check against its own case. */
    layer_data S = L;
    S.rows = c.batch * c.seq;
    S.y = got;
    char label[64];
    snprintf(label, sizeof label, "device round %d", round);
    /* Rows of the small case are the first c.seq rows of x (batch 0). */
    data_check(&S, &c, label);
    free(got);
  }
  cr_assert_lt(ws_small, ws_big);

  /* In place: y = x. */
  fwd.batch = big.batch;
  fwd.seq = big.seq;
  b.y = x;
  b.y_offset = x_off;
  cr_assert_eq(clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, NULL), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  cr_assert_eq(clEnqueueReadBuffer(queue, x, CL_TRUE, x_off * f, io * f, L.y, 0, NULL, NULL),
               CL_SUCCESS);
  data_check(&L, &big, "in place");

  clReleaseMemObject(x);
  clReleaseMemObject(y);
  clReleaseMemObject(lengths);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  data_free(&L);
}

/* ---------------------------------------------------------------- errors */

Test(mha, bad_input) {
  clattn_context* ctx = test_context(NULL);
  layer_case c = {.d_model = 64, .heads = 4, .batch = 2, .seq = 8, .bias = 1, .seed = 4};
  layer_data L;
  data_init(&L, &c);
  clattn_mha_desc desc = data_desc(&c);
  clattn_mha_weights w = data_weights(&L, 1);
  clattn_mha* mha = (clattn_mha*)&desc; /* must be reset to NULL on failure */

  cr_assert_eq(clattn_mha_destroy(NULL), CLATTN_SUCCESS);
  cr_assert_eq(clattn_mha_create(NULL, &desc, &w, &mha), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_null(mha);
  cr_assert_eq(clattn_mha_create(ctx, NULL, &w, &mha), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_mha_create(ctx, &desc, NULL, &mha), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_mha_create(ctx, &desc, &w, NULL), CLATTN_ERROR_INVALID_ARGUMENT);

  clattn_mha_desc d = desc;
  d.struct_size = 8;
  cr_assert_eq(clattn_mha_create(ctx, &d, &w, &mha), CLATTN_ERROR_INVALID_ARGUMENT);
  d = desc;
  d.heads = 5; /* 64 % 5 != 0 and no head_dim */
  cr_assert_eq(clattn_mha_create(ctx, &d, &w, &mha), CLATTN_ERROR_INVALID_SHAPE);
  cr_assert(strstr(test_last_error(ctx), "divisible") != NULL, "%s", test_last_error(ctx));
  d = desc;
  d.heads_kv = 3; /* 4 % 3 */
  cr_assert_eq(clattn_mha_create(ctx, &d, &w, &mha), CLATTN_ERROR_INVALID_SHAPE);
  d = desc;
  d.d_model = 0;
  cr_assert_eq(clattn_mha_create(ctx, &d, &w, &mha), CLATTN_ERROR_INVALID_SHAPE);
  d = desc;
  d.head_dim = 300;
  cr_assert_eq(clattn_mha_create(ctx, &d, &w, &mha), CLATTN_ERROR_INVALID_SHAPE);
  d = desc;
  d.k_dim = 32; /* packed weights need k_dim = d_model */
  cr_assert_eq(clattn_mha_create(ctx, &d, &w, &mha), CLATTN_ERROR_INVALID_ARGUMENT);

  clattn_mha_weights bad = w;
  bad.in_proj_weight.host = NULL; /* no input weights */
  cr_assert_eq(clattn_mha_create(ctx, &desc, &bad, &mha), CLATTN_ERROR_INVALID_ARGUMENT);
  bad = w;
  bad.out_proj_weight.host = NULL;
  cr_assert_eq(clattn_mha_create(ctx, &desc, &bad, &mha), CLATTN_ERROR_INVALID_ARGUMENT);
  bad = w;
  bad.q_proj_weight.host = L.w_in; /* packed and separate */
  cr_assert_eq(clattn_mha_create(ctx, &desc, &bad, &mha), CLATTN_ERROR_INVALID_ARGUMENT);
  bad = data_weights(&L, 0);
  bad.v_proj_weight.host = NULL; /* separate, one missing */
  cr_assert_eq(clattn_mha_create(ctx, &desc, &bad, &mha), CLATTN_ERROR_INVALID_ARGUMENT);
  bad = w;
  bad.struct_size = 1;
  cr_assert_eq(clattn_mha_create(ctx, &desc, &bad, &mha), CLATTN_ERROR_INVALID_ARGUMENT);

  /* A weight buffer too small, and one with both a host array and a cl_mem. */
  cl_context cl_ctx;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  cl_int err;
  cl_mem small = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY, 16 * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  bad = w;
  bad.out_proj_weight = (clattn_mha_tensor){.mem = small};
  cr_assert_eq(clattn_mha_create(ctx, &desc, &bad, &mha), CLATTN_ERROR_BUFFER_TOO_SMALL);
  bad.out_proj_weight.host = L.wo;
  cr_assert_eq(clattn_mha_create(ctx, &desc, &bad, &mha), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_null(mha);

  cr_assert_eq(clattn_mha_create(ctx, &desc, &w, &mha), CLATTN_SUCCESS, "%s", test_last_error(ctx));
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = c.batch;
  fwd.seq = c.seq;
  int32_t lengths[2] = {3, (int32_t)c.seq + 1};
  cr_assert_eq(clattn_mha_forward_host(mha, &fwd, L.x, NULL, NULL, L.y, lengths),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert(strstr(test_last_error(ctx), "kv_lengths[1]") != NULL, "%s", test_last_error(ctx));
  lengths[1] = -1;
  cr_assert_eq(clattn_mha_forward_host(mha, &fwd, L.x, NULL, NULL, L.y, lengths),
               CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_mha_forward_desc f2 = fwd;
  f2.seq_kv = c.seq + 1; /* self-attention with another key length */
  cr_assert_eq(clattn_mha_forward_host(mha, &f2, L.x, NULL, NULL, L.y, NULL),
               CLATTN_ERROR_INVALID_SHAPE);
  f2 = fwd;
  f2.seq = 0;
  cr_assert_eq(clattn_mha_forward_host(mha, &f2, L.x, NULL, NULL, L.y, NULL),
               CLATTN_ERROR_INVALID_SHAPE);
  f2 = fwd;
  f2.batch = SIZE_MAX / 2; /* beyond 32-bit indexing, and overflowing size_t on the way */
  size_t ws = 0;
  cr_assert_eq(clattn_mha_workspace_size(mha, &f2, 0, &ws), CLATTN_ERROR_UNSUPPORTED);
  cr_assert_eq(clattn_mha_workspace_size(mha, &f2, 1, &ws), CLATTN_ERROR_UNSUPPORTED);
  f2.batch = 1;
  f2.seq_kv = SIZE_MAX / 3;
  cr_assert_eq(clattn_mha_workspace_size(mha, &f2, 1, &ws), CLATTN_ERROR_UNSUPPORTED);
  f2 = fwd;
  f2.struct_size = 0;
  cr_assert_eq(clattn_mha_forward_host(mha, &f2, L.x, NULL, NULL, L.y, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_mha_forward_host(mha, &fwd, NULL, NULL, NULL, L.y, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_mha_forward_host(NULL, &fwd, L.x, NULL, NULL, L.y, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);

  /* Device form: buffers too small, NULL buffers, a wait list without events. */
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = small;
  b.y = small;
  cl_event ev = (cl_event)&desc;
  cr_assert_eq(clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, &ev),
               CLATTN_ERROR_BUFFER_TOO_SMALL);
  cr_assert_null(ev);
  cl_mem xbuf = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, L.rows * L.e * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  b.x = xbuf;
  b.y = xbuf;
  b.x_offset = 1; /* one float past the end */
  cr_assert_eq(clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, NULL),
               CLATTN_ERROR_BUFFER_TOO_SMALL);
  b.x_offset = 0;
  b.key = small; /* cross-attention with a key buffer too small for seq_kv rows */
  cr_assert_eq(clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, NULL),
               CLATTN_ERROR_BUFFER_TOO_SMALL);
  b.key = NULL;
  b.kv_lengths = small; /* fine: 64 bytes hold 2 lengths */
  cr_assert_eq(clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, NULL), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  b.kv_lengths = NULL;
  b.value = xbuf; /* value without key */
  cr_assert_eq(clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  b.value = NULL;
  b.y = NULL;
  cr_assert_eq(clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  b.y = xbuf;
  cr_assert_eq(clattn_mha_forward(mha, &fwd, &b, NULL, 2, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_mha_forward(mha, &fwd, NULL, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  /* Still usable after all that. */
  cr_assert_eq(clattn_mha_forward_host(mha, &fwd, L.x, NULL, NULL, L.y, NULL), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  data_check(&L, &c, "after errors");
  clReleaseMemObject(small);
  clReleaseMemObject(xbuf);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  data_free(&L);
}

/* A layer whose key/value widths differ from d_model (and from each other) refuses
 * self-attention and a key input standing for the value too. */
Test(mha, input_widths) {
  clattn_context* ctx = test_context(NULL);
  layer_case c = {.d_model = 32,
                  .heads = 2,
                  .k_dim = 16,
                  .v_dim = 12,
                  .batch = 1,
                  .seq = 4,
                  .seq_kv = 4,
                  .seed = 6};
  layer_data L;
  data_init(&L, &c);
  const clattn_mha_desc desc = data_desc(&c);
  const clattn_mha_weights w = data_weights(&L, 0);
  clattn_mha* mha = NULL;
  cr_assert_eq(clattn_mha_create(ctx, &desc, &w, &mha), CLATTN_SUCCESS, "%s", test_last_error(ctx));
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = 1;
  fwd.seq = 4;
  cr_assert_eq(clattn_mha_forward_host(mha, &fwd, L.x, NULL, NULL, L.y, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_mha_forward_host(mha, &fwd, L.x, L.key, NULL, L.y, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_mha_forward_host(mha, &fwd, L.x, L.key, L.value, L.y, NULL), CLATTN_SUCCESS,
               "%s", test_last_error(ctx));
  data_check(&L, &c, "k_dim 16, v_dim 12");
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  data_free(&L);
}

/* ---------------------------------------------------------------- threads */

typedef struct thread_job {
  clattn_mha* mha;
  cl_context cl_ctx;
  cl_device_id device;
  const layer_data* data;
  const float* x; /* the thread's own input: different per thread, so mixed calls show */
  const clattn_mha_forward_desc* fwd;
  float* y; /* the thread's last result */
  clattn_status status;
  cl_int cl_err;
} thread_job;

static void* thread_run(void* arg) {
  thread_job* j = arg;
  const size_t bytes = j->data->rows * j->data->e * sizeof(float);
  cl_int err = CL_SUCCESS;
  cl_command_queue q = clCreateCommandQueue(j->cl_ctx, j->device, 0, &err);
  cl_mem x = NULL, y = NULL;
  if (err == CL_SUCCESS) {
    x = clCreateBuffer(j->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes, (void*)j->x,
                       &err);
  }
  if (err == CL_SUCCESS) y = clCreateBuffer(j->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  for (int rep = 0; rep < 4 && err == CL_SUCCESS && j->status == CLATTN_SUCCESS; ++rep) {
    clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
    b.x = x;
    b.y = y;
    j->status = clattn_mha_forward(j->mha, j->fwd, &b, q, 0, NULL, NULL);
    if (j->status == CLATTN_SUCCESS) {
      err = clEnqueueReadBuffer(q, y, CL_TRUE, 0, bytes, j->y, 0, NULL, NULL);
    }
  }
  j->cl_err = err;
  if (x) clReleaseMemObject(x);
  if (y) clReleaseMemObject(y);
  if (q) clReleaseCommandQueue(q);
  return NULL;
}

/* One layer, four threads, each on its own queue: the shared workspace must not mix calls. */
Test(mha, threads_share_a_layer, .timeout = 600.0) {
  clattn_context* ctx = test_context(NULL);
  /* Its simulator runs one kernel per process at a time and asserts otherwise. */
  test_skip_on_oclgrind(ctx, "cannot run kernels from several threads at once");
  layer_case c = {
      .d_model = 64, .heads = 4, .batch = 2, .seq = 40, .causal = 1, .bias = 1, .seed = 8};
  layer_data L;
  data_init(&L, &c);
  const clattn_mha_desc desc = data_desc(&c);
  const clattn_mha_weights w = data_weights(&L, 1);
  clattn_mha* mha = NULL;
  cr_assert_eq(clattn_mha_create(ctx, &desc, &w, &mha), CLATTN_SUCCESS, "%s", test_last_error(ctx));
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = c.batch;
  fwd.seq = c.seq;
  fwd.causal = c.causal;
  enum { THREADS = 4 };
  thread_job jobs[THREADS];
  pthread_t tid[THREADS];
  cl_context cl_ctx;
  cl_device_id device;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, &device, NULL), CLATTN_SUCCESS);
  const size_t n = L.rows * L.e;
  float* xs[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    xs[t] = malloc(n * sizeof(float));
    cr_assert_not_null(xs[t]);
    for (size_t i = 0; i < n; ++i) xs[t][i] = L.x[(i + (size_t)t * 7919) % n];
    jobs[t] = (thread_job){.mha = mha,
                           .cl_ctx = cl_ctx,
                           .device = device,
                           .data = &L,
                           .x = xs[t],
                           .fwd = &fwd,
                           .y = malloc(n * sizeof(float))};
    cr_assert_not_null(jobs[t].y);
    cr_assert_eq(pthread_create(&tid[t], NULL, thread_run, &jobs[t]), 0);
  }
  for (int t = 0; t < THREADS; ++t) pthread_join(tid[t], NULL);
  for (int t = 0; t < THREADS; ++t) {
    cr_assert_eq(jobs[t].status, CLATTN_SUCCESS, "thread %d: %s", t,
                 clattn_status_name(jobs[t].status));
    cr_assert_eq(jobs[t].cl_err, CL_SUCCESS, "thread %d: OpenCL error %d", t, jobs[t].cl_err);
    layer_data T = L;
    T.x = xs[t];
    T.y = jobs[t].y;
    data_check(&T, &c, "thread");
    free(jobs[t].y);
    free(xs[t]);
  }
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  data_free(&L);
}

/* ---------------------------------------------------------------- what a forward enqueues */

/* This executable defines two OpenCL entry points, which the library and CLBlast (linked to
 * libOpenCL dynamically) reach before libOpenCL's: while `trace_on` is set, kernel launches
 * are recorded by name and buffer creations counted. Otherwise they only pass the call on. */
static int trace_on;
static char trace_names[512][64];
static int trace_launches, trace_buffers;

cl_int clEnqueueNDRangeKernel(cl_command_queue queue, cl_kernel kernel, cl_uint dim,
                              const size_t* offset, const size_t* global, const size_t* local,
                              cl_uint num_wait, const cl_event* wait, cl_event* event) {
  static cl_int (*real)(cl_command_queue, cl_kernel, cl_uint, const size_t*, const size_t*,
                        const size_t*, cl_uint, const cl_event*, cl_event*);
  if (!real) *(void**)&real = dlsym(RTLD_NEXT, "clEnqueueNDRangeKernel");
  if (trace_on && trace_launches < 512) {
    char* name = trace_names[trace_launches++];
    if (clGetKernelInfo(kernel, CL_KERNEL_FUNCTION_NAME, 64, name, NULL) != CL_SUCCESS) {
      snprintf(name, 64, "?");
    }
  }
  return real(queue, kernel, dim, offset, global, local, num_wait, wait, event);
}

cl_mem clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size, void* host,
                      cl_int* err) {
  static cl_mem (*real)(cl_context, cl_mem_flags, size_t, void*, cl_int*);
  if (!real) *(void**)&real = dlsym(RTLD_NEXT, "clCreateBuffer");
  if (trace_on) trace_buffers++;
  return real(context, flags, size, host, err);
}

/* Runs one traced forward call (after an untraced one, which builds and sizes everything)
 * and returns how many of its kernels are CLBlast's copies (pad, copy or transpose), with
 * the launches of GEMM kernels (CLBlast's Xgemm or clattn's clattn_gemm_nn) in *gemms. */
static int traced_forward(clattn_mha* mha, const clattn_mha_forward_desc* fwd,
                          const clattn_mha_buffers* b, cl_command_queue queue, int* gemms) {
  for (int traced = 0; traced < 2; ++traced) {
    trace_launches = trace_buffers = 0;
    trace_on = traced;
    cr_assert_eq(clattn_mha_forward(mha, fwd, b, queue, 0, NULL, NULL), CLATTN_SUCCESS);
    trace_on = 0;
    cr_assert_eq(clFinish(queue), CL_SUCCESS);
  }
  int copies = 0;
  *gemms = 0;
  for (int i = 0; i < trace_launches; ++i) {
    const char* n = trace_names[i];
    if (strcmp(n, "Xgemm") == 0 || strcmp(n, "clattn_gemm_nn") == 0) ++*gemms;
    if (strncmp(n, "Copy", 4) == 0 || strncmp(n, "Pad", 3) == 0 || strstr(n, "Transpose")) {
      ++copies;
    }
  }
  return copies;
}

/* How many buffers one call of the attention core alone creates for itself at a layer's
 * self-attention shape (its scratch, which the layer does not lend it), after a first call. */
static int core_buffers(clattn_context* ctx, cl_context cl_ctx, cl_command_queue queue,
                        const layer_data* L, size_t batch, size_t seq) {
  const size_t width = L->hd;
  clattn_attention_desc d = CLATTN_ATTENTION_DESC_INIT;
  d.dtype = CLATTN_DTYPE_F32;
  d.batch = batch;
  d.heads_q = d.heads_kv = L->h;
  d.seq_q = d.seq_kv = seq;
  d.head_dim = L->d;
  d.q_strides = (clattn_strides){.batch = seq * width, .head = L->d, .seq = width};
  d.k_strides = d.v_strides = d.o_strides = d.q_strides;
  cl_mem t = device_buffer(cl_ctx, batch * seq * width);
  clattn_attention_buffers ab = CLATTN_ATTENTION_BUFFERS_INIT;
  ab.q = ab.k = ab.v = t;
  ab.o = device_buffer(cl_ctx, batch * seq * width);
  for (int traced = 0; traced < 2; ++traced) {
    trace_buffers = 0;
    trace_on = traced;
    cr_assert_eq(clattn_attention(ctx, &d, &ab, NULL, queue, 0, NULL, NULL), CLATTN_SUCCESS);
    trace_on = 0;
    cr_assert_eq(clFinish(queue), CL_SUCCESS);
  }
  clReleaseMemObject(t);
  clReleaseMemObject(ab.o);
  return trace_buffers;
}

/* A forward call at the README's shape is its four GEMM kernels on the caller's buffers and
 * the layer's, with no padding or transposing copy around them: with clattn's GEMM kernel
 * (own 1) at every shape and offset; with CLBlast (own 0) and clattn's parameters for it
 * (PoCL's CPU devices) where the matrices are multiples of its tiles, while x at an offset
 * and a length no tile divides need CLBlast's copies, into the workspace. No call after the
 * first creates a buffer (beyond those the attention core creates for itself). */
static void forward_copies(int own) {
  cr_assert_eq(setenv("CLATTN_GEMM", own ? "clattn" : "clblast", 1), 0);
  clattn_context* ctx = test_context(NULL);
  unsetenv("CLATTN_GEMM");
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  clattn_tuning_info tuning = CLATTN_TUNING_INFO_INIT;
  cr_assert_eq(clattn_context_get_device_info(ctx, &info), CLATTN_SUCCESS);
  cr_assert_eq(clattn_context_get_tuning_info(ctx, &tuning), CLATTN_SUCCESS);
  if (!own && (info.type != CLATTN_DEVICE_TYPE_CPU ||
               !strstr(info.platform_name, "Portable Computing Language") || tuning.gemm_source)) {
    clattn_context_destroy(ctx);
    cr_skip_test(
        "clattn's own CLBlast parameters are in force on PoCL's CPU devices only, "
        "without tuned ones");
  }
  cl_context cl_ctx;
  cl_command_queue queue;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, &queue), CLATTN_SUCCESS);
  layer_case c = {.d_model = 768, .heads = 12, .batch = 1, .seq = 512, .bias = 1, .seed = 21};
  if (test_small()) { /* slow simulators (Oclgrind): 4 tiles of 32 wide, 2 of 8 rows */
    c.d_model = 128;
    c.heads = 2;
    c.seq = 16;
  }
  layer_data L;
  data_init(&L, &c);
  const clattn_mha_desc desc = data_desc(&c);
  const clattn_mha_weights w = data_weights(&L, 1);
  clattn_mha* mha = NULL;
  cr_assert_eq(clattn_mha_create(ctx, &desc, &w, &mha), CLATTN_SUCCESS, "%s", test_last_error(ctx));
  const size_t f = sizeof(float), io = L.rows * L.e, x_off = 3;
  cl_mem x = device_buffer(cl_ctx, x_off + io), y = device_buffer(cl_ctx, io);
  cr_assert_eq(clEnqueueWriteBuffer(queue, x, CL_TRUE, 0, io * f, L.x, 0, NULL, NULL), CL_SUCCESS);
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = x;
  b.y = y;
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = c.batch;
  fwd.seq = c.seq;

  int gemms = 0;
  int copies = traced_forward(mha, &fwd, &b, queue, &gemms);
  cr_expect_eq(gemms, 4, "%d GEMM launches, expected 4 (Q, K, V, output)", gemms);
  cr_expect_eq(copies, 0, "%d of CLBlast's copy kernels at an aligned shape", copies);
  int core = core_buffers(ctx, cl_ctx, queue, &L, c.batch, c.seq);
  cr_expect_eq(trace_buffers, core, "a second call created %d buffers, the core alone %d",
               trace_buffers, core);
  cr_assert_eq(clEnqueueReadBuffer(queue, y, CL_TRUE, 0, io * f, L.y, 0, NULL, NULL), CL_SUCCESS);
  data_check(&L, &c, own ? "aligned, clattn's GEMM" : "aligned, CLBlast");

  /* x at an offset, 77 rows (13 with Oclgrind): CLBlast pads, in the layer's workspace;
   * clattn's kernel reads x where it is. */
  c.seq = fwd.seq = test_small() ? 13 : 77;
  b.x_offset = x_off;
  copies = traced_forward(mha, &fwd, &b, queue, &gemms);
  const int layer = trace_buffers;
  cr_expect_eq(gemms, 4);
  if (own) {
    cr_expect_eq(copies, 0, "%d copy kernels traced with clattn's GEMM", copies);
  } else {
    cr_expect_gt(copies, 0, "no copy kernel traced where CLBlast must pad");
  }
  core = core_buffers(ctx, cl_ctx, queue, &L, c.batch, fwd.seq);
  cr_expect_eq(layer, core, "a second unaligned call created %d buffers, the core alone %d", layer,
               core);
  /* The unaligned call's result, against the reference on the same rows. */
  layer_data U;
  data_init(&U, &c);
  cr_assert_eq(
      clEnqueueWriteBuffer(queue, x, CL_TRUE, x_off * f, U.rows * U.e * f, U.x, 0, NULL, NULL),
      CL_SUCCESS);
  cr_assert_eq(clattn_mha_forward(mha, &fwd, &b, queue, 0, NULL, NULL), CLATTN_SUCCESS);
  memcpy(U.w_in, L.w_in, sizeof(float) * (U.hd * U.e + U.kvd * (U.kd + U.vd)));
  memcpy(U.wo, L.wo, sizeof(float) * U.e * U.hd);
  memcpy(U.b_in, L.b_in, sizeof(float) * (U.hd + 2 * U.kvd));
  memcpy(U.bo, L.bo, sizeof(float) * U.e);
  cr_assert_eq(clEnqueueReadBuffer(queue, y, CL_TRUE, 0, U.rows * U.e * f, U.y, 0, NULL, NULL),
               CL_SUCCESS);
  data_check(&U, &c, own ? "x at an offset, clattn's GEMM" : "x at an offset, CLBlast");
  data_free(&U);

  clReleaseMemObject(x);
  clReleaseMemObject(y);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  data_free(&L);
}

Test(mha, aligned_forward_copies_nothing, .timeout = 600.0) { forward_copies(0); }

Test(mha, own_gemm_copies_nothing, .timeout = 600.0) { forward_copies(1); }

/* The layers of both GEMM kernels agree with the reference: a few of the shapes above (odd
 * widths, cross-attention with k_dim and v_dim of their own, GQA with key lengths, no
 * biases, 16-bit storage) with the kernel the device would not take by default. */
Test(mha, other_gemm_kernel, .timeout = 600.0) {
  clattn_context* ctx = test_context(NULL);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  cr_assert_eq(clattn_context_get_device_info(ctx, &info), CLATTN_SUCCESS);
  clattn_context_destroy(ctx);
  const int cpu = info.type == CLATTN_DEVICE_TYPE_CPU;
  cr_assert_eq(setenv("CLATTN_GEMM", cpu ? "clblast" : "clattn", 1), 0);
  size_t n;
  const layer_case* cases = layer_cases_seeded(&n);
  /* A head dim that does not divide d_model, GQA with key lengths, no biases, k_dim and
   * v_dim of their own. */
  const size_t picks[] = {8, 6, 5, 12};
  for (size_t i = 0; i < sizeof picks / sizeof picks[0]; ++i) {
    cr_assert_lt(picks[i], n);
    run_case(&cases[picks[i]]);
  }
  const layer_case bf16 = {.d_model = 64,
                           .heads = 2,
                           .batch = 2,
                           .seq = 21,
                           .bias = 1,
                           .dtype = CLATTN_DTYPE_BF16,
                           .seed = 36};
  run_case(&bf16);
  unsetenv("CLATTN_GEMM");
}

/* CLATTN_GEMM names the GEMM kernel; any other value fails the context's creation. */
Test(mha, gemm_kernel_from_the_environment) {
  static const char* bad[] = {"CLBlast", "own", " clattn", "clattn2"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    cr_assert_eq(setenv("CLATTN_GEMM", bad[i], 1), 0);
    clattn_context* ctx = (clattn_context*)&i;
    const clattn_status st = clattn_context_create(NULL, &ctx);
    cr_assert_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "CLATTN_GEMM=\"%s\": %s", bad[i],
                 clattn_status_name(st));
    cr_assert_null(ctx);
    char msg[2048];
    cr_assert_eq(clattn_context_get_last_error(NULL, msg, sizeof msg, NULL), CLATTN_SUCCESS);
    cr_assert(strstr(msg, "CLATTN_GEMM"), "message: %s", msg);
  }
  cr_assert_eq(setenv("CLATTN_GEMM", "", 1), 0); /* empty: the default */
  clattn_context* ctx = test_context(NULL);
  clattn_context_destroy(ctx);
  unsetenv("CLATTN_GEMM");
}

/* clattn_mha_info cut to 0.4's size (before gemm_kernel) is accepted and written no further;
 * one byte short of it, or past the current size, is refused. */
Test(mha, info_of_an_older_size) {
  clattn_context* ctx = test_context(NULL);
  layer_case c = {.d_model = 32, .heads = 2, .batch = 1, .seq = 4, .bias = 1, .seed = 40};
  layer_data L;
  data_init(&L, &c);
  const clattn_mha_desc desc = data_desc(&c);
  const clattn_mha_weights w = data_weights(&L, 1);
  clattn_mha* mha = NULL;
  cr_assert_eq(clattn_mha_create(ctx, &desc, &w, &mha), CLATTN_SUCCESS, "%s", test_last_error(ctx));
  const size_t old = offsetof(clattn_mha_info, gemm_kernel);
  unsigned char raw[sizeof(clattn_mha_info) + 8];
  memset(raw, 0xab, sizeof raw);
  memcpy(raw, &old, sizeof old);
  cr_assert_eq(clattn_mha_get_info(mha, (clattn_mha_info*)(void*)raw), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  clattn_mha_info got;
  memcpy(&got, raw, old);
  cr_assert_eq(got.struct_size, old);
  cr_assert_eq(got.dtype, CLATTN_DTYPE_F32);
  cr_assert_eq(got.weight_bytes, (4 * 32 * 32 + 4 * 32) * sizeof(float));
  for (size_t i = old; i < sizeof raw; ++i) cr_assert_eq(raw[i], 0xab, "byte %zu written", i);
  const size_t bad[] = {old - 1, sizeof(clattn_mha_info) + 1};
  for (size_t i = 0; i < 2; ++i) {
    memcpy(raw, &bad[i], sizeof bad[i]);
    cr_assert_eq(clattn_mha_get_info(mha, (clattn_mha_info*)(void*)raw),
                 CLATTN_ERROR_INVALID_ARGUMENT, "struct_size %zu", bad[i]);
  }
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  data_free(&L);
}
