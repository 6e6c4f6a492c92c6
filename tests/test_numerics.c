/* Numerics at the edges, on every variant: large logits (scores up to ±1e4, and ±1e30)
 * give a correct, finite softmax; values up to 1e30 do not overflow the accumulator; NaN and
 * Inf in the inputs propagate exactly as include/clattn/clattn.h documents; rows that see no
 * key are exactly 0 with LSE -INFINITY. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"
#include "reference.h"
#include "test_util.h"

static const clattn_variant kVariants[] = {CLATTN_VARIANT_TILED_LOCAL,
                                           CLATTN_VARIANT_REGISTER_BLOCKED};
#define NUM_VARIANTS (sizeof kVariants / sizeof kVariants[0])

static void run(clattn_context* ctx, const clattn_attention_desc* desc, clattn_variant variant,
                test_problem* p, const int32_t* kv_lengths, const char* label) {
  const clattn_attention_config config = test_config(variant);
  const clattn_status st =
      clattn_attention_host(ctx, desc, p->q, p->k, p->v, p->o, p->lse, kv_lengths, &config);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s (%s)", label, clattn_status_name(st),
               test_last_error(ctx));
}

/* ---------------------------------------------------------------- large logits */

/* Integer Q and K in [-25, 25] with D = 16 and scale 1: scores up to ±1e4, exactly
 * representable. Checked against the reference under its bound, which grows with the score
 * magnitude (a relative rounding of a score of 1e4 moves its weight by about 1e-3). */
Test(numerics, large_logits_random, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (int causal = 0; causal <= 1; ++causal) {
      clattn_attention_desc desc = test_desc(1, 2, 2, 100, 77, 16, causal);
      desc.scale = 1.0f;
      char label[256];
      test_label(label, sizeof label, &desc, kVariants[v]);
      test_problem p;
      test_problem_init(&p, &desc, 31 + v * 2 + (uint64_t)causal);
      for (size_t i = 0; i < p.nq; ++i) p.q[i] = roundf(p.q[i] * 25.0f);
      for (size_t i = 0; i < p.nk; ++i) p.k[i] = roundf(p.k[i] * 25.0f);
      run(ctx, &desc, kVariants[v], &p, NULL, label);
      test_check(&desc, p.q, p.k, p.v, NULL, p.o, p.lse, label);
      test_problem_free(&p);
    }
  }
  clattn_context_destroy(ctx);
}

/* Every score is +big or -big, exactly: Q rows are all `mag`, key j's K is +mag on "hot" keys
 * (j % 7 == 3) and -mag elsewhere, scale 1. The softmax is then exactly uniform over the
 * visible hot keys (exp(-2·big) is 0 in float), or over all visible keys when none is hot
 * (all scores -big: a naive exp would give 0/0). Causal, so both kinds of row occur. The
 * expected output is a mean of V, computed in double; only the summation rounds. */
static void check_two_level_scores(clattn_context* ctx, clattn_variant variant, size_t dim,
                                   float mag, double big) {
  const size_t n = 150;
  clattn_attention_desc desc = test_desc(1, 1, 1, n, n, dim, 1);
  desc.scale = 1.0f;
  char label[256];
  test_label(label, sizeof label, &desc, variant);
  test_problem p;
  test_problem_init(&p, &desc, 77);
  for (size_t i = 0; i < n * dim; ++i) p.q[i] = mag;
  for (size_t j = 0; j < n; ++j) {
    for (size_t d = 0; d < dim; ++d) p.k[j * dim + d] = j % 7 == 3 ? mag : -mag;
  }
  run(ctx, &desc, variant, &p, NULL, label);
  for (size_t i = 0; i < n; ++i) {
    size_t hot = 0;
    for (size_t j = 0; j <= i; ++j) hot += j % 7 == 3;
    const size_t count = hot ? hot : i + 1;
    for (size_t d = 0; d < dim; ++d) {
      double want = 0.0, vmax = 0.0;
      for (size_t j = 0; j <= i; ++j) {
        if (hot && j % 7 != 3) continue;
        want += p.v[j * dim + d];
        if (fabs(p.v[j * dim + d]) > vmax) vmax = fabs(p.v[j * dim + d]);
      }
      want /= (double)count;
      /* A sum of `count` terms and a division, each rounding relative to the largest term. */
      const double tol = 4.0 * ((double)count + 4.0) * TEST_U * vmax;
      const double got = p.o[i * dim + d];
      cr_assert(fabs(got - want) <= tol,
                "%s, scores ±%g: O[%zu,%zu] = %.9g, expected %.9g (mean over %zu %s keys), "
                "tol %.3g",
                label, big, i, d, got, want, count, hot ? "hot" : "visible", tol);
    }
    /* LSE = top score + ln(count). The top score rounds once when scaled to log2 units (and
     * mag·mag·dim once in float), so allow a few ulps of `big` plus the log's own error. */
    const double top = hot ? big : -big;
    const double want_lse = top + log((double)count);
    const double lse_tol = 8.0 * TEST_U * big + 1e-5 * (1.0 + log((double)count));
    cr_assert(fabs(p.lse[i] - want_lse) <= lse_tol, "%s: LSE[%zu] = %.9g, expected %.9g", label, i,
              p.lse[i], want_lse);
  }
  test_problem_free(&p);
}

Test(numerics, large_logits_two_level, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    check_two_level_scores(ctx, kVariants[v], 16, 25.0f, 1e4);       /* 16 · 625 = 1e4 */
    check_two_level_scores(ctx, kVariants[v], 1, 1e15f, 1e30 * 1.0); /* mag² in float */
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- large values */

/* V uniform in [-1e30, 1e30]: outputs finite and within the reference's bound (which is
 * relative to max |v|). */
Test(numerics, huge_values_random, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    clattn_attention_desc desc = test_desc(1, 2, 1, 70, 300, 40, 1);
    char label[256];
    test_label(label, sizeof label, &desc, kVariants[v]);
    test_problem p;
    test_problem_init(&p, &desc, 500 + v);
    for (size_t i = 0; i < p.nv; ++i) p.v[i] *= 1e30f;
    run(ctx, &desc, kVariants[v], &p, NULL, label);
    test_check(&desc, p.q, p.k, p.v, NULL, p.o, p.lse, label);
    test_problem_free(&p);
  }
  clattn_context_destroy(ctx);
}

/* Every value 1e30 (one column -1e30) over 2000 keys with equal scores: the unnormalised
 * accumulator reaches 2e33, and the output must be ±1e30. */
Test(numerics, huge_values_accumulate, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    const size_t n = 2000, dim = 8;
    clattn_attention_desc desc = test_desc(1, 1, 1, 3, n, dim, 0);
    char label[256];
    test_label(label, sizeof label, &desc, kVariants[v]);
    test_problem p;
    test_problem_init(&p, &desc, 600 + v);
    for (size_t i = 0; i < p.nq; ++i) p.q[i] = 0.0f; /* all scores 0: equal weights */
    for (size_t j = 0; j < n; ++j) {
      for (size_t d = 0; d < dim; ++d) p.v[j * dim + d] = d == 5 ? -1e30f : 1e30f;
    }
    run(ctx, &desc, kVariants[v], &p, NULL, label);
    const double tol = 4.0 * ((double)n + 4.0) * TEST_U; /* relative */
    for (size_t i = 0; i < 3; ++i) {
      for (size_t d = 0; d < dim; ++d) {
        const double want = d == 5 ? -1e30 : 1e30;
        const double got = p.o[i * dim + d];
        cr_assert(isfinite(got) && fabs(got - want) <= tol * 1e30,
                  "%s: O[%zu,%zu] = %g, expected %g", label, i, d, got, want);
      }
      cr_assert(fabs(p.lse[i] - log((double)n)) <= 1e-5, "%s: LSE[%zu] = %g, expected ln %zu",
                label, i, p.lse[i], n);
    }
    test_problem_free(&p);
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- NaN and Inf */

#define NN 40
#define ND 24

/* Compares row i of O (and its LSE) with a reference result, skipping column `skip_d`
 * (SIZE_MAX: none); tolerances from `tol_p` (the data the reference ran on). */
static void expect_row(const clattn_attention_desc* desc, const test_problem* got,
                       const test_problem* tol_p, const double* ref_o, const double* ref_lse,
                       size_t i, size_t skip_d, int check_lse, const char* label) {
  const double tol = clattn_ref_row_tolerance(desc, tol_p->q, tol_p->k, tol_p->v, NULL, 0, 0, i);
  for (size_t d = 0; d < ND; ++d) {
    if (d == skip_d) continue;
    const double g = got->o[i * ND + d], w = ref_o[i * ND + d];
    cr_assert(fabs(g - w) <= tol, "%s: O[%zu,%zu] = %.9g, reference %.9g, tol %.3g", label, i, d, g,
              w, tol);
  }
  if (!check_lse) return;
  size_t n;
  double s;
  test_row_stats(desc, tol_p->q, tol_p->k, NULL, 0, 0, i, &n, &s);
  const double ltol = test_lse_tolerance(ND, n, s, ref_lse[i]);
  cr_assert(fabs(got->lse[i] - ref_lse[i]) <= ltol, "%s: LSE[%zu] = %.9g, reference %.9g", label, i,
            got->lse[i], ref_lse[i]);
}

static void expect_row_nan(const test_problem* p, size_t i, const char* label) {
  for (size_t d = 0; d < ND; ++d) {
    cr_assert(isnan(p->o[i * ND + d]), "%s: O[%zu,%zu] = %g, expected NaN", label, i, d,
              p->o[i * ND + d]);
  }
  cr_assert(isnan(p->lse[i]), "%s: LSE[%zu] = %g, expected NaN", label, i, p->lse[i]);
}

typedef enum poison {
  POISON_Q_NAN,     /* NaN in Q[row r], element 3 */
  POISON_Q_INF,     /* +Inf in Q[row r], element 0, where every K[j][0] is 0.5: score +Inf */
  POISON_K_NAN,     /* NaN in K[key j], element 7 */
  POISON_K_INF,     /* +Inf in all of K[key j]: some products +Inf */
  POISON_K_NEG_INF, /* K[key j][0] = -Inf where every Q[i][0] is 0.5: score -Inf */
  POISON_V_NAN,     /* NaN in V[key j], element 5 */
  POISON_V_INF,     /* +Inf in V[key j], element 5 */
  POISON_COUNT
} poison;

static const char* const kPoisonNames[] = {"NaN in Q",   "+Inf in Q", "NaN in K", "+Inf in K",
                                           "-Inf score", "NaN in V",  "+Inf in V"};

/* One poisoned element, causal, one head: rows that read it behave as the header says; the
 * others (and the unaffected columns) match the reference of the clean data. */
static void check_poison(clattn_context* ctx, clattn_variant variant, poison what) {
  const size_t r = 17, j = 23, pd = 5;
  clattn_attention_desc desc = test_desc(1, 1, 1, NN, NN, ND, 1);
  char label[300], shape[256];
  test_label(shape, sizeof shape, &desc, variant);
  snprintf(label, sizeof label, "%s, %s", shape, kPoisonNames[what]);
  test_problem clean, p;
  test_problem_init(&clean, &desc, 900 + what);
  for (size_t i = 0; i < NN; ++i) {
    clean.k[i * ND] = 0.5f;
    clean.q[i * ND] = 0.5f;
  }
  test_problem_init(&p, &desc, 900 + what);
  memcpy(p.q, clean.q, p.nq * sizeof(float));
  memcpy(p.k, clean.k, p.nk * sizeof(float));
  switch (what) {
    case POISON_Q_NAN:
      p.q[r * ND + 3] = NAN;
      break;
    case POISON_Q_INF:
      p.q[r * ND] = INFINITY;
      break;
    case POISON_K_NAN:
      p.k[j * ND + 7] = NAN;
      break;
    case POISON_K_INF:
      for (size_t d = 0; d < ND; ++d) p.k[j * ND + d] = INFINITY;
      break;
    case POISON_K_NEG_INF:
      p.k[j * ND] = -INFINITY;
      break;
    case POISON_V_NAN:
      p.v[j * ND + pd] = NAN;
      break;
    case POISON_V_INF:
      p.v[j * ND + pd] = INFINITY;
      break;
    default:
      cr_assert_fail("unknown poison");
  }
  run(ctx, &desc, variant, &p, NULL, label);

  /* Reference of the clean data; for a -Inf score, of the data with key j masked out, which
   * is what weight 0 means (kv_lengths cannot cut out one key, so K[j] is made to lose by a
   * margin the double reference resolves to exactly 0). */
  test_problem* ref_src = &clean;
  test_problem masked;
  if (what == POISON_K_NEG_INF) {
    test_problem_init(&masked, &desc, 900 + what);
    memcpy(masked.q, clean.q, p.nq * sizeof(float));
    memcpy(masked.k, clean.k, p.nk * sizeof(float));
    masked.k[j * ND] = -1e30f; /* score -5e29: exp underflows to exactly 0 in double */
    ref_src = &masked;
  }
  double* ref_o = malloc(p.no * sizeof(double));
  double* ref_lse = malloc(p.nl * sizeof(double));
  cr_assert(ref_o && ref_lse);
  cr_assert_eq(
      clattn_ref_attention(&desc, ref_src->q, ref_src->k, ref_src->v, NULL, ref_o, ref_lse, 1), 0);
  for (size_t i = 0; i < NN; ++i) {
    const int sees_key = i >= j; /* causal, seq_q == seq_kv */
    switch (what) {
      case POISON_Q_NAN:
      case POISON_Q_INF:
        if (i == r) {
          expect_row_nan(&p, i, label);
        } else {
          expect_row(&desc, &p, &clean, ref_o, ref_lse, i, SIZE_MAX, 1, label);
        }
        break;
      case POISON_K_NAN:
      case POISON_K_INF:
        if (sees_key) {
          expect_row_nan(&p, i, label);
        } else {
          expect_row(&desc, &p, &clean, ref_o, ref_lse, i, SIZE_MAX, 1, label);
        }
        break;
      case POISON_K_NEG_INF:
        /* Weight 0: as if key j were masked. The bound comes from the clean data (|score|
         * of the masked key is not a rounding source of the result). */
        expect_row(&desc, &p, &clean, ref_o, ref_lse, i, SIZE_MAX, 1, label);
        break;
      case POISON_V_NAN:
      case POISON_V_INF:
        if (sees_key) {
          const float x = p.o[i * ND + pd];
          cr_assert(what == POISON_V_NAN ? isnan(x) : !isfinite(x),
                    "%s: O[%zu,%zu] = %g, expected %s", label, i, pd, x,
                    what == POISON_V_NAN ? "NaN" : "non-finite");
          expect_row(&desc, &p, &clean, ref_o, ref_lse, i, pd, 1, label);
        } else {
          expect_row(&desc, &p, &clean, ref_o, ref_lse, i, SIZE_MAX, 1, label);
        }
        break;
      default:
        break;
    }
  }
  free(ref_o);
  free(ref_lse);
  if (what == POISON_K_NEG_INF) test_problem_free(&masked);
  test_problem_free(&clean);
  test_problem_free(&p);
}

Test(numerics, nan_inf_propagation, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (int what = 0; what < POISON_COUNT; ++what) check_poison(ctx, kVariants[v], (poison)what);
  }
  clattn_context_destroy(ctx);
}

/* Every visible score -Inf: weight 0 for every key, so the row is the empty sum: O exactly 0
 * and LSE -INFINITY, never 0/0. */
Test(numerics, all_scores_negative_infinity, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    clattn_attention_desc desc = test_desc(1, 1, 1, 9, 30, 8, 0);
    char label[256];
    test_label(label, sizeof label, &desc, kVariants[v]);
    test_problem p;
    test_problem_init(&p, &desc, 1234);
    for (size_t i = 0; i < desc.seq_q; ++i) p.q[i * 8] = 1.0f;
    for (size_t j = 0; j < desc.seq_kv; ++j) p.k[j * 8] = -INFINITY;
    run(ctx, &desc, kVariants[v], &p, NULL, label);
    for (size_t i = 0; i < p.no; ++i) {
      cr_assert(p.o[i] == 0.0f, "%s: O[%zu] = %g, expected 0", label, i, p.o[i]);
    }
    for (size_t i = 0; i < p.nl; ++i) {
      cr_assert(isinf(p.lse[i]) && p.lse[i] < 0.0f, "%s: LSE[%zu] = %g, expected -inf", label, i,
                p.lse[i]);
    }
    test_problem_free(&p);
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- fully masked rows */

/* Rows that see no key (causal with seq_q > seq_kv; kv_lengths 0 or negative) are exactly 0
 * with LSE -INFINITY on every variant, with default and explicit tile sizes, even though
 * every masked key and value holds NaN and O starts as NaN. */
Test(numerics, fully_masked_rows_exactly_zero, .timeout = 300.0) {
  static const clattn_attention_config configs[] = {
      {.struct_size = sizeof(clattn_attention_config), .variant = CLATTN_VARIANT_TILED_LOCAL},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_TILED_LOCAL,
       .block_m = 8,
       .block_n = 8,
       .threads_per_row = 4},
      {.struct_size = sizeof(clattn_attention_config), .variant = CLATTN_VARIANT_REGISTER_BLOCKED},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_REGISTER_BLOCKED,
       .block_n = 16,
       .rows_per_item = 3},
  };
  clattn_context* ctx = test_context(NULL);
  const int32_t lengths[3] = {0, 9, -5};
  for (size_t c = 0; c < sizeof configs / sizeof configs[0]; ++c) {
    clattn_attention_desc desc = test_desc(3, 2, 1, 31, 12, 20, 1);
    char label[300], shape[256];
    test_label(shape, sizeof shape, &desc, configs[c].variant);
    snprintf(label, sizeof label, "%s config %zu", shape, c);
    test_problem p;
    test_problem_init(&p, &desc, 4000 + c);
    const clattn_strides ks = test_strides(&desc, 'k');
    for (size_t b = 0; b < 3; ++b) {
      const size_t len = lengths[b] < 0 ? 0 : (size_t)lengths[b];
      for (size_t jj = len; jj < desc.seq_kv; ++jj) {
        for (size_t d = 0; d < desc.head_dim; ++d) {
          p.k[b * ks.batch + jj * ks.seq + d] = NAN;
          p.v[b * ks.batch + jj * ks.seq + d] = NAN;
        }
      }
    }
    const clattn_status st =
        clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, p.lse, lengths, &configs[c]);
    cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s (%s)", label, clattn_status_name(st),
                 test_last_error(ctx));
    /* Count the rows that see nothing, to be sure the case is exercised, then compare all. */
    size_t empty = 0;
    const clattn_strides os = test_strides(&desc, 'o');
    for (size_t b = 0; b < 3; ++b) {
      for (size_t h = 0; h < 2; ++h) {
        for (size_t i = 0; i < desc.seq_q; ++i) {
          size_t n;
          double s;
          test_row_stats(&desc, p.q, p.k, lengths, b, h, i, &n, &s);
          if (n != 0) continue;
          ++empty;
          for (size_t d = 0; d < desc.head_dim; ++d) {
            const float x = p.o[b * os.batch + h * os.head + i * os.seq + d];
            cr_assert(x == 0.0f, "%s: O[b=%zu,h=%zu,i=%zu,d=%zu] = %g in a row with no key", label,
                      b, h, i, d, x);
          }
          const float l = p.lse[(b * 2 + h) * desc.seq_q + i];
          cr_assert(isinf(l) && l < 0.0f, "%s: LSE = %g in a row with no key", label, l);
        }
      }
    }
    /* Batch 0 and 2 see nothing; batch 1's first 31 - 12 rows see nothing. */
    cr_assert_eq(empty, 2 * 2 * 31 + 2 * 19, "%s: %zu empty rows", label, empty);
    test_check(&desc, p.q, p.k, p.v, lengths, p.o, p.lse, label);
    test_problem_free(&p);
  }
  clattn_context_destroy(ctx);
}
