/* Rejected inputs that tests/test_errors.c does not cover, each with its exact status (the
 * README's bad-input table points at the test of every row): malformed device selectors,
 * non-finite scales, output strides that make rows overlap, an over-long kernel directory. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"
#include "test_util.h"

#define ASSERT_STATUS(call, expected)                                                            \
  do {                                                                                           \
    clattn_status st_ = (call);                                                                  \
    cr_assert_eq(st_, (expected), "%s returned %s, expected %s", #call, clattn_status_name(st_), \
                 clattn_status_name(expected));                                                  \
  } while (0)

/* A selector that starts with digits and has a colon must be exactly "P:D" with indices up
 * to 2^32 - 1: anything else is INVALID_ARGUMENT, decided before any platform is looked at
 * (so also on a machine without OpenCL), through the option, the environment and
 * clattn_device_select alike. */
Test(bad_input, malformed_device_selectors) {
  static const char* const bad[] = {"1:x",  "1:",           "1:2:3",         "1:2 ", "0:-1",
                                    "1a:2", "4294967296:0", "0:99999999999", "7:0x1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    cl_uint p = 0, d = 0;
    ASSERT_STATUS(clattn_device_select(bad[i], &p, &d), CLATTN_ERROR_INVALID_ARGUMENT);
    char msg[2048];
    clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
    cr_assert(strstr(msg, "malformed device selector") != NULL, "\"%s\": message \"%s\"", bad[i],
              msg);
    clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
    opts.device = bad[i];
    clattn_context* ctx = (clattn_context*)&opts;
    ASSERT_STATUS(clattn_context_create(&opts, &ctx), CLATTN_ERROR_INVALID_ARGUMENT);
    cr_assert_null(ctx);
    cr_assert_eq(setenv("CLATTN_DEVICE", bad[i], 1), 0);
    ctx = (clattn_context*)&opts;
    ASSERT_STATUS(clattn_context_create(NULL, &ctx), CLATTN_ERROR_INVALID_ARGUMENT);
    cr_assert_null(ctx);
    cr_assert_eq(unsetenv("CLATTN_DEVICE"), 0);
  }
  /* Valid forms are not malformed: they select or report no match. */
  static const char* const fine[] = {"4294967295:4294967295", "12abc", " 1:0", ":1"};
  for (size_t i = 0; i < sizeof fine / sizeof fine[0]; ++i) {
    cl_uint p = 0, d = 0;
    clattn_status st = clattn_device_select(fine[i], &p, &d);
    cr_assert(
        st == CLATTN_ERROR_DEVICE_NOT_FOUND || st == CLATTN_ERROR_NO_DEVICE || st == CLATTN_SUCCESS,
        "\"%s\": %s", fine[i], clattn_status_name(st));
  }
}

/* A NaN or infinite scale is INVALID_ARGUMENT (0 means the default, negative is allowed). */
Test(bad_input, non_finite_scale) {
  const float scales[] = {NAN, INFINITY, -INFINITY};
  for (size_t i = 0; i < 3; ++i) {
    clattn_attention_desc desc = test_desc(1, 2, 2, 8, 8, 16, 0);
    desc.scale = scales[i];
    size_t n = 0;
    ASSERT_STATUS(clattn_attention_tensor_size(&desc, 'q', &n), CLATTN_ERROR_INVALID_ARGUMENT);
  }
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = test_desc(1, 2, 2, 8, 8, 16, 0);
  desc.scale = NAN;
  float* x = calloc(2 * 8 * 16, sizeof(float));
  cr_assert_not_null(x);
  ASSERT_STATUS(clattn_attention_host(ctx, &desc, x, x, x, x, NULL, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert(strstr(test_last_error(ctx), "scale") != NULL, "%s", test_last_error(ctx));
  free(x);
  clattn_context_destroy(ctx);
}

/* Output strides under which two rows of O share elements would make work-items race on
 * the same output: INVALID_SHAPE. Q, K and V may overlap (they are only read). */
Test(bad_input, overlapping_output_strides) {
  clattn_attention_desc desc = test_desc(2, 2, 2, 8, 8, 16, 0);
  size_t n = 0;
  desc.o_strides = (clattn_strides){.batch = 2 * 8 * 16, .head = 8 * 16, .seq = 8};
  ASSERT_STATUS(clattn_attention_tensor_size(&desc, 'o', &n), CLATTN_ERROR_INVALID_SHAPE);
  desc.o_strides = (clattn_strides){.batch = 8 * 16, .head = 8 * 16, .seq = 16}; /* batch = head */
  ASSERT_STATUS(clattn_attention_tensor_size(&desc, 'o', &n), CLATTN_ERROR_INVALID_SHAPE);
  desc.o_strides = (clattn_strides){.batch = 2 * 8 * 16, .head = 8 * 16, .seq = 0};
  ASSERT_STATUS(clattn_attention_tensor_size(&desc, 'o', &n), CLATTN_ERROR_INVALID_SHAPE);
  /* The same strides on Q are allowed: rows of Q are only read. */
  desc.o_strides = (clattn_strides){0, 0, 0};
  desc.q_strides = (clattn_strides){.batch = 2 * 8 * 16, .head = 8 * 16, .seq = 8};
  ASSERT_STATUS(clattn_attention_tensor_size(&desc, 'q', &n), CLATTN_SUCCESS);
}

/* A kernel directory path longer than the context can hold: INVALID_ARGUMENT, no context. */
Test(bad_input, kernel_dir_too_long) {
  clattn_context_destroy(test_context(NULL)); /* skips without a device */
  char* dir = malloc(5000);
  cr_assert_not_null(dir);
  memset(dir, 'a', 4999);
  dir[0] = '/';
  dir[4999] = '\0';
  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  opts.kernel_dir = dir;
  clattn_context* ctx = (clattn_context*)&opts;
  ASSERT_STATUS(clattn_context_create(&opts, &ctx), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_null(ctx);
  free(dir);
}
