/* The layer's attention weights (PyTorch's need_weights, per head and averaged over heads)
 * against the double-precision reference layer (clattn_ref_mha_weights): self- and
 * cross-attention, causal masks, key lengths (0 included: rows of zeros), GQA, rotary
 * embeddings, the host and device entry points, a 0.3-sized buffers struct, the forward over
 * a KV cache, and bad input. y must stay what it is without weights. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"
#include "test_util.h"

/* ---------------------------------------------------------------- a layer with random weights */

typedef struct wcase {
  size_t d_model, heads, heads_kv, head_dim; /* head_dim 0: d_model / heads */
  size_t batch, seq, seq_kv;                 /* seq_kv 0: self-attention */
  int causal, bias, lengths;                 /* lengths: seq_kv, 0, 2/3 of it, cycling */
  clattn_rope_style rope;
  uint64_t seed;
} wcase;

typedef struct wdata {
  size_t e, h, hkv, d, hd, kvd, seq_kv, rows, rows_kv;
  float *w_in, *b_in, *wo, *bo, *x, *key, *y;
  int32_t* lengths;
} wdata;

static float* uniform(size_t n, float bound, uint64_t* state) {
  float* p = malloc((n ? n : 1) * sizeof(float));
  cr_assert_not_null(p);
  clattn_ref_fill_uniform(p, n, -bound, bound, state);
  return p;
}

static void wdata_init(wdata* L, const wcase* c) {
  memset(L, 0, sizeof *L);
  uint64_t state = c->seed;
  L->e = c->d_model;
  L->h = c->heads;
  L->hkv = c->heads_kv ? c->heads_kv : c->heads;
  L->d = c->head_dim ? c->head_dim : c->d_model / c->heads;
  L->hd = L->h * L->d;
  L->kvd = L->hkv * L->d;
  L->seq_kv = c->seq_kv ? c->seq_kv : c->seq;
  L->rows = c->batch * c->seq;
  L->rows_kv = c->batch * L->seq_kv;
  /* PyTorch's default initialisation: uniform within 1/sqrt(fan_in). */
  L->w_in = uniform((L->hd + 2 * L->kvd) * L->e, 1.0f / sqrtf((float)L->e), &state);
  L->wo = uniform(L->e * L->hd, 1.0f / sqrtf((float)L->hd), &state);
  if (c->bias) {
    L->b_in = uniform(L->hd + 2 * L->kvd, 0.5f, &state);
    L->bo = uniform(L->e, 0.5f, &state);
  }
  L->x = uniform(L->rows * L->e, 1.0f, &state);
  if (c->seq_kv) L->key = uniform(L->rows_kv * L->e, 1.0f, &state);
  L->y = malloc(L->rows * L->e * sizeof(float));
  cr_assert_not_null(L->y);
  if (c->lengths) {
    L->lengths = malloc(c->batch * sizeof(int32_t));
    cr_assert_not_null(L->lengths);
    for (size_t b = 0; b < c->batch; ++b) {
      const size_t k = b % 3;
      L->lengths[b] = (int32_t)(k == 0 ? L->seq_kv : k == 1 ? 0 : (L->seq_kv * 2 + 2) / 3);
    }
  }
}

static void wdata_free(wdata* L) {
  void* ptrs[] = {L->w_in, L->b_in, L->wo, L->bo, L->x, L->key, L->y, L->lengths};
  for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; ++i) free(ptrs[i]);
}

static clattn_mha* wdata_layer(clattn_context* ctx, const wdata* L, const wcase* c) {
  clattn_mha_desc d = CLATTN_MHA_DESC_INIT;
  d.d_model = L->e;
  d.heads = L->h;
  d.heads_kv = L->hkv;
  d.head_dim = L->d;
  d.rope = c->rope;
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = L->w_in;
  w.in_proj_bias.host = L->b_in;
  w.out_proj_weight.host = L->wo;
  w.out_proj_bias.host = L->bo;
  clattn_mha* mha = NULL;
  const clattn_status st = clattn_mha_create(ctx, &d, &w, &mha);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_mha_create: %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  return mha;
}

static clattn_ref_mha_layer wdata_ref(const wdata* L, const wcase* c) {
  clattn_ref_mha_layer r = {.d_model = L->e,
                            .heads = L->h,
                            .heads_kv = L->hkv,
                            .head_dim = L->d,
                            .k_dim = L->e,
                            .v_dim = L->e,
                            .wq = L->w_in,
                            .wk = L->w_in + L->hd * L->e,
                            .wv = L->w_in + (L->hd + L->kvd) * L->e,
                            .wo = L->wo,
                            .bo = L->bo,
                            .rope = (int)c->rope};
  if (L->b_in) {
    r.bq = L->b_in;
    r.bk = L->b_in + L->hd;
    r.bv = L->b_in + L->hd + L->kvd;
  }
  return r;
}

/* Compares n weights with the reference's within its tolerance (0: exactly 0). Rows of `cols`
 * entries that see a key must also sum to 1 within the sum of their tolerances (|sum - 1| <=
 * sum_j |got_j - want_j|, each within tol_j), rows that see none to exactly 0. */
static void expect_weights(const float* got, const double* want, const double* tol, size_t n,
                           size_t cols, const char* what, const char* label) {
  size_t bad = 0;
  double worst = 0.0;
  char first[256] = "";
  for (size_t r = 0; r < n / cols; ++r) {
    double sum = 0.0, want_sum = 0.0, tol_sum = 0.0;
    for (size_t j = 0; j < cols; ++j) {
      const size_t i = r * cols + j;
      const double err = fabs((double)got[i] - want[i]);
      const int ok = tol[i] > 0.0 ? err <= tol[i] : got[i] == 0.0f;
      const double ratio = tol[i] > 0.0 ? err / tol[i] : (ok ? 0.0 : INFINITY);
      if (!(ratio <= worst)) worst = ratio;
      if (!ok && bad++ == 0) {
        snprintf(first, sizeof first, "%s[row %zu, key %zu] = %.9g, reference %.9g, tol %.3g", what,
                 r, j, (double)got[i], want[i], tol[i]);
      }
      sum += got[i];
      want_sum += want[i];
      tol_sum += tol[i];
    }
    if (!(fabs(sum - want_sum) <= tol_sum) && bad++ == 0) {
      snprintf(first, sizeof first, "%s row %zu sums to %.12g, reference %.12g, bound %.3g", what,
               r, sum, want_sum, tol_sum);
    }
  }
  cr_assert_eq(bad, 0, "%s: %zu %s wrong; first: %s; worst err/tol %.3g", label, bad, what, first,
               worst);
  cr_log_info("%s: %s worst err/tol %.3g", label, what, worst);
}

/* y against the layer's reference (unchanged by asking for weights). */
static void expect_y(const wdata* L, const wcase* c, const char* label) {
  const clattn_ref_mha_layer ref = wdata_ref(L, c);
  const size_t n = L->rows * L->e;
  double* want = malloc(n * sizeof(double));
  double* tol = malloc(n * sizeof(double));
  cr_assert(want && tol);
  cr_assert_eq(clattn_ref_mha_forward(&ref, c->batch, c->seq, c->seq_kv, c->causal, L->x, L->key,
                                      L->key, L->lengths, want, tol),
               0);
  for (size_t i = 0; i < n; ++i) {
    cr_assert(fabs((double)L->y[i] - want[i]) <= tol[i], "%s: y[%zu] = %.9g, reference %.9g", label,
              i, (double)L->y[i], want[i]);
  }
  free(want);
  free(tol);
}

/* Runs the host form with both weights and checks y, the weights and their mean. */
static void run_wcase(const wcase* given) {
  wcase c = *given;
  if (test_small()) { /* Oclgrind: shorter sequences, and heads of 8 dims (GEMMs dominate) */
    if (c.seq > 12) c.seq = 12;
    if (c.seq_kv > 15) c.seq_kv = 15;
    if (c.d_model > 128 && !c.head_dim) c.d_model = c.heads * 8;
  }
  char label[256];
  snprintf(label, sizeof label,
           "E=%zu H=%zu Hkv=%zu D=%zu B=%zu N=%zu Nkv=%zu causal=%d bias=%d lengths=%d rope=%d",
           c.d_model, c.heads, c.heads_kv, c.head_dim, c.batch, c.seq, c.seq_kv, c.causal, c.bias,
           c.lengths, (int)c.rope);
  clattn_context* ctx = test_context(NULL);
  wdata L;
  wdata_init(&L, &c);
  clattn_mha* mha = wdata_layer(ctx, &L, &c);
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = c.batch;
  fwd.seq = c.seq;
  fwd.seq_kv = c.seq_kv;
  fwd.causal = c.causal;
  const size_t n_mean = L.rows * L.seq_kv, n_w = n_mean * L.h;
  float* w = malloc(n_w * sizeof(float));
  float* mean = malloc(n_mean * sizeof(float));
  double* ref = malloc((n_w + n_mean) * sizeof(double));
  double* tol = malloc((n_w + n_mean) * sizeof(double));
  cr_assert(w && mean && ref && tol);
  for (size_t i = 0; i < n_w; ++i) w[i] = NAN;
  for (size_t i = 0; i < n_mean; ++i) mean[i] = NAN;
  clattn_status st =
      clattn_mha_forward_weights_host(mha, &fwd, L.x, L.key, L.key, L.y, L.lengths, w, mean);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: clattn_mha_forward_weights_host: %s (%s)", label,
               clattn_status_name(st), test_last_error(ctx));
  expect_y(&L, &c, label);
  const clattn_ref_mha_layer r = wdata_ref(&L, &c);
  cr_assert_eq(clattn_ref_mha_weights(&r, c.batch, c.seq, c.seq_kv, c.causal, L.x, L.key, L.key,
                                      L.lengths, ref, tol, ref + n_w, tol + n_w),
               0);
  expect_weights(w, ref, tol, n_w, L.seq_kv, "weights", label);
  expect_weights(mean, ref + n_w, tol + n_w, n_mean, L.seq_kv, "mean weights", label);
  /* Either one alone gives the same values. */
  float* only = malloc(n_w * sizeof(float));
  cr_assert_not_null(only);
  st = clattn_mha_forward_weights_host(mha, &fwd, L.x, L.key, L.key, L.y, L.lengths, NULL, only);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s", label, clattn_status_name(st));
  cr_assert_eq(memcmp(only, mean, n_mean * sizeof(float)), 0, "%s: the mean alone differs", label);
  st = clattn_mha_forward_weights_host(mha, &fwd, L.x, L.key, L.key, L.y, L.lengths, only, NULL);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s", label, clattn_status_name(st));
  cr_assert_eq(memcmp(only, w, n_w * sizeof(float)), 0, "%s: the weights alone differ", label);
  free(only);
  free(w);
  free(mean);
  free(ref);
  free(tol);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  wdata_free(&L);
}

ParameterizedTestParameters(mha_weights, layer) {
  static wcase cases[] = {
      {.d_model = 384, .heads = 12, .batch = 2, .seq = 64, .causal = 1, .bias = 1},
      {.d_model = 256, .heads = 8, .batch = 3, .seq = 41, .bias = 1, .lengths = 1},
      {.d_model = 64, .heads = 1, .batch = 2, .seq = 33, .causal = 1, .lengths = 1},
      {.d_model = 256,
       .heads = 8,
       .heads_kv = 2,
       .batch = 3,
       .seq = 30,
       .causal = 1,
       .bias = 1,
       .lengths = 1},
      {.d_model = 96, .heads = 4, .head_dim = 40, .batch = 2, .seq = 17, .causal = 1, .bias = 1},
      {.d_model = 128, .heads = 4, .batch = 2, .seq = 20, .seq_kv = 45, .bias = 1, .lengths = 1},
      {.d_model = 128,
       .heads = 4,
       .heads_kv = 2,
       .batch = 1,
       .seq = 30,
       .seq_kv = 9,
       .causal = 1,
       .bias = 1},
      {.d_model = 128,
       .heads = 4,
       .batch = 2,
       .seq = 25,
       .causal = 1,
       .bias = 1,
       .rope = CLATTN_ROPE_NEOX},
      {.d_model = 32, .heads = 2, .batch = 1, .seq = 1, .bias = 1},
  };
  const size_t n = sizeof cases / sizeof cases[0];
  for (size_t i = 0; i < n; ++i) cases[i].seed = 500 + i;
  return cr_make_param_array(wcase, cases, n);
}

ParameterizedTest(wcase* c, mha_weights, layer, .timeout = 600.0) { run_wcase(c); }

/* ---------------------------------------------------------------- device buffers */

static cl_mem make_buffer(clattn_context* ctx, size_t bytes, const void* host) {
  cl_context cl_ctx = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem m =
      clCreateBuffer(cl_ctx, host ? CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE,
                     bytes, (void*)host, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateBuffer: %d", (int)err);
  return m;
}

/* The cl_mem entry point: both weights in one buffer at offsets between guards, key lengths;
 * y equal to a forward without weights; a buffers struct of 0.3's size (no weight fields)
 * still accepted, whatever lies past it. */
Test(mha_weights, device_buffers_and_older_struct, .timeout = 300.0) {
  const wcase c = {.d_model = 64,
                   .heads = 4,
                   .batch = 3,
                   .seq = 19,
                   .causal = 1,
                   .bias = 1,
                   .lengths = 1,
                   .seed = 77};
  clattn_context* ctx = test_context(NULL);
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, NULL, NULL, &queue), CLATTN_SUCCESS);
  wdata L;
  wdata_init(&L, &c);
  clattn_mha* mha = wdata_layer(ctx, &L, &c);
  const size_t n_mean = L.rows * L.seq_kv, n_w = n_mean * L.h, w_at = 7, mean_at = w_at + n_w + 5;
  const size_t total = mean_at + n_mean + 3;
  float* host = malloc(total * sizeof(float));
  cr_assert_not_null(host);
  for (size_t i = 0; i < total; ++i) host[i] = -777.0f;
  cl_mem bx = make_buffer(ctx, L.rows * L.e * sizeof(float), L.x);
  cl_mem by = make_buffer(ctx, L.rows * L.e * sizeof(float), NULL);
  cl_mem by0 = make_buffer(ctx, L.rows * L.e * sizeof(float), NULL);
  cl_mem bl = make_buffer(ctx, c.batch * sizeof(int32_t), L.lengths);
  cl_mem bw = make_buffer(ctx, total * sizeof(float), host);
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = c.batch;
  fwd.seq = c.seq;
  fwd.causal = c.causal;
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = bx;
  b.y = by0;
  b.kv_lengths = bl;
  /* 0.3's struct: the fields past kv_lengths hold garbage that must not be read. */
  struct {
    clattn_mha_buffers b;
    char garbage[64];
  } old;
  memset(&old, 0xA5, sizeof old);
  memcpy(&old.b, &b, offsetof(clattn_mha_buffers, attn_weights));
  old.b.struct_size = offsetof(clattn_mha_buffers, attn_weights);
  cl_event done = NULL;
  clattn_status st = clattn_mha_forward(mha, &fwd, &old.b, NULL, 0, NULL, &done);
  cr_assert_eq(st, CLATTN_SUCCESS, "0.3's buffers struct: %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  clReleaseEvent(done);
  b.y = by;
  b.attn_weights = bw;
  b.attn_weights_offset = w_at;
  b.attn_weights_mean = bw;
  b.attn_weights_mean_offset = mean_at;
  st = clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, &done);
  cr_assert_eq(st, CLATTN_SUCCESS, "forward with weights: %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
  clReleaseEvent(done);
  float* y0 = malloc(L.rows * L.e * sizeof(float));
  cr_assert_not_null(y0);
  cr_assert_eq(
      clEnqueueReadBuffer(queue, by, CL_TRUE, 0, L.rows * L.e * sizeof(float), L.y, 0, NULL, NULL),
      CL_SUCCESS);
  cr_assert_eq(
      clEnqueueReadBuffer(queue, by0, CL_TRUE, 0, L.rows * L.e * sizeof(float), y0, 0, NULL, NULL),
      CL_SUCCESS);
  cr_assert_eq(
      clEnqueueReadBuffer(queue, bw, CL_TRUE, 0, total * sizeof(float), host, 0, NULL, NULL),
      CL_SUCCESS);
  expect_y(&L, &c, "device buffers");
  for (size_t i = 0; i < L.rows * L.e; ++i) {
    cr_assert(y0[i] == L.y[i], "y[%zu] is %.9g with weights, %.9g without", i, (double)L.y[i],
              (double)y0[i]);
  }
  for (size_t i = 0; i < total; ++i) {
    const int inside = (i >= w_at && i < w_at + n_w) || (i >= mean_at && i < mean_at + n_mean);
    if (!inside) cr_assert(host[i] == -777.0f, "weights buffer element %zu was written", i);
  }
  double* ref = malloc((n_w + n_mean) * sizeof(double));
  double* tol = malloc((n_w + n_mean) * sizeof(double));
  cr_assert(ref && tol);
  const clattn_ref_mha_layer r = wdata_ref(&L, &c);
  cr_assert_eq(clattn_ref_mha_weights(&r, c.batch, c.seq, 0, c.causal, L.x, NULL, NULL, L.lengths,
                                      ref, tol, ref + n_w, tol + n_w),
               0);
  expect_weights(host + w_at, ref, tol, n_w, L.seq_kv, "weights", "device buffers");
  expect_weights(host + mean_at, ref + n_w, tol + n_w, n_mean, L.seq_kv, "mean weights",
                 "device buffers");
  free(ref);
  free(tol);
  free(y0);
  free(host);
  cl_mem mems[5] = {bx, by, by0, bl, bw};
  for (int i = 0; i < 5; ++i) clReleaseMemObject(mems[i]);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  wdata_free(&L);
}

/* ---------------------------------------------------------------- over a KV cache */

/* Generation with weights: two sequences' prompts of different lengths in one forward, then
 * decode steps. Each call's weights are the rows of the reference's self-attention over all of
 * a sequence's tokens so far (its positions as the cache's, rope included), columns up to the
 * batch's longest sequence (0 past a sequence's own length). */
static void cached_generation(int causal, clattn_rope_style rope) {
  const wcase c = {.d_model = 64, .heads = 4, .heads_kv = 2, .bias = 1, .rope = rope, .seed = 91};
  clattn_context* ctx = test_context(NULL);
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, NULL, NULL, &queue), CLATTN_SUCCESS);
  wdata L;
  wcase shape = c;
  shape.batch = 1;
  shape.seq = 1;
  wdata_init(&L, &shape); /* the weights; the inputs come below */
  clattn_mha* mha = wdata_layer(ctx, &L, &c);
  clattn_kv_cache_desc cd = CLATTN_KV_CACHE_DESC_INIT;
  cd.max_sequences = 2;
  cd.heads_kv = L.hkv;
  cd.head_dim = L.d;
  cd.capacity = 128;
  cd.block_tokens = 4;
  clattn_kv_cache* cache = NULL;
  cr_assert_eq(clattn_kv_cache_create(ctx, &cd, &cache), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  /* Every token of both sequences: prompts of 11 and 6 tokens, then STEPS tokens each. */
  enum { STEPS = 3, MAX_T = 11 + STEPS };
  const size_t prompt[2] = {11, 6};
  const size_t e = L.e;
  uint64_t state = 5;
  float* xs[2];
  for (int s = 0; s < 2; ++s) xs[s] = uniform(MAX_T * e, 1.0f, &state);
  size_t len[2] = {0, 0};
  const clattn_ref_mha_layer r = wdata_ref(&L, &c);
  /* Calls: each prompt alone (batch 1), then STEPS decode steps of both (batch 2). */
  for (int call = 0; call < 2 + STEPS; ++call) {
    const int decode = call >= 2;
    const size_t count = decode ? 2 : 1, seq = decode ? 1 : prompt[call];
    const int32_t ids[2] = {decode ? 0 : call, 1};
    size_t longest = 0;
    for (size_t i = 0; i < count; ++i) {
      const size_t after = len[ids[i]] + seq;
      if (after > longest) longest = after;
    }
    float* x = malloc(count * seq * e * sizeof(float));
    float* y = malloc(count * seq * e * sizeof(float));
    cr_assert(x && y);
    for (size_t i = 0; i < count; ++i) {
      memcpy(x + i * seq * e, xs[ids[i]] + len[ids[i]] * e, seq * e * sizeof(float));
    }
    const size_t n_mean = count * seq * longest, n_w = n_mean * L.h;
    cl_mem bx = make_buffer(ctx, count * seq * e * sizeof(float), x);
    cl_mem by = make_buffer(ctx, count * seq * e * sizeof(float), NULL);
    cl_mem bw = make_buffer(ctx, (n_w + n_mean) * sizeof(float), NULL);
    clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
    fwd.batch = count;
    fwd.seq = seq;
    fwd.causal = causal;
    clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
    b.x = bx;
    b.y = by;
    b.attn_weights = bw;
    b.attn_weights_mean = bw;
    b.attn_weights_mean_offset = n_w;
    cl_event done = NULL;
    clattn_status st = clattn_mha_forward_cached(mha, cache, &fwd, ids, &b, NULL, 0, NULL, &done);
    cr_assert_eq(st, CLATTN_SUCCESS, "call %d: clattn_mha_forward_cached: %s (%s)", call,
                 clattn_status_name(st), test_last_error(ctx));
    float* got = malloc((n_w + n_mean) * sizeof(float));
    cr_assert_not_null(got);
    cr_assert_eq(clEnqueueReadBuffer(queue, bw, CL_TRUE, 0, (n_w + n_mean) * sizeof(float), got, 1,
                                     &done, NULL),
                 CL_SUCCESS);
    clReleaseEvent(done);
    for (size_t i = 0; i < count; ++i) {
      const int32_t s = ids[i];
      const size_t total = len[s] + seq;
      /* The reference over the sequence's whole history; its last seq rows are this call's. */
      double* ref = malloc((L.h + 1) * total * total * sizeof(double));
      double* tol = malloc((L.h + 1) * total * total * sizeof(double));
      float* mine = malloc((L.h + 1) * seq * total * sizeof(float));
      double* ref_rows = malloc((L.h + 1) * seq * total * sizeof(double));
      double* tol_rows = malloc((L.h + 1) * seq * total * sizeof(double));
      cr_assert(ref && tol && mine && ref_rows && tol_rows);
      cr_assert_eq(
          clattn_ref_mha_weights(&r, 1, total, 0, causal, xs[s], NULL, NULL, NULL, ref, tol,
                                 ref + L.h * total * total, tol + L.h * total * total),
          0);
      for (size_t h = 0; h <= L.h; ++h) { /* h == L.h: the mean */
        for (size_t row = 0; row < seq; ++row) {
          const size_t src = (h * total + len[s] + row) * total, dst = (h * seq + row) * total;
          memcpy(ref_rows + dst, ref + src, total * sizeof(double));
          memcpy(tol_rows + dst, tol + src, total * sizeof(double));
          const float* g = h < L.h ? got + ((i * L.h + h) * seq + row) * longest
                                   : got + n_w + (i * seq + row) * longest;
          memcpy(mine + dst, g, total * sizeof(float));
          for (size_t j = total; j < longest; ++j) {
            cr_assert(g[j] == 0.0f, "call %d sequence %d: a column past its length is %g", call,
                      (int)s, (double)g[j]);
          }
        }
      }
      char label[128];
      snprintf(label, sizeof label, "cached call %d sequence %d (%zu tokens) causal=%d rope=%d",
               call, (int)s, total, causal, (int)rope);
      expect_weights(mine, ref_rows, tol_rows, L.h * seq * total, total, "weights", label);
      expect_weights(mine + L.h * seq * total, ref_rows + L.h * seq * total,
                     tol_rows + L.h * seq * total, seq * total, total, "mean weights", label);
      free(ref);
      free(tol);
      free(mine);
      free(ref_rows);
      free(tol_rows);
    }
    for (size_t i = 0; i < count; ++i) len[ids[i]] += seq;
    free(got);
    free(x);
    free(y);
    clReleaseMemObject(bx);
    clReleaseMemObject(by);
    clReleaseMemObject(bw);
  }
  free(xs[0]);
  free(xs[1]);
  clattn_kv_cache_destroy(cache);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  wdata_free(&L);
}

Test(mha_weights, cached_generation, .timeout = 300.0) { cached_generation(1, CLATTN_ROPE_NONE); }

Test(mha_weights, cached_generation_not_causal_rope, .timeout = 300.0) {
  cached_generation(0, CLATTN_ROPE_GPTJ);
}

/* ---------------------------------------------------------------- bad input */

Test(mha_weights, bad_input) {
  const wcase c = {.d_model = 32, .heads = 2, .batch = 2, .seq = 5, .bias = 1, .seed = 3};
  clattn_context* ctx = test_context(NULL);
  wdata L;
  wdata_init(&L, &c);
  clattn_mha* mha = wdata_layer(ctx, &L, &c);
  const size_t io = L.rows * L.e, n_mean = L.rows * L.seq_kv, n_w = n_mean * L.h;
  cl_mem bx = make_buffer(ctx, io * sizeof(float), L.x);
  cl_mem by = make_buffer(ctx, io * sizeof(float), NULL);
  cl_mem big = make_buffer(ctx, (io + n_w + n_mean) * sizeof(float), NULL);
  cl_mem small = make_buffer(ctx, (n_w - 1) * sizeof(float), NULL);
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = c.batch;
  fwd.seq = c.seq;
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = bx;
  b.y = by;
  clattn_status st;
  clattn_mha_buffers t = b;
  t.attn_weights = small;
  st = clattn_mha_forward(mha, &fwd, &t, NULL, 0, NULL, NULL);
  cr_expect_eq(st, CLATTN_ERROR_BUFFER_TOO_SMALL, "weights too small: %s", clattn_status_name(st));
  t = b;
  t.attn_weights_mean = small;
  t.attn_weights_mean_offset = n_w - n_mean;
  st = clattn_mha_forward(mha, &fwd, &t, NULL, 0, NULL, NULL);
  cr_expect_eq(st, CLATTN_ERROR_BUFFER_TOO_SMALL, "mean too small from its offset: %s",
               clattn_status_name(st));
  /* Overlaps: with y, with x, with each other; disjoint in one buffer is fine. */
  t = b;
  t.y = big;
  t.attn_weights = big;
  t.attn_weights_offset = io - 1;
  st = clattn_mha_forward(mha, &fwd, &t, NULL, 0, NULL, NULL);
  cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "weights overlapping y: %s (%s)",
               clattn_status_name(st), test_last_error(ctx));
  t = b;
  t.x = big;
  t.attn_weights_mean = big;
  t.attn_weights_mean_offset = 0;
  st = clattn_mha_forward(mha, &fwd, &t, NULL, 0, NULL, NULL);
  cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "mean overlapping x: %s", clattn_status_name(st));
  t = b;
  t.attn_weights = big;
  t.attn_weights_mean = big;
  t.attn_weights_mean_offset = n_w - 1;
  st = clattn_mha_forward(mha, &fwd, &t, NULL, 0, NULL, NULL);
  cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "weights overlapping their mean: %s",
               clattn_status_name(st));
  t = b;
  t.y = big;
  t.attn_weights = big;
  t.attn_weights_offset = io;
  t.attn_weights_mean = big;
  t.attn_weights_mean_offset = io + n_w;
  st = clattn_mha_forward(mha, &fwd, &t, NULL, 0, NULL, NULL);
  cr_expect_eq(st, CLATTN_SUCCESS, "y, weights and mean side by side: %s (%s)",
               clattn_status_name(st), test_last_error(ctx));
  t.struct_size = offsetof(clattn_mha_buffers, attn_weights) - 1;
  st = clattn_mha_forward(mha, &fwd, &t, NULL, 0, NULL, NULL);
  cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "struct_size below 0.3's: %s",
               clattn_status_name(st));
  /* The host form. */
  float* w = malloc(n_w * sizeof(float));
  cr_assert_not_null(w);
  st = clattn_mha_forward_weights_host(NULL, &fwd, L.x, NULL, NULL, L.y, NULL, w, NULL);
  cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT);
  st = clattn_mha_forward_weights_host(mha, &fwd, NULL, NULL, NULL, L.y, NULL, w, NULL);
  cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT);
  st = clattn_mha_forward_weights_host(mha, &fwd, L.x, NULL, NULL, NULL, NULL, w, NULL);
  cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT);
  const int32_t bad_lengths[2] = {5, 6};
  st = clattn_mha_forward_weights_host(mha, &fwd, L.x, NULL, NULL, L.y, bad_lengths, w, NULL);
  cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "a key length past seq_kv: %s",
               clattn_status_name(st));
  st = clattn_mha_forward_weights_host(mha, &fwd, L.x, NULL, NULL, L.y, NULL, NULL, NULL);
  cr_expect_eq(st, CLATTN_SUCCESS, "no weights asked: %s", clattn_status_name(st));
  free(w);
  cl_mem mems[4] = {bx, by, big, small};
  for (int i = 0; i < 4; ++i) clReleaseMemObject(mems[i]);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  wdata_free(&L);
}
