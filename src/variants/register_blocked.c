/* REGISTER_BLOCKED (cl/attention_regblock.cl), the CPU-style variant: K is first staged
 * transposed into the workspace (keys contiguous, tiles of block_n), then each work-item
 * keeps rows_per_item query rows in registers and walks the keys block_n at a time in float
 * vectors, with no barrier. In 16-bit K/V storage V is staged as float too, so that the P·V
 * loop, which reads each value once per block of query rows, widens it once. */
#include <stdint.h>
#include <stdio.h>

#include "internal.h"

#define DEFAULT_ROWS 8
#define DEFAULT_BLOCK_N 32
/* Work-items per group of V's staging kernel (one a key row). */
#define STAGE_V_GROUP 16

static size_t group_size(const clattn_attention_config* c) {
  (void)c;
  return 1;
}

/* The default on CPUs (and devices of no known type); a GPU runs it, slowly. */
static int preference(const clattn_device_info* info, const clattn__attention_shape* shape) {
  (void)shape;
  return info->type == CLATTN_DEVICE_TYPE_CPU || info->type == CLATTN_DEVICE_TYPE_OTHER ? 2 : 1;
}

static void defaults(const clattn_device_info* info, const clattn__attention_shape* shape,
                     clattn_attention_config* c) {
  (void)info;
  (void)shape;
  if (!c->rows_per_item) c->rows_per_item = c->block_m ? c->block_m : DEFAULT_ROWS;
  if (!c->block_m) c->block_m = c->rows_per_item;
  if (!c->block_n) c->block_n = DEFAULT_BLOCK_N;
  if (!c->threads_per_row) c->threads_per_row = 1;
}

static clattn_status check(const clattn_context* ctx, const clattn_device_info* info,
                           size_t head_dim, const clattn_attention_config* c) {
  (void)info;
  (void)head_dim;
  if (c->rows_per_item < 1 || c->rows_per_item > 16 || c->block_m != c->rows_per_item) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "rows_per_item %u must be 1..16 and block_m equal to it (got %u)",
                        c->rows_per_item, c->block_m);
  }
  if (c->threads_per_row != 1) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "threads_per_row must be 1 for the register-blocked variant");
  }
  if (c->block_n < 16 || c->block_n > 256 || c->block_n % 16) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "block_n %u must be a multiple of 16 from 16 to 256", c->block_n);
  }
  return CLATTN_SUCCESS;
}

static int shrink(clattn_attention_config* c) {
  if (c->rows_per_item <= 1) return 0;
  c->rows_per_item /= 2;
  c->block_m = c->rows_per_item;
  return 1;
}

/* P·V runs in vectors of the widest width that divides the head dim. */
static unsigned pv_vec(size_t head_dim) {
  for (unsigned w = 16; w > 1; w /= 2) {
    if (head_dim % w == 0) return w;
  }
  return 1;
}

static void build_options(const clattn__attention_shape* shape, const clattn_attention_config* c,
                          char* options, size_t size) {
  snprintf(options, size, "-DHEAD_DIM=%zu -DROWS=%u -DBLOCK_N=%u -DPV_VEC=%u", shape->head_dim,
           c->rows_per_item, c->block_n, pv_vec(shape->head_dim));
}

/* The pitch, in floats, of one head-dim row of the staged Kᵀ: seq_kv rounded up to block_n. */
static size_t kt_stride(const clattn__attention_shape* shape, const clattn_attention_config* c) {
  return (shape->seq_kv + c->block_n - 1) / c->block_n * c->block_n;
}

/* Floats of one staged tensor: batch * heads_kv * head_dim rows of kt_stride floats (Kᵀ; V's
 * copy has the same size, kt_stride rows of head_dim per (batch, kv head)). */
static size_t staged_floats(const clattn__attention_shape* shape,
                            const clattn_attention_config* c) {
  const size_t stride = kt_stride(shape, c);
  const size_t rows = shape->batch * shape->heads_kv * shape->head_dim; /* < 2^41: checked */
  if (stride > UINT32_MAX || rows > UINT32_MAX / stride) return SIZE_MAX;
  return rows * stride;
}

/* The staged Kᵀ, and in 16-bit K/V storage V's float copy after it. */
static size_t workspace_bytes(const clattn__attention_shape* shape,
                              const clattn_attention_config* c) {
  const size_t n = staged_floats(shape, c);
  const size_t copies = shape->kv_dtype == CLATTN_DTYPE_F32 ? 1 : 2;
  if (n == SIZE_MAX || n > UINT32_MAX / copies) return SIZE_MAX;
  return copies * n * sizeof(float);
}

/* Work-items per staging work-group: the largest divisor of head_dim within the device's and
 * the kernel's limits. */
static size_t stage_group(const clattn_device_info* info, size_t kernel_limit, size_t head_dim) {
  size_t limit = clattn__max_group(info);
  if (kernel_limit && kernel_limit < limit) limit = kernel_limit;
  if (info->max_work_item_sizes[1] && info->max_work_item_sizes[1] < limit) {
    limit = info->max_work_item_sizes[1];
  }
  size_t g = head_dim < limit ? head_dim : limit;
  while (g > 1 && head_dim % g) --g;
  return g ? g : 1;
}

static clattn_status enqueue(const clattn__launch* l) {
  clattn_status status = CLATTN_SUCCESS;
  const clattn__attention_shape* sh = l->shape;
  const clattn_attention_config* c = &l->plan->config;
  const clattn_attention_buffers* b = l->buffers;
  cl_kernel main = l->plan->kernels[0], stage = l->plan->kernels[1];
  const size_t stride = kt_stride(sh, c);
  const size_t kt_off = l->workspace_offset / sizeof(float);
  cl_uint a = 0;
  cl_int err = CL_SUCCESS;
  clattn__arg_mem(stage, &a, b->k, &err);
  clattn__arg_uint(stage, &a, b->k_offset, &err);
  clattn__arg_uint(stage, &a, sh->k.batch, &err);
  clattn__arg_uint(stage, &a, sh->k.head, &err);
  clattn__arg_uint(stage, &a, sh->k.seq, &err);
  clattn__arg_uint(stage, &a, sh->heads_kv, &err);
  clattn__arg_uint(stage, &a, sh->seq_kv, &err);
  clattn__arg_mem(stage, &a, l->workspace, &err);
  clattn__arg_uint(stage, &a, kt_off, &err);
  clattn__arg_uint(stage, &a, stride, &err);
  CLATTN__CL_CHECK(l->ctx, err);
  /* One work-item per 16 keys of one dim (the stride is a multiple of block_n, thus of 16),
   * in work-groups across the head dim. The work-group size is explicit and the same for
   * every key length: left to the driver, it follows the global size, and PoCL compiles the
   * kernel again for each one (about 70 ms per new key length on two Zen 5 cores). */
  size_t stage_global[3] = {stride / 16, sh->head_dim, sh->batch * sh->heads_kv};
  size_t stage_local[3] = {
      1, stage_group(&l->ctx->info, l->plan->kernel_group_limit[1], sh->head_dim), 1};
  CLATTN__CL_CHECK(l->ctx,
                   clEnqueueNDRangeKernel(l->queue, stage, 3, NULL, stage_global, stage_local,
                                          l->num_wait, l->num_wait ? l->wait : NULL, NULL));
  /* V's float copy after Kᵀ (16-bit storage only), one work-item per key row in groups of a
   * fixed size (the key count rounded up to it), for the reason given above. */
  const size_t vt_off = kt_off + staged_floats(sh, c);
  if (sh->kv_dtype != CLATTN_DTYPE_F32) {
    cl_kernel stage_v = l->plan->kernels[2];
    a = 0;
    clattn__arg_mem(stage_v, &a, b->v, &err);
    clattn__arg_uint(stage_v, &a, b->v_offset, &err);
    clattn__arg_uint(stage_v, &a, sh->v.batch, &err);
    clattn__arg_uint(stage_v, &a, sh->v.head, &err);
    clattn__arg_uint(stage_v, &a, sh->v.seq, &err);
    clattn__arg_uint(stage_v, &a, sh->heads_kv, &err);
    clattn__arg_uint(stage_v, &a, sh->seq_kv, &err);
    clattn__arg_mem(stage_v, &a, l->workspace, &err);
    clattn__arg_uint(stage_v, &a, vt_off, &err);
    clattn__arg_uint(stage_v, &a, stride, &err);
    CLATTN__CL_CHECK(l->ctx, err);
    size_t v_local[3] = {STAGE_V_GROUP, 1, 1};
    if (v_local[0] > l->plan->kernel_group_limit[2]) v_local[0] = l->plan->kernel_group_limit[2];
    size_t v_global[3] = {(sh->seq_kv + v_local[0] - 1) / v_local[0] * v_local[0], 1,
                          sh->batch * sh->heads_kv};
    CLATTN__CL_CHECK(l->ctx, clEnqueueNDRangeKernel(l->queue, stage_v, 3, NULL, v_global, v_local,
                                                    0, NULL, NULL));
  }

  err = clattn__set_attention_args(main, sh, b, &a);
  clattn__arg_mem(main, &a, l->workspace, &err);
  clattn__arg_uint(main, &a, kt_off, &err);
  clattn__arg_uint(main, &a, stride, &err);
  clattn__arg_mem(main, &a, l->workspace, &err);
  clattn__arg_uint(main, &a, vt_off, &err); /* not read in float32 storage */
  CLATTN__CL_CHECK(l->ctx, err);
  size_t global[3] = {(sh->seq_q + c->rows_per_item - 1) / c->rows_per_item, sh->heads_q,
                      sh->batch};
  size_t local[3] = {1, 1, 1};
  /* The queue is in-order, so the main kernel runs after the staging one. */
  CLATTN__CL_CHECK(
      l->ctx, clEnqueueNDRangeKernel(l->queue, main, 3, NULL, global, local, 0, NULL, l->event));
cleanup:
  return status;
}

static size_t tuning_space(const clattn_device_info* info, size_t head_dim,
                           clattn_attention_config* list, size_t cap) {
  static const unsigned rows[] = {1, 2, 3, 4, 6, 8, 10, 12, 16};
  static const unsigned bns[] = {16, 32, 48, 64, 96, 128};
  size_t n = 0;
  for (size_t r = 0; r < sizeof rows / sizeof rows[0]; ++r) {
    for (size_t k = 0; k < sizeof bns / sizeof bns[0] && n < cap; ++k) {
      clattn_attention_config c = {.struct_size = sizeof c,
                                   .variant = CLATTN_VARIANT_REGISTER_BLOCKED,
                                   .block_m = rows[r],
                                   .block_n = bns[k],
                                   .rows_per_item = rows[r],
                                   .threads_per_row = 1};
      if (check(NULL, info, head_dim, &c) == CLATTN_SUCCESS) list[n++] = c;
    }
  }
  return n;
}

static void describe(const clattn_attention_config* c, char* buf, size_t size) {
  snprintf(buf, size, "rows=%u block_n=%u", c->rows_per_item, c->block_n);
}

const clattn__variant clattn__variant_register_blocked = {
    .id = CLATTN_VARIANT_REGISTER_BLOCKED,
    .name = "register_blocked",
    .short_name = "regblock",
    .source = "attention_regblock",
    .kernels = {"clattn_attention_regblock", "clattn_stage_kt", "clattn_stage_v", NULL},
    .preference = preference,
    .defaults = defaults,
    .check = check,
    .shrink = shrink,
    .build_options = build_options,
    .group_size = group_size,
    .workspace_bytes = workspace_bytes,
    .enqueue = enqueue,
    .tuning_space = tuning_space,
    .describe = describe,
};
