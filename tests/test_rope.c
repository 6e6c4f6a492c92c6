/* The rotary embedding kernel (cl/rope.cl) on its own, at positions a layer test cannot reach
 * cheaply (up to 2^23): every rotated element against the rotation computed in double, within
 * the bound cl/rope.cl and clattn.h state. Links the static library for the kernel. */
#include <criterion/criterion.h>
#include <math.h>

#include "internal.h"
#include "test_util.h"

enum { D = 64, PAIRS = D / 2, HEADS = 2 };

/* Rotates one head per (position, head) row on the device, NEOX or GPTJ, and checks it. */
static void rope_positions(int neox) {
  clattn_context* ctx = test_context(NULL);
  static const int32_t pos[] = {0,     1,     2,      17,     255,     1000,    4095,   65535,
                                65536, 99999, 100000, 131071, 1000003, 4194305, 8388607};
  const size_t rows = sizeof pos / sizeof pos[0], n = rows * HEADS * D;
  /* The table as the layer makes it: theta^(-2i/D) in double, kept as float hi + lo. */
  const double theta = 10000.0;
  float table[2 * PAIRS];
  for (size_t i = 0; i < PAIRS; ++i) {
    const double f = exp(-((double)i / PAIRS) * log(theta));
    table[2 * i] = (float)f;
    table[2 * i + 1] = (float)(f - (double)table[2 * i]);
  }
  float* x = malloc(n * sizeof(float));
  float* out = malloc(n * sizeof(float));
  cr_assert(x && out);
  uint64_t state = 5 + (uint64_t)neox;
  clattn_ref_fill_uniform(x, n, -1.0f, 1.0f, &state);
  cl_mem xb = NULL, tb = NULL, sb = NULL;
  cr_assert_eq(clattn__buffer_create(ctx, CL_MEM_READ_WRITE, n * sizeof(float), x, &xb),
               CLATTN_SUCCESS);
  cr_assert_eq(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, sizeof table, table, &tb),
               CLATTN_SUCCESS);
  cr_assert_eq(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, sizeof pos, pos, &sb), CLATTN_SUCCESS);
  cl_kernel k = NULL;
  cr_assert_eq(clattn__kernel_create(ctx, "rope", "", "clattn_rope", &k), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  /* Every row is a sequence of one token at start[row]; no K (0 rows). */
  cl_uint i = 0;
  cl_int err = CL_SUCCESS;
  const cl_int flag = neox, has_start = 1;
  cl_mem none = NULL;
  clattn__arg_mem(k, &i, xb, &err);
  clattn__arg_uint(k, &i, 0, &err);
  clattn__arg_uint(k, &i, rows, &err);
  clattn__arg_uint(k, &i, HEADS, &err);
  clattn__arg_uint(k, &i, 1, &err);
  clattn__arg_mem(k, &i, none, &err);
  clattn__arg_uint(k, &i, 0, &err);
  clattn__arg_uint(k, &i, 0, &err);
  clattn__arg_uint(k, &i, HEADS, &err);
  clattn__arg_uint(k, &i, 1, &err);
  clattn__arg_uint(k, &i, D, &err);
  clattn__arg_uint(k, &i, PAIRS, &err);
  err |= clSetKernelArg(k, i++, sizeof flag, &flag);
  clattn__arg_mem(k, &i, tb, &err);
  clattn__arg_mem(k, &i, sb, &err);
  err |= clSetKernelArg(k, i++, sizeof has_start, &has_start);
  cr_assert_eq(err, CL_SUCCESS);
  cl_command_queue queue;
  cr_assert_eq(clattn_context_get_cl(ctx, NULL, NULL, &queue), CLATTN_SUCCESS);
  const size_t local = 32, global = (rows * HEADS * PAIRS + local - 1) / local * local;
  cr_assert_eq(clEnqueueNDRangeKernel(queue, k, 1, NULL, &global, &local, 0, NULL, NULL),
               CL_SUCCESS);
  cr_assert_eq(clEnqueueReadBuffer(queue, xb, CL_TRUE, 0, n * sizeof(float), out, 0, NULL, NULL),
               CL_SUCCESS);
  /* cl/rope.cl: within about 17 u (|a| + |b|) of the exact rotation; checked at 24 u. */
  double worst = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t h = 0; h < HEADS; ++h) {
      const size_t base = (r * HEADS + h) * D;
      for (size_t p = 0; p < PAIRS; ++p) {
        const double angle = (double)pos[r] * pow(theta, -2.0 * (double)p / D);
        const double c = cos(angle), s = sin(angle);
        const size_t ia = base + (neox ? p : 2 * p), ib = base + (neox ? p + PAIRS : 2 * p + 1);
        const double a = x[ia], b = x[ib];
        const double want[2] = {a * c - b * s, a * s + b * c};
        const double got[2] = {out[ia], out[ib]};
        const double bound = 24.0 * TEST_U * (fabs(a) + fabs(b));
        for (int e = 0; e < 2; ++e) {
          const double ratio = fabs(got[e] - want[e]) / bound;
          if (ratio > worst) worst = ratio;
          cr_assert_leq(fabs(got[e] - want[e]), bound,
                        "position %d, head %zu, pair %zu: %.9g, exact %.9g (angle %.17g)",
                        (int)pos[r], h, p, got[e], want[e], angle);
        }
      }
    }
  }
  cr_log_info("%s: largest error / (24 u (|a| + |b|)) %.3f", neox ? "NEOX" : "GPTJ", worst);
  clReleaseKernel(k);
  clReleaseMemObject(xb);
  clReleaseMemObject(tb);
  clReleaseMemObject(sb);
  free(x);
  free(out);
  clattn_context_destroy(ctx);
}

Test(rope, neox_large_positions) { rope_positions(1); }

Test(rope, gptj_large_positions) { rope_positions(0); }
