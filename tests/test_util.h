/* Helpers shared by the Criterion suites: a context that skips the test when there is no
 * OpenCL device, test problems with random inputs, and the comparison of a result with the
 * double-precision reference. Header-only (static inline) so each suite stays one file. */
#ifndef CLATTN_TESTS_TEST_UTIL_H
#define CLATTN_TESTS_TEST_UTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"
#include "reference.h"

#define TEST_U (1.0 / 16777216.0)

/* Creates a context with options (may be NULL); skips the test when there is no device. */
static inline clattn_context* test_context(const clattn_context_options* options) {
  clattn_context* ctx = NULL;
  clattn_status st = clattn_context_create(options, &ctx);
  if (st == CLATTN_ERROR_NO_DEVICE) {
    cr_skip_test("no OpenCL device available (clattn_context_create returned %s)",
                 clattn_status_name(st));
  }
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_context_create: %s", clattn_status_name(st));
  cr_assert_not_null(ctx);
  return ctx;
}

/* Skips the test on Oclgrind's device (and releases ctx), saying why. */
static inline void test_skip_on_oclgrind(clattn_context* ctx, const char* why) {
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  if (clattn_context_get_device_info(ctx, &info) == CLATTN_SUCCESS &&
      strstr(info.platform_name, "Oclgrind") != NULL) {
    clattn_context_destroy(ctx);
    cr_skip_test("Oclgrind: %s", why);
  }
}

/* 1 when CLATTN_TEST_SMALL is set (and not "0"): suites with long shapes use shorter ones,
 * for slow devices such as Oclgrind's simulator (the `platform_oclgrind` CTest entry). */
static inline int test_small(void) {
  const char* s = getenv("CLATTN_TEST_SMALL");
  return s != NULL && *s != '\0' && strcmp(s, "0") != 0;
}

/* A sequence length, a third as long (rounded up) under CLATTN_TEST_SMALL. */
static inline size_t test_len(size_t n) { return test_small() ? (n + 2) / 3 : n; }

/* The context's last error message, for assertion messages. */
static inline const char* test_last_error(const clattn_context* ctx) {
  static char buf[2048];
  buf[0] = '\0';
  if (ctx != NULL) clattn_context_get_last_error(ctx, buf, sizeof buf, NULL);
  return buf;
}

/* The library's name of a variant, for assertion messages; "?" for a value that names none. */
static inline const char* test_variant_name(clattn_variant variant) {
  const char* name = clattn_variant_name(variant);
  return name != NULL ? name : "?";
}

static inline clattn_attention_config test_config(clattn_variant variant) {
  clattn_attention_config config = CLATTN_ATTENTION_CONFIG_INIT;
  config.variant = variant;
  return config;
}

/* A descriptor with the common fields set; everything else 0 (defaults). */
static inline clattn_attention_desc test_desc(size_t batch, size_t heads_q, size_t heads_kv,
                                              size_t seq_q, size_t seq_kv, size_t head_dim,
                                              int causal) {
  clattn_attention_desc desc = CLATTN_ATTENTION_DESC_INIT;
  desc.dtype = CLATTN_DTYPE_F32;
  desc.batch = batch;
  desc.heads_q = heads_q;
  desc.heads_kv = heads_kv;
  desc.seq_q = seq_q;
  desc.seq_kv = seq_kv;
  desc.head_dim = head_dim;
  desc.causal = causal;
  return desc;
}

static inline size_t test_heads_kv(const clattn_attention_desc* desc) {
  return desc->heads_kv == 0 ? desc->heads_q : desc->heads_kv;
}

/* Strides of tensor `which` ('q', 'k', 'v', 'o'), from the reference's reading of the
 * header's rules. */
static inline clattn_strides test_strides(const clattn_attention_desc* desc, char which) {
  return clattn_ref_strides(desc, which);
}

/* Elements spanned by tensor `which` ('q', 'k', 'v', 'o', 'l'): max index + 1. */
static inline size_t test_span(const clattn_attention_desc* desc, char which) {
  if (which == 'l') return desc->batch * desc->heads_q * desc->seq_q;
  const int is_q = which == 'q' || which == 'o';
  const size_t heads = is_q ? desc->heads_q : test_heads_kv(desc);
  const size_t seq = is_q ? desc->seq_q : desc->seq_kv;
  const clattn_strides s = test_strides(desc, which);
  return (desc->batch - 1) * s.batch + (heads - 1) * s.head + (seq - 1) * s.seq + desc->head_dim;
}

/* "tiled_local B=1 Hq=2 Hkv=2 Nq=7 Nkv=7 D=8 causal=1 BHND" */
static inline void test_label(char* buf, size_t size, const clattn_attention_desc* desc,
                              clattn_variant variant) {
  snprintf(buf, size, "%s B=%zu Hq=%zu Hkv=%zu Nq=%zu Nkv=%zu D=%zu causal=%d %s scale=%g",
           test_variant_name(variant), desc->batch, desc->heads_q, test_heads_kv(desc), desc->seq_q,
           desc->seq_kv, desc->head_dim, desc->causal,
           desc->layout == CLATTN_LAYOUT_BNHD ? "BNHD" : "BHND", (double)desc->scale);
}

/* Number of keys row i of batch b sees (prefix 0..n-1) and S = max |scale| sum_d |q_d k_d|
 * over them. Written independently of reference.c, for the LSE bound. */
static inline void test_row_stats(const clattn_attention_desc* desc, const float* q, const float* k,
                                  const int32_t* kv_lengths, size_t b, size_t h, size_t i,
                                  size_t* n_out, double* s_out) {
  size_t n = desc->seq_kv;
  if (kv_lengths != NULL) {
    int32_t len = kv_lengths[b];
    n = len < 0 ? 0 : ((size_t)len > desc->seq_kv ? desc->seq_kv : (size_t)len);
  }
  if (desc->causal) {
    const long long last = (long long)i + (long long)desc->seq_kv - (long long)desc->seq_q;
    if (last < 0) {
      n = 0;
    } else if ((unsigned long long)last + 1 < n) {
      n = (size_t)last + 1;
    }
  }
  const clattn_strides qs = test_strides(desc, 'q'), ks = test_strides(desc, 'k');
  const size_t hk = h / (desc->heads_q / test_heads_kv(desc));
  const double scale =
      desc->scale == 0.0f ? 1.0 / sqrt((double)desc->head_dim) : fabs((double)desc->scale);
  const float* qrow = q + b * qs.batch + h * qs.head + i * qs.seq;
  double s_max = 0.0;
  for (size_t j = 0; j < n; ++j) {
    const float* krow = k + b * ks.batch + hk * ks.head + j * ks.seq;
    double s = 0.0;
    for (size_t d = 0; d < desc->head_dim; ++d) s += fabs((double)qrow[d] * (double)krow[d]);
    if (s * scale > s_max) s_max = s * scale;
  }
  *n_out = n;
  *s_out = s_max;
}

/* Error bound for a float32 LSE, first order in u = 2^-24 (compare reference.c).
 * lse = log sum_j exp(s_j) is 1-Lipschitz in the max-norm of the scores, so score errors
 * (D + 2) u S move it by at most that much. Exponent-argument roundings and exp ulps (as in
 * reference.c: 4 u S + 16 u) are relative errors of each term, hence absolute in the log; so
 * is the float sum's relative error (n + ceil(n/16) + 2) u. Finally log (allowed 8 ulps) and
 * the addition m + log(l) round relative to |m| + |log l| <= S + log n + |lse|. Safety 2,
 * plus a floor of 1e-6 (1 + |lse|) for looser log/exp implementations. */
static inline double test_lse_tolerance(size_t head_dim, size_t n, double s, double lse_ref) {
  const double u = TEST_U, nd = (double)n;
  const double scale_terms = ((double)head_dim + 6.0) * u * s + 16.0 * u;
  const double sum_terms = (nd + ceil(nd / 16.0) + 2.0) * u;
  const double log_terms = 8.0 * u * (s + log(nd + 1.0) + fabs(lse_ref) + 1.0);
  return 2.0 * (scale_terms + sum_terms + log_terms) + 1e-6 * (1.0 + fabs(lse_ref));
}

/* Compares o (laid out like the descriptor's O, from index 0) and lse (NULL: not checked)
 * with the reference. Every element of every row is checked against that row's tolerance;
 * rows that see no key must be exactly 0 with LSE -INFINITY. Fails the test with `label`
 * and the first offending element. */
static inline void test_check(const clattn_attention_desc* desc, const float* q, const float* k,
                              const float* v, const int32_t* kv_lengths, const float* o,
                              const float* lse, const char* label) {
  const size_t o_span = test_span(desc, 'o'), l_span = test_span(desc, 'l');
  double* ref_o = malloc(o_span * sizeof(double));
  double* ref_lse = malloc(l_span * sizeof(double));
  cr_assert(ref_o != NULL && ref_lse != NULL, "out of host memory");
  cr_assert_eq(clattn_ref_attention(desc, q, k, v, kv_lengths, ref_o, ref_lse, 1), 0,
               "%s: the reference rejected the descriptor", label);
  const clattn_strides os = test_strides(desc, 'o');
  size_t bad = 0, checked = 0;
  char first[512] = "";
  double worst = 0.0;
  for (size_t b = 0; b < desc->batch; ++b) {
    for (size_t h = 0; h < desc->heads_q; ++h) {
      for (size_t i = 0; i < desc->seq_q; ++i) {
        const double tol32 = clattn_ref_row_tolerance(desc, q, k, v, kv_lengths, b, h, i);
        const size_t base = b * os.batch + h * os.head + i * os.seq;
        for (size_t d = 0; d < desc->head_dim; ++d) {
          const double got = o[base + d], want = ref_o[base + d];
          const double err = fabs(got - want);
          /* A 16-bit O is the float32 result rounded once more. */
          const double tol =
              desc->dtype == CLATTN_DTYPE_F32
                  ? tol32
                  : tol32 + clattn_ref_dtype_rounding(desc->dtype, fabs(want) + tol32);
          ++checked;
          if (!(err <= tol)) {
            if (bad++ == 0) {
              snprintf(first, sizeof first,
                       "O[b=%zu,h=%zu,i=%zu,d=%zu] = %.9g, reference %.9g, |err| %.3g > tol %.3g",
                       b, h, i, d, got, want, err, tol);
            }
            const double ratio = tol > 0.0 ? err / tol : INFINITY;
            if (!(ratio <= worst)) worst = ratio;
          }
        }
        if (lse == NULL) continue;
        const size_t li = (b * desc->heads_q + h) * desc->seq_q + i;
        const double got = lse[li], want = ref_lse[li];
        size_t n;
        double s;
        test_row_stats(desc, q, k, kv_lengths, b, h, i, &n, &s);
        int ok;
        double ltol = 0.0;
        if (n == 0) {
          ok = isinf(got) && got < 0.0 && isinf(want);
        } else {
          ltol = test_lse_tolerance(desc->head_dim, n, s, want);
          ok = fabs(got - want) <= ltol;
        }
        ++checked;
        if (!ok) {
          if (bad++ == 0) {
            snprintf(first, sizeof first,
                     "LSE[b=%zu,h=%zu,i=%zu] = %.9g, reference %.9g (%zu visible keys), "
                     "tol %.3g",
                     b, h, i, got, want, n, ltol);
          }
        }
      }
    }
  }
  free(ref_o);
  free(ref_lse);
  cr_assert_eq(bad, 0, "%s: %zu of %zu values out of tolerance; first: %s; worst O err/tol %.3g",
               label, bad, checked, first, worst);
}

/* Random inputs for one descriptor, sized by its strides (padding included). */
typedef struct test_problem {
  clattn_attention_desc desc;
  float *q, *k, *v, *o, *lse;
  size_t nq, nk, nv, no, nl;
} test_problem;

static inline void test_problem_init(test_problem* p, const clattn_attention_desc* desc,
                                     uint64_t seed) {
  p->desc = *desc;
  p->nq = test_span(desc, 'q');
  p->nk = test_span(desc, 'k');
  p->nv = test_span(desc, 'v');
  p->no = test_span(desc, 'o');
  p->nl = test_span(desc, 'l');
  p->q = malloc(p->nq * sizeof(float));
  p->k = malloc(p->nk * sizeof(float));
  p->v = malloc(p->nv * sizeof(float));
  p->o = malloc(p->no * sizeof(float));
  p->lse = malloc(p->nl * sizeof(float));
  cr_assert(p->q && p->k && p->v && p->o && p->lse, "out of host memory");
  uint64_t state = seed;
  clattn_ref_fill_uniform(p->q, p->nq, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(p->k, p->nk, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(p->v, p->nv, -1.0f, 1.0f, &state);
  for (size_t i = 0; i < p->no; ++i) p->o[i] = NAN;
  for (size_t i = 0; i < p->nl; ++i) p->lse[i] = NAN;
}

static inline void test_problem_free(test_problem* p) {
  free(p->q);
  free(p->k);
  free(p->v);
  free(p->o);
  free(p->lse);
  memset(p, 0, sizeof *p);
}

/* Rounds n floats in place to a dtype's values (nothing for F32): inputs of a 16-bit tensor
 * that the reference, in double, reads exactly. */
static inline void test_round_to(float* x, size_t n, clattn_dtype dtype) {
  if (dtype == CLATTN_DTYPE_F32) return;
  uint16_t* bits = malloc((n ? n : 1) * sizeof *bits);
  cr_assert(bits != NULL, "out of host memory");
  clattn_convert(x, CLATTN_DTYPE_F32, bits, dtype, n);
  clattn_convert(bits, dtype, x, CLATTN_DTYPE_F32, n);
  free(bits);
}

/* n floats in a dtype's storage (malloc'd; a copy for F32). */
static inline void* test_to_dtype(const float* x, size_t n, clattn_dtype dtype) {
  size_t item = 0;
  cr_assert_eq(clattn_dtype_size(dtype, &item), CLATTN_SUCCESS);
  void* out = malloc((n ? n : 1) * item);
  cr_assert(out != NULL, "out of host memory");
  clattn_convert(x, CLATTN_DTYPE_F32, out, dtype, n);
  return out;
}

/* Runs one descriptor through clattn_attention_host with the given variant and checks O
 * and LSE against the reference. kv_lengths may be NULL. A 16-bit desc->dtype gets inputs
 * drawn exactly representable in it, passed in its storage; O is read back in it. */
static inline void test_run_host(clattn_context* ctx, const clattn_attention_desc* desc,
                                 clattn_variant variant, const int32_t* kv_lengths, uint64_t seed) {
  char label[288];
  test_label(label, sizeof label - 32, desc, variant);
  if (desc->dtype != CLATTN_DTYPE_F32) {
    strcat(label, " ");
    strcat(label, clattn_dtype_name(desc->dtype));
  }
  test_problem p;
  test_problem_init(&p, desc, seed);
  test_round_to(p.q, p.nq, desc->dtype);
  test_round_to(p.k, p.nk, desc->dtype);
  test_round_to(p.v, p.nv, desc->dtype);
  void* q = test_to_dtype(p.q, p.nq, desc->dtype);
  void* k = test_to_dtype(p.k, p.nk, desc->dtype);
  void* v = test_to_dtype(p.v, p.nv, desc->dtype);
  void* o = test_to_dtype(p.o, p.no, desc->dtype); /* NaN: rows left out show */
  const clattn_attention_config config = test_config(variant);
  const clattn_status st = clattn_attention_host(ctx, desc, q, k, v, o, p.lse, kv_lengths, &config);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: clattn_attention_host returned %s (%s)", label,
               clattn_status_name(st), test_last_error(ctx));
  clattn_convert(o, desc->dtype, p.o, CLATTN_DTYPE_F32, p.no);
  test_check(desc, p.q, p.k, p.v, kv_lengths, p.o, p.lse, label);
  free(q);
  free(k);
  free(v);
  free(o);
  test_problem_free(&p);
}

#endif
