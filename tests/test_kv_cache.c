/* The KV cache and the attention core over it, against the double-precision reference: a
 * host model keeps every sequence's K and V as appended, and attention over the cache must
 * equal the reference's attention over the model's concatenated K and V. Pages end up out of
 * order on purpose (sequences grown in turns, freed and grown again), and the bookkeeping
 * (lengths, usage, a full pool, truncation) is checked against the model. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
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
} fixture;

static void fixture_init(fixture* f, size_t max_sequences, size_t heads_kv, size_t head_dim,
                         size_t capacity, size_t block_tokens, size_t max_seq_len) {
  f->ctx = test_context(NULL);
  clattn_kv_cache_desc d = CLATTN_KV_CACHE_DESC_INIT;
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
  clattn_kv_append_desc d = CLATTN_KV_APPEND_DESC_INIT;
  d.count = count;
  d.seq_ids = ids;
  d.tokens = tokens;
  d.layout = layout;
  const clattn_status st = clattn_kv_cache_append_host(f->cache, &d, k, v);
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

/* Every sequence's length, and its contents read back, equal the model's. */
static void expect_contents(fixture* f) {
  const model* m = &f->m;
  const size_t row = m->max_len * m->head_dim;
  float* k = malloc(m->heads_kv * row * sizeof(float) + 1);
  float* v = malloc(m->heads_kv * row * sizeof(float) + 1);
  cr_assert(k && v);
  for (size_t s = 0; s < m->max_sequences; ++s) {
    size_t len = SIZE_MAX;
    cr_assert_eq(clattn_kv_cache_seq_length(f->cache, (int32_t)s, &len), CLATTN_SUCCESS);
    cr_assert_eq(len, m->len[s], "sequence %zu holds %zu tokens, the model %zu", s, len, m->len[s]);
    cr_assert_eq(clattn_kv_cache_read(f->cache, (int32_t)s, k, v), CLATTN_SUCCESS, "%s",
                 test_last_error(f->ctx));
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
  const size_t per_q = heads_q * seq_q * dim, per_l = heads_q * seq_q;
  float* q = malloc(count * per_q * sizeof(float));
  float* o = malloc(count * per_q * sizeof(float));
  float* lse = malloc(count * per_l * sizeof(float));
  cr_assert(q && o && lse);
  uint64_t state = seed;
  clattn_ref_fill_uniform(q, count * per_q, -1.0f, 1.0f, &state);
  for (size_t i = 0; i < count * per_q; ++i) o[i] = NAN;
  const clattn_attention_config config = test_config(variant);
  const clattn_status st = clattn_attention_cached_host(f->cache, &d, ids, q, o, lse, &config);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_attention_cached_host: %s (%s)", clattn_status_name(st),
               test_last_error(f->ctx));
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
Test(kv_cache, append_then_attend) {
  fixture f;
  fixture_init(&f, 4, 2, 32, test_len(600), 8, 0);
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
