/* Rejected inputs that tests/test_errors.c does not cover, each with its exact status (the
 * README's bad-input table points at the test of every row): malformed device selectors,
 * non-finite scales, output strides that make rows overlap, an over-long kernel directory. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Buffers are checked for what they are, not only for their size: a buffer of another
 * cl_context, an image, and an O that overlaps Q, K or V in one cl_mem are each refused
 * with INVALID_ARGUMENT and a message naming the tensor. */
Test(bad_input, foreign_image_and_aliased_buffers) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = test_desc(1, 2, 2, 8, 8, 16, 0);
  const size_t n = 2 * 8 * 16;
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, &device, NULL), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem big = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, 4 * n * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_context other_ctx = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);
  cl_mem foreign = clCreateBuffer(other_ctx, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
  cr_assert_eq(err, CL_SUCCESS);

  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = b.k = b.v = b.o = big;
  b.k_offset = n;
  b.v_offset = 2 * n;
  b.o_offset = 3 * n;
  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, NULL, NULL, &queue), CLATTN_SUCCESS);
  cr_assert_eq(clFinish(queue), CL_SUCCESS);

  b.o_offset = 2 * n + 5; /* inside V */
  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert(strstr(test_last_error(ctx), "o overlaps v") != NULL, "%s", test_last_error(ctx));
  b.o_offset = 3 * n;

  b.k = foreign;
  b.k_offset = 0;
  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert(strstr(test_last_error(ctx), "k belongs to another cl_context") != NULL, "%s",
            test_last_error(ctx));
  b.k = big;
  b.k_offset = n;

  const cl_image_format format = {CL_RGBA, CL_FLOAT};
  cl_image_desc image_desc = {
      .image_type = CL_MEM_OBJECT_IMAGE2D, .image_width = 64, .image_height = 64};
  cl_mem image = clCreateImage(cl_ctx, CL_MEM_READ_WRITE, &format, &image_desc, NULL, &err);
  if (err == CL_SUCCESS) {
    b.v = image;
    b.v_offset = 0;
    ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, NULL, 0, NULL, NULL),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(test_last_error(ctx), "v is an image") != NULL, "%s", test_last_error(ctx));
    clReleaseMemObject(image);
  } else {
    cr_log_info("no image support here (%d): the image case was not run", err);
  }
  clReleaseMemObject(foreign);
  clReleaseContext(other_ctx);
  clReleaseMemObject(big);
  clattn_context_destroy(ctx);
}

/* Default strides whose products overflow size_t are reported as too large for 32-bit
 * indexing (UNSUPPORTED), not as overlapping rows. */
Test(bad_input, overflowing_default_strides) {
  clattn_attention_desc desc =
      test_desc(1, (size_t)1 << 31, (size_t)1 << 31, INT32_MAX, INT32_MAX, 256, 0);
  size_t n = 0;
  ASSERT_STATUS(clattn_attention_tensor_size(&desc, 'q', &n), CLATTN_ERROR_UNSUPPORTED);
  char msg[2048];
  clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
  cr_assert(strstr(msg, "spans more than 2^32") != NULL, "message \"%s\"", msg);
}

/* A kernel directory where a kernel file is a FIFO or a directory: the call fails with
 * KERNEL_SOURCE and says what the path is, without waiting for a writer or reading a
 * nonsensical size (the suite's timeout catches a hang). */
Test(bad_input, kernel_file_that_is_not_a_regular_file, .timeout = 60) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/clattn-kdir-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  cr_assert_not_null(mkdtemp(dir));
  char cmd[8400];
  snprintf(cmd, sizeof cmd, "cp '%s'/cl/*.cl '%s'/", CLATTN_SOURCE_DIR, dir);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  char path[4200];
  snprintf(path, sizeof path, "%s/attention_regblock.cl", dir);
  cr_assert_eq(unlink(path), 0);
  cr_assert_eq(mkfifo(path, 0600), 0);
  snprintf(path, sizeof path, "%s/attention_tiled.cl", dir);
  cr_assert_eq(unlink(path), 0);
  cr_assert_eq(mkdir(path, 0700), 0);
  clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
  opts.kernel_dir = dir;
  clattn_context* ctx = test_context(&opts);
  const clattn_attention_desc desc = test_desc(1, 2, 2, 8, 8, 16, 0);
  const struct {
    clattn_variant variant;
    const char* says;
  } cases[] = {{CLATTN_VARIANT_REGISTER_BLOCKED, "a FIFO"},
               {CLATTN_VARIANT_TILED_LOCAL, "a directory"}};
  for (int i = 0; i < 2; ++i) {
    const clattn_attention_config config = test_config(cases[i].variant);
    clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
    ASSERT_STATUS(clattn_attention_get_config(ctx, &desc, &config, &used),
                  CLATTN_ERROR_KERNEL_SOURCE);
    cr_assert(strstr(test_last_error(ctx), cases[i].says) != NULL, "%s", test_last_error(ctx));
  }
  clattn_context_destroy(ctx);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

/* Handles of the wrong kind: a command queue passed as a buffer and a buffer passed as the
 * queue are named as such (PoCL does not check an object's kind and reads the queue's fields
 * as a buffer's, and the buffer's flags as queue properties: before, "q holds 0 bytes" and
 * "the command queue is out-of-order"). The layer's input goes through the same checks. */
Test(bad_input, handles_of_the_wrong_kind) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = test_desc(1, 2, 2, 8, 8, 16, 0);
  const size_t n = 2 * 8 * 16;
  cl_context cl_ctx = NULL;
  cl_command_queue queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, &queue), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem mem[4];
  for (int i = 0; i < 4; ++i) {
    mem[i] = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
  }
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = mem[0];
  b.k = mem[1];
  b.v = mem[2];
  b.o = mem[3];
  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, queue, 0, NULL, NULL), CLATTN_SUCCESS);
  cr_assert_eq(clFinish(queue), CL_SUCCESS);

  b.q = (cl_mem)queue;
  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, queue, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert(strstr(test_last_error(ctx), "q is not a valid cl_mem") != NULL, "%s",
            test_last_error(ctx));
  b.q = (cl_mem)cl_ctx;
  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, queue, 0, NULL, NULL),
                CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert(strstr(test_last_error(ctx), "q is not a valid cl_mem") != NULL, "%s",
            test_last_error(ctx));
  b.q = mem[0];

  ASSERT_STATUS(clattn_attention(ctx, &desc, &b, NULL, (cl_command_queue)mem[1], 0, NULL, NULL),
                CLATTN_ERROR_INVALID_QUEUE);
  cr_assert(strstr(test_last_error(ctx), "the queue is not a valid command queue") != NULL, "%s",
            test_last_error(ctx));
  cr_assert(strstr(test_last_error(ctx), "out-of-order") == NULL, "%s", test_last_error(ctx));

  /* A wrong queue for clattn_context_create_from_cl is refused the same way. */
  cl_device_id device = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, NULL, &device, NULL), CLATTN_SUCCESS);
  clattn_context* other = NULL;
  ASSERT_STATUS(
      clattn_context_create_from_cl(cl_ctx, device, (cl_command_queue)mem[1], NULL, &other),
      CLATTN_ERROR_INVALID_QUEUE);
  cr_assert_null(other);
  char msg[2048];
  clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
  cr_assert(strstr(msg, "the queue is not a valid command queue") != NULL, "%s", msg);
  for (int i = 0; i < 4; ++i) clReleaseMemObject(mem[i]);
  clattn_context_destroy(ctx);
}
