/* Faults: an allocation that fails (injected through the library's test hook) at every
 * point of context creation and of a first attention (or probabilities) call returns
 * OUT_OF_MEMORY and leaves nothing behind; a kernel that does not compile returns BUILD_FAILED
 * with the compiler's log; destroying a context releases every OpenCL object it made, counted
 * through the reference count of the caller's cl_context (every buffer, program, kernel and queue
 * made from a context holds a reference to it). Host leaks are caught by the sanitizer build
 * (CLATTN_SANITIZE), which runs this suite under LeakSanitizer. Links the static library
 * for the internal hook. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clattn/clattn.h"
#include "internal.h"
#include "test_util.h"

/* The most allocations one call is expected to make; a loop that reaches it without the
 * call succeeding means injection is not reaching the call. */
#define MAX_INJECTION_POINTS 200

/* A caller-made OpenCL context, device and queue on the device clattn would pick. */
typedef struct cl_setup {
  cl_context ctx;
  cl_device_id device;
  cl_command_queue queue;
} cl_setup;

static cl_setup cl_setup_create(void) {
  cl_setup s;
  memset(&s, 0, sizeof s);
  clattn_context* probe = test_context(NULL); /* skips without a device */
  cl_device_id device = NULL;
  clattn_context_get_cl(probe, NULL, &device, NULL);
  cl_platform_id platform = NULL;
  cr_assert_eq(clGetDeviceInfo(device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL),
               CL_SUCCESS);
  cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)platform, 0};
  cl_int err = CL_SUCCESS;
  s.ctx = clCreateContext(props, 1, &device, NULL, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateContext: %d", (int)err);
  s.device = device;
  s.queue = clCreateCommandQueue(s.ctx, device, 0, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateCommandQueue: %d", (int)err);
  clattn_context_destroy(probe);
  return s;
}

static void cl_setup_destroy(cl_setup* s) {
  clReleaseCommandQueue(s->queue);
  clReleaseContext(s->ctx);
}

static cl_uint context_refs(cl_context ctx) {
  cl_uint n = 0;
  cr_assert_eq(clGetContextInfo(ctx, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL), CL_SUCCESS);
  return n;
}

/* The reference count once the driver has let go of what finished commands still held. A
 * buffer released while a command used it (the register-blocked variant's staged Kᵀ) is
 * freed by the driver after that command completes, which PoCL does on its own thread
 * shortly after clFinish returns; wait up to 2 s for the count to reach `expected`, then
 * return whatever it is. */
static cl_uint settled_refs(cl_context ctx, cl_uint expected) {
  cl_uint n = context_refs(ctx);
  const struct timespec ms = {0, 1000000};
  for (int i = 0; i < 2000 && n != expected; ++i) {
    nanosleep(&ms, NULL);
    n = context_refs(ctx);
  }
  return n;
}

/* Every allocation of clattn_context_create in turn fails: each returns OUT_OF_MEMORY with
 * no context, until one past the last allocation, which succeeds. */
Test(faults, context_create_allocation_failures) {
  clattn_context_destroy(test_context(NULL)); /* skips without a device */
  int failures = 0;
  for (int nth = 1; nth <= MAX_INJECTION_POINTS; ++nth) {
    clattn_context* ctx = NULL;
    clattn__test_fail_allocation(nth);
    clattn_status st = clattn_context_create(NULL, &ctx);
    clattn__test_fail_allocation(0);
    if (st == CLATTN_SUCCESS) {
      cr_assert_not_null(ctx);
      clattn_context_destroy(ctx);
      break;
    }
    cr_assert_eq(st, CLATTN_ERROR_OUT_OF_MEMORY, "allocation %d failed: %s, expected %s", nth,
                 clattn_status_name(st), clattn_status_name(CLATTN_ERROR_OUT_OF_MEMORY));
    cr_assert_null(ctx, "allocation %d failed but a context came back", nth);
    char msg[2048];
    clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
    cr_assert(strstr(msg, "memory") != NULL, "allocation %d: message \"%s\"", nth, msg);
    ++failures;
  }
  cr_assert_geq(failures, 2, "only %d injection points in clattn_context_create", failures);
  cr_assert_lt(failures, MAX_INJECTION_POINTS, "clattn_context_create never succeeded");
}

/* Every allocation (host and device) of a first attention call in a fresh context fails in
 * turn: OUT_OF_MEMORY each time, the caller's cl_context back at its reference count once
 * the clattn context is destroyed, and the call after the last injection point correct. */
static void check_attention_allocation_failures(clattn_variant variant) {
  cl_setup s = cl_setup_create();
  const cl_uint base_refs = context_refs(s.ctx);
  clattn_attention_desc desc = test_desc(2, 4, 2, 37, 45, 24, 1);
  char label[256];
  test_label(label, sizeof label, &desc, variant);
  test_problem p;
  test_problem_init(&p, &desc, 4242);
  const int32_t lengths[2] = {45, 30};
  const clattn_attention_config config = test_config(variant);
  int failures = 0, succeeded = 0;
  for (int nth = 1; nth <= MAX_INJECTION_POINTS && !succeeded; ++nth) {
    clattn_context* ctx = NULL;
    cr_assert_eq(clattn_context_create_from_cl(s.ctx, s.device, s.queue, NULL, &ctx),
                 CLATTN_SUCCESS);
    clattn__test_fail_allocation(nth);
    clattn_status st =
        clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, p.lse, lengths, &config);
    clattn__test_fail_allocation(0);
    if (st == CLATTN_SUCCESS) {
      succeeded = 1;
      test_check(&desc, p.q, p.k, p.v, lengths, p.o, p.lse, label);
    } else {
      cr_assert_eq(st, CLATTN_ERROR_OUT_OF_MEMORY, "%s: allocation %d failed: %s (%s)", label, nth,
                   clattn_status_name(st), test_last_error(ctx));
      cr_assert(strstr(test_last_error(ctx), "memory") != NULL ||
                    strstr(test_last_error(ctx), "ALLOCATION") != NULL,
                "%s: allocation %d: message \"%s\"", label, nth, test_last_error(ctx));
      ++failures;
    }
    clFinish(s.queue);
    clattn_context_destroy(ctx);
    const cl_uint refs = settled_refs(s.ctx, base_refs);
    cr_assert_eq(refs, base_refs,
                 "%s: after allocation %d failed and the context was destroyed, the cl_context "
                 "has %u references, %u before: OpenCL objects leaked",
                 label, nth, refs, base_refs);
  }
  cr_assert(succeeded, "%s: never succeeded within %d injection points", label,
            MAX_INJECTION_POINTS);
  /* Program building (sources, options, cache entries) and the device buffers at least. */
  cr_assert_geq(failures, 8, "%s: only %d injection points", label, failures);
  test_problem_free(&p);
  cl_setup_destroy(&s);
}

Test(faults, attention_allocation_failures_tiled, .timeout = 300.0) {
  check_attention_allocation_failures(CLATTN_VARIANT_TILED_LOCAL);
}

Test(faults, attention_allocation_failures_regblock, .timeout = 300.0) {
  check_attention_allocation_failures(CLATTN_VARIANT_REGISTER_BLOCKED);
}

/* A failure injected into clattn_context_create_from_cl leaves the caller's objects at
 * their reference counts. */
Test(faults, create_from_cl_allocation_failures) {
  cl_setup s = cl_setup_create();
  const cl_uint base_refs = context_refs(s.ctx);
  int failures = 0;
  for (int nth = 1; nth <= MAX_INJECTION_POINTS; ++nth) {
    clattn_context* ctx = NULL;
    clattn__test_fail_allocation(nth);
    clattn_status st = clattn_context_create_from_cl(s.ctx, s.device, s.queue, NULL, &ctx);
    clattn__test_fail_allocation(0);
    if (st == CLATTN_SUCCESS) {
      clattn_context_destroy(ctx);
      cr_assert_eq(context_refs(s.ctx), base_refs);
      break;
    }
    cr_assert_eq(st, CLATTN_ERROR_OUT_OF_MEMORY, "allocation %d: %s", nth, clattn_status_name(st));
    cr_assert_null(ctx);
    cr_assert_eq(context_refs(s.ctx), base_refs, "allocation %d: cl_context references leaked",
                 nth);
    ++failures;
  }
  cr_assert_geq(failures, 2, "only %d injection points", failures);
  cl_setup_destroy(&s);
}

/* ---------------------------------------------------------------- build failure */

static void write_file(const char* dir, const char* name, const char* text) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(path, "wb");
  cr_assert_not_null(f, "cannot write %s", path);
  fputs(text, f);
  fclose(f);
}

static void remove_file(const char* dir, const char* name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  unlink(path);
}

/* Kernel overrides that do not compile: BUILD_FAILED with the compiler's log naming the
 * broken code, for both variants, and no OpenCL object left once the context is gone. */
Test(faults, build_failure_returns_log, .timeout = 120.0) {
  cl_setup s = cl_setup_create();
  const cl_uint base_refs = context_refs(s.ctx);
  char dir[] = "/tmp/clattn-faults-XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  static const char* broken = "__kernel void clattn_broken(void) { undeclared_identifier_xyz; }\n";
  write_file(dir, "common.cl", "/* empty */\n");
  write_file(dir, "attention_tiled.cl", broken);
  write_file(dir, "attention_regblock.cl", broken);

  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  opts.kernel_dir = dir;
  clattn_context* ctx = NULL;
  cr_assert_eq(clattn_context_create_from_cl(s.ctx, s.device, s.queue, &opts, &ctx),
               CLATTN_SUCCESS);
  clattn_attention_desc desc = test_desc(1, 2, 2, 9, 9, 8, 0);
  test_problem p;
  test_problem_init(&p, &desc, 7);
  for (int v = CLATTN_VARIANT_TILED_LOCAL; v <= CLATTN_VARIANT_REGISTER_BLOCKED; ++v) {
    const clattn_attention_config config = test_config((clattn_variant)v);
    clattn_status st = clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, NULL, NULL, &config);
    cr_assert_eq(st, CLATTN_ERROR_BUILD_FAILED, "%s: %s", test_variant_name((clattn_variant)v),
                 clattn_status_name(st));
    char log[8192];
    cr_assert_eq(clattn_context_get_build_log(ctx, log, sizeof log, NULL), CLATTN_SUCCESS);
    cr_assert(strstr(log, "undeclared_identifier_xyz") != NULL,
              "%s: the build log does not name the broken code:\n%s",
              test_variant_name((clattn_variant)v), log);
    cr_assert(strstr(test_last_error(ctx), "build") != NULL, "last error \"%s\"",
              test_last_error(ctx));
  }
  clattn_context_destroy(ctx);
  cr_assert_eq(context_refs(s.ctx), base_refs, "a failed build leaked OpenCL objects");
  test_problem_free(&p);
  remove_file(dir, "common.cl");
  remove_file(dir, "attention_tiled.cl");
  remove_file(dir, "attention_regblock.cl");
  rmdir(dir);
  cl_setup_destroy(&s);
}

/* ---------------------------------------------------------------- object counting */

/* A context that ran every variant holds OpenCL objects (programs, kernels, buffers) while
 * alive, counted as references to the cl_context, and releases every one on destroy. */
Test(faults, destroy_releases_every_object, .timeout = 120.0) {
  cl_setup s = cl_setup_create();
  const cl_uint base_refs = context_refs(s.ctx);
  clattn_context* ctx = NULL;
  cr_assert_eq(clattn_context_create_from_cl(s.ctx, s.device, s.queue, NULL, &ctx), CLATTN_SUCCESS);
  const cl_uint refs_created = context_refs(s.ctx);
  cr_assert_gt(refs_created, base_refs, "the clattn context holds no reference to the cl_context");
  clattn_attention_desc desc = test_desc(1, 2, 1, 20, 33, 16, 1);
  test_problem p;
  test_problem_init(&p, &desc, 11);
  for (int v = CLATTN_VARIANT_TILED_LOCAL; v <= CLATTN_VARIANT_REGISTER_BLOCKED; ++v) {
    const clattn_attention_config config = test_config((clattn_variant)v);
    cr_assert_eq(clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, p.lse, NULL, &config),
                 CLATTN_SUCCESS, "%s", test_last_error(ctx));
    test_check(&desc, p.q, p.k, p.v, NULL, p.o, p.lse, test_variant_name((clattn_variant)v));
  }
  const cl_uint refs_used = context_refs(s.ctx);
  /* The cached programs (one per variant and options) stay alive with the context. */
  cr_assert_geq(refs_used, refs_created + 2,
                "the context's cached programs hold no reference (%u, %u after creation)",
                refs_used, refs_created);
  clattn_context_destroy(ctx);
  const cl_uint refs_after = settled_refs(s.ctx, base_refs);
  cr_assert_eq(refs_after, base_refs,
               "destroy left %u of the %u objects the context held (cl_context references: %u "
               "before, %u in use, %u after)",
               refs_after - base_refs, refs_used - base_refs, base_refs, refs_used, refs_after);
  test_problem_free(&p);
  cl_setup_destroy(&s);
}

/* The same for a context clattn made itself: once it is destroyed, the only reference left
 * to its cl_context is the one this test took. */
Test(faults, destroy_releases_own_context, .timeout = 120.0) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL);
  cr_assert_eq(clRetainContext(cl_ctx), CL_SUCCESS);
  clattn_attention_desc desc = test_desc(1, 1, 1, 5, 70, 33, 0);
  test_problem p;
  test_problem_init(&p, &desc, 12);
  for (int v = CLATTN_VARIANT_TILED_LOCAL; v <= CLATTN_VARIANT_REGISTER_BLOCKED; ++v) {
    const clattn_attention_config config = test_config((clattn_variant)v);
    cr_assert_eq(clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, NULL, NULL, &config),
                 CLATTN_SUCCESS, "%s", test_last_error(ctx));
  }
  const cl_uint in_use = context_refs(cl_ctx);
  cr_assert_gt(in_use, 2, "queue and programs hold no reference (%u)", in_use);
  clattn_context_destroy(ctx);
  const cl_uint after = settled_refs(cl_ctx, 1);
  cr_assert_eq(after, 1, "%u references left after destroy (%u in use), 1 expected", after, in_use);
  clReleaseContext(cl_ctx);
  test_problem_free(&p);
}

/* ---------------------------------------------------------------- the layer */

/* Every allocation of creating a layer and running its first forward call fails in turn:
 * OUT_OF_MEMORY each time with nothing leaked (the caller's cl_context back at its count once
 * the layer and the context are destroyed), and the run after the last injection point is
 * correct against the double-precision layer. */
static void mha_faults(clattn_dtype dtype) {
  cl_setup s = cl_setup_create();
  const cl_uint base_refs = context_refs(s.ctx);
  enum { E = 32, H = 4, HKV = 2, D = 8, BATCH = 2, N = 9, NIN = (H + 2 * HKV) * D };
  static float w_in[NIN * E], b_in[NIN], w_out[E * H * D], b_out[E], x[BATCH * N * E],
      y[BATCH * N * E];
  static double ref[BATCH * N * E], tol[BATCH * N * E];
  uint64_t state = 99;
  clattn_ref_fill_uniform(w_in, NIN * E, -0.2f, 0.2f, &state);
  clattn_ref_fill_uniform(b_in, NIN, -0.1f, 0.1f, &state);
  clattn_ref_fill_uniform(w_out, E * H * D, -0.2f, 0.2f, &state);
  clattn_ref_fill_uniform(b_out, E, -0.1f, 0.1f, &state);
  clattn_ref_fill_uniform(x, BATCH * N * E, -1.0f, 1.0f, &state);
  /* A 16-bit layer: the same values rounded to its dtype, given in its storage. */
  float* arrays[5] = {w_in, b_in, w_out, b_out, x};
  const size_t counts[5] = {NIN * E, NIN, E * H * D, E, BATCH * N * E};
  void* bits[5];
  for (int i = 0; i < 5; ++i) {
    test_round_to(arrays[i], counts[i], dtype);
    bits[i] = test_to_dtype(arrays[i], counts[i], dtype);
  }
  void* y_bits = test_to_dtype(y, BATCH * N * E, dtype);
  clattn_mha_desc desc = CLATTN_MHA_DESC_INIT;
  desc.d_model = E;
  desc.heads = H;
  desc.heads_kv = HKV;
  desc.head_dim = D;
  desc.dtype = dtype;
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = bits[0];
  w.in_proj_bias.host = bits[1];
  w.out_proj_weight.host = bits[2];
  w.out_proj_bias.host = bits[3];
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = BATCH;
  fwd.seq = N;
  fwd.causal = 1;
  int failures = 0, succeeded = 0;
  for (int nth = 1; nth <= MAX_INJECTION_POINTS && !succeeded; ++nth) {
    clattn_context* ctx = NULL;
    cr_assert_eq(clattn_context_create_from_cl(s.ctx, s.device, s.queue, NULL, &ctx),
                 CLATTN_SUCCESS);
    clattn_mha* mha = NULL;
    clattn__test_fail_allocation(nth);
    clattn_status st = clattn_mha_create(ctx, &desc, &w, &mha);
    if (st == CLATTN_SUCCESS) {
      st = clattn_mha_forward_host(mha, &fwd, bits[4], NULL, NULL, y_bits, NULL);
    }
    clattn__test_fail_allocation(0);
    if (st == CLATTN_SUCCESS) {
      succeeded = 1;
    } else {
      cr_assert_eq(st, CLATTN_ERROR_OUT_OF_MEMORY, "allocation %d failed: %s (%s)", nth,
                   clattn_status_name(st), test_last_error(ctx));
      ++failures;
    }
    clattn_mha_destroy(mha);
    clFinish(s.queue);
    clattn_context_destroy(ctx);
    const cl_uint refs = settled_refs(s.ctx, base_refs);
    cr_assert_eq(refs, base_refs,
                 "after allocation %d failed and the layer and context were destroyed, the "
                 "cl_context has %u references, %u before: OpenCL objects leaked",
                 nth, refs, base_refs);
  }
  cr_assert(succeeded, "never succeeded within %d injection points", MAX_INJECTION_POINTS);
  cr_assert_geq(failures, 4, "only %d injection points in the layer", failures);
  const clattn_ref_mha_layer L = {.d_model = E,
                                  .heads = H,
                                  .heads_kv = HKV,
                                  .head_dim = D,
                                  .k_dim = E,
                                  .v_dim = E,
                                  .wq = w_in,
                                  .wk = w_in + H * D * E,
                                  .wv = w_in + (H + HKV) * D * E,
                                  .wo = w_out,
                                  .bq = b_in,
                                  .bk = b_in + H * D,
                                  .bv = b_in + (H + HKV) * D,
                                  .bo = b_out};
  cr_assert_eq(clattn_ref_mha_forward(&L, BATCH, N, N, 1, x, NULL, NULL, NULL, ref, tol), 0);
  clattn_convert(y_bits, dtype, y, CLATTN_DTYPE_F32, BATCH * N * E);
  for (size_t i = 0; i < BATCH * N * E; ++i) {
    const double t = dtype == CLATTN_DTYPE_F32
                         ? tol[i]
                         : tol[i] + clattn_ref_dtype_rounding(dtype, fabs(ref[i]) + tol[i]);
    cr_assert_leq(fabs((double)y[i] - ref[i]), t, "%s: y[%zu] = %.9g, reference %.9g",
                  clattn_dtype_name(dtype), i, (double)y[i], ref[i]);
  }
  for (int i = 0; i < 5; ++i) free(bits[i]);
  free(y_bits);
  cl_setup_destroy(&s);
}

Test(faults, mha_allocation_failures, .timeout = 300.0) { mha_faults(CLATTN_DTYPE_F32); }

/* A 16-bit layer adds the widening of its weights at creation, its conversion kernels and the
 * float32 copies of x and y in its workspace. */
Test(faults, mha_allocation_failures_f16, .timeout = 300.0) { mha_faults(CLATTN_DTYPE_F16); }

/* ---------------------------------------------------------------- the KV cache */

/* Every allocation of creating a KV cache, appending to it and a first attention over it
 * fails in turn: OUT_OF_MEMORY each time, a failed append leaves the sequences as they were,
 * nothing leaks (the caller's cl_context back at its count), and the run after the last
 * injection point matches the reference. */
Test(faults, kv_cache_allocation_failures, .timeout = 300.0) {
  cl_setup s = cl_setup_create();
  const cl_uint base_refs = context_refs(s.ctx);
  enum { HQ = 4, HKV = 2, D = 16, N = 21, NQ = 2 };
  static float k[2 * HKV * N * D], v[2 * HKV * N * D], q[2 * HQ * NQ * D], o[2 * HQ * NQ * D],
      lse[2 * HQ * NQ];
  uint64_t state = 5;
  clattn_ref_fill_uniform(k, 2 * HKV * N * D, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(v, 2 * HKV * N * D, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(q, 2 * HQ * NQ * D, -1.0f, 1.0f, &state);
  clattn_kv_cache_desc cd = CLATTN_KV_CACHE_DESC_INIT;
  cd.max_sequences = 2;
  cd.heads_kv = HKV;
  cd.head_dim = D;
  cd.capacity = 64;
  cd.block_tokens = 8;
  clattn_kv_append_desc ad = CLATTN_KV_APPEND_DESC_INIT;
  ad.count = 2;
  ad.tokens = N;
  clattn_attention_desc d = test_desc(2, HQ, HKV, NQ, 0, D, 1);
  int failures = 0, succeeded = 0;
  for (int nth = 1; nth <= MAX_INJECTION_POINTS && !succeeded; ++nth) {
    clattn_context* ctx = NULL;
    cr_assert_eq(clattn_context_create_from_cl(s.ctx, s.device, s.queue, NULL, &ctx),
                 CLATTN_SUCCESS);
    clattn_kv_cache* cache = NULL;
    int appended = 0;
    clattn__test_fail_allocation(nth);
    clattn_status st = clattn_kv_cache_create(ctx, &cd, &cache);
    if (st == CLATTN_SUCCESS) st = clattn_kv_cache_append_host(cache, &ad, k, v);
    if (st == CLATTN_SUCCESS) {
      appended = 1;
      st = clattn_attention_cached_host(cache, &d, NULL, q, o, lse, NULL);
    }
    clattn__test_fail_allocation(0);
    if (st == CLATTN_SUCCESS) {
      succeeded = 1;
    } else {
      cr_assert_eq(st, CLATTN_ERROR_OUT_OF_MEMORY, "allocation %d failed: %s (%s)", nth,
                   clattn_status_name(st), test_last_error(ctx));
      ++failures;
      if (cache) {
        size_t len = 99;
        cr_assert_eq(clattn_kv_cache_seq_length(cache, 1, &len), CLATTN_SUCCESS);
        cr_assert_eq(len, appended ? (size_t)N : 0, "allocation %d: sequence 1 holds %zu tokens",
                     nth, len);
      }
    }
    clattn_kv_cache_destroy(cache);
    clFinish(s.queue);
    clattn_context_destroy(ctx);
    const cl_uint refs = settled_refs(s.ctx, base_refs);
    cr_assert_eq(refs, base_refs,
                 "after allocation %d failed and the cache and context were destroyed, the "
                 "cl_context has %u references, %u before: OpenCL objects leaked",
                 nth, refs, base_refs);
  }
  cr_assert(succeeded, "never succeeded within %d injection points", MAX_INJECTION_POINTS);
  cr_assert_geq(failures, 10, "only %d injection points in the cache", failures);
  for (size_t b = 0; b < 2; ++b) {
    clattn_attention_desc one = test_desc(1, HQ, HKV, NQ, N, D, 1);
    test_check(&one, q + b * HQ * NQ * D, k + b * HKV * N * D, v + b * HKV * N * D, NULL,
               o + b * HQ * NQ * D, lse + b * HQ * NQ, "attention over the cache");
  }
  cl_setup_destroy(&s);
}

/* Every allocation of creating a rotary layer and of its first forward over a KV cache fails
 * in turn: OUT_OF_MEMORY, nothing leaked, and the cache as it was (no token, no block taken:
 * a failure after the step began rolls it back); the run after the last injection point is
 * correct against the double-precision layer. */
Test(faults, mha_cached_allocation_failures, .timeout = 300.0) {
  cl_setup s = cl_setup_create();
  const cl_uint base_refs = context_refs(s.ctx);
  enum { E = 32, H = 4, HKV = 2, D = 8, BATCH = 2, N = 5, NIN = (H + 2 * HKV) * D };
  static float w_in[NIN * E], w_out[E * H * D], x[BATCH * N * E], y[BATCH * N * E];
  static double ref[N * E], tol[N * E];
  uint64_t state = 7;
  clattn_ref_fill_uniform(w_in, NIN * E, -0.2f, 0.2f, &state);
  clattn_ref_fill_uniform(w_out, E * H * D, -0.2f, 0.2f, &state);
  clattn_ref_fill_uniform(x, BATCH * N * E, -1.0f, 1.0f, &state);
  clattn_mha_desc desc = CLATTN_MHA_DESC_INIT;
  desc.d_model = E;
  desc.heads = H;
  desc.heads_kv = HKV;
  desc.head_dim = D;
  desc.rope = CLATTN_ROPE_NEOX;
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = w_in;
  w.out_proj_weight.host = w_out;
  clattn_kv_cache_desc kd = CLATTN_KV_CACHE_DESC_INIT;
  kd.dtype = CLATTN_DTYPE_F32;
  kd.max_sequences = BATCH;
  kd.heads_kv = HKV;
  kd.head_dim = D;
  kd.capacity = 64;
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = BATCH;
  fwd.seq = N;
  fwd.causal = 1;
  int failures = 0, succeeded = 0;
  for (int nth = 1; nth <= MAX_INJECTION_POINTS && !succeeded; ++nth) {
    clattn_context* ctx = NULL;
    cr_assert_eq(clattn_context_create_from_cl(s.ctx, s.device, s.queue, NULL, &ctx),
                 CLATTN_SUCCESS);
    clattn_kv_cache* cache = NULL;
    cr_assert_eq(clattn_kv_cache_create(ctx, &kd, &cache), CLATTN_SUCCESS, "%s",
                 test_last_error(ctx));
    clattn_mha* mha = NULL;
    clattn__test_fail_allocation(nth);
    clattn_status st = clattn_mha_create(ctx, &desc, &w, &mha);
    if (st == CLATTN_SUCCESS) st = clattn_mha_forward_cached_host(mha, cache, &fwd, NULL, x, y);
    clattn__test_fail_allocation(0);
    clattn_kv_cache_usage usage = CLATTN_KV_CACHE_USAGE_INIT;
    cr_assert_eq(clattn_kv_cache_get_usage(cache, &usage), CLATTN_SUCCESS);
    if (st == CLATTN_SUCCESS) {
      succeeded = 1;
      cr_assert_eq(usage.tokens_used, BATCH * N);
    } else {
      cr_assert_eq(st, CLATTN_ERROR_OUT_OF_MEMORY, "allocation %d failed: %s (%s)", nth,
                   clattn_status_name(st), test_last_error(ctx));
      cr_assert_eq(usage.tokens_used, 0, "allocation %d failed, yet %zu tokens are cached", nth,
                   usage.tokens_used);
      cr_assert_eq(usage.blocks_used, 0, "allocation %d failed, yet %zu blocks are taken", nth,
                   usage.blocks_used);
      ++failures;
    }
    clattn_mha_destroy(mha);
    clFinish(s.queue);
    clattn_kv_cache_destroy(cache);
    clattn_context_destroy(ctx);
    const cl_uint refs = settled_refs(s.ctx, base_refs);
    cr_assert_eq(refs, base_refs,
                 "after allocation %d failed and everything was destroyed, the cl_context has "
                 "%u references, %u before: OpenCL objects leaked",
                 nth, refs, base_refs);
  }
  cr_assert(succeeded, "never succeeded within %d injection points", MAX_INJECTION_POINTS);
  cr_assert_geq(failures, 4, "only %d injection points", failures);
  const clattn_ref_mha_layer L = {.d_model = E,
                                  .heads = H,
                                  .heads_kv = HKV,
                                  .head_dim = D,
                                  .k_dim = E,
                                  .v_dim = E,
                                  .wq = w_in,
                                  .wk = w_in + H * D * E,
                                  .wv = w_in + (H + HKV) * D * E,
                                  .wo = w_out,
                                  .rope = CLATTN_ROPE_NEOX};
  for (size_t b = 0; b < BATCH; ++b) {
    cr_assert_eq(clattn_ref_mha_forward(&L, 1, N, N, 1, x + b * N * E, NULL, NULL, NULL, ref, tol),
                 0);
    for (size_t i = 0; i < N * E; ++i) {
      cr_assert_leq(fabs((double)y[b * N * E + i] - ref[i]), tol[i],
                    "sequence %zu: y[%zu] = %.9g, reference %.9g", b, i, (double)y[b * N * E + i],
                    ref[i]);
    }
  }
  cl_setup_destroy(&s);
}

/* Every allocation (host and device) of a first probabilities call in a fresh context fails in
 * turn, after the fused call that wrote its LSE: OUT_OF_MEMORY each time, nothing left behind
 * once the context is destroyed, and the call after the last injection point gives the
 * probabilities (each visible row summing to 1 within 1e-4, a sanity bar: test_probs holds the
 * derived bound). */
Test(faults, probs_allocation_failures, .timeout = 300.0) {
  cl_setup s = cl_setup_create();
  const cl_uint base_refs = context_refs(s.ctx);
  clattn_attention_desc desc = test_desc(2, 4, 2, 21, 30, 16, 1);
  test_problem p;
  test_problem_init(&p, &desc, 77);
  const int32_t lengths[2] = {30, 12};
  const size_t count = 2 * 4 * 21 * 30;
  float* probs = malloc(count * sizeof(float));
  cr_assert_not_null(probs);
  int failures = 0, succeeded = 0;
  for (int nth = 1; nth <= MAX_INJECTION_POINTS && !succeeded; ++nth) {
    clattn_context* ctx = NULL;
    cr_assert_eq(clattn_context_create_from_cl(s.ctx, s.device, s.queue, NULL, &ctx),
                 CLATTN_SUCCESS);
    cr_assert_eq(clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, p.lse, lengths, NULL),
                 CLATTN_SUCCESS, "%s", test_last_error(ctx));
    clattn__test_fail_allocation(nth);
    clattn_status st =
        clattn_attention_probs_host(ctx, &desc, p.q, p.k, p.lse, lengths, NULL, probs);
    clattn__test_fail_allocation(0);
    if (st == CLATTN_SUCCESS) {
      succeeded = 1;
      for (size_t row = 0; row < count / 30; ++row) {
        double sum = 0.0;
        for (size_t j = 0; j < 30; ++j) sum += probs[row * 30 + j];
        cr_assert(fabs(sum - 1.0) <= 1e-4, "row %zu sums to %.9g", row, sum);
      }
    } else {
      cr_assert_eq(st, CLATTN_ERROR_OUT_OF_MEMORY, "allocation %d failed: %s (%s)", nth,
                   clattn_status_name(st), test_last_error(ctx));
      ++failures;
    }
    clFinish(s.queue);
    clattn_context_destroy(ctx);
    const cl_uint refs = settled_refs(s.ctx, base_refs);
    cr_assert_eq(refs, base_refs,
                 "after allocation %d failed and the context was destroyed, the cl_context has %u "
                 "references, %u before: OpenCL objects leaked",
                 nth, refs, base_refs);
  }
  cr_assert(succeeded, "never succeeded within %d injection points", MAX_INJECTION_POINTS);
  /* The kernel's cache entry and program build, and the host form's buffers at least. */
  cr_assert_geq(failures, 6, "only %d injection points", failures);
  free(probs);
  test_problem_free(&p);
  cl_setup_destroy(&s);
}
