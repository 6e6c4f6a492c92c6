/* 16-bit storage (F16, BF16): the host conversions against their definitions, the kernels'
 * reads and writes bit for bit against the host's, and every variant over the core's sweep
 * features against the double-precision reference, with a tolerance of the float32 bound
 * plus one rounding of the output to its dtype (inputs drawn exactly representable in it). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"
#include "reference.h"
#include "test_util.h"

static const clattn_variant kVariants[] = {
    CLATTN_VARIANT_TILED_LOCAL, CLATTN_VARIANT_REGISTER_BLOCKED, CLATTN_VARIANT_SPLIT_KV};
#define NUM_VARIANTS (sizeof kVariants / sizeof kVariants[0])
static const clattn_dtype kHalfTypes[] = {CLATTN_DTYPE_F16, CLATTN_DTYPE_BF16};

static float bits_to_float(uint32_t x) {
  float f;
  memcpy(&f, &x, sizeof f);
  return f;
}

static uint32_t float_to_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  return x;
}

/* The value of an f16 bit pattern from the format's definition, in double. */
static double f16_value(uint16_t h) {
  const int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31) {
    v = m ? NAN : INFINITY;
  } else if (e == 0) {
    v = ldexp((double)m, -24);
  } else {
    v = ldexp(1.0 + (double)m / 1024.0, e - 15);
  }
  return sign ? -v : v;
}

/* ---------------------------------------------------------------- host conversions */

Test(dtype, names_and_sizes) {
  size_t n = 0;
  cr_assert_eq(clattn_dtype_size(CLATTN_DTYPE_F32, &n), CLATTN_SUCCESS);
  cr_assert_eq(n, 4);
  cr_assert_eq(clattn_dtype_size(CLATTN_DTYPE_F16, &n), CLATTN_SUCCESS);
  cr_assert_eq(n, 2);
  cr_assert_eq(clattn_dtype_size(CLATTN_DTYPE_BF16, &n), CLATTN_SUCCESS);
  cr_assert_eq(n, 2);
  cr_assert_eq(clattn_dtype_size((clattn_dtype)3, &n), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_dtype_size(CLATTN_DTYPE_F16, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_str_eq(clattn_dtype_name(CLATTN_DTYPE_F32), "f32");
  cr_assert_str_eq(clattn_dtype_name(CLATTN_DTYPE_F16), "f16");
  cr_assert_str_eq(clattn_dtype_name(CLATTN_DTYPE_BF16), "bf16");
  cr_assert_null(clattn_dtype_name((clattn_dtype)-1));
  clattn_dtype d = CLATTN_DTYPE_F32;
  cr_assert_eq(clattn_dtype_from_name("BFloat16", &d), CLATTN_SUCCESS);
  cr_assert_eq(d, CLATTN_DTYPE_BF16);
  cr_assert_eq(clattn_dtype_from_name("half", &d), CLATTN_SUCCESS);
  cr_assert_eq(d, CLATTN_DTYPE_F16);
  cr_assert_eq(clattn_dtype_from_name("f64", &d), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(d, CLATTN_DTYPE_F16, "a refused name leaves *dtype unchanged");
  cr_assert_eq(clattn_dtype_from_name(NULL, &d), CLATTN_ERROR_INVALID_ARGUMENT);
}

/* Every f16 pattern widens to its value; every non-NaN one survives the round trip. */
Test(dtype, f16_every_pattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t bits = (uint16_t)h;
    float f = 0.0f;
    cr_assert_eq(clattn_convert(&bits, CLATTN_DTYPE_F16, &f, CLATTN_DTYPE_F32, 1), CLATTN_SUCCESS);
    const double want = f16_value(bits);
    if (isnan(want)) {
      cr_assert(isnan(f), "f16 0x%04x is a NaN, widened to %g", h, (double)f);
      uint16_t back = 0;
      clattn_convert(&f, CLATTN_DTYPE_F32, &back, CLATTN_DTYPE_F16, 1);
      cr_assert_eq(back, (uint16_t)((h & 0x8000u) | 0x7e00u), "NaN 0x%04x narrowed to 0x%04x", h,
                   back);
      continue;
    }
    cr_assert((double)f == want && !signbit(f) == !signbit(want), "f16 0x%04x: %a, want %a", h,
              (double)f, want);
    uint16_t back = 0;
    clattn_convert(&f, CLATTN_DTYPE_F32, &back, CLATTN_DTYPE_F16, 1);
    cr_assert_eq(back, bits, "f16 0x%04x -> %a -> 0x%04x", h, (double)f, back);
  }
}

/* Every bf16 pattern is the upper half of its float; non-NaN ones survive the round trip. */
Test(dtype, bf16_every_pattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t bits = (uint16_t)h;
    float f = 0.0f;
    clattn_convert(&bits, CLATTN_DTYPE_BF16, &f, CLATTN_DTYPE_F32, 1);
    cr_assert_eq(float_to_bits(f), h << 16, "bf16 0x%04x widened to 0x%08x", h, float_to_bits(f));
    uint16_t back = 0;
    clattn_convert(&f, CLATTN_DTYPE_F32, &back, CLATTN_DTYPE_BF16, 1);
    if (isnan(f)) {
      cr_assert_eq(back, 0x7fc0u, "NaN 0x%04x narrowed to 0x%04x", h, back);
    } else {
      cr_assert_eq(back, bits, "bf16 0x%04x -> %a -> 0x%04x", h, (double)f, back);
    }
  }
}

/* 1 when r is a correct round-to-nearest-even of x among the dtype's values: no value is
 * nearer, and in a tie r's last significand bit is 0. The neighbours of r are the adjacent
 * bit patterns (finite values are ordered by their patterns within a sign). */
static int rounds_to_nearest_even(float x, uint16_t r, clattn_dtype dtype) {
  float rv = 0.0f;
  clattn_convert(&r, dtype, &rv, CLATTN_DTYPE_F32, 1);
  const int f16 = dtype == CLATTN_DTYPE_F16;
  const uint16_t mag = r & 0x7fffu, inf = f16 ? 0x7c00u : 0x7f80u;
  const double max = f16 ? 65504.0 : (double)bits_to_float(0x7f7f0000u);
  const double ulp = f16 ? 32.0 : ldexp(1.0, 127 - 7); /* spacing at the largest value */
  const double xd = x, err = fabs((double)rv - xd);
  if (mag > inf) return 0; /* x is finite here: never NaN */
  if (mag == inf) return fabs(xd) >= max + ulp / 2 && !signbit(rv) == !signbit(x);
  /* r finite: no neighbour nearer, a tie only with an even r. Past the largest finite
   * value, the neighbour is max + ulp (the overflow threshold is halfway to it). */
  for (int step = -1; step <= 1; step += 2) {
    const int n = (int)mag + step;
    if (n < 0) continue;
    double other;
    if ((uint16_t)n == inf) {
      other = max + ulp;
    } else {
      const uint16_t nb = (uint16_t)n;
      float f = 0.0f;
      clattn_convert(&nb, dtype, &f, CLATTN_DTYPE_F32, 1);
      other = f;
    }
    if (r & 0x8000u) other = -other;
    const double oerr = fabs(other - xd);
    if (oerr < err) return 0;
    if (oerr == err && (r & 1u)) return 0;
  }
  return mag == 0 || !signbit(rv) == !signbit(x);
}

/* The i-th float of a sweep for narrowing to dtype (xorshift64* state): random bits; for
 * f16 every other one with an exponent near its range (subnormals, normals, the overflow
 * threshold); every fourth a halfway point between two 16-bit values, or a float next to
 * it. */
static uint32_t sweep_bits(clattn_dtype dtype, size_t i, uint64_t* state) {
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  const uint64_t r = *state * 0x2545F4914F6CDD1Dull;
  uint32_t x = (uint32_t)(r >> 32);
  if (i % 2 && dtype == CLATTN_DTYPE_F16) {
    x = (x & 0x807fffffu) | ((uint32_t)(98 + (r >> 4) % 48) << 23);
  }
  if (i % 4 == 1) {
    x = (dtype == CLATTN_DTYPE_BF16 ? (x & 0xffff0000u) | 0x8000u : (x & 0xffffe000u) | 0x1000u) +
        (uint32_t)((r >> 8) % 3) - 1u;
  }
  return x;
}

/* Floats of every exponent (random significands, the halfway points between neighbouring
 * 16-bit values and one float either side of them) narrow to their nearest value, ties to
 * even, overflowing to Inf past the largest value plus half an ulp. */
Test(dtype, narrowing_rounds_to_nearest_even, .timeout = 120.0) {
  uint64_t state = 0x1234567ull;
  for (size_t t = 0; t < 2; ++t) {
    const clattn_dtype dtype = kHalfTypes[t];
    for (uint32_t i = 0; i < 400000; ++i) {
      const uint32_t x = sweep_bits(dtype, i, &state);
      const float f = bits_to_float(x);
      if (isnan(f)) continue;
      uint16_t out = 0;
      clattn_convert(&f, CLATTN_DTYPE_F32, &out, dtype, 1);
      cr_assert(rounds_to_nearest_even(f, out, dtype), "%s: %a (0x%08x) rounded to 0x%04x",
                clattn_dtype_name(dtype), (double)f, x, out);
    }
  }
}

Test(dtype, convert_in_place_and_bad_arguments) {
  uint16_t v[3] = {0x3c00u, 0xc000u, 0x7c00u}; /* f16 1, -2, Inf */
  cr_assert_eq(clattn_convert(v, CLATTN_DTYPE_F16, v, CLATTN_DTYPE_BF16, 3), CLATTN_SUCCESS);
  cr_assert_eq(v[0], 0x3f80u);
  cr_assert_eq(v[1], 0xc000u);
  cr_assert_eq(v[2], 0x7f80u);
  cr_assert_eq(clattn_convert(NULL, CLATTN_DTYPE_F16, NULL, CLATTN_DTYPE_F32, 0), CLATTN_SUCCESS);
  cr_assert_eq(clattn_convert(NULL, CLATTN_DTYPE_F16, v, CLATTN_DTYPE_F32, 1),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_convert(v, (clattn_dtype)9, v, CLATTN_DTYPE_F16, 1),
               CLATTN_ERROR_INVALID_ARGUMENT);
  /* bf16 -> f16 rounds once, from the exact value: 1 + 2^-7 + 2^-8 ... */
  const uint16_t b = 0x3f81u; /* 1 + 2^-7 */
  uint16_t h = 0;
  clattn_convert(&b, CLATTN_DTYPE_BF16, &h, CLATTN_DTYPE_F16, 1);
  cr_assert_eq(h, 0x3c08u, "bf16 1+2^-7 is f16 0x3c08, got 0x%04x", h);
}

/* ---------------------------------------------------------------- the kernels' reads and writes */

/* Values of one key per sequence come out as O exactly: the only visible key has weight 1,
 * so O = 1·V in float, then stored. A cache of `kv` dtype read by queries of `qo` dtype
 * (mixed storage is allowed over a cache) puts n values through the kernels' load of kv
 * and store of qo, compared bit for bit with the host conversions. */
static void through_kernels(clattn_context* ctx, clattn_dtype kv, clattn_dtype qo,
                            const void* values, size_t n, void* out) {
  const size_t seqs = 16, heads = 16, dim = 256, per_call = seqs * heads * dim;
  cr_assert_eq(n % per_call, 0);
  clattn_kv_cache_desc cd = CLATTN_KV_CACHE_DESC_INIT;
  cd.dtype = kv;
  cd.max_sequences = seqs;
  cd.heads_kv = heads;
  cd.head_dim = dim;
  cd.capacity = seqs;
  cd.block_tokens = 1;
  clattn_kv_cache* cache = NULL;
  cr_assert_eq(clattn_kv_cache_create(ctx, &cd, &cache), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  size_t kvb = 0, qob = 0;
  clattn_dtype_size(kv, &kvb);
  clattn_dtype_size(qo, &qob);
  /* K: zeros (every score 0); Q: zeros. */
  void* zeros_kv = calloc(per_call, kvb);
  void* zeros_q = calloc(seqs * heads * dim, qob);
  cr_assert(zeros_kv && zeros_q);
  for (size_t c = 0; c < n / per_call; ++c) {
    clattn_kv_cache_reset(cache);
    clattn_kv_append_desc ad = CLATTN_KV_APPEND_DESC_INIT;
    ad.count = seqs;
    ad.tokens = 1;
    cr_assert_eq(
        clattn_kv_cache_append_host(cache, &ad, zeros_kv, (const char*)values + c * per_call * kvb),
        CLATTN_SUCCESS, "%s", test_last_error(ctx));
    clattn_attention_desc d = test_desc(seqs, heads, heads, 1, 0, dim, 0);
    d.dtype = qo;
    const clattn_attention_config config = test_config(CLATTN_VARIANT_SPLIT_KV);
    cr_assert_eq(clattn_attention_cached_host(cache, &d, NULL, zeros_q,
                                              (char*)out + c * per_call * qob, NULL, &config),
                 CLATTN_SUCCESS, "%s", test_last_error(ctx));
  }
  free(zeros_kv);
  free(zeros_q);
  clattn_kv_cache_destroy(cache);
}

/* Every 16-bit pattern read by the kernels widens as the host widens it. */
Test(dtype, kernels_widen_every_pattern, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  const size_t n = 65536;
  uint16_t* in = malloc(n * sizeof *in);
  float* out = malloc(n * sizeof *out);
  cr_assert(in && out);
  for (size_t i = 0; i < n; ++i) in[i] = (uint16_t)i;
  for (size_t t = 0; t < 2; ++t) {
    through_kernels(ctx, kHalfTypes[t], CLATTN_DTYPE_F32, in, n, out);
    for (size_t i = 0; i < n; ++i) {
      float want = 0.0f;
      clattn_convert(&in[i], kHalfTypes[t], &want, CLATTN_DTYPE_F32, 1);
      if (isnan(want)) {
        cr_assert(isnan(out[i]), "%s 0x%04zx: kernel %a, host NaN",
                  clattn_dtype_name(kHalfTypes[t]), i, (double)out[i]);
      } else if (want == 0.0f) {
        /* 1·V + 0 turns -0 into +0: only the value is checked. */
        cr_assert(out[i] == 0.0f, "%s 0x%04zx: kernel %a, host 0", clattn_dtype_name(kHalfTypes[t]),
                  i, (double)out[i]);
      } else {
        cr_assert_eq(float_to_bits(out[i]), float_to_bits(want), "%s 0x%04zx: kernel %a, host %a",
                     clattn_dtype_name(kHalfTypes[t]), i, (double)out[i], (double)want);
      }
    }
  }
  free(in);
  free(out);
  clattn_context_destroy(ctx);
}

/* Floats of every exponent written by the kernels round as the host rounds them (f32
 * subnormals left out: OpenCL lets a device flush them). */
Test(dtype, kernels_round_as_the_host, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  const size_t n = test_small() ? 65536 : 262144;
  float* in = malloc(n * sizeof *in);
  uint16_t* out = malloc(n * sizeof *out);
  cr_assert(in && out);
  uint64_t state = 99;
  for (size_t t = 0; t < 2; ++t) {
    const clattn_dtype dtype = kHalfTypes[t];
    for (size_t i = 0; i < n; ++i) {
      uint32_t x = sweep_bits(dtype, i, &state);
      if ((x & 0x7f800000u) == 0) x |= 0x00800000u; /* no float32 subnormals */
      in[i] = bits_to_float(x);
    }
    through_kernels(ctx, CLATTN_DTYPE_F32, dtype, in, n, out);
    size_t zeros = 0;
    for (size_t i = 0; i < n; ++i) {
      uint16_t want = 0;
      clattn_convert(&in[i], CLATTN_DTYPE_F32, &want, dtype, 1);
      const uint16_t inf = dtype == CLATTN_DTYPE_F16 ? 0x7c00u : 0x7f80u;
      if ((want & 0x7fffu) > inf) {
        cr_assert((out[i] & 0x7fffu) > inf, "%s: %a gave 0x%04x, not a NaN",
                  clattn_dtype_name(dtype), (double)in[i], out[i]);
      } else if ((want & 0x7fffu) == 0) {
        ++zeros;
        cr_assert_eq(out[i] & 0x7fffu, 0, "%s: %a gave 0x%04x, host 0x%04x",
                     clattn_dtype_name(dtype), (double)in[i], out[i], want);
      } else {
        cr_assert_eq(out[i], want, "%s: %a (0x%08x) gave 0x%04x, host 0x%04x",
                     clattn_dtype_name(dtype), (double)in[i], float_to_bits(in[i]), out[i], want);
      }
    }
    cr_assert_lt(zeros, n / 4, "the sweep should mostly hold nonzero values");
  }
  free(in);
  free(out);
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- the core */

typedef struct dtype_param {
  clattn_dtype dtype;
  clattn_variant variant;
} dtype_param;

/* Every 16-bit dtype with every variant. */
static dtype_param* dtype_params(size_t* n) {
  static dtype_param params[2 * NUM_VARIANTS];
  *n = 0;
  for (size_t t = 0; t < 2; ++t) {
    for (size_t v = 0; v < NUM_VARIANTS; ++v) {
      params[(*n)++] = (dtype_param){kHalfTypes[t], kVariants[v]};
    }
  }
  return params;
}

ParameterizedTestParameters(dtype, core_features) {
  size_t n = 0;
  dtype_param* params = dtype_params(&n);
  return cr_make_param_array(dtype_param, params, n);
}

/* Each feature of the core's sweep in each dtype and variant: head dims, tails, causal in
 * both alignments, GQA and MQA, key lengths (0, clamped), a batch, BNHD and padded strides,
 * explicit scales, and the LSE (float32 always). */
ParameterizedTest(dtype_param* param, dtype, core_features, .timeout = 600.0) {
  clattn_context* ctx = test_context(NULL);
  static const size_t dims[] = {1, 8, 40, 64, 128, 256};
  const size_t seq = test_len(100);
  for (size_t d = 0; d < sizeof dims / sizeof dims[0]; ++d) {
    for (int causal = 0; causal <= 1; ++causal) {
      clattn_attention_desc desc = test_desc(1, 2, 2, seq, seq + 13, dims[d], causal);
      desc.dtype = param->dtype;
      test_run_host(ctx, &desc, param->variant, NULL, 700 + d * 2 + (uint64_t)causal);
    }
  }
  /* Causal with more queries than keys (the first rows see nothing), GQA 4 and MQA. */
  clattn_attention_desc desc = test_desc(2, 8, 2, test_len(70), test_len(33), 32, 1);
  desc.dtype = param->dtype;
  test_run_host(ctx, &desc, param->variant, NULL, 801);
  desc = test_desc(1, 6, 1, 5, test_len(300), 64, 0);
  desc.dtype = param->dtype;
  test_run_host(ctx, &desc, param->variant, NULL, 802);
  /* Key lengths: 0, full, between, negative and too long (clamped). */
  const int32_t lengths[5] = {0, (int32_t)test_len(90), 17, -3, 1000};
  desc = test_desc(5, 2, 1, test_len(40), test_len(90), 24, 1);
  desc.dtype = param->dtype;
  test_run_host(ctx, &desc, param->variant, lengths, 803);
  /* BNHD, and padded strides in every tensor. */
  desc = test_desc(2, 4, 2, test_len(45), test_len(70), 20, 0);
  desc.dtype = param->dtype;
  desc.layout = CLATTN_LAYOUT_BNHD;
  test_run_host(ctx, &desc, param->variant, NULL, 804);
  desc.layout = CLATTN_LAYOUT_BHND;
  desc.q_strides = (clattn_strides){.batch = 4 * 47 * 23 + 3, .head = 47 * 23, .seq = 23};
  desc.k_strides = (clattn_strides){.batch = 70 * 2 * 21 + 5, .head = 21, .seq = 2 * 21};
  desc.v_strides = (clattn_strides){.batch = 2 * 70 * 40, .head = 70 * 40, .seq = 40};
  desc.o_strides = (clattn_strides){.batch = 45 * (4 * 20 + 9), .head = 20, .seq = 4 * 20 + 9};
  desc.seq_q = 45;
  desc.seq_kv = 70;
  test_run_host(ctx, &desc, param->variant, NULL, 805);
  /* A sharp softmax and a negative scale. */
  desc = test_desc(1, 2, 2, test_len(60), test_len(80), 64, 0);
  desc.dtype = param->dtype;
  desc.scale = 8.0f;
  test_run_host(ctx, &desc, param->variant, NULL, 806);
  desc.scale = -0.25f;
  test_run_host(ctx, &desc, param->variant, NULL, 807);
  clattn_context_destroy(ctx);
}

/* The documented NaN and Inf behaviour holds in 16-bit storage: a NaN in a row's Q makes the
 * row and its LSE NaN; an Inf in element d of a visible value makes element d non-finite and
 * leaves the others; NaN in keys a row cannot see (causal, key lengths) changes nothing. */
ParameterizedTestParameters(dtype, nan_and_inf) {
  size_t n = 0;
  dtype_param* params = dtype_params(&n);
  return cr_make_param_array(dtype_param, params, n);
}

ParameterizedTest(dtype_param* param, dtype, nan_and_inf, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  const size_t n = 40, dim = 16;
  const int32_t lengths[1] = {30};
  clattn_attention_desc desc = test_desc(1, 1, 1, n, n, dim, 1);
  desc.dtype = param->dtype;
  test_problem p;
  test_problem_init(&p, &desc, 4040);
  test_round_to(p.q, p.nq, desc.dtype);
  test_round_to(p.k, p.nk, desc.dtype);
  test_round_to(p.v, p.nv, desc.dtype);
  const size_t nan_row = 7, inf_key = 12, inf_dim = 3;
  for (size_t d = 0; d < dim; ++d) p.q[nan_row * dim + d] = d == 0 ? NAN : p.q[nan_row * dim + d];
  p.v[inf_key * dim + inf_dim] = INFINITY;
  for (size_t j = (size_t)lengths[0]; j < n; ++j) {
    for (size_t d = 0; d < dim; ++d) p.k[j * dim + d] = p.v[j * dim + d] = NAN;
  }
  void* q = test_to_dtype(p.q, p.nq, desc.dtype);
  void* k = test_to_dtype(p.k, p.nk, desc.dtype);
  void* v = test_to_dtype(p.v, p.nv, desc.dtype);
  void* o = test_to_dtype(p.o, p.no, desc.dtype);
  const clattn_attention_config config = test_config(param->variant);
  cr_assert_eq(clattn_attention_host(ctx, &desc, q, k, v, o, p.lse, lengths, &config),
               CLATTN_SUCCESS, "%s", test_last_error(ctx));
  clattn_convert(o, desc.dtype, p.o, CLATTN_DTYPE_F32, p.no);
  double* ref = malloc(p.no * sizeof *ref);
  cr_assert(ref != NULL);
  clattn_ref_attention(&desc, p.q, p.k, p.v, lengths, ref, NULL, 1);
  for (size_t i = 0; i < n; ++i) {
    const double tol32 = clattn_ref_row_tolerance(&desc, p.q, p.k, p.v, lengths, 0, 0, i);
    for (size_t d = 0; d < dim; ++d) {
      const float got = p.o[i * dim + d];
      if (i == nan_row) {
        cr_assert(isnan(got), "%s/%s: row %zu has a NaN query, O[%zu] = %g",
                  clattn_dtype_name(desc.dtype), test_variant_name(param->variant), i, d,
                  (double)got);
      } else if (i >= inf_key && d == inf_dim) {
        cr_assert(!isfinite(got), "%s/%s: row %zu sees an Inf value, O[%zu] = %g",
                  clattn_dtype_name(desc.dtype), test_variant_name(param->variant), i, d,
                  (double)got);
      } else {
        const double want = ref[i * dim + d];
        const double tol = tol32 + clattn_ref_dtype_rounding(desc.dtype, fabs(want) + tol32);
        cr_assert(fabs(got - want) <= tol, "%s/%s: O[%zu,%zu] = %.7g, reference %.7g, tol %.3g",
                  clattn_dtype_name(desc.dtype), test_variant_name(param->variant), i, d,
                  (double)got, want, tol);
      }
    }
    cr_assert(i == nan_row ? isnan(p.lse[i]) : isfinite(p.lse[i]), "LSE[%zu] = %g", i,
              (double)p.lse[i]);
  }
  free(ref);
  free(q);
  free(k);
  free(v);
  free(o);
  test_problem_free(&p);
  clattn_context_destroy(ctx);
}

/* Buffers are sized in the dtype's elements: one of exactly the bytes a 16-bit tensor spans
 * is accepted, one byte less is BUFFER_TOO_SMALL; an unknown dtype is INVALID_ARGUMENT. */
Test(dtype, buffers_sized_in_elements) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL);
  clattn_attention_desc desc = test_desc(1, 2, 2, 9, 11, 8, 0);
  desc.dtype = CLATTN_DTYPE_BF16;
  cl_int err = CL_SUCCESS;
  const size_t nq = test_span(&desc, 'q') * 2, nk = test_span(&desc, 'k') * 2;
  cl_mem q = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, nq, NULL, &err);
  cl_mem k = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, nk, NULL, &err);
  cl_mem v = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, nk, NULL, &err);
  cl_mem o = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, nq, NULL, &err);
  cl_mem o_short = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, nq - 1, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  uint16_t zero[64] = {0};
  cl_command_queue queue = NULL;
  clattn_context_get_cl(ctx, NULL, NULL, &queue);
  clEnqueueFillBuffer(queue, q, zero, 2, 0, nq, 0, NULL, NULL);
  clEnqueueFillBuffer(queue, k, zero, 2, 0, nk, 0, NULL, NULL);
  clEnqueueFillBuffer(queue, v, zero, 2, 0, nk, 0, NULL, NULL);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = q;
  b.k = k;
  b.v = v;
  b.o = o;
  cr_assert_eq(clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  b.o = o_short;
  cr_assert_eq(clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL),
               CLATTN_ERROR_BUFFER_TOO_SMALL);
  desc.dtype = (clattn_dtype)3;
  b.o = o;
  cr_assert_eq(clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert(strstr(test_last_error(ctx), "dtype") != NULL, "%s", test_last_error(ctx));
  clFinish(queue);
  cl_mem mems[5] = {q, k, v, o, o_short};
  for (int i = 0; i < 5; ++i) clReleaseMemObject(mems[i]);
  clattn_context_destroy(ctx);
}
