/* The layer's forward over a KV cache (clattn_mha_forward_cached): a generation loop (prompts
 * of different lengths, one sequence per call, then decode steps of all sequences together),
 * every step's y against the double-precision reference of the whole causal layer over each
 * sequence's full token history (reference.c, rotary embeddings included); a full cache
 * changes nothing; bad input; and decode steps that create no buffer. */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dlfcn.h>

#include "test_util.h"

/* Counts buffer creations while `trace_on` is set (the library reaches this definition
 * before libOpenCL's, as in test_mha.c). */
static int trace_on, trace_buffers;

cl_mem clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size, void* host,
                      cl_int* err) {
  static cl_mem (*real)(cl_context, cl_mem_flags, size_t, void*, cl_int*);
  if (!real) *(void**)&real = dlsym(RTLD_NEXT, "clCreateBuffer");
  if (trace_on) trace_buffers++;
  return real(context, flags, size, host, err);
}

enum { SEQS = 4, E = 64, H = 4, HKV = 2, D = 16, MAX_TOKENS = 256 };

/* A layer with random weights (PyTorch's default range) and biases, its reference, and each
 * sequence's token history. */
typedef struct gen {
  clattn_context* ctx;
  clattn_mha* mha;
  clattn_kv_cache* cache;
  float w_in[(H + 2 * HKV) * D * E], b_in[(H + 2 * HKV) * D], wo[E * H * D], bo[E];
  clattn_ref_mha_layer ref;
  float* hist[SEQS]; /* [MAX_TOKENS, E] */
  size_t len[SEQS];
  uint64_t state;
  clattn_dtype dtype; /* the layer's: x, y and its weights */
} gen;

/* A layer of `dtype` (its weights drawn as values of it) over a cache of `cache_dtype`. */
static void gen_init_typed(gen* g, clattn_rope_style rope, size_t capacity, size_t max_seq_len,
                           clattn_dtype dtype, clattn_dtype cache_dtype) {
  memset(g, 0, sizeof *g);
  g->state = 99 + (uint64_t)rope;
  g->dtype = dtype;
  g->ctx = test_context(NULL);
  clattn_ref_fill_uniform(g->w_in, sizeof g->w_in / sizeof(float), -0.125f, 0.125f, &g->state);
  clattn_ref_fill_uniform(g->b_in, sizeof g->b_in / sizeof(float), -0.5f, 0.5f, &g->state);
  clattn_ref_fill_uniform(g->wo, sizeof g->wo / sizeof(float), -0.125f, 0.125f, &g->state);
  clattn_ref_fill_uniform(g->bo, E, -0.5f, 0.5f, &g->state);
  float* arrays[4] = {g->w_in, g->b_in, g->wo, g->bo};
  const size_t counts[4] = {sizeof g->w_in / sizeof(float), sizeof g->b_in / sizeof(float),
                            sizeof g->wo / sizeof(float), E};
  void* bits[4];
  for (int i = 0; i < 4; ++i) {
    test_round_to(arrays[i], counts[i], dtype);
    bits[i] = test_to_dtype(arrays[i], counts[i], dtype);
  }
  clattn_mha_desc d = CLATTN_MHA_DESC_INIT;
  d.d_model = E;
  d.heads = H;
  d.heads_kv = HKV;
  d.head_dim = D;
  d.rope = rope;
  d.dtype = dtype;
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = bits[0];
  w.in_proj_bias.host = bits[1];
  w.out_proj_weight.host = bits[2];
  w.out_proj_bias.host = bits[3];
  cr_assert_eq(clattn_mha_create(g->ctx, &d, &w, &g->mha), CLATTN_SUCCESS, "%s",
               test_last_error(g->ctx));
  for (int i = 0; i < 4; ++i) free(bits[i]);
  clattn_kv_cache_desc kd = CLATTN_KV_CACHE_DESC_INIT;
  kd.dtype = cache_dtype;
  kd.max_sequences = SEQS;
  kd.heads_kv = HKV;
  kd.head_dim = D;
  kd.capacity = capacity;
  kd.max_seq_len = max_seq_len;
  cr_assert_eq(clattn_kv_cache_create(g->ctx, &kd, &g->cache), CLATTN_SUCCESS, "%s",
               test_last_error(g->ctx));
  const size_t hd = H * D, kvd = HKV * D;
  g->ref = (clattn_ref_mha_layer){.d_model = E,
                                  .heads = H,
                                  .heads_kv = HKV,
                                  .head_dim = D,
                                  .wq = g->w_in,
                                  .wk = g->w_in + hd * E,
                                  .wv = g->w_in + (hd + kvd) * E,
                                  .wo = g->wo,
                                  .bq = g->b_in,
                                  .bk = g->b_in + hd,
                                  .bv = g->b_in + hd + kvd,
                                  .bo = g->bo,
                                  .rope = (int)rope,
                                  .kv_storage = cache_dtype};
  for (int s = 0; s < SEQS; ++s) {
    g->hist[s] = malloc(MAX_TOKENS * E * sizeof(float));
    cr_assert_not_null(g->hist[s]);
  }
}

static void gen_init(gen* g, clattn_rope_style rope, size_t capacity, size_t max_seq_len) {
  gen_init_typed(g, rope, capacity, max_seq_len, CLATTN_DTYPE_F32, CLATTN_DTYPE_F32);
}

static void gen_free(gen* g) {
  for (int s = 0; s < SEQS; ++s) free(g->hist[s]);
  clattn_kv_cache_destroy(g->cache);
  clattn_mha_destroy(g->mha);
  clattn_context_destroy(g->ctx);
}

/* Checks y [n, E], the outputs of sequence s's last n tokens, against the reference layer
 * over its whole history (causal, batch 1: positions 0 .. len-1, as the cache gives them).
 * The reference's tolerance (10 sigma of its rounding model) covers the projections, the
 * rotation and an online-softmax core; over a cache the core may split the keys and merge
 * partial results by their LSE, a few more roundings of each output of at most u |V|max
 * each, inside the model's own core term (16 u |V|max) several times over. */
static void gen_check(const gen* g, int s, const float* y, size_t n, const char* what) {
  const size_t len = g->len[s];
  double* want = malloc(len * E * sizeof(double));
  double* tol = malloc(len * E * sizeof(double));
  cr_assert(want && tol);
  cr_assert_eq(
      clattn_ref_mha_forward(&g->ref, 1, len, 0, 1, g->hist[s], NULL, NULL, NULL, want, tol), 0);
  size_t bad = 0;
  char first[256] = "";
  for (size_t i = 0; i < n * E; ++i) {
    const size_t at = (len - n) * E + i;
    const double err = fabs((double)y[i] - want[at]);
    /* A 16-bit y is the float32 result rounded once more. */
    const double t = g->dtype == CLATTN_DTYPE_F32
                         ? tol[at]
                         : tol[at] + clattn_ref_dtype_rounding(g->dtype, fabs(want[at]) + tol[at]);
    if (!(err <= t) && bad++ == 0) {
      snprintf(first, sizeof first, "token %zu, col %zu: %.9g, reference %.9g, tol %.3g",
               len - n + i / E, i % E, (double)y[i], want[at], t);
    }
  }
  free(want);
  free(tol);
  cr_assert_eq(bad, 0, "%s, sequence %d (%zu tokens): %zu of %zu out of tolerance; first: %s", what,
               s, len, bad, n * E, first);
}

/* Runs one cached forward of `count` sequences (ids), n new tokens each, x [count, n, E]
 * random; records the tokens in the histories and checks every output. */
static void gen_step(gen* g, size_t count, const int32_t* ids, size_t n, const char* what) {
  float* x = malloc(count * n * E * sizeof(float));
  float* y = malloc(count * n * E * sizeof(float));
  cr_assert(x && y);
  clattn_ref_fill_uniform(x, count * n * E, -1.0f, 1.0f, &g->state);
  test_round_to(x, count * n * E, g->dtype);
  void* x_bits = test_to_dtype(x, count * n * E, g->dtype);
  void* y_bits = test_to_dtype(y, count * n * E, g->dtype);
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = count;
  fwd.seq = n;
  fwd.causal = 1;
  clattn_status st = clattn_mha_forward_cached_host(g->mha, g->cache, &fwd, ids, x_bits, y_bits);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s (%s)", what, clattn_status_name(st),
               test_last_error(g->ctx));
  clattn_convert(y_bits, g->dtype, y, CLATTN_DTYPE_F32, count * n * E);
  free(x_bits);
  free(y_bits);
  for (size_t i = 0; i < count; ++i) {
    const int s = ids[i];
    memcpy(g->hist[s] + g->len[s] * E, x + i * n * E, n * E * sizeof(float));
    g->len[s] += n;
    size_t cached = 0;
    cr_assert_eq(clattn_kv_cache_seq_length(g->cache, s, &cached), CLATTN_SUCCESS);
    cr_assert_eq(cached, g->len[s], "%s: sequence %d holds %zu tokens, expected %zu", what, s,
                 cached, g->len[s]);
    gen_check(g, s, y + i * n * E, n, what);
  }
  free(x);
  free(y);
}

static void generation_typed(clattn_rope_style rope, clattn_dtype dtype, clattn_dtype cache_dtype) {
  gen g;
  gen_init_typed(&g, rope, MAX_TOKENS * SEQS, MAX_TOKENS, dtype, cache_dtype);
  /* Prompts of different lengths (across block boundaries of 16), one sequence per call. */
  const size_t prompts[SEQS] = {test_len(5), test_len(17), test_len(33), test_len(64)};
  for (int s = 0; s < SEQS; ++s) {
    const int32_t id = s;
    gen_step(&g, 1, &id, prompts[s], "prompt");
  }
  /* Decode steps, all four together, in an order other than the ids'. */
  const int32_t ids[SEQS] = {2, 0, 3, 1};
  const int steps = test_small() ? 3 : 20;
  for (int t = 0; t < steps; ++t) gen_step(&g, SEQS, ids, 1, "decode");
  /* Two tokens for two of the sequences at once, then decode again. */
  gen_step(&g, 2, ids + 2, 2, "two tokens");
  gen_step(&g, SEQS, ids, 1, "decode after");
  gen_free(&g);
}

static void generation(clattn_rope_style rope) {
  generation_typed(rope, CLATTN_DTYPE_F32, CLATTN_DTYPE_F32);
}

Test(mha_cached, generation, .timeout = 600.0) { generation(CLATTN_ROPE_NONE); }

/* 16-bit storage: the layer's x, y and weights, the cache's K and V, alike or mixed (a
 * float32 layer over an f16 cache halves what decode reads). */
Test(mha_cached, generation_f16, .timeout = 600.0) {
  generation_typed(CLATTN_ROPE_NEOX, CLATTN_DTYPE_F16, CLATTN_DTYPE_F16);
}

Test(mha_cached, generation_bf16_layer_f16_cache, .timeout = 600.0) {
  generation_typed(CLATTN_ROPE_NONE, CLATTN_DTYPE_BF16, CLATTN_DTYPE_F16);
}

Test(mha_cached, generation_f32_layer_bf16_cache, .timeout = 600.0) {
  generation_typed(CLATTN_ROPE_GPTJ, CLATTN_DTYPE_F32, CLATTN_DTYPE_BF16);
}

Test(mha_cached, generation_rope_neox, .timeout = 600.0) { generation(CLATTN_ROPE_NEOX); }

/* A sequence at its length limit, and a pool without the blocks a step needs: CACHE_FULL,
 * every length as before, and the next step that fits is right (nothing half-appended). */
Test(mha_cached, cache_full_changes_nothing, .timeout = 600.0) {
  gen g;
  /* 4 blocks of 16 in all; one sequence at most 24 tokens. */
  gen_init(&g, CLATTN_ROPE_NEOX, 64, 24);
  const int32_t ids[SEQS] = {0, 1, 2, 3};
  gen_step(&g, 1, &ids[0], 20, "prompt 0");
  gen_step(&g, 1, &ids[1], 20, "prompt 1");
  clattn_kv_cache_usage before = CLATTN_KV_CACHE_USAGE_INIT;
  cr_assert_eq(clattn_kv_cache_get_usage(g.cache, &before), CLATTN_SUCCESS);
  float x[SEQS * 5 * E], y[SEQS * 5 * E];
  clattn_ref_fill_uniform(x, sizeof x / sizeof(float), -1.0f, 1.0f, &g.state);
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.causal = 1;
  struct {
    size_t count, seq;
    const int32_t* ids;
  } full[] = {
      {1, 5, &ids[0]}, /* 25 > 24 for sequence 0 */
      {2, 5, &ids[0]}, /* both sequences over their limit */
      {2, 4, &ids[1]}, /* 24 fit sequence 1's blocks, but sequence 2 needs one: none free */
      {3, 4, &ids[1]}, /* sequences 1, 2 and 3: 2 new blocks */
  };
  for (size_t i = 0; i < sizeof full / sizeof full[0]; ++i) {
    fwd.batch = full[i].count;
    fwd.seq = full[i].seq;
    clattn_status st = clattn_mha_forward_cached_host(g.mha, g.cache, &fwd, full[i].ids, x, y);
    cr_expect_eq(st, CLATTN_ERROR_CACHE_FULL, "case %zu: %s (%s)", i, clattn_status_name(st),
                 test_last_error(g.ctx));
    for (int s = 0; s < SEQS; ++s) {
      size_t len = 0;
      cr_assert_eq(clattn_kv_cache_seq_length(g.cache, s, &len), CLATTN_SUCCESS);
      cr_expect_eq(len, g.len[s], "case %zu: sequence %d holds %zu, had %zu", i, s, len, g.len[s]);
    }
    clattn_kv_cache_usage after = CLATTN_KV_CACHE_USAGE_INIT;
    cr_assert_eq(clattn_kv_cache_get_usage(g.cache, &after), CLATTN_SUCCESS);
    cr_expect_eq(after.blocks_used, before.blocks_used, "case %zu", i);
    cr_expect_eq(after.tokens_used, before.tokens_used, "case %zu", i);
  }
  /* What fits still runs, on the unchanged cache. */
  gen_step(&g, 2, &ids[0], 4, "after CACHE_FULL");
  gen_free(&g);
}

/* Bad input is refused with a message and leaves the cache as it was. */
Test(mha_cached, bad_input, .timeout = 600.0) {
  gen g;
  gen_init(&g, CLATTN_ROPE_NONE, 256, 0);
  const int32_t id0 = 0;
  gen_step(&g, 1, &id0, 3, "prompt");
  float x[8 * E], y[8 * E];
  clattn_ref_fill_uniform(x, sizeof x / sizeof(float), -1.0f, 1.0f, &g.state);
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = 1;
  fwd.seq = 1;
  fwd.causal = 1;
  clattn_context* ctx = g.ctx;
  clattn_mha_forward_desc f = fwd;
  f.seq_kv = 1;
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, g.cache, &f, NULL, x, y),
               CLATTN_ERROR_INVALID_SHAPE);
  cr_expect(strstr(test_last_error(ctx), "seq_kv") != NULL, "%s", test_last_error(ctx));
  f = fwd;
  f.seq = 0;
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, g.cache, &f, NULL, x, y),
               CLATTN_ERROR_INVALID_SHAPE);
  f = fwd;
  f.batch = SEQS + 1; /* more sequences than the cache holds */
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, g.cache, &f, NULL, x, y),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect(strstr(test_last_error(ctx), "sequences") != NULL, "%s", test_last_error(ctx));
  const int32_t out_of_range = SEQS, twice[2] = {1, 1};
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, g.cache, &fwd, &out_of_range, x, y),
               CLATTN_ERROR_INVALID_ARGUMENT);
  f.batch = 2;
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, g.cache, &f, twice, x, y),
               CLATTN_ERROR_INVALID_ARGUMENT);
  f = fwd;
  f.struct_size = 0;
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, g.cache, &f, NULL, x, y),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, NULL, &fwd, NULL, x, y),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, g.cache, NULL, NULL, x, y),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, g.cache, &fwd, NULL, NULL, y),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_mha_forward_cached_host(NULL, g.cache, &fwd, NULL, x, y),
               CLATTN_ERROR_INVALID_ARGUMENT);

  /* A cache of other dims than the layer's. */
  clattn_kv_cache_desc kd = CLATTN_KV_CACHE_DESC_INIT;
  kd.dtype = CLATTN_DTYPE_F32;
  kd.max_sequences = 1;
  kd.heads_kv = HKV;
  kd.head_dim = D / 2;
  kd.capacity = 64;
  clattn_kv_cache* other = NULL;
  cr_assert_eq(clattn_kv_cache_create(ctx, &kd, &other), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  cr_expect_eq(clattn_mha_forward_cached_host(g.mha, other, &fwd, NULL, x, y),
               CLATTN_ERROR_INVALID_SHAPE);
  cr_expect(strstr(test_last_error(ctx), "head_dim") != NULL, "%s", test_last_error(ctx));
  clattn_kv_cache_destroy(other);

  /* Device form: cross-attention inputs and key lengths have no place over a cache. */
  cl_context cl_ctx;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  cl_int err;
  cl_mem buf = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, sizeof x, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = b.y = buf;
  b.key = buf;
  cr_expect_eq(clattn_mha_forward_cached(g.mha, g.cache, &fwd, NULL, &b, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  b.key = NULL;
  b.kv_lengths = buf;
  cr_expect_eq(clattn_mha_forward_cached(g.mha, g.cache, &fwd, NULL, &b, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  b.kv_lengths = NULL;
  b.x_offset = 8 * E; /* past the end */
  cr_expect_eq(clattn_mha_forward_cached(g.mha, g.cache, &fwd, NULL, &b, NULL, 0, NULL, NULL),
               CLATTN_ERROR_BUFFER_TOO_SMALL);
  b.x_offset = 0;
  cr_expect_eq(clattn_mha_forward_cached(g.mha, g.cache, &fwd, NULL, &b, NULL, 2, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  clReleaseMemObject(buf);

  /* Nothing changed: sequence 0 still holds its prompt, the others nothing, and it goes on. */
  for (int s = 0; s < SEQS; ++s) {
    size_t len = 0;
    cr_assert_eq(clattn_kv_cache_seq_length(g.cache, s, &len), CLATTN_SUCCESS);
    cr_expect_eq(len, g.len[s], "sequence %d holds %zu, expected %zu", s, len, g.len[s]);
  }
  gen_step(&g, 1, &id0, 1, "after errors");
  gen_free(&g);
}

/* Decode steps on device buffers: after the first step of its batch size, a step creates no
 * buffer (the layer's workspace, the cache's step arrays and the context's scratch are all
 * reused), and y is right against the reference over each sequence's whole history. */
Test(mha_cached, decode_allocates_nothing, .timeout = 600.0) {
  gen g;
  gen_init(&g, CLATTN_ROPE_NEOX, MAX_TOKENS * SEQS, MAX_TOKENS);
  const int32_t ids[SEQS] = {0, 1, 2, 3};
  for (int s = 0; s < SEQS; ++s) gen_step(&g, 1, &ids[s], test_len(9) + (size_t)s * 5, "prompt");
  cl_context cl_ctx;
  cl_command_queue queue;
  cr_assert_eq(clattn_context_get_cl(g.ctx, &cl_ctx, NULL, &queue), CLATTN_SUCCESS);
  cl_int err;
  const size_t bytes = SEQS * E * sizeof(float);
  cl_mem xb = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_mem yb = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = xb;
  b.y = yb;
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = SEQS;
  fwd.seq = 1;
  fwd.causal = 1;
  float x[SEQS * E], y[SEQS * E];
  /* The sequences grow by one token a step, their longest staying in one power-of-two length
   * class (a plan's), across block boundaries: the cache's pages are read in place, so a
   * step needs no buffer however long the sequences are. */
  const int steps = test_small() ? 3 : 6;
  for (int t = 0; t < steps; ++t) {
    clattn_ref_fill_uniform(x, SEQS * E, -1.0f, 1.0f, &g.state);
    cr_assert_eq(clEnqueueWriteBuffer(queue, xb, CL_TRUE, 0, bytes, x, 0, NULL, NULL), CL_SUCCESS);
    trace_buffers = 0;
    trace_on = t > 0;
    cl_event done = NULL;
    clattn_status st =
        clattn_mha_forward_cached(g.mha, g.cache, &fwd, NULL, &b, queue, 0, NULL, &done);
    trace_on = 0;
    cr_assert_eq(st, CLATTN_SUCCESS, "%s", test_last_error(g.ctx));
    cr_assert_not_null(done);
    cr_assert_eq(clEnqueueReadBuffer(queue, yb, CL_TRUE, 0, bytes, y, 1, &done, NULL), CL_SUCCESS);
    clReleaseEvent(done);
    cr_expect_eq(trace_buffers, 0, "decode step %d created %d buffers", t, trace_buffers);
    for (int s = 0; s < SEQS; ++s) {
      memcpy(g.hist[s] + g.len[s] * E, x + s * E, E * sizeof(float));
      g.len[s] += 1;
      gen_check(&g, s, y + s * E, 1, "device decode");
    }
  }
  clReleaseMemObject(xb);
  clReleaseMemObject(yb);
  gen_free(&g);
}
