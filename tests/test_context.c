/* Contexts: device choice and information, adopting the caller's OpenCL objects, getters. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clattn/clattn.h"
#include "test_util.h"

/* The device clattn-info would list as P:D (platform in ICD order, then every device). */
static cl_device_id device_at(cl_uint platform_index, cl_uint device_index) {
  cl_platform_id platforms[64];
  cl_uint np = 0;
  cr_assert_eq(clGetPlatformIDs(64, platforms, &np), CL_SUCCESS);
  cr_assert_lt(platform_index, np, "platform index %u of %u", platform_index, np);
  cl_device_id devices[64];
  cl_uint nd = 0;
  cr_assert_eq(clGetDeviceIDs(platforms[platform_index], CL_DEVICE_TYPE_ALL, 64, devices, &nd),
               CL_SUCCESS);
  cr_assert_lt(device_index, nd, "device index %u of %u", device_index, nd);
  return devices[device_index];
}

static cl_device_id context_device(const clattn_context* ctx) {
  cl_device_id device = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, NULL, &device, NULL), CLATTN_SUCCESS);
  cr_assert_not_null(device);
  return device;
}

static void device_string(cl_device_id device, cl_device_info what, char* buf, size_t size) {
  buf[0] = '\0';
  cr_assert_eq(clGetDeviceInfo(device, what, size, buf, NULL), CL_SUCCESS);
}

static int contains_nocase(const char* haystack, const char* needle) {
  const size_t n = strlen(needle);
  for (; *haystack != '\0'; ++haystack) {
    size_t i = 0;
    while (i < n && haystack[i] != '\0' &&
           tolower((unsigned char)haystack[i]) == tolower((unsigned char)needle[i])) {
      ++i;
    }
    if (i == n) return 1;
  }
  return n == 0;
}

Test(context, default_device_info) {
  clattn_context* ctx = test_context(NULL);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  cr_assert_eq(clattn_context_get_device_info(ctx, &info), CLATTN_SUCCESS);
  cr_assert_str_neq(info.name, "");
  cr_assert_str_neq(info.vendor, "");
  cr_assert_str_neq(info.platform_name, "");
  cr_assert_str_neq(info.driver_version, "");
  cr_assert_eq(strncmp(info.device_version, "OpenCL ", 7), 0, "device_version \"%s\"",
               info.device_version);
  cr_assert_eq(strncmp(info.opencl_c_version, "OpenCL C ", 9), 0, "opencl_c_version \"%s\"",
               info.opencl_c_version);
  cr_assert_gt(info.compute_units, 0);
  cr_assert_gt(info.max_work_group_size, 0);
  cr_assert_gt(info.max_work_item_sizes[0], 0);
  cr_assert_gt(info.global_mem_size, 0);
  cr_assert_gt(info.max_mem_alloc_size, 0);
  cr_assert_gt(info.local_mem_size, 0);

  /* Agrees with OpenCL itself. */
  cl_device_id device = context_device(ctx);
  char name[256];
  device_string(device, CL_DEVICE_NAME, name, sizeof name);
  cr_assert_str_eq(info.name, name);
  cl_uint cu = 0;
  cr_assert_eq(clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL),
               CL_SUCCESS);
  cr_assert_eq(info.compute_units, cu);
  cl_device_type type = 0;
  cr_assert_eq(clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof type, &type, NULL), CL_SUCCESS);
  const clattn_device_type expected = (type & CL_DEVICE_TYPE_GPU)   ? CLATTN_DEVICE_TYPE_GPU
                                      : (type & CL_DEVICE_TYPE_CPU) ? CLATTN_DEVICE_TYPE_CPU
                                      : (type & CL_DEVICE_TYPE_ACCELERATOR)
                                          ? CLATTN_DEVICE_TYPE_ACCELERATOR
                                          : CLATTN_DEVICE_TYPE_OTHER;
  cr_assert_eq(info.type, expected, "type %d, OpenCL says %d", (int)info.type, (int)expected);
  cr_assert_eq(info.has_fp16, strstr(info.extensions, "cl_khr_fp16") != NULL ? 1 : 0);
  cl_ulong local = 0;
  cr_assert_eq(clGetDeviceInfo(device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL),
               CL_SUCCESS);
  cr_assert_eq(info.local_mem_size, local);

  /* clattn_device_query on the same device gives the same record. */
  clattn_device_info again = CLATTN_DEVICE_INFO_INIT;
  cr_assert_eq(clattn_device_query(device, &again), CLATTN_SUCCESS);
  cr_assert_str_eq(again.name, info.name);
  cr_assert_str_eq(again.platform_name, info.platform_name);
  cr_assert_eq(again.compute_units, info.compute_units);
  cr_assert_eq(again.type, info.type);
  clattn_context_destroy(ctx);
}

Test(context, query_every_device) {
  cl_platform_id platforms[64];
  cl_uint np = 0;
  if (clGetPlatformIDs(64, platforms, &np) != CL_SUCCESS || np == 0) {
    cr_skip_test("no OpenCL platform");
  }
  for (cl_uint p = 0; p < np; ++p) {
    cl_device_id devices[64];
    cl_uint nd = 0;
    if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 64, devices, &nd) != CL_SUCCESS) continue;
    for (cl_uint d = 0; d < nd && d < 64; ++d) {
      clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
      cr_assert_eq(clattn_device_query(devices[d], &info), CLATTN_SUCCESS, "device %u:%u", p, d);
      cr_assert_str_neq(info.name, "", "device %u:%u", p, d);
    }
  }
}

/* clattn_device_select resolves to the device clattn_context_create picks. */
Test(context, select_agrees_with_context) {
  clattn_context* ctx = test_context(NULL);
  cl_uint p = 99, d = 99;
  cr_assert_eq(clattn_device_select(NULL, &p, &d), CLATTN_SUCCESS);
  cr_assert_eq(device_at(p, d), context_device(ctx), "select says %u:%u", p, d);
  cr_assert_eq(clattn_device_select(NULL, NULL, NULL), CLATTN_SUCCESS);
  clattn_context_destroy(ctx);
}

Test(context, select_by_index) {
  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  opts.device = "0:0";
  clattn_context* ctx = test_context(&opts);
  cr_assert_eq(context_device(ctx), device_at(0, 0));
  clattn_context_destroy(ctx);
  cl_uint p = 99, d = 99;
  cr_assert_eq(clattn_device_select("0:0", &p, &d), CLATTN_SUCCESS);
  cr_assert(p == 0 && d == 0, "\"0:0\" resolved to %u:%u", p, d);

  /* Through CLATTN_DEVICE. */
  cr_assert_eq(setenv("CLATTN_DEVICE", "0:0", 1), 0);
  ctx = test_context(NULL);
  cr_assert_eq(context_device(ctx), device_at(0, 0));
  clattn_context_destroy(ctx);

  /* options.device wins over the environment. */
  cr_assert_eq(setenv("CLATTN_DEVICE", "no-such-device-xyz", 1), 0);
  ctx = test_context(&opts);
  cr_assert_eq(context_device(ctx), device_at(0, 0));
  clattn_context_destroy(ctx);
  unsetenv("CLATTN_DEVICE");
}

/* A case-changed substring of the device's name, and of its platform's name. */
Test(context, select_by_name) {
  clattn_context* ctx = test_context(NULL);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  cr_assert_eq(clattn_context_get_device_info(ctx, &info), CLATTN_SUCCESS);
  clattn_context_destroy(ctx);

  const char* sources[2] = {info.name, info.platform_name};
  for (int s = 0; s < 2; ++s) {
    const size_t len = strlen(sources[s]);
    const size_t start = len > 6 ? 1 : 0;
    const size_t count = len - start < 8 ? len - start : 8;
    char sub[16];
    for (size_t i = 0; i < count; ++i) {
      const char c = sources[s][start + i];
      sub[i] = (char)(i % 2 ? toupper((unsigned char)c) : tolower((unsigned char)c));
    }
    sub[count] = '\0';
    if (count == 0 || strchr(sub, ':') != NULL) continue;

    clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
    opts.device = sub;
    clattn_context* by_name = NULL;
    clattn_status st = clattn_context_create(&opts, &by_name);
    cr_assert_eq(st, CLATTN_SUCCESS, "selector \"%s\": %s", sub, clattn_status_name(st));
    clattn_device_info got = CLATTN_DEVICE_INFO_INIT;
    cr_assert_eq(clattn_context_get_device_info(by_name, &got), CLATTN_SUCCESS);
    cr_assert(contains_nocase(got.name, sub) || contains_nocase(got.platform_name, sub) ||
                  contains_nocase(got.vendor, sub),
              "selector \"%s\" chose \"%s\" (%s, %s)", sub, got.name, got.platform_name,
              got.vendor);
    cl_uint p = 99, d = 99;
    cr_assert_eq(clattn_device_select(sub, &p, &d), CLATTN_SUCCESS);
    cr_assert_eq(device_at(p, d), context_device(by_name), "select(\"%s\") says %u:%u", sub, p, d);
    clattn_context_destroy(by_name);
  }
}

/* "gpu", "cpu" and "accelerator" pick the first device of that type, in any case. */
Test(context, select_by_type) {
  clattn_context* ctx = test_context(NULL);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  cr_assert_eq(clattn_context_get_device_info(ctx, &info), CLATTN_SUCCESS);
  clattn_context_destroy(ctx);
  const char* keyword = info.type == CLATTN_DEVICE_TYPE_GPU           ? "GPU"
                        : info.type == CLATTN_DEVICE_TYPE_CPU         ? "Cpu"
                        : info.type == CLATTN_DEVICE_TYPE_ACCELERATOR ? "accelerator"
                                                                      : NULL;
  if (!keyword) cr_skip_test("the default device has no standard type");
  cl_uint p = 99, d = 99;
  cr_assert_eq(clattn_device_select(keyword, &p, &d), CLATTN_SUCCESS, "selector %s", keyword);
  cl_device_type type = 0;
  cr_assert_eq(clGetDeviceInfo(device_at(p, d), CL_DEVICE_TYPE, sizeof type, &type, NULL),
               CL_SUCCESS);
  const cl_device_type want = info.type == CLATTN_DEVICE_TYPE_GPU   ? CL_DEVICE_TYPE_GPU
                              : info.type == CLATTN_DEVICE_TYPE_CPU ? CL_DEVICE_TYPE_CPU
                                                                    : CL_DEVICE_TYPE_ACCELERATOR;
  cr_assert(type & want, "selector %s chose %u:%u of type %llu", keyword, p, d,
            (unsigned long long)type);
}

Test(context, get_cl_objects) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, &device, &queue), CLATTN_SUCCESS);
  cr_assert(cl_ctx != NULL && device != NULL && queue != NULL);
  cr_assert_eq(clattn_context_get_cl(ctx, NULL, NULL, NULL), CLATTN_SUCCESS);

  cl_context qctx = NULL;
  cl_device_id qdev = NULL;
  cl_command_queue_properties props = 0;
  cr_assert_eq(clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL),
               CL_SUCCESS);
  cr_assert_eq(clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL), CL_SUCCESS);
  cr_assert_eq(clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL),
               CL_SUCCESS);
  cr_assert_eq(qctx, cl_ctx);
  cr_assert_eq(qdev, device);
  cr_assert_eq(props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, 0, "the queue is out-of-order");
  cr_assert_neq(props & CL_QUEUE_PROFILING_ENABLE, 0, "the queue has no profiling");

  /* A fresh context has no error and no build log. */
  size_t needed = 0;
  char buf[8] = "x";
  cr_assert_eq(clattn_context_get_last_error(ctx, buf, sizeof buf, &needed), CLATTN_SUCCESS);
  cr_assert_str_eq(buf, "");
  cr_assert_eq(needed, 1);
  buf[0] = 'x';
  cr_assert_eq(clattn_context_get_build_log(ctx, buf, sizeof buf, &needed), CLATTN_SUCCESS);
  cr_assert_str_eq(buf, "");
  cr_assert_eq(needed, 1);
  cr_assert_eq(clattn_context_get_last_error(ctx, NULL, 0, NULL), CLATTN_SUCCESS);
  clattn_context_destroy(ctx);
}

static cl_uint queue_refs(cl_command_queue queue) {
  cl_uint n = 0;
  cr_assert_eq(clGetCommandQueueInfo(queue, CL_QUEUE_REFERENCE_COUNT, sizeof n, &n, NULL),
               CL_SUCCESS);
  return n;
}

static cl_uint context_refs(cl_context cl_ctx) {
  cl_uint n = 0;
  cr_assert_eq(clGetContextInfo(cl_ctx, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL),
               CL_SUCCESS);
  return n;
}

/* Reference counts read after a release may still include references an implementation
 * drops asynchronously (PoCL: buffers keep their last queue until its completion is
 * processed), so wait up to 5 s for the count to settle at `expected`. */
static void short_sleep(void) {
  struct timespec t = {0, 10 * 1000 * 1000};
  nanosleep(&t, NULL);
}

static cl_uint settled_queue_refs(cl_command_queue queue, cl_uint expected) {
  cl_uint n = queue_refs(queue);
  for (int i = 0; i < 500 && n > expected; ++i) {
    short_sleep();
    n = queue_refs(queue);
  }
  return n;
}

static cl_uint settled_context_refs(cl_context cl_ctx, cl_uint expected) {
  cl_uint n = context_refs(cl_ctx);
  for (int i = 0; i < 500 && n > expected; ++i) {
    short_sleep();
    n = context_refs(cl_ctx);
  }
  return n;
}

/* Checks that a queue still works: a write and read round trip. */
static void queue_round_trip(cl_context cl_ctx, cl_command_queue queue) {
  cl_int err = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, 16 * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  float in[16], out[16];
  for (int i = 0; i < 16; ++i) in[i] = (float)i * 0.5f;
  cr_assert_eq(clEnqueueWriteBuffer(queue, mem, CL_TRUE, 0, sizeof in, in, 0, NULL, NULL),
               CL_SUCCESS);
  cr_assert_eq(clEnqueueReadBuffer(queue, mem, CL_TRUE, 0, sizeof out, out, 0, NULL, NULL),
               CL_SUCCESS);
  cr_assert_eq(memcmp(in, out, sizeof in), 0);
  clReleaseMemObject(mem);
}

/* Creates the caller's own cl_context and in-order queue on the default device. */
static void caller_objects(cl_context* cl_ctx, cl_device_id* device, cl_command_queue* queue) {
  cl_uint p = 0, d = 0;
  clattn_status st = clattn_device_select(NULL, &p, &d);
  if (st == CLATTN_ERROR_NO_DEVICE) cr_skip_test("no OpenCL device");
  cr_assert_eq(st, CLATTN_SUCCESS, "%s", clattn_status_name(st));
  *device = device_at(p, d);
  cl_int err = CL_SUCCESS;
  *cl_ctx = clCreateContext(NULL, 1, device, NULL, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateContext: %d", (int)err);
  *queue = clCreateCommandQueue(*cl_ctx, *device, 0, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateCommandQueue: %d", (int)err);
}

/* The caller's objects: used for the work, untouched after destroy. */
Test(context, caller_queue, .timeout = 120.0) {
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  cl_command_queue queue = NULL;
  caller_objects(&cl_ctx, &device, &queue);
  const cl_uint queue_before = queue_refs(queue), ctx_before = context_refs(cl_ctx);

  /* options.device is ignored here. */
  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  opts.device = "no-such-device-xyz";
  clattn_context* ctx = NULL;
  clattn_status st = clattn_context_create_from_cl(cl_ctx, device, queue, &opts, &ctx);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s", clattn_status_name(st));
  cl_context got_ctx = NULL;
  cl_device_id got_dev = NULL;
  cl_command_queue got_queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &got_ctx, &got_dev, &got_queue), CLATTN_SUCCESS);
  cr_assert_eq(got_ctx, cl_ctx);
  cr_assert_eq(got_dev, device);
  cr_assert_eq(got_queue, queue);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  cr_assert_eq(clattn_context_get_device_info(ctx, &info), CLATTN_SUCCESS);
  char name[256];
  device_string(device, CL_DEVICE_NAME, name, sizeof name);
  cr_assert_str_eq(info.name, name);

  /* Work on the adopted queue, both entry points. */
  for (int v = CLATTN_VARIANT_TILED_LOCAL; v <= CLATTN_VARIANT_REGISTER_BLOCKED; ++v) {
    clattn_attention_desc desc = test_desc(1, 2, 2, 33, 47, 32, 1);
    test_run_host(ctx, &desc, (clattn_variant)v, NULL, 100 + (uint64_t)v);

    test_problem p;
    test_problem_init(&p, &desc, 200 + (uint64_t)v);
    cl_int err = CL_SUCCESS;
    cl_mem mq = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                               p.nq * sizeof(float), p.q, &err);
    cl_mem mk = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                               p.nk * sizeof(float), p.k, &err);
    cl_mem mv = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                               p.nv * sizeof(float), p.v, &err);
    cl_mem mo = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, p.no * sizeof(float), NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
    b.q = mq;
    b.k = mk;
    b.v = mv;
    b.o = mo;
    clattn_attention_config config = test_config((clattn_variant)v);
    st = clattn_attention(ctx, &desc, &b, &config, queue, 0, NULL, NULL);
    cr_assert_eq(st, CLATTN_SUCCESS, "%s (%s)", clattn_status_name(st), test_last_error(ctx));
    cr_assert_eq(
        clEnqueueReadBuffer(queue, mo, CL_TRUE, 0, p.no * sizeof(float), p.o, 0, NULL, NULL),
        CL_SUCCESS);
    char label[256];
    test_label(label, sizeof label, &desc, (clattn_variant)v);
    test_check(&desc, p.q, p.k, p.v, NULL, p.o, NULL, label);
    clReleaseMemObject(mq);
    clReleaseMemObject(mk);
    clReleaseMemObject(mv);
    clReleaseMemObject(mo);
    test_problem_free(&p);
  }
  cr_assert_eq(clFinish(queue), CL_SUCCESS);
  cr_assert_eq(clattn_context_destroy(ctx), CLATTN_SUCCESS);

  /* Everything the library took is given back; the objects still work. */
  const cl_uint queue_after = settled_queue_refs(queue, queue_before);
  cr_assert_eq(queue_after, queue_before, "queue reference count %u, was %u", queue_after,
               queue_before);
  const cl_uint ctx_after = settled_context_refs(cl_ctx, ctx_before);
  cr_assert_eq(ctx_after, ctx_before, "cl_context reference count %u, was %u", ctx_after,
               ctx_before);
  queue_round_trip(cl_ctx, queue);
  clReleaseCommandQueue(queue);
  clReleaseContext(cl_ctx);
}

/* The context keeps its own references: the caller may release its objects first. */
Test(context, caller_releases_first, .timeout = 120.0) {
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  cl_command_queue queue = NULL;
  caller_objects(&cl_ctx, &device, &queue);
  clattn_context* ctx = NULL;
  clattn_status st = clattn_context_create_from_cl(cl_ctx, device, queue, NULL, &ctx);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s", clattn_status_name(st));
  clReleaseCommandQueue(queue);
  clReleaseContext(cl_ctx);
  clattn_attention_desc desc = test_desc(1, 2, 1, 20, 20, 16, 0);
  for (int v = CLATTN_VARIANT_TILED_LOCAL; v <= CLATTN_VARIANT_REGISTER_BLOCKED; ++v) {
    test_run_host(ctx, &desc, (clattn_variant)v, NULL, 300 + (uint64_t)v);
  }
  cr_assert_eq(clattn_context_destroy(ctx), CLATTN_SUCCESS);
}

/* Two contexts on one device are independent. */
Test(context, two_contexts) {
  clattn_context* a = test_context(NULL);
  clattn_context* b = test_context(NULL);
  clattn_attention_desc desc = test_desc(1, 1, 1, 10, 10, 8, 1);
  test_run_host(a, &desc, CLATTN_VARIANT_AUTO, NULL, 1);
  clattn_context_destroy(a);
  test_run_host(b, &desc, CLATTN_VARIANT_AUTO, NULL, 2);
  clattn_context_destroy(b);
}

Test(context, version) {
  int major = -1, minor = -1, patch = -1;
  cr_assert_eq(clattn_version(&major, &minor, &patch), CLATTN_SUCCESS);
  cr_assert_eq(major, CLATTN_VERSION_MAJOR);
  cr_assert_eq(minor, CLATTN_VERSION_MINOR);
  cr_assert_eq(patch, CLATTN_VERSION_PATCH);
  char text[64];
  snprintf(text, sizeof text, "%d.%d.%d", major, minor, patch);
  cr_assert_str_eq(text, CLATTN_VERSION_STRING);
  cr_assert_eq(CLATTN_VERSION_NUMBER, major * 10000 + minor * 100 + patch);
  int only_minor = -1;
  cr_assert_eq(clattn_version(NULL, &only_minor, NULL), CLATTN_SUCCESS);
  cr_assert_eq(only_minor, minor);
}

/* With CLATTN_TEST_EXPECT_PLATFORM set (the platform_oclgrind_* CTest entries), the context
 * that CLATTN_DEVICE selects is on that platform, and a context on another platform's device
 * (given by index) is not: the device choice of those runs is checked, not assumed. */
Test(context, expected_platform) {
  const char* want = getenv("CLATTN_TEST_EXPECT_PLATFORM");
  if (want == NULL || *want == '\0') cr_skip_test("CLATTN_TEST_EXPECT_PLATFORM is not set");
  clattn_context* ctx = test_context(NULL);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  cr_assert_eq(clattn_context_get_device_info(ctx, &info), CLATTN_SUCCESS);
  cr_assert(strstr(info.platform_name, want) != NULL,
            "CLATTN_DEVICE=%s chose \"%s\" on platform \"%s\", expected platform \"%s\"",
            getenv("CLATTN_DEVICE") ? getenv("CLATTN_DEVICE") : "(unset)", info.name,
            info.platform_name, want);
  clattn_context_destroy(ctx);
  cl_uint np = 0;
  cr_assert_eq(clGetPlatformIDs(0, NULL, &np), CL_SUCCESS);
  for (cl_uint p = 0; p < np; ++p) {
    char spec[32];
    snprintf(spec, sizeof spec, "%u:0", (unsigned)p);
    clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
    opts.device = spec;
    if (clattn_context_create(&opts, &ctx) != CLATTN_SUCCESS) continue;
    clattn_device_info other = CLATTN_DEVICE_INFO_INIT;
    cr_assert_eq(clattn_context_get_device_info(ctx, &other), CLATTN_SUCCESS);
    clattn_context_destroy(ctx);
    cr_assert_eq(strcmp(other.platform_name, info.platform_name) == 0,
                 strstr(other.platform_name, want) != NULL, "selector %s chose platform \"%s\"",
                 spec, other.platform_name);
  }
}
