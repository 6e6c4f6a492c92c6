/* Decode shapes (few query rows, long keys) against the double-precision reference, for
 * every variant and especially SPLIT_KV: lengths up to 16384 keys, head grouping, per-batch
 * key lengths, causal decode with several query rows, strided layouts, the LSE, split counts
 * beyond the keys (empty splits), explicit tiles, the default choice, rejected configs and
 * non-finite inputs. test_run_host checks every element of O against the reference's per-row
 * tolerance (reference.c derives it for any summation order, which covers the splits' merge:
 * each split's partial sum is an ordinary float sum rescaled by an exact power of two ratio
 * computed with exp2, i.e. one more rounding per term) and the LSE against
 * test_lse_tolerance; rows that see no key must be exactly 0 with LSE -INFINITY. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"
#include "reference.h"
#include "test_util.h"

static const clattn_variant kAllVariants[] = {CLATTN_VARIANT_AUTO, CLATTN_VARIANT_TILED_LOCAL,
                                              CLATTN_VARIANT_REGISTER_BLOCKED,
                                              CLATTN_VARIANT_SPLIT_KV};
#define NUM_VARIANTS (sizeof kAllVariants / sizeof kAllVariants[0])

/* Runs desc with a full config and checks it (the config's variant names the label). */
static void run_config(clattn_context* ctx, const clattn_attention_desc* desc,
                       const clattn_attention_config* config, const int32_t* kv_lengths,
                       uint64_t seed) {
  char label[320], tiles[128] = "";
  test_label(label, sizeof label, desc, config->variant);
  clattn_attention_config_describe(config, tiles, sizeof tiles, NULL);
  strncat(label, " ", sizeof label - strlen(label) - 1);
  strncat(label, tiles, sizeof label - strlen(label) - 1);
  test_problem p;
  test_problem_init(&p, desc, seed);
  const clattn_status st =
      clattn_attention_host(ctx, desc, p.q, p.k, p.v, p.o, p.lse, kv_lengths, config);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: clattn_attention_host returned %s (%s)", label,
               clattn_status_name(st), test_last_error(ctx));
  test_check(desc, p.q, p.k, p.v, kv_lengths, p.o, p.lse, label);
  test_problem_free(&p);
}

static clattn_attention_config split_config(unsigned rows, unsigned block_n, unsigned splits) {
  clattn_attention_config c = test_config(CLATTN_VARIANT_SPLIT_KV);
  c.rows_per_item = rows;
  c.block_m = rows;
  c.block_n = block_n;
  c.threads_per_row = rows ? 1 : 0;
  c.num_splits = splits;
  return c;
}

/* ---------------------------------------------------------------- lengths */

typedef struct variant_param {
  clattn_variant variant;
} variant_param;

ParameterizedTestParameters(decode, lengths) {
  static variant_param params[NUM_VARIANTS];
  for (size_t v = 0; v < NUM_VARIANTS; ++v) params[v].variant = kAllVariants[v];
  return cr_make_param_array(variant_param, params, NUM_VARIANTS);
}

/* Nq 1, 4 and 16 over key lengths from 1 to 16384 (up to 300 under CLATTN_TEST_SMALL),
 * GQA 8:2, head_dim 128, causal off and on (Nq > 1 causal: each row one key further). */
ParameterizedTest(variant_param* param, decode, lengths, .timeout = 900.0) {
  /* On the simulator only the variants decode shapes choose: the prefill variants' kernels
   * are checked there by test_attention's twin. */
  if (test_small() && param->variant != CLATTN_VARIANT_SPLIT_KV &&
      param->variant != CLATTN_VARIANT_AUTO) {
    cr_skip_test("prefill variants on decode shapes: not under CLATTN_TEST_SMALL");
  }
  static const size_t lens[] = {1, 2, 17, 255, 1000, 4096, 16384};
  static const size_t small_lens[] = {1, 2, 17, 300};
  static const size_t nqs[] = {1, 4, 16};
  const size_t* nkv = test_small() ? small_lens : lens;
  const size_t count =
      test_small() ? sizeof small_lens / sizeof small_lens[0] : sizeof lens / sizeof lens[0];
  clattn_context* ctx = test_context(NULL);
  for (size_t s = 0; s < count; ++s) {
    for (size_t qi = 0; qi < sizeof nqs / sizeof nqs[0]; ++qi) {
      const int causal = (int)((s + qi) % 2);
      /* The longest keys with one query row only: the reference's cost grows with both. */
      if (nkv[s] >= 4096 && nqs[qi] > 4) continue;
      clattn_attention_desc desc = test_desc(1, 8, 2, nqs[qi], nkv[s], 128, causal);
      test_run_host(ctx, &desc, param->variant, NULL, 0xDEC0u + s * 8 + qi);
    }
  }
  clattn_context_destroy(ctx);
}

/* B=2, H=32, D=128, Nq=1 and Nkv 4096 (the bandwidth target's shape class) and 16384 at
 * B=1, SPLIT_KV by default. */
Test(decode, target_shapes, .timeout = 900.0) {
  clattn_context* ctx = test_context(NULL);
  test_skip_on_oclgrind(ctx, "the target shapes take too long on a simulator");
  clattn_attention_desc desc = test_desc(2, 32, 32, 1, 4096, 128, 0);
  test_run_host(ctx, &desc, CLATTN_VARIANT_AUTO, NULL, 71);
  desc = test_desc(1, 32, 32, 1, 16384, 128, 0);
  test_run_host(ctx, &desc, CLATTN_VARIANT_AUTO, NULL, 72);
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- heads and masks */

/* Groups of 1 to 8 query heads per kv head and MQA, Nq 1 and 3, causal off and on, with the
 * default config and with one row per work-item (each query head a chunk of its own). */
Test(decode, groups, .timeout = 600.0) {
  static const size_t heads[][2] = {{4, 4}, {4, 2}, {6, 3}, {8, 2}, {8, 1}, {16, 2}, {5, 0}};
  const size_t nkv = test_len(1000);
  clattn_context* ctx = test_context(NULL);
  for (size_t g = 0; g < sizeof heads / sizeof heads[0]; ++g) {
    for (size_t nq = 1; nq <= 3; nq += 2) {
      for (int causal = 0; causal <= 1; ++causal) {
        clattn_attention_desc desc = test_desc(2, heads[g][0], heads[g][1], nq, nkv, 64, causal);
        const uint64_t seed = 300 + g * 8 + nq * 2 + (uint64_t)causal;
        test_run_host(ctx, &desc, CLATTN_VARIANT_SPLIT_KV, NULL, seed);
        const clattn_attention_config one_row = split_config(1, 16, 5);
        run_config(ctx, &desc, &one_row, NULL, seed + 1000);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* Per-batch key lengths: 0 (rows exactly 0, LSE -INFINITY), lengths that are multiples of
 * no tile, 1, the full length, negative and too long (clamped); causal 1 aligned to seq_kv,
 * every variant. */
Test(decode, kv_lengths, .timeout = 600.0) {
  const size_t nkv = test_len(1000);
  const int32_t lengths[6] = {0, (int32_t)nkv, 17, 1, (int32_t)nkv - 333, -4};
  const int32_t more[2] = {(int32_t)nkv + 9, 257};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    if (test_small() && kAllVariants[v] != CLATTN_VARIANT_SPLIT_KV) continue;
    for (size_t nq = 1; nq <= 5; nq += 4) {
      for (int causal = 0; causal <= 1; ++causal) {
        clattn_attention_desc desc = test_desc(6, 4, 2, nq, nkv, 32, causal);
        test_run_host(ctx, &desc, kAllVariants[v], lengths, 500 + v * 8 + nq * 2 + causal);
        desc = test_desc(2, 8, 1, nq, nkv, 96, causal);
        test_run_host(ctx, &desc, kAllVariants[v], more, 600 + v * 8 + nq * 2 + causal);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* [batch, seq, heads, head_dim] tensors and explicit padded strides (the LSE is checked by
 * test_run_host), every variant, head dims that are not multiples of 16. */
Test(decode, strides, .timeout = 600.0) {
  const size_t nkv = test_len(700);
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    if (test_small() && kAllVariants[v] != CLATTN_VARIANT_SPLIT_KV) continue;
    for (int causal = 0; causal <= 1; ++causal) {
      clattn_attention_desc desc = test_desc(3, 8, 2, 2, nkv, 40, causal);
      desc.layout = CLATTN_LAYOUT_BNHD;
      test_run_host(ctx, &desc, kAllVariants[v], NULL, 700 + v * 2 + causal);

      const size_t B = 2, Hq = 6, Hkv = 2, Nq = 3, D = 20;
      desc = test_desc(B, Hq, Hkv, Nq, nkv, D, causal);
      desc.q_strides.seq = D + 3;
      desc.q_strides.head = Nq * (D + 3) + 5;
      desc.q_strides.batch = Hq * desc.q_strides.head + 7;
      desc.k_strides.head = D + 1;
      desc.k_strides.seq = Hkv * (D + 1) + 2;
      desc.k_strides.batch = nkv * desc.k_strides.seq + 3;
      desc.v_strides.seq = 2 * D;
      desc.v_strides.head = nkv * 2 * D;
      desc.v_strides.batch = Hkv * nkv * 2 * D;
      desc.o_strides.head = D;
      desc.o_strides.seq = Hq * D + 9;
      desc.o_strides.batch = Nq * desc.o_strides.seq;
      test_run_host(ctx, &desc, kAllVariants[v], NULL, 800 + v * 2 + causal);
    }
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- splits and tiles */

/* More splits than keys (most splits empty, weight 0 in the merge), one split (O written
 * directly), odd counts, with lengths of 0 and causal rows. */
Test(decode, empty_splits, .timeout = 600.0) {
  static const unsigned splits[] = {1, 3, 64, 1024};
  static const size_t lens[] = {1, 5, 100};
  const int32_t lengths[3] = {0, 3, 100};
  clattn_context* ctx = test_context(NULL);
  for (size_t s = 0; s < sizeof splits / sizeof splits[0]; ++s) {
    for (size_t n = 0; n < sizeof lens / sizeof lens[0]; ++n) {
      for (int causal = 0; causal <= 1; ++causal) {
        const clattn_attention_config c = split_config(0, 0, splits[s]);
        clattn_attention_desc desc =
            test_desc(3, 4, 2, 1 + 2 * (size_t)causal, lens[n], 16, causal);
        run_config(ctx, &desc, &c, NULL, 900 + s * 16 + n * 2 + causal);
        run_config(ctx, &desc, &c, lengths, 950 + s * 16 + n * 2 + causal);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* Explicit tiles: rows per work-item below and above the group's rows (several chunks, and
 * padded rows), keys per step from 1 to 128, several split counts. */
Test(decode, explicit_tiles, .timeout = 600.0) {
  static const unsigned rows[] = {1, 3, 8, 64};
  static const unsigned bns[] = {1, 7, 16, 128};
  static const unsigned splits[] = {0, 2, 9};
  const size_t nkv = test_len(600);
  clattn_context* ctx = test_context(NULL);
  for (size_t r = 0; r < sizeof rows / sizeof rows[0]; ++r) {
    for (size_t b = 0; b < sizeof bns / sizeof bns[0]; ++b) {
      for (size_t s = 0; s < sizeof splits / sizeof splits[0]; ++s) {
        const clattn_attention_config c = split_config(rows[r], bns[b], splits[s]);
        const int causal = (int)((r + b + s) % 2);
        clattn_attention_desc desc = test_desc(1, 8, 2, 2, nkv, 24, causal);
        run_config(ctx, &desc, &c, NULL, 1100 + r * 64 + b * 8 + s);
      }
    }
  }
  /* A prefill shape forced onto SPLIT_KV runs too (many chunks of rows). */
  clattn_attention_desc desc = test_desc(1, 2, 1, test_len(150), test_len(200), 64, 1);
  test_run_host(ctx, &desc, CLATTN_VARIANT_SPLIT_KV, NULL, 1200);
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- choice and configs */

/* Left to clattn, one query row per head (and a few, GQA) runs SPLIT_KV on any device;
 * prefill shapes do not. The config reported is complete and describable. */
Test(decode, default_variant) {
  static const size_t heads[][3] = {{32, 32, 1}, {32, 8, 1}, {8, 1, 1}, {8, 2, 3}, {4, 4, 16}};
  clattn_context* ctx = test_context(NULL);
  for (size_t i = 0; i < sizeof heads / sizeof heads[0]; ++i) {
    for (size_t nkv = 1; nkv <= 16384; nkv *= 32) {
      clattn_attention_desc desc = test_desc(1, heads[i][0], heads[i][1], heads[i][2], nkv, 128, 0);
      clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
      clattn_status st = clattn_attention_get_config(ctx, &desc, NULL, &used);
      cr_assert_eq(st, CLATTN_SUCCESS, "%s", test_last_error(ctx));
      cr_expect_eq(used.variant, CLATTN_VARIANT_SPLIT_KV,
                   "Hq=%zu Hkv=%zu Nq=%zu Nkv=%zu: default variant %s, not split_kv", heads[i][0],
                   heads[i][1], heads[i][2], nkv, test_variant_name(used.variant));
      cr_expect_eq(used.source, CLATTN_CONFIG_SOURCE_HEURISTIC);
      cr_expect_geq(used.rows_per_item, 1u);
      char text[128];
      cr_expect_eq(clattn_attention_config_describe(&used, text, sizeof text, NULL),
                   CLATTN_SUCCESS);
      cr_expect(strstr(text, "split_kv") == text, "described as '%s'", text);
    }
  }
  clattn_attention_desc prefill = test_desc(1, 8, 8, 512, 512, 64, 1);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  cr_assert_eq(clattn_attention_get_config(ctx, &prefill, NULL, &used), CLATTN_SUCCESS);
  cr_expect_neq(used.variant, CLATTN_VARIANT_SPLIT_KV, "prefill chose split_kv");
  clattn_variant parsed = CLATTN_VARIANT_AUTO;
  cr_expect_eq(clattn_variant_from_name("split_kv", &parsed), CLATTN_SUCCESS);
  cr_expect_eq(parsed, CLATTN_VARIANT_SPLIT_KV);
  cr_expect_str_eq(clattn_variant_name(CLATTN_VARIANT_SPLIT_KV), "split_kv");
  clattn_context_destroy(ctx);
}

/* Configs outside SPLIT_KV's rules are refused with INVALID_CONFIG and a message. */
Test(decode, bad_configs) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = test_desc(1, 4, 2, 1, 100, 32, 0);
  clattn_attention_config bad[5];
  bad[0] = split_config(0, 0, 1025);
  bad[1] = split_config(65, 16, 0);
  bad[2] = split_config(4, 129, 0);
  bad[3] = split_config(4, 16, 0);
  bad[3].threads_per_row = 2;
  bad[4] = split_config(4, 16, 0);
  bad[4].block_m = 8;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
    clattn_status st = clattn_attention_get_config(ctx, &desc, &bad[i], &used);
    cr_expect_eq(st, CLATTN_ERROR_INVALID_CONFIG, "config %zu: %s", i, clattn_status_name(st));
    cr_expect(strlen(test_last_error(ctx)) > 0, "config %zu: no message", i);
  }
  /* 64 rows of head_dim 256 would need 64 KiB of registers per array: refused; 32 rows fit. */
  clattn_attention_desc wide = test_desc(1, 4, 2, 1, 100, 256, 0);
  clattn_attention_config rows64 = split_config(64, 16, 0), rows32 = split_config(32, 16, 0);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  cr_expect_eq(clattn_attention_get_config(ctx, &wide, &rows64, &used),
               CLATTN_ERROR_INVALID_CONFIG);
  cr_expect_eq(clattn_attention_get_config(ctx, &wide, &rows32, &used), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- non-finite inputs */

/* Keys past each sequence's length hold NaN (K) and Inf (V): nothing changes. A NaN in one
 * row's Q makes exactly that row (O and LSE) NaN. An Inf in element 3 of a visible value makes
 * element 3 of the rows that see it non-finite and leaves the others as the reference. */
Test(decode, non_finite, .timeout = 300.0) {
  const size_t nkv = test_len(900), D = 32;
  const int32_t lengths[2] = {(int32_t)nkv - 100, 301};
  clattn_context* ctx = test_context(NULL);
  const clattn_attention_config configs[2] = {split_config(0, 0, 0), split_config(0, 0, 7)};
  for (size_t ci = 0; ci < 2; ++ci) {
    clattn_attention_desc desc = test_desc(2, 4, 2, 1, nkv, D, 0);
    char label[256];
    test_label(label, sizeof label, &desc, CLATTN_VARIANT_SPLIT_KV);
    test_problem p;
    test_problem_init(&p, &desc, 1300 + ci);
    for (size_t b = 0; b < 2; ++b) {
      for (size_t h = 0; h < 2; ++h) {
        for (size_t j = (size_t)lengths[b]; j < nkv; ++j) {
          for (size_t d = 0; d < D; ++d) {
            p.k[((b * 2 + h) * nkv + j) * D + d] = NAN;
            p.v[((b * 2 + h) * nkv + j) * D + d] = INFINITY;
          }
        }
      }
    }
    clattn_status st =
        clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, p.lse, lengths, &configs[ci]);
    cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s", label, test_last_error(ctx));
    test_check(&desc, p.q, p.k, p.v, lengths, p.o, p.lse, label);

    /* NaN in Q of (b=1, h=2): that row only. Inf in V[b=0][hk=0][j=5][3]: rows of heads 0, 1
     * of batch 0, element 3 only. */
    p.q[((1 * 4 + 2) * 1) * D + 7] = NAN;
    p.v[((0 * 2 + 0) * nkv + 5) * D + 3] = INFINITY;
    st = clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, p.lse, lengths, &configs[ci]);
    cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s", label, test_last_error(ctx));
    for (size_t b = 0; b < 2; ++b) {
      for (size_t h = 0; h < 4; ++h) {
        const float* row = p.o + (b * 4 + h) * D;
        const float lse = p.lse[b * 4 + h];
        if (b == 1 && h == 2) {
          for (size_t d = 0; d < D; ++d)
            cr_expect(isnan(row[d]), "%s: O[1,2,%zu] not NaN", label, d);
          cr_expect(isnan(lse), "%s: LSE of the NaN row is %g", label, (double)lse);
        } else if (b == 0 && h < 2) {
          for (size_t d = 0; d < D; ++d) {
            cr_expect(d == 3 ? !isfinite(row[d]) : isfinite(row[d]), "%s: O[0,%zu,%zu] = %g", label,
                      h, d, (double)row[d]);
          }
          cr_expect(isfinite(lse), "%s: LSE[0,%zu] = %g", label, h, (double)lse);
        } else {
          for (size_t d = 0; d < D; ++d) {
            cr_expect(isfinite(row[d]), "%s: O[%zu,%zu,%zu] = %g", label, b, h, d, (double)row[d]);
          }
        }
      }
    }
    test_problem_free(&p);
  }
  clattn_context_destroy(ctx);
}
