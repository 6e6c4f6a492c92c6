/* Every bad input returns its documented status and never crashes; failures are reported
 * through the context's last error and build log, and nothing is printed. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clattn/clattn.h"
#include "test_util.h"

#define ASSERT_STATUS(call, expected)                                                            \
  do {                                                                                           \
    clattn_status st_ = (call);                                                                  \
    cr_assert_eq(st_, (expected), "%s returned %s, expected %s", #call, clattn_status_name(st_), \
                 clattn_status_name(expected));                                                  \
  } while (0)

/* A small valid problem. */
static clattn_attention_desc small_desc(void) { return test_desc(1, 2, 2, 8, 8, 16, 0); }

typedef struct host_arrays {
  float *q, *k, *v, *o, *lse;
} host_arrays;

static host_arrays host_alloc(const clattn_attention_desc* desc) {
  host_arrays h;
  h.q = calloc(test_span(desc, 'q'), sizeof(float));
  h.k = calloc(test_span(desc, 'k'), sizeof(float));
  h.v = calloc(test_span(desc, 'v'), sizeof(float));
  h.o = calloc(test_span(desc, 'o'), sizeof(float));
  h.lse = calloc(test_span(desc, 'l'), sizeof(float));
  cr_assert(h.q && h.k && h.v && h.o && h.lse);
  return h;
}

static void host_free(host_arrays* h) {
  free(h->q);
  free(h->k);
  free(h->v);
  free(h->o);
  free(h->lse);
}

/* ---------------------------------------------------------------- no device needed */

Test(errors, status_strings) {
#define CHECK_STATUS(name, value, message)           \
  cr_assert_eq((int)name, value);                    \
  cr_assert_not_null(clattn_status_name(name));      \
  cr_assert_str_eq(clattn_status_name(name), #name); \
  cr_assert_not_null(clattn_status_string(name));    \
  cr_assert_str_eq(clattn_status_string(name), message, "message of %s", #name);
  CLATTN_STATUS_MAP(CHECK_STATUS)
#undef CHECK_STATUS
  static const int unknown[] = {1, 42, -999, -100, 1000000, INT32_MIN};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; ++i) {
    const clattn_status s = (clattn_status)unknown[i];
    cr_assert_not_null(clattn_status_name(s));
    cr_assert_str_eq(clattn_status_name(s), "CLATTN_UNKNOWN_STATUS", "status %d", unknown[i]);
    cr_assert_not_null(clattn_status_string(s));
    cr_assert_str_neq(clattn_status_string(s), "", "status %d", unknown[i]);
  }
}

Test(errors, destroy_null) { ASSERT_STATUS(clattn_context_destroy(NULL), CLATTN_SUCCESS); }

Test(errors, version) {
  int major = -1, minor = -1, patch = -1;
  ASSERT_STATUS(clattn_version(&major, &minor, &patch), CLATTN_SUCCESS);
  cr_assert_eq(major, CLATTN_VERSION_MAJOR);
  cr_assert_eq(minor, CLATTN_VERSION_MINOR);
  cr_assert_eq(patch, CLATTN_VERSION_PATCH);
  ASSERT_STATUS(clattn_version(NULL, NULL, NULL), CLATTN_SUCCESS);
}

/* NULL handles and out pointers, checked before anything touches OpenCL. */
Test(errors, null_pointers_without_context) {
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  clattn_attention_desc desc = small_desc();
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  char buf[16];
  size_t n = 0;
  ASSERT_STATUS(clattn_context_create(NULL, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_context_create_from_cl(NULL, NULL, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_context* ctx = (clattn_context*)&n;
  ASSERT_STATUS(clattn_context_create_from_cl(NULL, NULL, NULL, NULL, &ctx),
                CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_null(ctx, "*out must be NULL after a failed create");
  ASSERT_STATUS(clattn_context_get_cl(NULL, NULL, NULL, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_context_get_device_info(NULL, &info), CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_device_query(NULL, &info), CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_context_get_last_error(NULL, NULL, sizeof buf, &n),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_context_get_build_log(NULL, buf, sizeof buf, &n),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_get_config(NULL, &desc, NULL, &used),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention(NULL, &desc, NULL, NULL, NULL, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  float x[1024] = {0};
  ASSERT_STATUS(clattn_attention_host(NULL, &desc, x, x, x, x, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_tensor_size(NULL, 'q', &n), CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_tensor_size(&desc, 'q', NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_tensor_size(&desc, 'x', &n), CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_tensor_size(&desc, '\0', &n), CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_attention_desc zero = desc;
  zero.struct_size = 0;
  ASSERT_STATUS(clattn_attention_tensor_size(&zero, 'q', &n), CLATTN_ERROR_INVALID_ARGUMENT);
}

/* Shapes are validated without a device, by clattn_attention_tensor_size. */
Test(errors, tensor_size_shapes) {
  size_t n = 0;
  clattn_attention_desc d;
#define BAD_SHAPE(field, value)                                                       \
  d = small_desc();                                                                   \
  d.field = value;                                                                    \
  cr_assert_eq(clattn_attention_tensor_size(&d, 'q', &n), CLATTN_ERROR_INVALID_SHAPE, \
               #field " = " #value);
  BAD_SHAPE(batch, 0);
  BAD_SHAPE(heads_q, 0);
  BAD_SHAPE(seq_q, 0);
  BAD_SHAPE(seq_kv, 0);
  BAD_SHAPE(head_dim, 0);
  BAD_SHAPE(head_dim, 257);
  BAD_SHAPE(heads_kv, 3);
#undef BAD_SHAPE
  /* Spans that do not fit in size_t are not silently wrapped. */
  d = test_desc((size_t)1 << 40, (size_t)1 << 20, 0, (size_t)1 << 20, 16, 256, 0);
  clattn_status st = clattn_attention_tensor_size(&d, 'q', &n);
  cr_assert_neq(st, CLATTN_SUCCESS, "an overflowing span returned success (%zu)", n);
}

/* ---------------------------------------------------------------- with a context */

Test(errors, null_pointers_with_context) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = small_desc();
  host_arrays h = host_alloc(&desc);
  ASSERT_STATUS(clattn_attention_host(ctx, NULL, h.q, h.k, h.v, h.o, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_host(ctx, &desc, NULL, h.k, h.v, h.o, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_host(ctx, &desc, h.q, NULL, h.v, h.o, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_host(ctx, &desc, h.q, h.k, NULL, h.o, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_host(ctx, &desc, h.q, h.k, h.v, NULL, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention(ctx, &desc, NULL, NULL, NULL, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_get_config(ctx, &desc, NULL, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_get_config(ctx, NULL, NULL, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_context_get_device_info(ctx, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  size_t needed = 0;
  ASSERT_STATUS(clattn_context_get_last_error(ctx, NULL, 10, &needed),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_context_get_build_log(ctx, NULL, 10, &needed),
                CLATTN_ERROR_INVALID_ARGUMENT);

  /* NULL cl_mem in the buffers struct. */
  cl_context cl_ctx = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, 1 << 16, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  for (int which = 0; which < 4; ++which) {
    clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
    b.q = b.k = b.v = b.o = mem;
    if (which == 0) b.q = NULL;
    if (which == 1) b.k = NULL;
    if (which == 2) b.v = NULL;
    if (which == 3) b.o = NULL;
    clattn_status st = clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL);
    cr_assert_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "NULL buffer %d: %s", which,
                 clattn_status_name(st));
  }
  /* A wait list count without a list. */
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = b.k = b.v = b.o = mem;
  clattn_status st = clattn_attention(ctx, &desc, &b, NULL, NULL, 2, NULL, NULL);
  cr_assert(st == CLATTN_ERROR_INVALID_ARGUMENT || st == CLATTN_ERROR_OPENCL,
            "num_wait_events 2 with a NULL list: %s", clattn_status_name(st));
  clReleaseMemObject(mem);
  host_free(&h);
  clattn_context_destroy(ctx);
}

/* struct_size 0 in every descriptor struct. */
Test(errors, struct_size_zero) {
  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  opts.struct_size = 0;
  clattn_context* bad = NULL;
  clattn_status st = clattn_context_create(&opts, &bad);
  if (st == CLATTN_ERROR_NO_DEVICE) cr_skip_test("no OpenCL device");
  cr_assert_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "options.struct_size 0: %s",
               clattn_status_name(st));
  cr_assert_null(bad);

  clattn_context* ctx = test_context(NULL);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  info.struct_size = 0;
  ASSERT_STATUS(clattn_context_get_device_info(ctx, &info), CLATTN_ERROR_INVALID_ARGUMENT);

  clattn_attention_desc desc = small_desc();
  host_arrays h = host_alloc(&desc);
  clattn_attention_desc zero_desc = desc;
  zero_desc.struct_size = 0;
  ASSERT_STATUS(clattn_attention_host(ctx, &zero_desc, h.q, h.k, h.v, h.o, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  ASSERT_STATUS(clattn_attention_get_config(ctx, &zero_desc, NULL, &used),
                CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_attention_config zero_config = CLATTN_ATTENTION_CONFIG_INIT;
  zero_config.struct_size = 0;
  ASSERT_STATUS(clattn_attention_host(ctx, &desc, h.q, h.k, h.v, h.o, NULL, NULL, &zero_config),
                CLATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_STATUS(clattn_attention_get_config(ctx, &desc, &zero_config, &used),
                CLATTN_ERROR_INVALID_ARGUMENT);

  cl_context cl_ctx = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, 1 << 16, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = b.k = b.v = b.o = mem;
  b.struct_size = 0;
  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  clReleaseMemObject(mem);
  host_free(&h);
  clattn_context_destroy(ctx);
}

/* Out-of-range enum values. */
Test(errors, bad_enums) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = small_desc();
  host_arrays h = host_alloc(&desc);
  clattn_attention_desc d = desc;
  d.dtype = (clattn_dtype)7;
  ASSERT_STATUS(clattn_attention_host(ctx, &d, h.q, h.k, h.v, h.o, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  d = desc;
  d.layout = (clattn_layout)5;
  ASSERT_STATUS(clattn_attention_host(ctx, &d, h.q, h.k, h.v, h.o, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_attention_config config = test_config((clattn_variant)9);
  ASSERT_STATUS(clattn_attention_host(ctx, &desc, h.q, h.k, h.v, h.o, NULL, NULL, &config),
                CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  ASSERT_STATUS(clattn_attention_get_config(ctx, &desc, &config, &used),
                CLATTN_ERROR_INVALID_ARGUMENT);
  host_free(&h);
  clattn_context_destroy(ctx);
}

Test(errors, invalid_shapes) {
  clattn_context* ctx = test_context(NULL);
  const clattn_attention_desc good = small_desc();
  host_arrays h = host_alloc(&good);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  clattn_attention_desc d;
#define BAD_SHAPE(field, value)                                                               \
  do {                                                                                        \
    d = good;                                                                                 \
    d.field = value;                                                                          \
    clattn_status st_ = clattn_attention_host(ctx, &d, h.q, h.k, h.v, h.o, NULL, NULL, NULL); \
    cr_assert_eq(st_, CLATTN_ERROR_INVALID_SHAPE, "host, " #field " = " #value ": %s",        \
                 clattn_status_name(st_));                                                    \
    st_ = clattn_attention_get_config(ctx, &d, NULL, &used);                                  \
    cr_assert_eq(st_, CLATTN_ERROR_INVALID_SHAPE, "get_config, " #field " = " #value ": %s",  \
                 clattn_status_name(st_));                                                    \
  } while (0)
  BAD_SHAPE(batch, 0);
  BAD_SHAPE(heads_q, 0);
  BAD_SHAPE(seq_q, 0);
  BAD_SHAPE(seq_kv, 0);
  BAD_SHAPE(head_dim, 0);
  BAD_SHAPE(head_dim, 257);
  BAD_SHAPE(head_dim, 100000);
  BAD_SHAPE(heads_kv, 3); /* 2 % 3 */
  BAD_SHAPE(heads_kv, 4); /* more kv heads than query heads */
#undef BAD_SHAPE
  d = test_desc(1, 6, 4, 8, 8, 16, 0);
  ASSERT_STATUS(clattn_attention_host(ctx, &d, h.q, h.k, h.v, h.o, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_SHAPE);
  host_free(&h);

  /* Huge shapes on the cl_mem path fail cleanly (the buffers cannot be that large; the
   * library may also refuse spans beyond its 32-bit indexing as UNSUPPORTED). */
  cl_context cl_ctx = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, 1 << 16, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = b.k = b.v = b.o = mem;
  d = test_desc((size_t)1 << 40, (size_t)1 << 20, 0, (size_t)1 << 20, 16, 256, 0);
  clattn_status st = clattn_attention(ctx, &d, &b, NULL, NULL, 0, NULL, NULL);
  cr_assert(st == CLATTN_ERROR_INVALID_SHAPE || st == CLATTN_ERROR_BUFFER_TOO_SMALL ||
                st == CLATTN_ERROR_UNSUPPORTED,
            "overflowing shape: %s", clattn_status_name(st));
  clReleaseMemObject(mem);
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- buffer sizes */

typedef struct exact_buffers {
  cl_mem q, k, v, o, lse, len;
} exact_buffers;

static cl_mem make_floats(cl_context cl_ctx, size_t count) {
  cl_int err = CL_SUCCESS;
  cl_mem m = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, count * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateBuffer: %d", (int)err);
  return m;
}

Test(errors, buffer_too_small) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, &queue), CLATTN_SUCCESS);
  const clattn_attention_desc desc = test_desc(2, 2, 1, 9, 11, 16, 1);
  const size_t nq = test_span(&desc, 'q'), nk = test_span(&desc, 'k'), nv = test_span(&desc, 'v'),
               no = test_span(&desc, 'o'), nl = test_span(&desc, 'l');
  exact_buffers ok = {make_floats(cl_ctx, nq),
                      make_floats(cl_ctx, nk),
                      make_floats(cl_ctx, nv),
                      make_floats(cl_ctx, no),
                      make_floats(cl_ctx, nl),
                      make_floats(cl_ctx, desc.batch)}; /* int32 and float are both 4 bytes */
  exact_buffers shorter = {make_floats(cl_ctx, nq - 1), make_floats(cl_ctx, nk - 1),
                           make_floats(cl_ctx, nv - 1), make_floats(cl_ctx, no - 1),
                           make_floats(cl_ctx, nl - 1), make_floats(cl_ctx, desc.batch - 1)};
  const float zeros[64] = {0};
  cl_int err = CL_SUCCESS;
  err |= clEnqueueWriteBuffer(queue, ok.len, CL_TRUE, 0, desc.batch * 4, zeros, 0, NULL, NULL);
  cr_assert_eq(err, CL_SUCCESS);

  clattn_attention_buffers base = CLATTN_ATTENTION_BUFFERS_INIT;
  base.q = ok.q;
  base.k = ok.k;
  base.v = ok.v;
  base.o = ok.o;
  base.lse = ok.lse;
  base.kv_lengths = ok.len;
  /* Exactly sized buffers are accepted. */
  clattn_status st = clattn_attention(ctx, &desc, &base, NULL, NULL, 0, NULL, NULL);
  cr_assert_eq(st, CLATTN_SUCCESS, "exact sizes: %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  clFinish(queue);

  clattn_attention_buffers b;
#define TOO_SMALL(what, mutate)                                                                \
  do {                                                                                         \
    b = base;                                                                                  \
    mutate;                                                                                    \
    clattn_status st_ = clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL);           \
    cr_assert_eq(st_, CLATTN_ERROR_BUFFER_TOO_SMALL, "%s: %s", what, clattn_status_name(st_)); \
  } while (0)
  TOO_SMALL("q one element short", b.q = shorter.q);
  TOO_SMALL("k one element short", b.k = shorter.k);
  TOO_SMALL("v one element short", b.v = shorter.v);
  TOO_SMALL("o one element short", b.o = shorter.o);
  TOO_SMALL("lse one element short", b.lse = shorter.lse);
  TOO_SMALL("kv_lengths one element short", b.kv_lengths = shorter.len);
  TOO_SMALL("q offset 1", b.q_offset = 1);
  TOO_SMALL("k offset 1", b.k_offset = 1);
  TOO_SMALL("v offset 1", b.v_offset = 1);
  TOO_SMALL("o offset 1", b.o_offset = 1);
  TOO_SMALL("lse offset 1", b.lse_offset = 1);
  TOO_SMALL("q offset huge", b.q_offset = SIZE_MAX - 3);
  TOO_SMALL("o offset huge", b.o_offset = SIZE_MAX / 2);
#undef TOO_SMALL

  /* Strides that reach further than the default layout. */
  clattn_attention_desc padded = desc;
  padded.q_strides = (clattn_strides){2 * 9 * 17, 9 * 17, 17};
  st = clattn_attention(ctx, &padded, &base, NULL, NULL, 0, NULL, NULL);
  cr_assert_eq(st, CLATTN_ERROR_BUFFER_TOO_SMALL, "padded q strides: %s", clattn_status_name(st));
  padded = desc;
  padded.layout = CLATTN_LAYOUT_BNHD;
  padded.o_strides = (clattn_strides){9 * 2 * 16 + 1, 16, 2 * 16};
  st = clattn_attention(ctx, &padded, &base, NULL, NULL, 0, NULL, NULL);
  cr_assert_eq(st, CLATTN_ERROR_BUFFER_TOO_SMALL, "padded o strides: %s", clattn_status_name(st));

  clFinish(queue);
  cl_mem all[] = {ok.q,      ok.k,      ok.v,      ok.o,      ok.lse,      ok.len,
                  shorter.q, shorter.k, shorter.v, shorter.o, shorter.lse, shorter.len};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) clReleaseMemObject(all[i]);
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- queues */

Test(errors, out_of_order_queue) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, &device, NULL), CLATTN_SUCCESS);
  cl_command_queue_properties props = 0;
  cr_assert_eq(clGetDeviceInfo(device, CL_DEVICE_QUEUE_PROPERTIES, sizeof props, &props, NULL),
               CL_SUCCESS);
  if (!(props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)) {
    clattn_context_destroy(ctx);
    cr_skip_test("the device does not support out-of-order queues");
  }
  cl_int err = CL_SUCCESS;
  cl_command_queue ooo =
      clCreateCommandQueue(cl_ctx, device, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateCommandQueue: %d", (int)err);

  /* Adopting it. */
  clattn_context* adopted = (clattn_context*)ctx;
  ASSERT_STATUS(clattn_context_create_from_cl(cl_ctx, device, ooo, NULL, &adopted),
                CLATTN_ERROR_INVALID_QUEUE);
  cr_assert_null(adopted, "*out must be NULL after a failed create");

  /* Passing it to a call. */
  const clattn_attention_desc desc = small_desc();
  cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, 1 << 16, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = b.k = b.v = b.o = mem;
  b.o_offset = 8192; /* apart from Q, K and V, which may share elements */
  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, ooo, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_QUEUE);

  /* An in-order queue of another cl_context. */
  cl_context other = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_command_queue foreign = clCreateCommandQueue(other, device, 0, &err);
  cr_assert_eq(err, CL_SUCCESS);
  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, foreign, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_QUEUE);
  /* ...and adopting a queue that does not belong to the given cl_context. */
  adopted = ctx;
  ASSERT_STATUS(clattn_context_create_from_cl(cl_ctx, device, foreign, NULL, &adopted),
                CLATTN_ERROR_INVALID_QUEUE);
  cr_assert_null(adopted);

  clReleaseCommandQueue(foreign);
  clReleaseContext(other);
  clReleaseMemObject(mem);
  clReleaseCommandQueue(ooo);
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- device selection */

static clattn_status create_with_device(const char* spec, clattn_context** out) {
  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  opts.device = spec;
  *out = (clattn_context*)&opts; /* must be reset to NULL on failure */
  return clattn_context_create(&opts, out);
}

Test(errors, device_selector) {
  cl_uint p = 0, d = 0;
  clattn_status st = clattn_device_select(NULL, &p, &d);
  if (st == CLATTN_ERROR_NO_DEVICE) cr_skip_test("no OpenCL device");
  clattn_context* ctx = NULL;

  st = create_with_device("no-such-device-xyz", &ctx);
  cr_assert_eq(st, CLATTN_ERROR_DEVICE_NOT_FOUND, "%s", clattn_status_name(st));
  cr_assert_null(ctx);
  /* With no context to keep it, the detail goes to the thread's context-less message. */
  char msg[256];
  ASSERT_STATUS(clattn_context_get_last_error(NULL, msg, sizeof msg, NULL), CLATTN_SUCCESS);
  cr_assert(strstr(msg, "no-such-device-xyz") != NULL, "message: \"%s\"", msg);
  ASSERT_STATUS(clattn_device_select("no-such-device-xyz", &p, &d), CLATTN_ERROR_DEVICE_NOT_FOUND);

  st = create_with_device("9:9", &ctx);
  cr_assert_eq(st, CLATTN_ERROR_DEVICE_NOT_FOUND, "\"9:9\": %s", clattn_status_name(st));
  cr_assert_null(ctx);
  ASSERT_STATUS(clattn_device_select("9:9", &p, &d), CLATTN_ERROR_DEVICE_NOT_FOUND);
  ASSERT_STATUS(clattn_device_select("0:99", &p, &d), CLATTN_ERROR_DEVICE_NOT_FOUND);

  /* Malformed "P:D": the header documents INVALID_ARGUMENT, but as a name substring it
   * would simply match nothing. */
  st = create_with_device("1:x", &ctx);
  cr_assert(st == CLATTN_ERROR_INVALID_ARGUMENT || st == CLATTN_ERROR_DEVICE_NOT_FOUND,
            "\"1:x\": %s", clattn_status_name(st));
  cr_assert_null(ctx);
  st = clattn_device_select("1:x", &p, &d);
  cr_assert(st == CLATTN_ERROR_INVALID_ARGUMENT || st == CLATTN_ERROR_DEVICE_NOT_FOUND,
            "\"1:x\": %s", clattn_status_name(st));

  /* Through the environment. */
  cr_assert_eq(setenv("CLATTN_DEVICE", "no-such-device-xyz", 1), 0);
  ctx = (clattn_context*)&p;
  ASSERT_STATUS(clattn_context_create(NULL, &ctx), CLATTN_ERROR_DEVICE_NOT_FOUND);
  cr_assert_null(ctx);
  ASSERT_STATUS(clattn_device_select(NULL, &p, &d), CLATTN_ERROR_DEVICE_NOT_FOUND);
  unsetenv("CLATTN_DEVICE");
}

/* ---------------------------------------------------------------- configs */

Test(errors, invalid_config) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = small_desc();
  host_arrays h = host_alloc(&desc);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  static const struct {
    clattn_variant variant;
    unsigned block_m, block_n, rows_per_item, threads_per_row;
  } bad[] = {
      {CLATTN_VARIANT_REGISTER_BLOCKED, 0, 3, 0, 0},
      {CLATTN_VARIANT_REGISTER_BLOCKED, 0, 0, 100, 0},
      {CLATTN_VARIANT_REGISTER_BLOCKED, 0, 3, 100, 0},
      {CLATTN_VARIANT_REGISTER_BLOCKED, 0, 0, 17, 0},
      {CLATTN_VARIANT_TILED_LOCAL, 0, 3, 0, 0},
      {CLATTN_VARIANT_TILED_LOCAL, 0, 512, 0, 0},
      {CLATTN_VARIANT_TILED_LOCAL, 0, 48, 0, 0},
      {CLATTN_VARIANT_TILED_LOCAL, 1u << 20, 0, 0, 0},
      {CLATTN_VARIANT_TILED_LOCAL, 0, 0, 0, 3},
      {CLATTN_VARIANT_TILED_LOCAL, 0, 0, 0, 64},
      {CLATTN_VARIANT_REGISTER_BLOCKED, 0, 0, 0, 2},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    clattn_attention_config c = test_config(bad[i].variant);
    c.block_m = bad[i].block_m;
    c.block_n = bad[i].block_n;
    c.rows_per_item = bad[i].rows_per_item;
    c.threads_per_row = bad[i].threads_per_row;
    clattn_status st = clattn_attention_get_config(ctx, &desc, &c, &used);
    cr_assert_eq(st, CLATTN_ERROR_INVALID_CONFIG, "get_config %s block_m=%u block_n=%u rows=%u: %s",
                 test_variant_name(c.variant), c.block_m, c.block_n, c.rows_per_item,
                 clattn_status_name(st));
    st = clattn_attention_host(ctx, &desc, h.q, h.k, h.v, h.o, NULL, NULL, &c);
    cr_assert_eq(st, CLATTN_ERROR_INVALID_CONFIG, "host %s block_m=%u block_n=%u rows=%u: %s",
                 test_variant_name(c.variant), c.block_m, c.block_n, c.rows_per_item,
                 clattn_status_name(st));
  }
  host_free(&h);
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- kernel sources */

/* The source tree's cl/ directory: a compile definition, else the environment, else next to
 * this file. */
static const char* kernel_source_dir(void) {
  static char path[4096];
#ifdef CLATTN_SOURCE_DIR
  snprintf(path, sizeof path, "%s/cl", CLATTN_SOURCE_DIR);
#else
  const char* env = getenv("CLATTN_SOURCE_DIR");
  if (env != NULL && env[0] != '\0') {
    snprintf(path, sizeof path, "%s/cl", env);
  } else {
    snprintf(path, sizeof path, "%s", __FILE__);
    char* slash = strrchr(path, '/');
    if (slash != NULL) *slash = '\0'; /* .../tests */
    slash = strrchr(path, '/');
    if (slash != NULL) {
      strcpy(slash, "/cl");
    } else {
      snprintf(path, sizeof path, "../cl");
    }
  }
#endif
  return path;
}

static void copy_file(const char* from, const char* to) {
  FILE* in = fopen(from, "rb");
  cr_assert_not_null(in, "cannot open %s", from);
  FILE* out = fopen(to, "wb");
  cr_assert_not_null(out, "cannot create %s", to);
  char buf[8192];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) cr_assert_eq(fwrite(buf, 1, n, out), n);
  fclose(in);
  fclose(out);
}

/* Copies every .cl file of the source tree's cl/ into a new temporary directory, then appends a
 * syntax error to `broken` (a file name, which must exist). Returns the directory (static storage).
 */
static const char* make_kernel_dir(const char* broken) {
  static char dir[256];
  snprintf(dir, sizeof dir, "/tmp/clattn-test-kernels-XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  const char* src = kernel_source_dir();
  DIR* d = opendir(src);
  cr_assert_not_null(d, "cannot open the kernel source directory %s (set CLATTN_SOURCE_DIR)", src);
  struct dirent* e;
  int found = 0;
  while ((e = readdir(d)) != NULL) {
    const size_t len = strlen(e->d_name);
    if (len < 4 || strcmp(e->d_name + len - 3, ".cl") != 0) continue;
    char from[4400], to[4400];
    snprintf(from, sizeof from, "%s/%s", src, e->d_name);
    snprintf(to, sizeof to, "%s/%s", dir, e->d_name);
    copy_file(from, to);
    if (broken != NULL && strcmp(e->d_name, broken) == 0) {
      FILE* f = fopen(to, "ab");
      cr_assert_not_null(f);
      fputs("\n__kernel void clattn_test_broken(void) { this is not OpenCL C }\n", f);
      fclose(f);
      found = 1;
    }
  }
  closedir(d);
  cr_assert(broken == NULL || found, "%s not found in %s", broken, src);
  return dir;
}

static void remove_kernel_dir(const char* dir) {
  DIR* d = opendir(dir);
  if (d == NULL) return;
  struct dirent* e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

Test(errors, kernel_dir_missing) {
  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  opts.kernel_dir = "/nonexistent/clattn-kernels-xyz";
  clattn_context* ctx = NULL;
  clattn_status st = clattn_context_create(&opts, &ctx);
  if (st == CLATTN_ERROR_NO_DEVICE) cr_skip_test("no OpenCL device");
  if (st == CLATTN_ERROR_KERNEL_SOURCE) {
    cr_assert_null(ctx);
    return;
  }
  cr_assert_eq(st, CLATTN_SUCCESS, "%s", clattn_status_name(st));
  clattn_attention_desc desc = small_desc();
  host_arrays h = host_alloc(&desc);
  for (int v = CLATTN_VARIANT_TILED_LOCAL; v <= CLATTN_VARIANT_REGISTER_BLOCKED; ++v) {
    clattn_attention_config c = test_config((clattn_variant)v);
    st = clattn_attention_host(ctx, &desc, h.q, h.k, h.v, h.o, NULL, NULL, &c);
    cr_assert_eq(st, CLATTN_ERROR_KERNEL_SOURCE, "%s: %s", test_variant_name(c.variant),
                 clattn_status_name(st));
    cr_assert_str_neq(test_last_error(ctx), "", "no last error message");
  }
  host_free(&h);
  clattn_context_destroy(ctx);
}

/* A kernel file that does not compile: BUILD_FAILED with a build log, and the other
 * variant (its file intact) still works in the same context. */
static void check_broken_kernel(clattn_variant variant, const char* file, int via_env) {
  const char* dir = make_kernel_dir(file);
  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  if (via_env) {
    cr_assert_eq(setenv("CLATTN_KERNEL_DIR", dir, 1), 0);
  } else {
    opts.kernel_dir = dir;
  }
  clattn_context* ctx = NULL;
  clattn_status st = clattn_context_create(&opts, &ctx);
  if (st == CLATTN_ERROR_NO_DEVICE) {
    remove_kernel_dir(dir);
    cr_skip_test("no OpenCL device");
  }
  cr_assert_eq(st, CLATTN_SUCCESS, "%s", clattn_status_name(st));

  size_t needed = 0;
  cr_assert_eq(clattn_context_get_build_log(ctx, NULL, 0, &needed), CLATTN_SUCCESS);
  cr_assert_eq(needed, 1, "build log of a fresh context is not empty");
  cr_assert_eq(clattn_context_get_last_error(ctx, NULL, 0, &needed), CLATTN_SUCCESS);
  cr_assert_eq(needed, 1, "last error of a fresh context is not empty");

  clattn_attention_desc desc = small_desc();
  host_arrays h = host_alloc(&desc);
  clattn_attention_config c = test_config(variant);
  st = clattn_attention_host(ctx, &desc, h.q, h.k, h.v, h.o, NULL, NULL, &c);
  cr_assert_eq(st, CLATTN_ERROR_BUILD_FAILED, "%s with a broken %s: %s", test_variant_name(variant),
               file, clattn_status_name(st));
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  st = clattn_attention_get_config(ctx, &desc, &c, &used);
  cr_assert_eq(st, CLATTN_ERROR_BUILD_FAILED, "get_config: %s", clattn_status_name(st));

  /* Build log: full length via `needed`, truncated copy, complete copy. */
  cr_assert_eq(clattn_context_get_build_log(ctx, NULL, 0, &needed), CLATTN_SUCCESS);
  cr_assert_gt(needed, 1, "empty build log after a failed build");
  char* log = malloc(needed);
  cr_assert_not_null(log);
  size_t needed2 = 0;
  cr_assert_eq(clattn_context_get_build_log(ctx, log, needed, &needed2), CLATTN_SUCCESS);
  cr_assert_eq(needed2, needed);
  cr_assert_eq(strlen(log), needed - 1);
  char small[5];
  cr_assert_eq(clattn_context_get_build_log(ctx, small, sizeof small, NULL), CLATTN_SUCCESS);
  cr_assert_eq(strlen(small), needed - 1 < 4 ? needed - 1 : 4, "truncation");
  cr_assert_eq(strncmp(small, log, strlen(small)), 0);
  free(log);
  cr_assert_eq(clattn_context_get_last_error(ctx, NULL, 0, &needed), CLATTN_SUCCESS);
  cr_assert_gt(needed, 1, "empty last error after a failed build");

  /* The other variant's source is intact. */
  const clattn_variant other = variant == CLATTN_VARIANT_TILED_LOCAL
                                   ? CLATTN_VARIANT_REGISTER_BLOCKED
                                   : CLATTN_VARIANT_TILED_LOCAL;
  c = test_config(other);
  st = clattn_attention_host(ctx, &desc, h.q, h.k, h.v, h.o, NULL, NULL, &c);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s after the other variant failed to build: %s (%s)",
               test_variant_name(other), clattn_status_name(st), test_last_error(ctx));

  host_free(&h);
  clattn_context_destroy(ctx);
  if (via_env) unsetenv("CLATTN_KERNEL_DIR");
  remove_kernel_dir(dir);
}

Test(errors, broken_tiled_kernel) {
  check_broken_kernel(CLATTN_VARIANT_TILED_LOCAL, "attention_tiled.cl", 0);
}

Test(errors, broken_regblock_kernel) {
  check_broken_kernel(CLATTN_VARIANT_REGISTER_BLOCKED, "attention_regblock.cl", 0);
}

Test(errors, broken_kernel_via_environment) {
  check_broken_kernel(CLATTN_VARIANT_REGISTER_BLOCKED, "attention_regblock.cl", 1);
}

/* ---------------------------------------------------------------- silence */

/* With CLATTN_LOG unset, failing calls print nothing. (A failing kernel build is left out:
 * the OpenCL compiler itself may print diagnostics, as PoCL's clang does.) */
Test(errors, silent_without_log, .init = cr_redirect_stderr) {
  unsetenv("CLATTN_LOG");
  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  opts.kernel_dir = "/nonexistent/clattn-kernels-xyz";
  clattn_context* ctx = NULL;
  clattn_status st = clattn_context_create(&opts, &ctx);
  if (st == CLATTN_ERROR_NO_DEVICE) cr_skip_test("no OpenCL device");
  clattn_attention_desc desc = small_desc();
  host_arrays h = host_alloc(&desc);
  if (st == CLATTN_SUCCESS) {
    clattn_attention_desc bad = desc;
    bad.head_dim = 0;
    cr_assert_neq(clattn_attention_host(ctx, &bad, h.q, h.k, h.v, h.o, NULL, NULL, NULL),
                  CLATTN_SUCCESS);
    clattn_attention_config c = test_config(CLATTN_VARIANT_TILED_LOCAL);
    cr_assert_neq(clattn_attention_host(ctx, &desc, h.q, h.k, h.v, h.o, NULL, NULL, &c),
                  CLATTN_SUCCESS);
    c.block_n = 3;
    cr_assert_neq(clattn_attention_host(ctx, &desc, h.q, h.k, h.v, h.o, NULL, NULL, &c),
                  CLATTN_SUCCESS);
    cr_assert_neq(clattn_attention(ctx, &desc, NULL, NULL, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
    clattn_context_destroy(ctx);
  }
  clattn_context* none = NULL;
  clattn_context_options sel = CLATTN_CONTEXT_OPTIONS_INIT;
  sel.device = "no-such-device-xyz";
  cr_assert_neq(clattn_context_create(&sel, &none), CLATTN_SUCCESS);
  cr_assert_neq(clattn_device_select("9:9", NULL, NULL), CLATTN_SUCCESS);
  host_free(&h);
  fflush(stderr);
  cr_assert_stderr_eq_str("", "the library printed to stderr with CLATTN_LOG unset");
}

/* With CLATTN_LOG set, a failure is logged (to stderr). */
Test(errors, logs_with_log, .init = cr_redirect_stderr) {
  cr_assert_eq(setenv("CLATTN_LOG", "1", 1), 0);
  clattn_context_options sel = CLATTN_CONTEXT_OPTIONS_INIT;
  sel.device = "no-such-device-xyz";
  clattn_context* none = NULL;
  clattn_status st = clattn_context_create(&sel, &none);
  if (st == CLATTN_ERROR_NO_DEVICE) cr_skip_test("no OpenCL device");
  cr_assert_neq(st, CLATTN_SUCCESS);
  fflush(stderr);
  cr_assert_stderr_neq_str("", "nothing logged with CLATTN_LOG set");
  unsetenv("CLATTN_LOG");
}
