/* The KV cache and the attention core over it, against the double-precision reference: a
 * host model keeps every sequence's K and V as appended, and attention over the cache must
 * equal the reference's attention over the model's concatenated K and V. Pages end up out of
 * order on purpose (sequences grown in turns, freed and grown again), and the bookkeeping
 * (lengths, usage, a full pool, truncation) is checked against the model. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"
#include "reference.h"
#include "test_util.h"

/* ---------------------------------------------------------------- the host model */

/* Every sequence's K and V as [heads_kv][max_len][head_dim]. */
typedef struct model {
  size_t max_sequences, heads_kv, head_dim, max_len;
  float *k, *v;
  size_t* len;
} model;

static void model_init(model* m, size_t max_sequences, size_t heads_kv, size_t head_dim,
                       size_t max_len) {
  m->max_sequences = max_sequences;
  m->heads_kv = heads_kv;
  m->head_dim = head_dim;
  m->max_len = max_len;
  const size_t n = max_sequences * heads_kv * max_len * head_dim;
  m->k = calloc(n, sizeof(float));
  m->v = calloc(n, sizeof(float));
  m->len = calloc(max_sequences, sizeof(size_t));
  cr_assert(m->k && m->v && m->len, "out of host memory");
}

static void model_free(model* m) {
  free(m->k);
  free(m->v);
  free(m->len);
}

/* Element (h, j, d) of sequence s. */
static size_t model_at(const model* m, size_t s, size_t h, size_t j, size_t d) {
  return ((s * m->heads_kv + h) * m->max_len + j) * m->head_dim + d;
}

typedef struct fixture {
  clattn_context* ctx;
  clattn_kv_cache* cache;
  model m;
  clattn_dtype dtype;   /* the cache's: K and V, appended and read back in it */
  clattn_dtype q_dtype; /* Q and O of the attention over it */
} fixture;

static void fixture_init_typed(fixture* f, size_t max_sequences, size_t heads_kv, size_t head_dim,
                               size_t capacity, size_t block_tokens, size_t max_seq_len,
                               clattn_dtype dtype, clattn_dtype q_dtype) {
  f->ctx = test_context(NULL);
  f->dtype = dtype;
  f->q_dtype = q_dtype;
  clattn_kv_cache_desc d = CLATTN_KV_CACHE_DESC_INIT;
  d.dtype = dtype;
  d.max_sequences = max_sequences;
  d.heads_kv = heads_kv;
  d.head_dim = head_dim;
  d.capacity = capacity;
  d.block_tokens = block_tokens;
  d.max_seq_len = max_seq_len;
  const clattn_status st = clattn_kv_cache_create(f->ctx, &d, &f->cache);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_kv_cache_create: %s (%s)", clattn_status_name(st),
               test_last_error(f->ctx));
  const size_t bt = block_tokens ? block_tokens : 16;
  size_t limit = (capacity + bt - 1) / bt * bt;
  if (max_seq_len && max_seq_len < limit) limit = max_seq_len;
  model_init(&f->m, max_sequences, heads_kv, head_dim, limit);
}

static void fixture_init(fixture* f, size_t max_sequences, size_t heads_kv, size_t head_dim,
                         size_t capacity, size_t block_tokens, size_t max_seq_len) {
  fixture_init_typed(f, max_sequences, heads_kv, head_dim, capacity, block_tokens, max_seq_len,
                     CLATTN_DTYPE_F32, CLATTN_DTYPE_F32);
}

static void fixture_free(fixture* f) {
  cr_assert_eq(clattn_kv_cache_destroy(f->cache), CLATTN_SUCCESS);
  clattn_context_destroy(f->ctx);
  model_free(&f->m);
}

/* Appends `tokens` random rows to each of the sequences (ids NULL: 0 .. count-1) through the
 * host entry point in `layout`; on success the model gets them too. Returns the status. */
static clattn_status append(fixture* f, size_t count, const int32_t* ids, size_t tokens,
                            clattn_layout layout, uint64_t seed) {
  model* m = &f->m;
  const size_t hk = m->heads_kv, dim = m->head_dim;
  const size_t n = count * hk * tokens * dim;
  float* k = malloc(n * sizeof(float));
  float* v = malloc(n * sizeof(float));
  cr_assert(k && v, "out of host memory");
  uint64_t state = seed;
  clattn_ref_fill_uniform(k, n, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(v, n, -1.0f, 1.0f, &state);
  test_round_to(k, n, f->dtype);
  test_round_to(v, n, f->dtype);
  void* k_bits = test_to_dtype(k, n, f->dtype);
  void* v_bits = test_to_dtype(v, n, f->dtype);
  clattn_kv_append_desc d = CLATTN_KV_APPEND_DESC_INIT;
  d.count = count;
  d.seq_ids = ids;
  d.tokens = tokens;
  d.layout = layout;
  const clattn_status st = clattn_kv_cache_append_host(f->cache, &d, k_bits, v_bits);
  free(k_bits);
  free(v_bits);
  if (st == CLATTN_SUCCESS) {
    for (size_t i = 0; i < count; ++i) {
      const size_t s = ids ? (size_t)ids[i] : i;
      cr_assert(m->len[s] + tokens <= m->max_len, "the test appends past the model");
      for (size_t h = 0; h < hk; ++h) {
        for (size_t t = 0; t < tokens; ++t) {
          const size_t src = layout == CLATTN_LAYOUT_BNHD ? ((i * tokens + t) * hk + h) * dim
                                                          : ((i * hk + h) * tokens + t) * dim;
          memcpy(&m->k[model_at(m, s, h, m->len[s] + t, 0)], &k[src], dim * sizeof(float));
          memcpy(&m->v[model_at(m, s, h, m->len[s] + t, 0)], &v[src], dim * sizeof(float));
        }
      }
      m->len[s] += tokens;
    }
  }
  free(k);
  free(v);
  return st;
}

static void append_ok(fixture* f, size_t count, const int32_t* ids, size_t tokens, uint64_t seed) {
  const clattn_status st = append(f, count, ids, tokens, CLATTN_LAYOUT_BHND, seed);
  cr_assert_eq(st, CLATTN_SUCCESS, "append of %zu tokens to %zu sequences: %s (%s)", tokens, count,
               clattn_status_name(st), test_last_error(f->ctx));
}

static void append_one(fixture* f, int32_t id, size_t tokens, uint64_t seed) {
  append_ok(f, 1, &id, tokens, seed);
}

/* Every sequence's length, and its contents read back (in the cache's dtype), equal the
 * model's. */
static void expect_contents(fixture* f) {
  const model* m = &f->m;
  const size_t row = m->max_len * m->head_dim;
  float* k = malloc(m->heads_kv * row * sizeof(float) + 1);
  float* v = malloc(m->heads_kv * row * sizeof(float) + 1);
  void* k_bits = malloc(m->heads_kv * row * sizeof(float) + 1);
  void* v_bits = malloc(m->heads_kv * row * sizeof(float) + 1);
  cr_assert(k && v && k_bits && v_bits);
  for (size_t s = 0; s < m->max_sequences; ++s) {
    size_t len = SIZE_MAX;
    cr_assert_eq(clattn_kv_cache_seq_length(f->cache, (int32_t)s, &len), CLATTN_SUCCESS);
    cr_assert_eq(len, m->len[s], "sequence %zu holds %zu tokens, the model %zu", s, len, m->len[s]);
    cr_assert_eq(clattn_kv_cache_read(f->cache, (int32_t)s, k_bits, v_bits), CLATTN_SUCCESS, "%s",
                 test_last_error(f->ctx));
    clattn_convert(k_bits, f->dtype, k, CLATTN_DTYPE_F32, m->heads_kv * len * m->head_dim);
    clattn_convert(v_bits, f->dtype, v, CLATTN_DTYPE_F32, m->heads_kv * len * m->head_dim);
    for (size_t h = 0; h < m->heads_kv; ++h) {
      for (size_t j = 0; j < len; ++j) {
        for (size_t d = 0; d < m->head_dim; ++d) {
          const size_t got = (h * len + j) * m->head_dim + d;
          const size_t want = model_at(m, s, h, j, d);
          cr_assert(k[got] == m->k[want] && v[got] == m->v[want],
                    "sequence %zu head %zu token %zu dim %zu: read K %g V %g, appended %g %g", s, h,
                    j, d, (double)k[got], (double)v[got], (double)m->k[want], (double)m->v[want]);
        }
      }
    }
  }
  free(k);
  free(v);
  free(k_bits);
  free(v_bits);
}

/* Attention of random queries (heads_q, seq_q rows per sequence) over the cache's sequences
 * `ids`, checked sequence by sequence against the reference over the model's K and V (the
 * reference's bottom-right causal alignment with seq_kv = the sequence's length is the
 * cache's per-length alignment). An empty sequence must give exact zeros and -INFINITY. */
static void attend_check(fixture* f, size_t count, const int32_t* ids, size_t heads_q, size_t seq_q,
                         int causal, clattn_variant variant, uint64_t seed) {
  const model* m = &f->m;
  const size_t dim = m->head_dim, hk = m->heads_kv;
  clattn_attention_desc d = test_desc(count, heads_q, hk, seq_q, 0, dim, causal);
  d.dtype = f->q_dtype;
  const size_t per_q = heads_q * seq_q * dim, per_l = heads_q * seq_q;
  float* q = malloc(count * per_q * sizeof(float));
  float* o = malloc(count * per_q * sizeof(float));
  float* lse = malloc(count * per_l * sizeof(float));
  cr_assert(q && o && lse);
  uint64_t state = seed;
  clattn_ref_fill_uniform(q, count * per_q, -1.0f, 1.0f, &state);
  test_round_to(q, count * per_q, f->q_dtype);
  for (size_t i = 0; i < count * per_q; ++i) o[i] = NAN;
  void* q_bits = test_to_dtype(q, count * per_q, f->q_dtype);
  void* o_bits = test_to_dtype(o, count * per_q, f->q_dtype);
  const clattn_attention_config config = test_config(variant);
  const clattn_status st =
      clattn_attention_cached_host(f->cache, &d, ids, q_bits, o_bits, lse, &config);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_attention_cached_host: %s (%s)", clattn_status_name(st),
               test_last_error(f->ctx));
  clattn_convert(o_bits, f->q_dtype, o, CLATTN_DTYPE_F32, count * per_q);
  free(q_bits);
  free(o_bits);
  for (size_t i = 0; i < count; ++i) {
    const size_t s = ids ? (size_t)ids[i] : i;
    const size_t len = m->len[s];
    char label[256];
    snprintf(label, sizeof label,
             "%s sequence %zu (batch index %zu of %zu) L=%zu Hq=%zu Hkv=%zu Nq=%zu D=%zu "
             "causal=%d",
             test_variant_name(variant), s, i, count, len, heads_q, hk, seq_q, dim, causal);
    if (len == 0) {
      for (size_t e = 0; e < per_q; ++e) {
        cr_assert(o[i * per_q + e] == 0.0f, "%s: O[%zu] = %g, not 0", label, e,
                  (double)o[i * per_q + e]);
      }
      for (size_t e = 0; e < per_l; ++e) {
        cr_assert(isinf(lse[i * per_l + e]) && lse[i * per_l + e] < 0.0f, "%s: LSE[%zu] = %g",
                  label, e, (double)lse[i * per_l + e]);
      }
      continue;
    }
    clattn_attention_desc one = test_desc(1, heads_q, hk, seq_q, len, dim, causal);
    one.dtype = f->q_dtype; /* O's rounding; K and V are exact values of the cache's dtype */
    one.k_strides =
        (clattn_strides){.batch = hk * m->max_len * dim, .head = m->max_len * dim, .seq = dim};
    one.v_strides = one.k_strides;
    const float* k = &m->k[model_at(m, s, 0, 0, 0)];
    const float* v = &m->v[model_at(m, s, 0, 0, 0)];
    test_check(&one, q + i * per_q, k, v, NULL, o + i * per_q, lse + i * per_l, label);
  }
  free(q);
  free(o);
  free(lse);
}

/* ---------------------------------------------------------------- attention over the cache */

/* Appends of different sizes to sequences of different lengths, pages scrambled (grown in
 * turns, one freed and the others grown into its blocks), then attention over the cache for
 * several query lengths, causal and not, GQA, against the reference. */
static void append_then_attend(clattn_dtype dtype, clattn_dtype q_dtype) {
  fixture f;
  fixture_init_typed(&f, 4, 2, 32, test_len(600), 8, 0, dtype, q_dtype);
  const int32_t all[4] = {0, 1, 2, 3};
  /* Interleaved growth: the sequences' blocks alternate in the pool. */
  for (int r = 0; r < 3; ++r) {
    append_one(&f, 0, 5 + r, 10 + r);
    append_one(&f, 1, 9, 20 + r);
    append_one(&f, 2, 1 + 7 * r, 30 + r);
  }
  /* Free sequence 1 and grow 0 and 3 into its blocks (LIFO: most recently freed first). */
  cr_assert_eq(clattn_kv_cache_free_sequence(f.cache, 1), CLATTN_SUCCESS);
  f.m.len[1] = 0;
  append_one(&f, 0, 13, 40);
  append_ok(&f, 2, (const int32_t[]){3, 2}, 11, 41);
  append_one(&f, 1, 3, 42);
  expect_contents(&f);
  const size_t seq_qs[] = {1, 3, 16};
  for (size_t s = 0; s < 3; ++s) {
    for (int causal = 0; causal <= 1; ++causal) {
      attend_check(&f, 4, all, 8, seq_qs[s], causal, CLATTN_VARIANT_AUTO, 100 + s * 2 + causal);
    }
  }
  /* A subset in another order, and each variant. */
  const int32_t some[2] = {2, 0};
  attend_check(&f, 2, some, 2, 4, 1, CLATTN_VARIANT_TILED_LOCAL, 200);
  attend_check(&f, 2, some, 4, 4, 0, CLATTN_VARIANT_REGISTER_BLOCKED, 201);
  fixture_free(&f);
}

Test(kv_cache, append_then_attend) { append_then_attend(CLATTN_DTYPE_F32, CLATTN_DTYPE_F32); }

/* A 16-bit cache: contents read back bit for bit, the pages read in place (SPLIT_KV) and
 * gathered (the other variants), queries of the cache's dtype or of another (float32 queries
 * over a bf16 cache, bf16 over f16). */
Test(kv_cache, append_then_attend_16bit, .timeout = 300.0) {
  append_then_attend(CLATTN_DTYPE_F16, CLATTN_DTYPE_F16);
  append_then_attend(CLATTN_DTYPE_BF16, CLATTN_DTYPE_F32);
  append_then_attend(CLATTN_DTYPE_F16, CLATTN_DTYPE_BF16);
}

/* A prompt of n tokens appended, then attended with seq_q = n and the causal flag: each row
 * sees the tokens up to its own (causal self-attention), whatever the sequence's length;
 * sequences shorter than seq_q leave their first rows with no key. */
Test(kv_cache, causal_prompt_alignment) {
  const size_t n = test_len(150);
  fixture f;
  fixture_init(&f, 3, 2, 40, 3 * n + 64, 16, 0);
  append_one(&f, 0, n, 1);
  append_one(&f, 1, n - 7, 2);
  append_one(&f, 2, 5, 3);
  const int32_t ids[3] = {0, 1, 2};
  attend_check(&f, 3, ids, 4, n, 1, CLATTN_VARIANT_AUTO, 4);
  /* The next tokens, one at a time as in decoding, each seeing the whole sequence. */
  for (int t = 0; t < 3; ++t) {
    append_ok(&f, 3, ids, 1, 10 + t);
    attend_check(&f, 3, ids, 4, 1, 1, CLATTN_VARIANT_AUTO, 20 + t);
  }
  fixture_free(&f);
}

/* Query lengths 1..16 and head groups 1..8 (MHA, GQA, MQA) over sequences of unequal length. */
Test(kv_cache, query_lengths_and_groups) {
  fixture f;
  fixture_init(&f, 3, 2, 24, test_len(400), 16, 0);
  append_ok(&f, 3, NULL, test_len(70), 1);
  append_one(&f, 1, test_len(53), 2);
  append_one(&f, 2, 1, 3);
  const size_t groups[] = {1, 2, 4};
  for (size_t nq = 1; nq <= 16; ++nq) {
    const size_t g = groups[nq % 3];
    attend_check(&f, 3, NULL, 2 * g, nq, (int)(nq % 2), CLATTN_VARIANT_AUTO, 50 + nq);
  }
  fixture_free(&f);
  /* MQA: one key/value head for 8 query heads. */
  fixture_init(&f, 2, 1, 64, test_len(300), 32, 0);
  append_ok(&f, 2, NULL, test_len(90), 5);
  append_one(&f, 0, test_len(31), 6);
  attend_check(&f, 2, NULL, 8, 1, 0, CLATTN_VARIANT_AUTO, 7);
  attend_check(&f, 2, NULL, 8, 5, 1, CLATTN_VARIANT_AUTO, 8);
  fixture_free(&f);
}

/* Sequences of a few thousand tokens: one from large appends, one grown a token at a time
 * after its prompt. */
Test(kv_cache, long_sequences, .timeout = 300.0) {
  const size_t big = test_small() ? 300 : 3000;
  fixture f;
  fixture_init(&f, 2, 2, 64, 2 * big + 256, 0, 0);
  append_one(&f, 0, big / 3, 1);
  append_one(&f, 1, big / 2, 2);
  append_one(&f, 0, big / 3 + 1, 3);
  append_one(&f, 0, big - 2 * (big / 3) - 1, 4);
  for (size_t t = 0; t < 40; ++t) append_one(&f, 1, 1, 100 + t);
  attend_check(&f, 2, NULL, 4, 1, 0, CLATTN_VARIANT_AUTO, 5);
  attend_check(&f, 2, NULL, 4, 7, 1, CLATTN_VARIANT_AUTO, 6);
  expect_contents(&f);
  fixture_free(&f);
}

/* A fresh cache (every sequence empty), and a batch mixing empty and filled sequences:
 * empty ones give zero rows and LSE -INFINITY. */
Test(kv_cache, empty_sequences) {
  fixture f;
  fixture_init(&f, 3, 1, 16, 64, 8, 0);
  attend_check(&f, 3, NULL, 2, 3, 0, CLATTN_VARIANT_AUTO, 1);
  attend_check(&f, 3, NULL, 2, 3, 1, CLATTN_VARIANT_AUTO, 2);
  append_one(&f, 1, 9, 3);
  attend_check(&f, 3, NULL, 2, 3, 1, CLATTN_VARIANT_AUTO, 4);
  attend_check(&f, 3, NULL, 2, 1, 0, CLATTN_VARIANT_TILED_LOCAL, 5);
  fixture_free(&f);
}

/* ---------------------------------------------------------------- bookkeeping */

static clattn_kv_cache_usage usage_of(fixture* f) {
  clattn_kv_cache_usage u = CLATTN_KV_CACHE_USAGE_INIT;
  cr_assert_eq(clattn_kv_cache_get_usage(f->cache, &u), CLATTN_SUCCESS, "%s",
               test_last_error(f->ctx));
  return u;
}

static void expect_usage(fixture* f, size_t blocks_used, size_t tokens_used) {
  const clattn_kv_cache_usage u = usage_of(f);
  cr_expect_eq(u.blocks_used, blocks_used, "blocks_used %zu, expected %zu", u.blocks_used,
               blocks_used);
  cr_expect_eq(u.tokens_used, tokens_used, "tokens_used %zu, expected %zu", u.tokens_used,
               tokens_used);
  const size_t block_bytes = 2 * f->m.heads_kv * u.block_tokens * f->m.head_dim * sizeof(float);
  cr_expect_eq(u.bytes_total, u.blocks_total * block_bytes);
  cr_expect_eq(u.bytes_used, blocks_used * block_bytes);
}

/* The pool running full: CLATTN_ERROR_CACHE_FULL, with no sequence of the call appended to
 * (lengths, contents and usage unchanged), and room again once a sequence is freed. */
Test(kv_cache, pool_full) {
  fixture f;
  fixture_init(&f, 3, 2, 8, 64, 16, 0); /* 4 blocks of 16 */
  const clattn_kv_cache_usage u = usage_of(&f);
  cr_assert_eq(u.blocks_total, 4);
  cr_assert_eq(u.block_tokens, 16);
  append_one(&f, 0, 40, 1); /* 3 blocks */
  append_one(&f, 1, 10, 2); /* 1 block */
  append_one(&f, 0, 8, 3);  /* 48: still 3 blocks */
  expect_usage(&f, 4, 58);
  const clattn_status full[] = {
      append(&f, 1, (const int32_t[]){0}, 1, CLATTN_LAYOUT_BHND, 4),
      append(&f, 1, (const int32_t[]){1}, 7, CLATTN_LAYOUT_BHND, 5),
      append(&f, 1, (const int32_t[]){2}, 1, CLATTN_LAYOUT_BHND, 6),
      /* Sequence 1 has room in its block, 2 has none: neither is appended to. */
      append(&f, 2, (const int32_t[]){1, 2}, 1, CLATTN_LAYOUT_BHND, 7),
  };
  for (size_t i = 0; i < sizeof full / sizeof full[0]; ++i) {
    cr_expect_eq(full[i], CLATTN_ERROR_CACHE_FULL, "append %zu: %s", i,
                 clattn_status_name(full[i]));
  }
  expect_usage(&f, 4, 58);
  expect_contents(&f);
  attend_check(&f, 3, NULL, 2, 2, 1, CLATTN_VARIANT_AUTO, 8);
  append_one(&f, 1, 6, 9); /* fills sequence 1's block exactly */
  expect_usage(&f, 4, 64);
  cr_assert_eq(clattn_kv_cache_free_sequence(f.cache, 0), CLATTN_SUCCESS);
  f.m.len[0] = 0;
  expect_usage(&f, 1, 16);
  append_ok(&f, 2, (const int32_t[]){2, 1}, 16, 10); /* one block each of the 3 freed */
  expect_usage(&f, 3, 48);
  append_one(&f, 2, 4, 11); /* the last one */
  expect_usage(&f, 4, 52);
  cr_expect_eq(append(&f, 1, (const int32_t[]){0}, 1, CLATTN_LAYOUT_BHND, 12),
               CLATTN_ERROR_CACHE_FULL);
  expect_contents(&f);
  attend_check(&f, 3, NULL, 4, 3, 0, CLATTN_VARIANT_AUTO, 11);
  fixture_free(&f);
}

/* max_seq_len limits each sequence even when the pool has room. */
Test(kv_cache, max_seq_len) {
  fixture f;
  fixture_init(&f, 2, 1, 8, 200, 8, 20);
  append_one(&f, 0, 20, 1);
  cr_expect_eq(append(&f, 1, (const int32_t[]){0}, 1, CLATTN_LAYOUT_BHND, 2),
               CLATTN_ERROR_CACHE_FULL);
  cr_expect_eq(append(&f, 1, (const int32_t[]){1}, 21, CLATTN_LAYOUT_BHND, 3),
               CLATTN_ERROR_CACHE_FULL);
  cr_expect_eq(append(&f, 2, (const int32_t[]){1, 0}, 1, CLATTN_LAYOUT_BHND, 4),
               CLATTN_ERROR_CACHE_FULL);
  append_one(&f, 1, 19, 5);
  expect_usage(&f, 3 + 3, 39);
  expect_contents(&f);
  attend_check(&f, 2, NULL, 1, 2, 1, CLATTN_VARIANT_AUTO, 6);
  fixture_free(&f);
}

/* Truncation keeps the first tokens and frees the blocks past them; the next append
 * overwrites from there (inside a partly kept block too). */
Test(kv_cache, truncate_then_append) {
  fixture f;
  fixture_init(&f, 2, 2, 16, 128, 8, 0);
  append_one(&f, 0, 30, 1);
  append_one(&f, 1, 12, 2);
  expect_usage(&f, 4 + 2, 42);
  cr_assert_eq(clattn_kv_cache_truncate(f.cache, 0, 13), CLATTN_SUCCESS, "%s",
               test_last_error(f.ctx));
  f.m.len[0] = 13;
  expect_usage(&f, 2 + 2, 25);
  cr_expect_eq(clattn_kv_cache_truncate(f.cache, 0, 14), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_kv_cache_truncate(f.cache, 0, 13), CLATTN_SUCCESS); /* no change */
  append_one(&f, 1, 9, 3); /* takes a block sequence 0 gave back */
  append_one(&f, 0, 25, 4);
  expect_usage(&f, 5 + 3, 59);
  expect_contents(&f);
  attend_check(&f, 2, NULL, 4, 3, 1, CLATTN_VARIANT_AUTO, 5);
  cr_assert_eq(clattn_kv_cache_truncate(f.cache, 1, 0), CLATTN_SUCCESS);
  f.m.len[1] = 0;
  expect_usage(&f, 5, 38);
  attend_check(&f, 2, NULL, 2, 1, 0, CLATTN_VARIANT_AUTO, 6);
  fixture_free(&f);
}

/* free_sequence and reset empty sequences and give their blocks back; the cache is as new
 * after a reset. */
Test(kv_cache, free_and_reset) {
  fixture f;
  fixture_init(&f, 3, 1, 32, 100, 10, 0);
  expect_usage(&f, 0, 0);
  const clattn_kv_cache_usage u = usage_of(&f);
  cr_expect_eq(u.blocks_total, 10);
  cr_expect_eq(u.bytes_total, 10 * 2 * 10 * 32 * sizeof(float));
  append_ok(&f, 3, NULL, 15, 1);
  expect_usage(&f, 6, 45);
  cr_assert_eq(clattn_kv_cache_free_sequence(f.cache, 1), CLATTN_SUCCESS);
  f.m.len[1] = 0;
  expect_usage(&f, 4, 30);
  cr_assert_eq(clattn_kv_cache_free_sequence(f.cache, 1), CLATTN_SUCCESS); /* already empty */
  expect_contents(&f);
  cr_assert_eq(clattn_kv_cache_reset(f.cache), CLATTN_SUCCESS);
  memset(f.m.len, 0, 3 * sizeof(size_t));
  expect_usage(&f, 0, 0);
  expect_contents(&f);
  append_ok(&f, 2, (const int32_t[]){2, 0}, 50, 2);
  expect_usage(&f, 10, 100);
  expect_contents(&f);
  attend_check(&f, 3, NULL, 1, 2, 0, CLATTN_VARIANT_AUTO, 3);
  fixture_free(&f);
}

/* ---------------------------------------------------------------- the cl_mem entry points */

/* clattn_kv_cache_append from cl_mem at offsets with explicit strides and the BNHD layout,
 * and clattn_attention_cached into cl_mem with an LSE, offsets, a wait list and an event. */
Test(kv_cache, device_entry_points) {
  fixture f;
  fixture_init(&f, 2, 2, 16, 256, 16, 0);
  append(&f, 2, NULL, 21, CLATTN_LAYOUT_BNHD, 1);
  model* m = &f.m;
  cl_context cl_ctx = NULL;
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(f.ctx, &cl_ctx, NULL, &queue), CLATTN_SUCCESS);

  /* K [b][n][h][d] padded, V [b][h][n][d] with gaps, from offsets 5 and 3. */
  const size_t tokens = 17, hk = 2, dim = 16, count = 2;
  const clattn_strides ks = {.batch = tokens * (hk * dim + 4), .head = dim, .seq = hk * dim + 4};
  const clattn_strides vs = {
      .batch = hk * (tokens * dim + 8), .head = tokens * dim + 8, .seq = dim};
  const size_t nk = 5 + count * ks.batch, nv = 3 + count * vs.batch;
  float* k = malloc(nk * sizeof(float));
  float* v = malloc(nv * sizeof(float));
  cr_assert(k && v);
  uint64_t state = 77;
  clattn_ref_fill_uniform(k, nk, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(v, nv, -1.0f, 1.0f, &state);
  cl_int err = CL_SUCCESS;
  cl_mem kb =
      clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nk * sizeof(float), k, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_mem vb =
      clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nv * sizeof(float), v, &err);
  cr_assert_eq(err, CL_SUCCESS);
  clattn_kv_append_desc ad = CLATTN_KV_APPEND_DESC_INIT;
  ad.count = count;
  ad.seq_ids = (const int32_t[]){1, 0};
  ad.tokens = tokens;
  ad.k_strides = ks;
  ad.v_strides = vs;
  cl_event appended = NULL;
  clattn_status st = clattn_kv_cache_append(f.cache, &ad, kb, 5, vb, 3, NULL, 0, NULL, &appended);
  cr_assert_eq(st, CLATTN_SUCCESS, "append: %s (%s)", clattn_status_name(st),
               test_last_error(f.ctx));
  cr_assert_not_null(appended);
  for (size_t i = 0; i < count; ++i) {
    const size_t s = (size_t)ad.seq_ids[i];
    for (size_t h = 0; h < hk; ++h) {
      for (size_t t = 0; t < tokens; ++t) {
        memcpy(&m->k[model_at(m, s, h, m->len[s] + t, 0)],
               &k[5 + i * ks.batch + h * ks.head + t * ks.seq], dim * sizeof(float));
        memcpy(&m->v[model_at(m, s, h, m->len[s] + t, 0)],
               &v[3 + i * vs.batch + h * vs.head + t * vs.seq], dim * sizeof(float));
      }
    }
    m->len[s] += tokens;
  }

  /* Q at offset 7, O at offset 11 in BNHD, LSE at offset 2, after the append's event. */
  const size_t hq = 4, nq = 3;
  clattn_attention_desc d = test_desc(count, hq, hk, nq, 0, dim, 1);
  d.layout = CLATTN_LAYOUT_BNHD;
  const size_t nqe = count * hq * nq * dim, nl = count * hq * nq;
  float* q = malloc(nqe * sizeof(float));
  float* o = malloc(nqe * sizeof(float));
  float* lse = malloc(nl * sizeof(float));
  cr_assert(q && o && lse);
  clattn_ref_fill_uniform(q, nqe, -1.0f, 1.0f, &state);
  cl_mem qb = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY, (7 + nqe) * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_mem ob = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, (11 + nqe) * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_mem lb = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, (2 + nl) * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cr_assert_eq(clEnqueueWriteBuffer(queue, qb, CL_TRUE, 7 * sizeof(float), nqe * sizeof(float), q,
                                    0, NULL, NULL),
               CL_SUCCESS);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = qb;
  b.q_offset = 7;
  b.o = ob;
  b.o_offset = 11;
  b.lse = lb;
  b.lse_offset = 2;
  cl_event done = NULL;
  const int32_t ids[2] = {0, 1};
  st = clattn_attention_cached(f.cache, &d, ids, &b, NULL, queue, 1, &appended, &done);
  cr_assert_eq(st, CLATTN_SUCCESS, "attention: %s (%s)", clattn_status_name(st),
               test_last_error(f.ctx));
  cr_assert_not_null(done);
  cr_assert_eq(clEnqueueReadBuffer(queue, ob, CL_TRUE, 11 * sizeof(float), nqe * sizeof(float), o,
                                   1, &done, NULL),
               CL_SUCCESS);
  cr_assert_eq(clEnqueueReadBuffer(queue, lb, CL_TRUE, 2 * sizeof(float), nl * sizeof(float), lse,
                                   0, NULL, NULL),
               CL_SUCCESS);
  for (size_t i = 0; i < count; ++i) {
    clattn_attention_desc one = test_desc(1, hq, hk, nq, m->len[i], dim, 1);
    one.q_strides = one.o_strides =
        (clattn_strides){.batch = nq * hq * dim, .head = dim, .seq = hq * dim};
    one.k_strides =
        (clattn_strides){.batch = hk * m->max_len * dim, .head = m->max_len * dim, .seq = dim};
    one.v_strides = one.k_strides;
    char label[64];
    snprintf(label, sizeof label, "cl_mem entry points, sequence %zu", i);
    test_check(&one, q + i * nq * hq * dim, &m->k[model_at(m, i, 0, 0, 0)],
               &m->v[model_at(m, i, 0, 0, 0)], NULL, o + i * nq * hq * dim, lse + i * hq * nq,
               label);
  }
  /* Again with the caller's workspace for the attention's scratch: the same results. */
  cl_mem ws = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, (size_t)1 << 20, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  b.workspace = ws;
  b.workspace_offset = 64;
  float* o2 = malloc(nqe * sizeof(float));
  cr_assert_not_null(o2);
  const clattn_attention_config regblock = test_config(CLATTN_VARIANT_REGISTER_BLOCKED);
  cl_event done2 = NULL;
  st = clattn_attention_cached(f.cache, &d, ids, &b, &regblock, queue, 0, NULL, &done2);
  cr_assert_eq(st, CLATTN_SUCCESS, "attention, caller's workspace: %s (%s)", clattn_status_name(st),
               test_last_error(f.ctx));
  cr_assert_eq(clEnqueueReadBuffer(queue, ob, CL_TRUE, 11 * sizeof(float), nqe * sizeof(float), o2,
                                   1, &done2, NULL),
               CL_SUCCESS);
  for (size_t i = 0; i < count; ++i) {
    clattn_attention_desc one = test_desc(1, hq, hk, nq, m->len[i], dim, 1);
    one.q_strides = one.o_strides =
        (clattn_strides){.batch = nq * hq * dim, .head = dim, .seq = hq * dim};
    one.k_strides =
        (clattn_strides){.batch = hk * m->max_len * dim, .head = m->max_len * dim, .seq = dim};
    one.v_strides = one.k_strides;
    test_check(&one, q + i * nq * hq * dim, &m->k[model_at(m, i, 0, 0, 0)],
               &m->v[model_at(m, i, 0, 0, 0)], NULL, o2 + i * nq * hq * dim, NULL,
               "caller's workspace");
  }
  b.workspace_offset = 4; /* not a multiple of 16 */
  cr_expect_eq(clattn_attention_cached(f.cache, &d, ids, &b, &regblock, queue, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  clReleaseEvent(done2);
  clReleaseMemObject(ws);
  free(o2);
  expect_contents(&f);
  clReleaseEvent(appended);
  clReleaseEvent(done);
  cl_mem mems[5] = {kb, vb, qb, ob, lb};
  for (int i = 0; i < 5; ++i) clReleaseMemObject(mems[i]);
  free(k);
  free(v);
  free(q);
  free(o);
  free(lse);
  fixture_free(&f);
}

/* ---------------------------------------------------------------- bad input */

static clattn_status create_with(clattn_context* ctx, clattn_kv_cache_desc d) {
  clattn_kv_cache* cache = (clattn_kv_cache*)(uintptr_t)1;
  const clattn_status st = clattn_kv_cache_create(ctx, &d, &cache);
  cr_expect_null(cache, "a failed create must leave *out NULL");
  if (st == CLATTN_SUCCESS) clattn_kv_cache_destroy(cache);
  return st;
}

/* Each refused with its status and a message; nothing created. */
Test(kv_cache, bad_create) {
  clattn_context* ctx = test_context(NULL);
  clattn_kv_cache_desc good = CLATTN_KV_CACHE_DESC_INIT;
  good.max_sequences = 2;
  good.heads_kv = 2;
  good.head_dim = 16;
  good.capacity = 64;
  clattn_kv_cache* cache = NULL;
  cr_expect_eq(clattn_kv_cache_create(NULL, &good, &cache), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_create(ctx, NULL, &cache), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_create(ctx, &good, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  struct {
    const char* what;
    clattn_kv_cache_desc d;
    clattn_status want;
  } cases[16];
  size_t n = 0;
#define CASE(text, field, value, status) \
  cases[n].what = text;                  \
  cases[n].d = good;                     \
  cases[n].d.field = value;              \
  cases[n++].want = status
  CASE("struct_size 0", struct_size, 0, CLATTN_ERROR_INVALID_ARGUMENT);
  CASE("struct_size too large", struct_size, sizeof good + 8, CLATTN_ERROR_INVALID_ARGUMENT);
  CASE("dtype", dtype, (clattn_dtype)7, CLATTN_ERROR_INVALID_ARGUMENT);
  CASE("max_sequences 0", max_sequences, 0, CLATTN_ERROR_INVALID_SHAPE);
  CASE("heads_kv 0", heads_kv, 0, CLATTN_ERROR_INVALID_SHAPE);
  CASE("head_dim 0", head_dim, 0, CLATTN_ERROR_INVALID_SHAPE);
  CASE("head_dim 257", head_dim, 257, CLATTN_ERROR_INVALID_SHAPE);
  CASE("capacity 0", capacity, 0, CLATTN_ERROR_INVALID_SHAPE);
  CASE("capacity SIZE_MAX (rounding overflows)", capacity, SIZE_MAX, CLATTN_ERROR_INVALID_SHAPE);
  CASE("pool beyond 32-bit indexing", capacity, (size_t)1 << 28, CLATTN_ERROR_INVALID_SHAPE);
  CASE("block_tokens SIZE_MAX", block_tokens, SIZE_MAX, CLATTN_ERROR_INVALID_SHAPE);
  CASE("max_sequences above 2^31", max_sequences, (size_t)1 << 32, CLATTN_ERROR_INVALID_SHAPE);
#undef CASE
  for (size_t i = 0; i < n; ++i) {
    const clattn_status st = create_with(ctx, cases[i].d);
    cr_expect_eq(st, cases[i].want, "%s: got %s, expected %s", cases[i].what,
                 clattn_status_name(st), clattn_status_name(cases[i].want));
    cr_expect_neq(test_last_error(ctx)[0], '\0', "%s: no message", cases[i].what);
  }
  cr_expect_eq(clattn_kv_cache_destroy(NULL), CLATTN_SUCCESS);
  clattn_context_destroy(ctx);
}

/* Bad appends, attention calls and queries: each refused, the cache unchanged. */
Test(kv_cache, bad_calls) {
  fixture f;
  fixture_init(&f, 3, 2, 16, 128, 8, 0);
  append_ok(&f, 2, NULL, 5, 1);
  const int32_t bad_ids[][2] = {{0, 3}, {-1, 0}, {1, 1}};
  for (size_t i = 0; i < 3; ++i) {
    const clattn_status st = append(&f, 2, bad_ids[i], 1, CLATTN_LAYOUT_BHND, 2);
    cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "ids {%d, %d}: %s", (int)bad_ids[i][0],
                 (int)bad_ids[i][1], clattn_status_name(st));
  }
  cr_expect_eq(append(&f, 4, NULL, 1, CLATTN_LAYOUT_BHND, 3), CLATTN_ERROR_INVALID_ARGUMENT,
               "more sequences than the cache holds");

  float kv[2 * 16 * 4] = {0};
  clattn_kv_append_desc ad = CLATTN_KV_APPEND_DESC_INIT;
  ad.count = 1;
  ad.tokens = 1;
  cr_expect_eq(clattn_kv_cache_append_host(NULL, &ad, kv, kv), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_append_host(f.cache, NULL, kv, kv), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_append_host(f.cache, &ad, NULL, kv), CLATTN_ERROR_INVALID_ARGUMENT);
  ad.tokens = 0;
  cr_expect_eq(clattn_kv_cache_append_host(f.cache, &ad, kv, kv), CLATTN_ERROR_INVALID_SHAPE);
  ad.tokens = 1;
  ad.count = 0;
  cr_expect_eq(clattn_kv_cache_append_host(f.cache, &ad, kv, kv), CLATTN_ERROR_INVALID_SHAPE);
  ad.count = 1;
  ad.layout = (clattn_layout)9;
  cr_expect_eq(clattn_kv_cache_append_host(f.cache, &ad, kv, kv), CLATTN_ERROR_INVALID_ARGUMENT);
  ad.layout = CLATTN_LAYOUT_BHND;
  ad.struct_size = 4;
  cr_expect_eq(clattn_kv_cache_append_host(f.cache, &ad, kv, kv), CLATTN_ERROR_INVALID_ARGUMENT);
  ad.struct_size = sizeof ad;
  ad.k_strides = (clattn_strides){.batch = (size_t)1 << 40, .head = 16, .seq = 32};
  cr_expect_eq(clattn_kv_cache_append_host(f.cache, &ad, kv, kv), CLATTN_ERROR_UNSUPPORTED);
  ad.k_strides = (clattn_strides){0, 0, 0};

  /* cl_mem forms: NULL, too small, a wait list without events. */
  cl_context cl_ctx = NULL;
  cr_assert_eq(clattn_context_get_cl(f.ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem small = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, 16 * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_mem big = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, 4096 * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cr_expect_eq(clattn_kv_cache_append(f.cache, &ad, NULL, 0, big, 0, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_append(f.cache, &ad, small, 0, big, 0, NULL, 0, NULL, NULL),
               CLATTN_ERROR_BUFFER_TOO_SMALL);
  cr_expect_eq(clattn_kv_cache_append(f.cache, &ad, big, 0, big, 4090, NULL, 0, NULL, NULL),
               CLATTN_ERROR_BUFFER_TOO_SMALL);
  cr_expect_eq(clattn_kv_cache_append(f.cache, &ad, big, 0, big, 0, NULL, 1, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);

  /* Attention over the cache. */
  float q[2 * 4 * 16] = {0}, o[2 * 4 * 16], lse[2 * 4]; /* room for batch 2 */
  clattn_attention_desc d = test_desc(1, 4, 2, 1, 0, 16, 0);
  cr_expect_eq(clattn_attention_cached_host(NULL, &d, NULL, q, o, lse, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_attention_cached_host(f.cache, NULL, NULL, q, o, lse, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_attention_cached_host(f.cache, &d, NULL, NULL, o, lse, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_attention_desc e = d;
  e.seq_kv = 5;
  cr_expect_eq(clattn_attention_cached_host(f.cache, &e, NULL, q, o, lse, NULL),
               CLATTN_ERROR_INVALID_SHAPE, "seq_kv must be 0");
  e = d;
  e.heads_kv = 4;
  cr_expect_eq(clattn_attention_cached_host(f.cache, &e, NULL, q, o, lse, NULL),
               CLATTN_ERROR_INVALID_SHAPE, "heads_kv differs from the cache's");
  e = d;
  e.head_dim = 8;
  cr_expect_eq(clattn_attention_cached_host(f.cache, &e, NULL, q, o, lse, NULL),
               CLATTN_ERROR_INVALID_SHAPE, "head_dim differs from the cache's");
  e = d;
  e.struct_size = 3;
  cr_expect_eq(clattn_attention_cached_host(f.cache, &e, NULL, q, o, lse, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  e = d;
  e.batch = 2;
  cr_expect_eq(clattn_attention_cached_host(f.cache, &e, (const int32_t[]){2, 2}, q, o, lse, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT, "repeated id");
  cr_expect_eq(clattn_attention_cached_host(f.cache, &d, (const int32_t[]){3}, q, o, lse, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT, "id out of range");
  clattn_attention_config bad_config = test_config((clattn_variant)42);
  cr_expect_eq(clattn_attention_cached_host(f.cache, &d, NULL, q, o, lse, &bad_config),
               CLATTN_ERROR_INVALID_ARGUMENT, "unknown variant");
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = big;
  b.o = big;
  b.o_offset = 1024;
  b.k = big; /* K comes from the cache */
  cr_expect_eq(clattn_attention_cached(f.cache, &d, NULL, &b, NULL, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  b.k = NULL;
  b.kv_lengths = big;
  cr_expect_eq(clattn_attention_cached(f.cache, &d, NULL, &b, NULL, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  b.kv_lengths = NULL;
  b.o_offset = 0; /* O over Q */
  cr_expect_eq(clattn_attention_cached(f.cache, &d, NULL, &b, NULL, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  b.o = small;
  b.o_offset = 8;
  cr_expect_eq(clattn_attention_cached(f.cache, &d, NULL, &b, NULL, NULL, 0, NULL, NULL),
               CLATTN_ERROR_BUFFER_TOO_SMALL);
  cr_expect_eq(clattn_attention_cached(f.cache, &d, NULL, NULL, NULL, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);

  /* Queries. */
  size_t len = 0;
  cr_expect_eq(clattn_kv_cache_seq_length(NULL, 0, &len), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_seq_length(f.cache, 0, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_seq_length(f.cache, 3, &len), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_seq_length(f.cache, -1, &len), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_truncate(f.cache, 0, 6), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_truncate(f.cache, 7, 0), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_truncate(NULL, 0, 0), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_free_sequence(f.cache, 3), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_free_sequence(NULL, 0), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_reset(NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_read(f.cache, 0, NULL, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_read(f.cache, 5, kv, kv), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_read(NULL, 0, kv, kv), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_read(f.cache, 2, NULL, NULL), CLATTN_SUCCESS, "empty: nothing read");
  clattn_kv_cache_usage u = CLATTN_KV_CACHE_USAGE_INIT;
  cr_expect_eq(clattn_kv_cache_get_usage(NULL, &u), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_kv_cache_get_usage(f.cache, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  u.struct_size = 1;
  cr_expect_eq(clattn_kv_cache_get_usage(f.cache, &u), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_neq(test_last_error(f.ctx)[0], '\0');

  /* Nothing changed, and the cache still works. */
  expect_usage(&f, 2, 10);
  expect_contents(&f);
  attend_check(&f, 3, NULL, 4, 2, 1, CLATTN_VARIANT_AUTO, 9);
  clReleaseMemObject(small);
  clReleaseMemObject(big);
  fixture_free(&f);
}

/* ---------------------------------------------------------------- threads */

typedef struct decode_thread {
  fixture* f;
  int32_t id;
  size_t steps;
  const float* k; /* [steps][heads_kv][head_dim] */
  const float* v;
  clattn_status status;
} decode_thread;

/* Decode steps on one sequence: append a token, attend over it (on the context's queue,
 * shared with the other threads: the cache's calls stay in the order they are made). */
static void* decode_run(void* arg) {
  decode_thread* t = arg;
  const model* m = &t->f->m;
  const size_t row = m->heads_kv * m->head_dim;
  float q[4 * 64], o[4 * 64];
  for (size_t i = 0; i < 4 * m->head_dim; ++i) q[i] = (float)i / 100.0f;
  clattn_kv_append_desc ad = CLATTN_KV_APPEND_DESC_INIT;
  ad.count = 1;
  ad.seq_ids = &t->id;
  ad.tokens = 1;
  clattn_attention_desc d = test_desc(1, 4, m->heads_kv, 1, 0, m->head_dim, 1);
  t->status = CLATTN_SUCCESS;
  for (size_t s = 0; s < t->steps && t->status == CLATTN_SUCCESS; ++s) {
    t->status = clattn_kv_cache_append_host(t->f->cache, &ad, t->k + s * row, t->v + s * row);
    if (t->status == CLATTN_SUCCESS) {
      t->status = clattn_attention_cached_host(t->f->cache, &d, &t->id, q, o, NULL, NULL);
    }
  }
  return NULL;
}

/* Threads decoding their own sequences at the same time: every token lands where it belongs. */
Test(kv_cache, threads_decode_their_sequences, .timeout = 300.0) {
  enum { THREADS = 3 };
  const size_t steps = test_small() ? 12 : 40;
  fixture f;
  fixture_init(&f, THREADS, 2, 16, THREADS * 64, 4, 0);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  if (clattn_context_get_device_info(f.ctx, &info) == CLATTN_SUCCESS &&
      strstr(info.platform_name, "Oclgrind") != NULL) {
    fixture_free(&f);
    cr_skip_test("Oclgrind cannot run kernels from several threads at once");
  }
  model* m = &f.m;
  const size_t row = m->heads_kv * m->head_dim;
  float* k = malloc(THREADS * steps * row * sizeof(float));
  float* v = malloc(THREADS * steps * row * sizeof(float));
  cr_assert(k && v);
  uint64_t state = 3;
  clattn_ref_fill_uniform(k, THREADS * steps * row, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(v, THREADS * steps * row, -1.0f, 1.0f, &state);
  decode_thread t[THREADS];
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; ++i) {
    t[i] = (decode_thread){.f = &f,
                           .id = (int32_t)i,
                           .steps = steps,
                           .k = k + i * steps * row,
                           .v = v + i * steps * row};
    cr_assert_eq(pthread_create(&th[i], NULL, decode_run, &t[i]), 0);
  }
  for (int i = 0; i < THREADS; ++i) pthread_join(th[i], NULL);
  for (int i = 0; i < THREADS; ++i) {
    cr_assert_eq(t[i].status, CLATTN_SUCCESS, "thread %d: %s (%s)", i,
                 clattn_status_name(t[i].status), test_last_error(f.ctx));
    for (size_t s = 0; s < steps; ++s) {
      for (size_t h = 0; h < m->heads_kv; ++h) {
        memcpy(&m->k[model_at(m, (size_t)i, h, s, 0)], t[i].k + s * row + h * m->head_dim,
               m->head_dim * sizeof(float));
        memcpy(&m->v[model_at(m, (size_t)i, h, s, 0)], t[i].v + s * row + h * m->head_dim,
               m->head_dim * sizeof(float));
      }
    }
    m->len[i] = steps;
  }
  expect_contents(&f);
  attend_check(&f, THREADS, NULL, 4, 2, 1, CLATTN_VARIANT_AUTO, 1);
  free(k);
  free(v);
  fixture_free(&f);
}

/* ---------------------------------------------------------------- pages read in place */

/* The variant that reads the cache's pages where they are (SPLIT_KV), asked for by name,
 * over scrambled pages, decode and short prompts, causal and not, GQA; skipped in a build
 * without it. */
Test(kv_cache, pages_read_in_place) {
  if (clattn_variant_name(CLATTN_VARIANT_SPLIT_KV) == NULL) {
    cr_skip_test("this build has no SPLIT_KV variant");
  }
  fixture f;
  fixture_init(&f, 4, 2, 64, test_len(900), 16, 0);
  for (int r = 0; r < 4; ++r) {
    append_one(&f, 0, 17 + r, 10 + r);
    append_one(&f, 1, 33, 20 + r);
    append_one(&f, 3, 1 + 9 * r, 30 + r);
  }
  cr_assert_eq(clattn_kv_cache_free_sequence(f.cache, 1), CLATTN_SUCCESS);
  f.m.len[1] = 0;
  append_ok(&f, 2, (const int32_t[]){3, 0}, 40, 40);
  append_one(&f, 2, 5, 41);
  const int32_t ids[4] = {3, 0, 2, 1};
  const size_t seq_qs[] = {1, 2, 5, 16};
  for (size_t s = 0; s < 4; ++s) {
    for (int causal = 0; causal <= 1; ++causal) {
      attend_check(&f, 4, ids, 8, seq_qs[s], causal, CLATTN_VARIANT_SPLIT_KV,
                   300 + s * 2 + (uint64_t)causal);
    }
  }
  attend_check(&f, 2, (const int32_t[]){1, 2}, 2, 1, 1, CLATTN_VARIANT_SPLIT_KV, 400);
  fixture_free(&f);
}
