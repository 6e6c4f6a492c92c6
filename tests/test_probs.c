/* Attention maps: the probabilities clattn_attention_probs recomputes from Q, K and a fused
 * call's LSE, against the double-precision reference, for the LSE of every variant, causal
 * masks, key lengths, head groups, layouts and strides, blocks at the edges of the matrix and
 * head dims from 1 to 256; rows summing to 1; masked entries exactly 0 and never read; the
 * cl_mem entry point's offsets and events; bad input. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clattn/clattn.h"
#include "reference.h"
#include "test_util.h"

static const clattn_variant kVariants[] = {
    CLATTN_VARIANT_TILED_LOCAL, CLATTN_VARIANT_REGISTER_BLOCKED, CLATTN_VARIANT_SPLIT_KV};
#define NUM_VARIANTS (sizeof kVariants / sizeof kVariants[0])

/* ---------------------------------------------------------------- the bound */

/* Error bound of one probability, relative to itself, first order in u = 2^-24.
 *
 * The kernel forms p~ = exp2(fl(q·scale·log2(e) · k) - fl(lse~ · log2(e))), where lse~ is the
 * float LSE of the fused call. Against the exact p = exp(s - lse) (exact score s, exact lse):
 *  1. Score: the prescale of Q by the rounded constant scale·log2(e) (2 roundings per term),
 *     then a head_dim-term dot product (any order, FMA or not): |ds| <= (D + 3) u S, with
 *     S = |scale| sum_d |q_d k_d| (Higham's gamma_{D+3}); in log2 units the same relative size.
 *  2. LSE: the fused call's own error, bounded by test_lse_tolerance (test_util.h, derived
 *     there from the fused kernels' arithmetic), enters p as exp(-dlse): relative dlse.
 *  3. The exponent: the product lse~ · log2(e) and the subtraction each round once, relative
 *     to |s| <= S and |lse|: 2 u (S + |lse|).
 *  4. exp2 itself: 16 ulps (OpenCL allows 3; relaxed forms more), 16 u.
 * So p~ = p (1 + e) with |e| <= rho = (D + 3) u S + dlse + 2 u (S + |lse|) + 16 u, and the
 * test allows 2 rho p (a factor 2 for second-order terms, e^rho - 1 <= 2 rho for rho < 1)
 * plus 2^-125, where exp2 may flush a result below FLT_MIN to 0 (denormals are optional in
 * OpenCL's single precision).
 *
 * Row sums: the exact p of a row's visible keys sum to 1, so sum_j p~_j - 1 = sum_j p_j e_j,
 * at most max_j rho_j (the p_j being nonnegative and summing to 1): a row's sum (in double on
 * the host) must be within 2 max_j rho_j of 1, plus n 2^-50 for the double sum. With inputs
 * in [-1, 1] and D = 64 that is about 4e-5 at n = 100 and 1.5e-4 at n = 1000, dominated by
 * the fused LSE's float sum; a missed or doubled key moves the sum by that key's p_j, about
 * 1/n: 10 to 60 times the bound at n <= 100 (the element check catches it at any n: the entry
 * is then off by 100% of itself). */
static double probs_rho(size_t head_dim, size_t n, double s, double lse_ref) {
  const double u = TEST_U;
  return ((double)head_dim + 3.0) * u * s + test_lse_tolerance(head_dim, n, s, lse_ref) +
         2.0 * u * (s + fabs(lse_ref)) + 16.0 * u;
}

#define PROBS_FLOOR 0x1p-125

/* ---------------------------------------------------------------- checking */

/* A block with its counts resolved (0: to the end), independently of the library. */
typedef struct region {
  size_t h0, nh, r0, nr, c0, nc;
} region;

static region region_of(const clattn_attention_desc* d, const clattn_probs_block* b) {
  region r = {0, d->heads_q, 0, d->seq_q, 0, d->seq_kv};
  if (b == NULL) return r;
  r.h0 = b->head_begin;
  r.nh = b->heads ? b->heads : d->heads_q - b->head_begin;
  r.r0 = b->row_begin;
  r.nr = b->rows ? b->rows : d->seq_q - b->row_begin;
  r.c0 = b->col_begin;
  r.nc = b->cols ? b->cols : d->seq_kv - b->col_begin;
  return r;
}

static size_t region_size(const clattn_attention_desc* d, const region* r) {
  return d->batch * r->nh * r->nr * r->nc;
}

/* Checks p [batch][nh][nr][nc] against the reference: visible entries within 2 rho p + floor,
 * masked ones exactly 0, and rows whose visible keys the block covers summing to 1 within
 * 2 max rho. lse is the fused call's (float), used only to tell rows that must be NaN. */
static void check_probs(const test_problem* pr, const int32_t* kv_lengths, const region* g,
                        const float* p, const char* label) {
  const clattn_attention_desc* d = &pr->desc;
  const size_t count = region_size(d, g);
  /* Columns past seq_kv (a KV cache's shorter sequences) must be 0: the reference has none. */
  const size_t nc_ref =
      g->c0 >= d->seq_kv ? 0 : (g->nc < d->seq_kv - g->c0 ? g->nc : d->seq_kv - g->c0);
  double* ref = malloc((d->batch * g->nh * g->nr * nc_ref + 1) * sizeof(double));
  double* ref_o = malloc(pr->no * sizeof(double));
  double* ref_lse = malloc(pr->nl * sizeof(double));
  cr_assert(ref && ref_o && ref_lse, "out of host memory");
  if (nc_ref) {
    cr_assert_eq(clattn_ref_attention_probs(d, pr->q, pr->k, kv_lengths, g->h0, g->nh, g->r0, g->nr,
                                            g->c0, nc_ref, ref),
                 0, "%s: the reference rejected the block", label);
  }
  cr_assert_eq(clattn_ref_attention(d, pr->q, pr->k, pr->v, kv_lengths, ref_o, ref_lse, 1), 0);
  size_t bad = 0, sums = 0;
  char first[512] = "";
  double worst = 0.0;
  for (size_t b = 0; b < d->batch; ++b) {
    for (size_t hh = 0; hh < g->nh; ++hh) {
      const size_t h = g->h0 + hh;
      for (size_t r = 0; r < g->nr; ++r) {
        const size_t i = g->r0 + r;
        size_t n;
        double s;
        test_row_stats(d, pr->q, pr->k, kv_lengths, b, h, i, &n, &s);
        const double lse_ref = ref_lse[(b * d->heads_q + h) * d->seq_q + i];
        const double rho = n ? probs_rho(d->head_dim, n, s, lse_ref) : 0.0;
        const size_t base = ((b * g->nh + hh) * g->nr + r) * g->nc;
        const size_t base_ref = ((b * g->nh + hh) * g->nr + r) * nc_ref;
        double sum = 0.0;
        for (size_t c = 0; c < g->nc; ++c) {
          const size_t j = g->c0 + c;
          const double got = p[base + c], want = c < nc_ref ? ref[base_ref + c] : 0.0;
          const int visible = j < n;
          const double tol = visible ? 2.0 * rho * want + PROBS_FLOOR : 0.0;
          const double err = fabs(got - want);
          const int ok = visible ? err <= tol : got == 0.0;
          if (!ok) {
            if (bad++ == 0) {
              snprintf(first, sizeof first,
                       "P[b=%zu,h=%zu,i=%zu,j=%zu] = %.9g, reference %.9g, |err| %.3g, tol %.3g "
                       "(%s, %zu visible keys)",
                       b, h, i, j, got, want, err, tol, visible ? "visible" : "masked", n);
            }
            const double ratio = tol > 0.0 ? err / tol : INFINITY;
            if (!(ratio <= worst)) worst = ratio;
          }
          sum += got;
        }
        /* The whole row is in the block: it sums to 1 (0 when it sees no key). */
        if (g->c0 == 0 && g->nc >= n) {
          const double bound = n ? 2.0 * rho + (double)n * 0x1p-50 : 0.0;
          const double want_sum = n ? 1.0 : 0.0;
          ++sums;
          if (!(fabs(sum - want_sum) <= bound)) {
            if (bad++ == 0) {
              snprintf(first, sizeof first,
                       "row b=%zu h=%zu i=%zu sums to %.12g, |sum - %g| %.3g > bound %.3g (%zu "
                       "visible keys)",
                       b, h, i, sum, want_sum, fabs(sum - want_sum), bound, n);
            }
          }
        }
      }
    }
  }
  free(ref);
  free(ref_o);
  free(ref_lse);
  cr_assert_eq(bad, 0,
               "%s: %zu wrong of %zu entries and %zu row sums; first: %s; worst err/tol %.3g",
               label, bad, count, sums, first, worst);
}

/* The fused call (variant) for the LSE, then the probabilities of `block` through the host
 * form, checked. */
static void run_probs(clattn_context* ctx, const clattn_attention_desc* desc,
                      clattn_variant variant, const int32_t* kv_lengths,
                      const clattn_probs_block* block, uint64_t seed) {
  char label[384], shape[256];
  test_label(shape, sizeof shape, desc, variant);
  const region g = region_of(desc, block);
  snprintf(label, sizeof label, "%s block h[%zu+%zu] i[%zu+%zu] j[%zu+%zu]%s", shape, g.h0, g.nh,
           g.r0, g.nr, g.c0, g.nc, kv_lengths ? " kv_lengths" : "");
  test_problem pr;
  test_problem_init(&pr, desc, seed);
  const clattn_attention_config config = test_config(variant);
  clattn_status st =
      clattn_attention_host(ctx, desc, pr.q, pr.k, pr.v, pr.o, pr.lse, kv_lengths, &config);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: clattn_attention_host: %s (%s)", label,
               clattn_status_name(st), test_last_error(ctx));
  const size_t count = region_size(desc, &g);
  float* p = malloc(count * sizeof(float));
  cr_assert_not_null(p);
  for (size_t i = 0; i < count; ++i) p[i] = NAN;
  st = clattn_attention_probs_host(ctx, desc, pr.q, pr.k, pr.lse, kv_lengths, block, p);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: clattn_attention_probs_host: %s (%s)", label,
               clattn_status_name(st), test_last_error(ctx));
  check_probs(&pr, kv_lengths, &g, p, label);
  free(p);
  test_problem_free(&pr);
}

static clattn_probs_block block_of(size_t h0, size_t nh, size_t r0, size_t nr, size_t c0,
                                   size_t nc) {
  clattn_probs_block b = CLATTN_PROBS_BLOCK_INIT;
  b.head_begin = h0;
  b.heads = nh;
  b.row_begin = r0;
  b.rows = nr;
  b.col_begin = c0;
  b.cols = nc;
  return b;
}

static cl_mem make_buffer(cl_context cl_ctx, size_t bytes) {
  cl_int err = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateBuffer(%zu bytes): %d", bytes, (int)err);
  return mem;
}

static void expect_status(clattn_context* ctx, clattn_status got, clattn_status want,
                          const char* what) {
  cr_expect_eq(got, want, "%s: %s, expected %s (%s)", what, clattn_status_name(got),
               clattn_status_name(want), test_last_error(ctx));
  if (got != CLATTN_SUCCESS && ctx != NULL) {
    cr_expect(test_last_error(ctx)[0] != '\0', "%s: no message", what);
  }
}

/* ---------------------------------------------------------------- sweep */

typedef struct sweep_param {
  clattn_variant variant;
  size_t head_dim;
} sweep_param;

ParameterizedTestParameters(probs, sweep) {
  static const size_t dims[] = {1, 8, 64, 80, 128, 256};
  static sweep_param params[NUM_VARIANTS * (sizeof dims / sizeof dims[0])];
  size_t n = 0;
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; ++d) {
      params[n].variant = kVariants[v];
      params[n].head_dim = dims[d];
      ++n;
    }
  }
  return cr_make_param_array(sweep_param, params, n);
}

/* The whole matrix, Nq = Nkv over small, tail and longer lengths, causal off and on, from the
 * LSE of each variant, for each head dim. */
ParameterizedTest(sweep_param* param, probs, sweep, .timeout = 600.0) {
  static const size_t seqs[] = {1, 7, 64, 100, 257};
  static const size_t small_seqs[] = {1, 7, 37};
  const size_t* lens = test_small() ? small_seqs : seqs;
  const size_t num_lens =
      test_small() ? sizeof small_seqs / sizeof small_seqs[0] : sizeof seqs / sizeof seqs[0];
  clattn_context* ctx = test_context(NULL);
  for (size_t s = 0; s < num_lens; ++s) {
    for (int causal = 0; causal <= 1; ++causal) {
      clattn_attention_desc desc = test_desc(1, 2, 2, lens[s], lens[s], param->head_dim, causal);
      run_probs(ctx, &desc, param->variant, NULL, NULL,
                0x9A0B0000u + param->head_dim * 4096 + lens[s] * 2 + (uint64_t)causal);
    }
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- blocks */

/* Blocks at the edges of the matrix, over a shape with a batch, GQA, causal masks (both
 * alignments) and key lengths: the last row, the last column, one row, one column, 1 x 1 in
 * each corner, counts left 0 (to the end), one head of the group, the whole matrix. */
Test(probs, blocks_at_the_edges, .timeout = 300.0) {
  static const size_t shapes[][2] = {{45, 37}, {37, 45}, {40, 40}};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
      for (int causal = 0; causal <= 1; ++causal) {
        const size_t nq = test_len(shapes[s][0]), nkv = test_len(shapes[s][1]);
        clattn_attention_desc desc = test_desc(2, 4, 2, nq, nkv, 24, causal);
        const int32_t lengths[2] = {(int32_t)nkv - 5, (int32_t)nkv};
        const clattn_probs_block blocks[] = {
            block_of(0, 0, nq - 1, 1, 0, 0),                  /* the last row */
            block_of(0, 0, 0, 0, nkv - 1, 1),                 /* the last column */
            block_of(1, 2, nq / 2, 1, 0, 0),                  /* one row, two heads */
            block_of(3, 1, 0, 0, nkv / 3, 1),                 /* one column, the last head */
            block_of(0, 1, 0, 1, 0, 1),                       /* 1 x 1, top left */
            block_of(3, 1, nq - 1, 1, nkv - 1, 1),            /* 1 x 1, bottom right */
            block_of(0, 1, nq - 1, 1, 0, 1),                  /* 1 x 1, bottom left */
            block_of(2, 1, 0, 1, nkv - 1, 1),                 /* 1 x 1, top right */
            block_of(1, 0, 3, 0, 5, 0),                       /* counts 0: to the end */
            block_of(0, 4, 0, nq, 0, nkv),                    /* the whole matrix, given */
            block_of(1, 2, nq / 4, nq / 2, nkv / 4, nkv / 2), /* the middle */
        };
        for (size_t k = 0; k < sizeof blocks / sizeof blocks[0]; ++k) {
          run_probs(ctx, &desc, kVariants[v], (k % 2) ? lengths : NULL, &blocks[k],
                    6100 + s * 64 + k * 2 + (uint64_t)causal);
        }
        run_probs(ctx, &desc, kVariants[v], lengths, NULL, 6000 + s * 2 + (uint64_t)causal);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- masks and heads */

/* Key lengths 0 (rows see nothing: all 0), full, in between, negative and too large
 * (clamped); causal with seq_q > seq_kv (the first rows see nothing) and seq_q < seq_kv. */
Test(probs, key_lengths_and_causal, .timeout = 300.0) {
  static const size_t shapes[][2] = {{40, 100}, {100, 40}, {64, 64}};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
      for (int causal = 0; causal <= 1; ++causal) {
        const size_t nq = test_len(shapes[s][0]), nkv = test_len(shapes[s][1]);
        const int32_t lengths[6] = {0, (int32_t)nkv, 17, -3, (int32_t)nkv + 50, 1};
        clattn_attention_desc desc = test_desc(6, 2, 1, nq, nkv, 16, causal);
        run_probs(ctx, &desc, kVariants[v], lengths, NULL, 4300 + s * 2 + (uint64_t)causal);
        desc = test_desc(1, 2, 2, nq, nkv, 16, causal);
        run_probs(ctx, &desc, kVariants[v], NULL, NULL, 4400 + s * 2 + (uint64_t)causal);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* Grouped-query, multi-query and heads_kv 0; explicit scales (a sharp softmax included). */
Test(probs, heads_and_scales, .timeout = 300.0) {
  static const size_t heads[][2] = {{8, 2}, {4, 1}, {3, 0}, {6, 3}};
  static const float scales[] = {0.5f, -0.25f, 8.0f};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t g = 0; g < sizeof heads / sizeof heads[0]; ++g) {
      clattn_attention_desc desc =
          test_desc(2, heads[g][0], heads[g][1], test_len(33), test_len(50), 40, (int)(g % 2));
      run_probs(ctx, &desc, kVariants[v], NULL, NULL, 900 + g);
    }
    for (size_t s = 0; s < sizeof scales / sizeof scales[0]; ++s) {
      clattn_attention_desc desc = test_desc(1, 2, 2, test_len(30), test_len(70), 64, 1);
      desc.scale = scales[s];
      run_probs(ctx, &desc, kVariants[v], NULL, NULL, 950 + s);
    }
  }
  clattn_context_destroy(ctx);
}

/* [batch, seq, heads, head_dim] through the layout, and explicit padded strides with each
 * tensor different (K in [b, n, h, d] order). */
Test(probs, layouts_and_strides, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (int causal = 0; causal <= 1; ++causal) {
      clattn_attention_desc desc = test_desc(2, 4, 2, test_len(50), test_len(77), 40, causal);
      desc.layout = CLATTN_LAYOUT_BNHD;
      const clattn_probs_block blk = block_of(1, 3, 2, 0, 3, test_len(77) - 10);
      run_probs(ctx, &desc, kVariants[v], NULL, NULL, 31 + (uint64_t)causal);
      run_probs(ctx, &desc, kVariants[v], NULL, &blk, 33 + (uint64_t)causal);

      const size_t B = 2, Hq = 4, Hkv = 2, Nq = 45, Nkv = 70, D = 20;
      desc = test_desc(B, Hq, Hkv, Nq, Nkv, D, causal);
      desc.q_strides.seq = D + 3;
      desc.q_strides.head = Nq * (D + 3) + 5;
      desc.q_strides.batch = Hq * desc.q_strides.head + 7;
      desc.k_strides.head = D + 1;
      desc.k_strides.seq = Hkv * (D + 1) + 2;
      desc.k_strides.batch = Nkv * desc.k_strides.seq + 3;
      desc.v_strides.seq = 2 * D;
      desc.v_strides.head = Nkv * 2 * D;
      desc.v_strides.batch = Hkv * Nkv * 2 * D;
      desc.o_strides.head = D;
      desc.o_strides.seq = Hq * D + 9;
      desc.o_strides.batch = Nq * desc.o_strides.seq;
      const int32_t lengths[2] = {60, 70};
      run_probs(ctx, &desc, kVariants[v], lengths, NULL, 555 + (uint64_t)causal);
    }
  }
  clattn_context_destroy(ctx);
}

/* Masked keys are never read: NaN in the K of keys past each sequence's length, and in a key
 * `bad` of batch 0 under a causal mask. Rows that cannot see `bad` must match the reference
 * (the masked NaN reaches none of their entries); rows that see it have a NaN LSE from the
 * fused call, so their visible entries are NaN, and their masked entries still exactly 0. */
Test(probs, masked_nan_is_never_read, .timeout = 300.0) {
  const size_t n = test_len(70), dim = 24, bad = test_len(40);
  const int32_t lengths[2] = {(int32_t)n, (int32_t)(n - n / 4)};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    clattn_attention_desc desc = test_desc(2, 2, 2, n, n, dim, 1);
    char label[256];
    test_label(label, sizeof label, &desc, kVariants[v]);
    test_problem pr;
    test_problem_init(&pr, &desc, 9100 + v);
    const clattn_strides ks = test_strides(&desc, 'k');
    for (size_t b = 0; b < 2; ++b) {
      for (size_t h = 0; h < 2; ++h) {
        for (size_t j = 0; j < n; ++j) {
          if (!((b == 0 && j == bad) || j >= (size_t)lengths[b])) continue;
          for (size_t d = 0; d < dim; ++d) pr.k[b * ks.batch + h * ks.head + j * ks.seq + d] = NAN;
        }
      }
    }
    const clattn_attention_config config = test_config(kVariants[v]);
    clattn_status st =
        clattn_attention_host(ctx, &desc, pr.q, pr.k, pr.v, pr.o, pr.lse, lengths, &config);
    cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s (%s)", label, clattn_status_name(st),
                 test_last_error(ctx));
    float* p = malloc(2 * 2 * n * n * sizeof(float));
    cr_assert_not_null(p);
    st = clattn_attention_probs_host(ctx, &desc, pr.q, pr.k, pr.lse, lengths, NULL, p);
    cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s (%s)", label, clattn_status_name(st),
                 test_last_error(ctx));
    /* Batch 1 never sees a NaN: all of it against the reference (K's NaN rows are masked). */
    const region g1 = {0, 2, 0, n, 0, n};
    test_problem one = pr;
    one.desc.batch = 1;
    one.q = pr.q + test_strides(&desc, 'q').batch;
    one.k = pr.k + ks.batch;
    one.v = pr.v + test_strides(&desc, 'v').batch;
    check_probs(&one, lengths + 1, &g1, p + 2 * n * n, label);
    /* Batch 0: rows before `bad` against the reference, the others NaN where visible. */
    const region g0 = {0, 2, 0, bad, 0, n};
    float* rows_before = malloc(2 * bad * n * sizeof(float));
    cr_assert_not_null(rows_before);
    for (size_t h = 0; h < 2; ++h) {
      memcpy(rows_before + h * bad * n, p + h * n * n, bad * n * sizeof(float));
    }
    one.desc.batch = 1;
    one.q = pr.q;
    one.k = pr.k;
    one.v = pr.v;
    check_probs(&one, lengths, &g0, rows_before, label);
    for (size_t h = 0; h < 2; ++h) {
      for (size_t i = bad; i < n; ++i) {
        for (size_t j = 0; j < n; ++j) {
          const float got = p[(h * n + i) * n + j];
          if (j <= i) {
            cr_assert(isnan(got),
                      "%s: P[b=0,h=%zu,i=%zu,j=%zu] = %g, but the row sees key %zu "
                      "whose K is NaN",
                      label, h, i, j, (double)got, bad);
          } else {
            cr_assert(got == 0.0f, "%s: masked P[b=0,h=%zu,i=%zu,j=%zu] = %g, not 0", label, h, i,
                      j, (double)got);
          }
        }
      }
    }
    free(rows_before);
    free(p);
    test_problem_free(&pr);
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- over a KV cache */

/* Every sequence's K and V as [heads_kv][MAX_LEN][head_dim], as appended. */
#define CACHE_SEQS 4
#define MAX_LEN 160

typedef struct cache_fixture {
  clattn_context* ctx;
  clattn_kv_cache* cache;
  size_t heads_kv, dim;
  float *k, *v;
  size_t len[CACHE_SEQS];
} cache_fixture;

static size_t cache_at(const cache_fixture* f, size_t s, size_t h, size_t j) {
  return ((s * f->heads_kv + h) * MAX_LEN + j) * f->dim;
}

/* Appends `tokens` rows to sequence s (poison: all NaN, not recorded as part of the sequence,
 * for a truncation to hide again). */
static void cache_append(cache_fixture* f, int32_t s, size_t tokens, int poison, uint64_t seed) {
  const size_t n = f->heads_kv * tokens * f->dim;
  float* k = malloc(n * sizeof(float));
  float* v = malloc(n * sizeof(float));
  cr_assert(k && v);
  uint64_t state = seed;
  clattn_ref_fill_uniform(k, n, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(v, n, -1.0f, 1.0f, &state);
  if (poison) {
    for (size_t i = 0; i < n; ++i) k[i] = v[i] = NAN;
  }
  clattn_kv_append_desc d = CLATTN_KV_APPEND_DESC_INIT;
  d.count = 1;
  d.seq_ids = &s;
  d.tokens = tokens;
  const clattn_status st = clattn_kv_cache_append_host(f->cache, &d, k, v);
  cr_assert_eq(st, CLATTN_SUCCESS, "append: %s (%s)", clattn_status_name(st),
               test_last_error(f->ctx));
  cr_assert(f->len[s] + tokens <= MAX_LEN);
  for (size_t h = 0; h < f->heads_kv && !poison; ++h) {
    memcpy(&f->k[cache_at(f, (size_t)s, h, f->len[s])], k + h * tokens * f->dim,
           tokens * f->dim * sizeof(float));
    memcpy(&f->v[cache_at(f, (size_t)s, h, f->len[s])], v + h * tokens * f->dim,
           tokens * f->dim * sizeof(float));
  }
  if (!poison) f->len[s] += tokens;
  free(k);
  free(v);
}

/* A cache whose sequences' pages are scrambled (grown in turns of different sizes), sequence 1
 * with NaN tokens appended and truncated away (still in its last block, masked by its length),
 * sequence 3 empty. */
static void cache_fixture_init(cache_fixture* f, size_t heads_kv, size_t dim) {
  memset(f, 0, sizeof *f);
  f->ctx = test_context(NULL);
  f->heads_kv = heads_kv;
  f->dim = dim;
  clattn_kv_cache_desc d = CLATTN_KV_CACHE_DESC_INIT;
  d.max_sequences = CACHE_SEQS;
  d.heads_kv = heads_kv;
  d.head_dim = dim;
  d.capacity = CACHE_SEQS * MAX_LEN;
  d.block_tokens = 8;
  clattn_status st = clattn_kv_cache_create(f->ctx, &d, &f->cache);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s (%s)", clattn_status_name(st), test_last_error(f->ctx));
  f->k = calloc(CACHE_SEQS * heads_kv * MAX_LEN * dim, sizeof(float));
  f->v = calloc(CACHE_SEQS * heads_kv * MAX_LEN * dim, sizeof(float));
  cr_assert(f->k && f->v);
  static const size_t turns[][3] = {{5, 3, 11}, {9, 1, 2}, {13, 6, 7}, {4, 2, 9}};
  for (size_t t = 0; t < sizeof turns / sizeof turns[0]; ++t) {
    for (int32_t s = 0; s < 3; ++s)
      cache_append(f, s, test_len(turns[t][s] * 3), 0, 70 + t * 3 + s);
  }
  cache_append(f, 1, 3, 1, 99);
  st = clattn_kv_cache_truncate(f->cache, 1, f->len[1]);
  cr_assert_eq(st, CLATTN_SUCCESS, "truncate: %s", clattn_status_name(st));
}

static void cache_fixture_free(cache_fixture* f) {
  clattn_kv_cache_destroy(f->cache);
  clattn_context_destroy(f->ctx);
  free(f->k);
  free(f->v);
}

/* The fused call over the cache (variant) for the LSE, then the probabilities of `block`
 * through clattn_attention_probs_cached, checked sequence by sequence against the reference
 * over the model's K (columns past a sequence's length 0). */
static void run_cached(cache_fixture* f, size_t count, const int32_t* ids, size_t heads_q,
                       size_t seq_q, int causal, clattn_variant variant,
                       const clattn_probs_block* block, uint64_t seed) {
  size_t longest = 0;
  for (size_t i = 0; i < count; ++i) {
    if (f->len[ids[i]] > longest) longest = f->len[ids[i]];
  }
  clattn_attention_desc d = test_desc(count, heads_q, f->heads_kv, seq_q, 0, f->dim, causal);
  clattn_attention_desc whole = d;
  whole.seq_kv = longest;
  const region g = region_of(&whole, block);
  const size_t per_q = heads_q * seq_q * f->dim, per_l = heads_q * seq_q;
  const size_t per_p = g.nh * g.nr * g.nc;
  float* q = malloc(count * per_q * sizeof(float));
  float* o = malloc(count * per_q * sizeof(float));
  float* lse = malloc(count * per_l * sizeof(float));
  float* p = malloc((count * per_p + 1) * sizeof(float));
  cr_assert(q && o && lse && p);
  uint64_t state = seed;
  clattn_ref_fill_uniform(q, count * per_q, -1.0f, 1.0f, &state);
  for (size_t i = 0; i < count * per_p; ++i) p[i] = NAN;
  const clattn_attention_config config = test_config(variant);
  clattn_status st = clattn_attention_cached_host(f->cache, &d, ids, q, o, lse, &config);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_attention_cached_host: %s (%s)", clattn_status_name(st),
               test_last_error(f->ctx));
  cl_context cl_ctx = NULL;
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(f->ctx, &cl_ctx, NULL, &queue), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem mq = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                             count * per_q * sizeof(float), q, &err);
  cl_mem ml = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                             count * per_l * sizeof(float), lse, &err);
  cl_mem mp =
      clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, (count * per_p + 1) * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = mq;
  b.lse = ml;
  cl_event done = NULL;
  st = clattn_attention_probs_cached(f->cache, &d, ids, &b, block, mp, 1, NULL, 0, NULL, &done);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_attention_probs_cached: %s (%s)", clattn_status_name(st),
               test_last_error(f->ctx));
  cr_assert_not_null(done);
  if (count * per_p > 0) {
    cr_assert_eq(clEnqueueReadBuffer(queue, mp, CL_TRUE, sizeof(float),
                                     count * per_p * sizeof(float), p, 1, &done, NULL),
                 CL_SUCCESS);
  } else { /* an empty block: nothing to read, the event still completes */
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
  }
  clReleaseEvent(done);
  for (size_t i = 0; i < count; ++i) {
    const size_t s = (size_t)ids[i], len = f->len[s];
    char label[256];
    snprintf(label, sizeof label,
             "%s sequence %zu (batch index %zu of %zu) L=%zu Hq=%zu Hkv=%zu Nq=%zu D=%zu causal=%d "
             "block h[%zu+%zu] i[%zu+%zu] j[%zu+%zu]",
             test_variant_name(variant), s, i, count, len, heads_q, f->heads_kv, seq_q, f->dim,
             causal, g.h0, g.nh, g.r0, g.nr, g.c0, g.nc);
    const float* pi = p + i * per_p;
    if (len == 0) {
      for (size_t e = 0; e < per_p; ++e) {
        cr_assert(pi[e] == 0.0f, "%s: P[%zu] = %g, not 0 (an empty sequence)", label, e,
                  (double)pi[e]);
      }
      continue;
    }
    test_problem one;
    memset(&one, 0, sizeof one);
    one.desc = test_desc(1, heads_q, f->heads_kv, seq_q, len, f->dim, causal);
    one.desc.k_strides = (clattn_strides){
        .batch = f->heads_kv * MAX_LEN * f->dim, .head = MAX_LEN * f->dim, .seq = f->dim};
    one.desc.v_strides = one.desc.k_strides;
    one.q = q + i * per_q;
    one.k = &f->k[cache_at(f, s, 0, 0)];
    one.v = &f->v[cache_at(f, s, 0, 0)];
    one.no = test_span(&one.desc, 'o');
    one.nl = test_span(&one.desc, 'l');
    check_probs(&one, NULL, &g, pi, label);
  }
  clReleaseMemObject(mq);
  clReleaseMemObject(ml);
  clReleaseMemObject(mp);
  free(q);
  free(o);
  free(lse);
  free(p);
}

/* Decode (one row) and prompt rows (causal aligned to each sequence's length, the first rows
 * of a sequence shorter than seq_q seeing nothing), GQA, sequences in any order with an empty
 * one, from the LSE of every variant, whole and in blocks (the longest's last column, a middle
 * block, one row). */
Test(probs, over_a_kv_cache, .timeout = 300.0) {
  cache_fixture f;
  cache_fixture_init(&f, 2, 24);
  const int32_t ids[CACHE_SEQS] = {2, 0, 3, 1};
  size_t longest = 0;
  for (int s = 0; s < CACHE_SEQS; ++s) longest = f.len[s] > longest ? f.len[s] : longest;
  const clattn_probs_block blocks[] = {
      block_of(0, 0, 0, 0, longest - 1, 1),
      block_of(1, 2, 0, 0, longest / 4, longest / 2),
      block_of(0, 0, 0, 1, 0, 0),
  };
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (int causal = 0; causal <= 1; ++causal) {
      run_cached(&f, CACHE_SEQS, ids, 4, 1, causal, kVariants[v], NULL, 300 + v * 4 + causal);
      run_cached(&f, CACHE_SEQS, ids, 4, 5, causal, kVariants[v], NULL, 310 + v * 4 + causal);
      for (size_t k = 0; k < sizeof blocks / sizeof blocks[0]; ++k) {
        run_cached(&f, CACHE_SEQS, ids, 4, 5, causal, kVariants[v], &blocks[k],
                   320 + v * 16 + k * 2 + causal);
      }
      const int32_t two[2] = {1, 0}; /* a batch whose longest is shorter than the cache's */
      run_cached(&f, 2, two, 2, 3, causal, kVariants[v], NULL, 380 + v * 4 + causal);
      const int32_t empty[1] = {3}; /* no key at all: an empty block */
      run_cached(&f, 1, empty, 2, 2, causal, kVariants[v], NULL, 390 + v * 4 + causal);
    }
  }
  cache_fixture_free(&f);
}

/* Over a cache: k, v or kv_lengths set, seq_kv set, a block past the longest sequence of the
 * call, a NULL lse or p, p too small, a repeated id. */
Test(probs, over_a_kv_cache_bad_input) {
  cache_fixture f;
  cache_fixture_init(&f, 2, 8);
  clattn_context* ctx = f.ctx;
  cl_context cl_ctx = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  const int32_t ids[2] = {0, 1};
  const size_t longest = f.len[0] > f.len[1] ? f.len[0] : f.len[1];
  clattn_attention_desc d = test_desc(2, 2, 2, 3, 0, 8, 1);
  cl_mem q = make_buffer(cl_ctx, 2 * 2 * 3 * 8 * sizeof(float));
  cl_mem l = make_buffer(cl_ctx, 2 * 2 * 3 * sizeof(float));
  const size_t whole = 2 * 2 * 3 * longest;
  cl_mem p = make_buffer(cl_ctx, whole * sizeof(float));
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = q;
  b.lse = l;
  clattn_status st;
  st = clattn_attention_probs_cached(f.cache, &d, ids, &b, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_SUCCESS, "good arguments");
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, NULL, NULL, &queue), CLATTN_SUCCESS);
  cr_assert_eq(clFinish(queue), CL_SUCCESS);
  st = clattn_attention_probs_cached(NULL, &d, ids, &b, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(NULL, st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL cache");
  clattn_attention_buffers nb = b;
  nb.k = q;
  st = clattn_attention_probs_cached(f.cache, &d, ids, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "k set over a cache");
  nb = b;
  nb.kv_lengths = q;
  st = clattn_attention_probs_cached(f.cache, &d, ids, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "kv_lengths set over a cache");
  nb = b;
  nb.lse = NULL;
  st = clattn_attention_probs_cached(f.cache, &d, ids, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL lse");
  st = clattn_attention_probs_cached(f.cache, &d, ids, &b, NULL, NULL, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL p");
  st = clattn_attention_probs_cached(f.cache, &d, ids, &b, NULL, p, 1, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_BUFFER_TOO_SMALL, "p too small");
  const clattn_probs_block past = block_of(0, 0, 0, 0, longest - 1, 2);
  st = clattn_attention_probs_cached(f.cache, &d, ids, &b, &past, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "columns past the longest sequence");
  clattn_attention_desc with_kv = d;
  with_kv.seq_kv = 4;
  st = clattn_attention_probs_cached(f.cache, &with_kv, ids, &b, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_SHAPE, "seq_kv set over a cache");
  const int32_t twice[2] = {1, 1};
  st = clattn_attention_probs_cached(f.cache, &d, twice, &b, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "a repeated id");
  size_t len = 0;
  cr_assert_eq(clattn_kv_cache_seq_length(f.cache, 0, &len), CLATTN_SUCCESS);
  cr_expect_eq(len, f.len[0], "a refused call changed the cache");
  clReleaseMemObject(q);
  clReleaseMemObject(l);
  clReleaseMemObject(p);
  cache_fixture_free(&f);
}

/* ---------------------------------------------------------------- cl_mem entry point */

/* Inputs at offsets, p at an offset between guard values, written after a wait list of
 * non-blocking writes and a user event, on the context's queue or the caller's: the call must
 * not run before the user event, must return an event, and must leave the guards alone. */
static void run_cl_mem_case(int own_queue) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, &device, &queue), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  if (own_queue) {
    queue = clCreateCommandQueue(cl_ctx, device, 0, &err);
    cr_assert_eq(err, CL_SUCCESS);
  }
  clattn_attention_desc desc = test_desc(2, 4, 2, 21, 30, 16, 1);
  const int32_t lengths[2] = {25, 30};
  test_problem pr;
  test_problem_init(&pr, &desc, 77 + (uint64_t)own_queue);
  clattn_status st =
      clattn_attention_host(ctx, &desc, pr.q, pr.k, pr.v, pr.o, pr.lse, lengths, NULL);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s (%s)", clattn_status_name(st), test_last_error(ctx));
  const clattn_probs_block blk = block_of(1, 2, 3, 15, 2, 27);
  const region g = region_of(&desc, &blk);
  const size_t count = region_size(&desc, &g);
  const size_t q_off = 5, k_off = 11, l_off = 3, p_off = 13, slack = 9;
  const float guard = -777.0f;
  float* hp = malloc((p_off + count + slack) * sizeof(float));
  cr_assert_not_null(hp);
  for (size_t i = 0; i < p_off + count + slack; ++i) hp[i] = guard;
  cl_mem mq = make_buffer(cl_ctx, (q_off + pr.nq) * sizeof(float));
  cl_mem mk = make_buffer(cl_ctx, (k_off + pr.nk) * sizeof(float));
  cl_mem ml = make_buffer(cl_ctx, (l_off + pr.nl) * sizeof(float));
  cl_mem mlen = make_buffer(cl_ctx, sizeof lengths);
  cl_mem mp = make_buffer(cl_ctx, (p_off + count + slack) * sizeof(float));
  cl_event waits[6];
  cl_uint nw = 0;
  err = clEnqueueWriteBuffer(queue, mq, CL_FALSE, q_off * sizeof(float), pr.nq * sizeof(float),
                             pr.q, 0, NULL, &waits[nw++]);
  err |= clEnqueueWriteBuffer(queue, mk, CL_FALSE, k_off * sizeof(float), pr.nk * sizeof(float),
                              pr.k, 0, NULL, &waits[nw++]);
  err |= clEnqueueWriteBuffer(queue, ml, CL_FALSE, l_off * sizeof(float), pr.nl * sizeof(float),
                              pr.lse, 0, NULL, &waits[nw++]);
  err |= clEnqueueWriteBuffer(queue, mlen, CL_FALSE, 0, sizeof lengths, lengths, 0, NULL,
                              &waits[nw++]);
  err |= clEnqueueWriteBuffer(queue, mp, CL_FALSE, 0, (p_off + count + slack) * sizeof(float), hp,
                              0, NULL, &waits[nw++]);
  cr_assert_eq(err, CL_SUCCESS);
  cl_event gate = clCreateUserEvent(cl_ctx, &err);
  cr_assert_eq(err, CL_SUCCESS);
  waits[nw++] = gate;
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = mq;
  b.q_offset = q_off;
  b.k = mk;
  b.k_offset = k_off;
  b.lse = ml;
  b.lse_offset = l_off;
  b.kv_lengths = mlen;
  cl_event done = NULL;
  st = clattn_attention_probs(ctx, &desc, &b, &blk, mp, p_off, own_queue ? queue : NULL, nw, waits,
                              &done);
  if (st != CLATTN_SUCCESS) clSetUserEventStatus(gate, CL_COMPLETE);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_attention_probs: %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  cr_assert_not_null(done, "no event returned");
  struct timespec pause = {0, 50 * 1000 * 1000};
  nanosleep(&pause, NULL);
  cl_int exec = CL_COMPLETE;
  cr_assert_eq(clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL),
               CL_SUCCESS);
  const int ran_early = exec == CL_COMPLETE || exec == CL_RUNNING;
  cr_assert_eq(clSetUserEventStatus(gate, CL_COMPLETE), CL_SUCCESS);
  cr_assert(!ran_early, "the probabilities ran before their wait list completed");
  cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
  cr_assert_eq(clEnqueueReadBuffer(queue, mp, CL_TRUE, 0, (p_off + count + slack) * sizeof(float),
                                   hp, 0, NULL, NULL),
               CL_SUCCESS);
  for (size_t i = 0; i < p_off + count + slack; ++i) {
    if (i < p_off || i >= p_off + count) {
      cr_assert(hp[i] == guard, "p element %zu (outside the block) was written", i);
    }
  }
  check_probs(&pr, lengths, &g, hp + p_off, own_queue ? "cl_mem, own queue" : "cl_mem");
  for (cl_uint i = 0; i < nw; ++i) clReleaseEvent(waits[i]);
  clReleaseEvent(done);
  cl_mem mems[5] = {mq, mk, ml, mlen, mp};
  for (int i = 0; i < 5; ++i) clReleaseMemObject(mems[i]);
  if (own_queue) clReleaseCommandQueue(queue);
  free(hp);
  test_problem_free(&pr);
  clattn_context_destroy(ctx);
}

Test(probs, cl_mem_offsets_and_events, .timeout = 120.0) { run_cl_mem_case(0); }

Test(probs, cl_mem_own_queue, .timeout = 120.0) { run_cl_mem_case(1); }

/* ---------------------------------------------------------------- bad input */

/* Every refusal, with a message, and no crash. */
Test(probs, bad_input) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  clattn_attention_desc desc = test_desc(2, 4, 2, 10, 12, 8, 1);
  test_problem pr;
  test_problem_init(&pr, &desc, 5);
  for (size_t i = 0; i < pr.nl; ++i) pr.lse[i] = 0.0f;
  const size_t whole = 2 * 4 * 10 * 12;
  float* hp = malloc(whole * sizeof(float));
  cr_assert_not_null(hp);
  cl_mem q = make_buffer(cl_ctx, pr.nq * sizeof(float));
  cl_mem k = make_buffer(cl_ctx, pr.nk * sizeof(float));
  cl_mem l = make_buffer(cl_ctx, pr.nl * sizeof(float));
  cl_mem p = make_buffer(cl_ctx, whole * sizeof(float));
  cl_mem big = make_buffer(cl_ctx, (pr.nq + pr.nk + pr.nl + whole) * sizeof(float));
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = q;
  b.k = k;
  b.lse = l;
  clattn_status st;

  expect_status(NULL, clattn_attention_probs(NULL, &desc, &b, NULL, p, 0, NULL, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT, "NULL context");
  st = clattn_attention_probs(ctx, NULL, &b, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL desc");
  st = clattn_attention_probs(ctx, &desc, NULL, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL buffers");
  st = clattn_attention_probs(ctx, &desc, &b, NULL, NULL, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL p");
  st = clattn_attention_probs(ctx, &desc, &b, NULL, p, 0, NULL, 2, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "wait count without a list");
  clattn_attention_buffers nb = b;
  nb.lse = NULL;
  st = clattn_attention_probs(ctx, &desc, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL lse");
  nb = b;
  nb.q = NULL;
  st = clattn_attention_probs(ctx, &desc, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL q");
  nb = b;
  nb.k = NULL;
  st = clattn_attention_probs(ctx, &desc, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL k");
  nb = b;
  nb.struct_size = 3;
  st = clattn_attention_probs(ctx, &desc, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "buffers struct_size");

  /* Blocks beyond the shape, one dimension at a time; a begin at the dimension. */
  const clattn_probs_block outside[] = {
      block_of(4, 0, 0, 0, 0, 0),       block_of(3, 2, 0, 0, 0, 0),
      block_of(0, 5, 0, 0, 0, 0),       block_of(0, 0, 10, 0, 0, 0),
      block_of(0, 0, 9, 2, 0, 0),       block_of(0, 0, 0, 11, 0, 0),
      block_of(0, 0, 0, 0, 12, 0),      block_of(0, 0, 0, 0, 11, 2),
      block_of(0, 0, 0, 0, 0, 13),      block_of(0, 0, 0, 0, SIZE_MAX, 2),
      block_of(0, 0, 2, SIZE_MAX, 0, 0)};
  for (size_t i = 0; i < sizeof outside / sizeof outside[0]; ++i) {
    st = clattn_attention_probs(ctx, &desc, &b, &outside[i], p, 0, NULL, 0, NULL, NULL);
    char what[64];
    snprintf(what, sizeof what, "block %zu beyond the shape", i);
    expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, what);
    st = clattn_attention_probs_host(ctx, &desc, pr.q, pr.k, pr.lse, NULL, &outside[i], hp);
    expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, what);
  }
  clattn_probs_block sized = CLATTN_PROBS_BLOCK_INIT;
  sized.struct_size = sizeof sized + 8;
  st = clattn_attention_probs(ctx, &desc, &b, &sized, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "block struct_size");

  /* p smaller than the block, from its offset; inputs smaller than the shape. */
  st = clattn_attention_probs(ctx, &desc, &b, NULL, p, 1, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_BUFFER_TOO_SMALL, "p too small from its offset");
  const clattn_probs_block row = block_of(0, 1, 0, 1, 0, 0);
  st = clattn_attention_probs(ctx, &desc, &b, &row, p, whole - 2 * 12 + 1, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_BUFFER_TOO_SMALL, "a row's p one element short");
  st = clattn_attention_probs(ctx, &desc, &b, &row, p, whole - 2 * 12, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_SUCCESS, "a row's p at the end of the buffer");
  nb = b;
  nb.lse_offset = 1;
  st = clattn_attention_probs(ctx, &desc, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_BUFFER_TOO_SMALL, "lse too small");
  nb = b;
  nb.k_offset = 1;
  st = clattn_attention_probs(ctx, &desc, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_BUFFER_TOO_SMALL, "k too small");
  nb = b;
  nb.kv_lengths = make_buffer(cl_ctx, sizeof(int32_t)); /* batch 2 needs two */
  st = clattn_attention_probs(ctx, &desc, &nb, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_BUFFER_TOO_SMALL, "kv_lengths too small");
  clReleaseMemObject(nb.kv_lengths);

  /* p aliasing an input in one cl_mem; disjoint ranges of one buffer are fine. */
  clattn_attention_buffers ab = b;
  ab.q = ab.k = ab.lse = big;
  ab.q_offset = 0;
  ab.k_offset = pr.nq;
  ab.lse_offset = pr.nq + pr.nk;
  const size_t free_at = pr.nq + pr.nk + pr.nl;
  const size_t at[3] = {pr.nq - 1, pr.nq + pr.nk - 1, free_at - 1};
  const char* names[3] = {"p overlapping q", "p overlapping k", "p overlapping lse"};
  for (int i = 0; i < 3; ++i) {
    st = clattn_attention_probs(ctx, &desc, &ab, &row, big, at[i], NULL, 0, NULL, NULL);
    expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, names[i]);
  }
  st = clattn_attention_probs(ctx, &desc, &ab, NULL, big, free_at, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_SUCCESS, "p after the inputs in one buffer");
  ab = b;
  ab.kv_lengths = p;
  st = clattn_attention_probs(ctx, &desc, &ab, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "p overlapping kv_lengths");

  /* An LSE buffer the kernel may not read (a fused call's output made write-only); a p it may
   * not write. */
  cl_int cerr = CL_SUCCESS;
  cl_mem wo = clCreateBuffer(cl_ctx, CL_MEM_WRITE_ONLY, pr.nl * sizeof(float), NULL, &cerr);
  cl_mem ro = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY, whole * sizeof(float), NULL, &cerr);
  cr_assert_eq(cerr, CL_SUCCESS);
  ab = b;
  ab.lse = wo;
  st = clattn_attention_probs(ctx, &desc, &ab, NULL, p, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "a write-only lse");
  st = clattn_attention_probs(ctx, &desc, &b, NULL, ro, 0, NULL, 0, NULL, NULL);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "a read-only p");
  clReleaseMemObject(wo);
  clReleaseMemObject(ro);

  /* The host form: NULL arrays and a bad shape. */
  st = clattn_attention_probs_host(NULL, &desc, pr.q, pr.k, pr.lse, NULL, NULL, hp);
  expect_status(NULL, st, CLATTN_ERROR_INVALID_ARGUMENT, "host: NULL context");
  const void* arrays[4][4] = {{NULL, pr.k, pr.lse, hp},
                              {pr.q, NULL, pr.lse, hp},
                              {pr.q, pr.k, NULL, hp},
                              {pr.q, pr.k, pr.lse, NULL}};
  for (int i = 0; i < 4; ++i) {
    st = clattn_attention_probs_host(ctx, &desc, arrays[i][0], arrays[i][1], arrays[i][2], NULL,
                                     NULL, (float*)arrays[i][3]);
    expect_status(ctx, st, CLATTN_ERROR_INVALID_ARGUMENT, "host: a NULL array");
  }
  clattn_attention_desc zero = desc;
  zero.seq_kv = 0;
  st = clattn_attention_probs_host(ctx, &zero, pr.q, pr.k, pr.lse, NULL, NULL, hp);
  expect_status(ctx, st, CLATTN_ERROR_INVALID_SHAPE, "host: seq_kv 0");
  st = clattn_attention_probs_host(ctx, &desc, pr.q, pr.k, pr.lse, NULL, NULL, hp);
  expect_status(ctx, st, CLATTN_SUCCESS, "host: good arguments");

  cl_mem mems[5] = {q, k, l, p, big};
  for (int i = 0; i < 5; ++i) clReleaseMemObject(mems[i]);
  free(hp);
  test_problem_free(&pr);
  clattn_context_destroy(ctx);
}
