/* TILED_LOCAL (cl/attention_tiled.cl), the GPU-style variant: a work-group owns block_m query
 * rows, threads_per_row work-items share each row's head dim, and block_n keys and values at
 * a time are staged in local memory. */
#include <stdio.h>

#include "internal.h"

/* Defaults, from sweeps on an H100 and an H200 (tools/gpu-check.sh, N = 4096): the head dim
 * is shared by 2 work-items from head_dim 33 on and by 4 from 192 on (fewer registers each),
 * work-groups have 256 work-items (at most 128 rows), and tiles have 32 keys with one
 * work-item per row, else 16 (or fewer where local memory is short). */
#define GROUP_ITEMS 256
#define MAX_BLOCK_M 128

static int is_pow2(unsigned x) { return x && !(x & (x - 1)); }

static size_t group_size(const clattn_attention_config* c) {
  return (size_t)c->block_m * c->threads_per_row;
}

/* K and V tiles with rows padded to a multiple of 4 * threads_per_row, and the partial dot
 * products when rows are shared (cl/attention_tiled.cl). */
static size_t local_bytes(size_t head_dim, const clattn_attention_config* c) {
  size_t chunk = 4 * (size_t)c->threads_per_row; /* float4 chunks per row, one each */
  size_t tpr = c->threads_per_row;
  size_t dpad = (head_dim + chunk - 1) / chunk * chunk;
  size_t bytes = 2 * (size_t)c->block_n * dpad;
  if (tpr > 1) bytes += (size_t)c->block_m * (c->block_n + 1) * tpr;
  return bytes * sizeof(float);
}

/* The default for GPUs and accelerators; elsewhere it runs, but register_blocked is better. */
static int preference(const clattn_device_info* info, const clattn__attention_shape* shape) {
  (void)shape;
  return info->type == CLATTN_DEVICE_TYPE_CPU || info->type == CLATTN_DEVICE_TYPE_OTHER ? 1 : 2;
}

static void defaults(const clattn_device_info* info, const clattn__attention_shape* shape,
                     clattn_attention_config* c) {
  /* Several work-items per row keep the registers per work-item bounded for large head
   * dims and give the device more work-items. */
  if (!c->threads_per_row) {
    c->threads_per_row = shape->head_dim >= 192 ? 4 : shape->head_dim > 32 ? 2 : 1;
  }
  const int default_m = !c->block_m;
  if (default_m) {
    unsigned m = GROUP_ITEMS / c->threads_per_row; /* >= 8: threads_per_row <= 32 */
    if (m > MAX_BLOCK_M) m = MAX_BLOCK_M;
    while (m > 1 && (size_t)m * c->threads_per_row > clattn__max_group(info)) m /= 2;
    c->block_m = m;
  }
  if (!c->block_n) {
    c->block_n = c->threads_per_row == 1 ? 32 : 16;
    while (c->block_n > 1 && local_bytes(shape->head_dim, c) > clattn__local_budget(info)) {
      c->block_n /= 2;
    }
  } else if (default_m) {
    /* A given block_n: fewer rows per group where the tiles do not fit beside them. */
    while (c->block_m > 1 && local_bytes(shape->head_dim, c) > clattn__local_budget(info)) {
      c->block_m /= 2;
    }
  }
  c->rows_per_item = 1;
}

static clattn_status check(const clattn_context* ctx, const clattn_device_info* info,
                           size_t head_dim, const clattn_attention_config* c) {
  if (!is_pow2(c->threads_per_row) || c->threads_per_row > 32) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "threads_per_row %u must be a power of two up to 32", c->threads_per_row);
  }
  if (c->block_m < 1 || group_size(c) > clattn__max_group(info)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "block_m %u x threads_per_row %u is outside 1..%zu (the device's "
                        "work-group limit)",
                        c->block_m, c->threads_per_row, clattn__max_group(info));
  }
  if (!is_pow2(c->block_n) || c->block_n > 256) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "block_n %u must be a power of two up to 256", c->block_n);
  }
  if (c->rows_per_item != 1) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "rows_per_item must be 1 for the tiled variant");
  }
  size_t need = local_bytes(head_dim, c);
  if (need > clattn__local_budget(info)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "block_n %u with head_dim %zu needs %zu bytes of local memory; the "
                        "device has %llu",
                        c->block_n, head_dim, need, (unsigned long long)info->local_mem_size);
  }
  return CLATTN_SUCCESS;
}

static int shrink(clattn_attention_config* c) {
  if (c->block_m > 1) {
    c->block_m /= 2;
    return 1;
  }
  if (c->threads_per_row > 1) {
    c->threads_per_row /= 2;
    return 1;
  }
  if (c->block_n > 1) {
    c->block_n /= 2;
    return 1;
  }
  return 0;
}

static void build_options(const clattn__attention_shape* shape, const clattn_attention_config* c,
                          char* options, size_t size) {
  snprintf(options, size, "-DHEAD_DIM=%zu -DBLOCK_M=%u -DBLOCK_N=%u -DTPR=%u", shape->head_dim,
           c->block_m, c->block_n, c->threads_per_row);
}

static size_t workspace_bytes(const clattn__attention_shape* shape,
                              const clattn_attention_config* c) {
  (void)shape;
  (void)c;
  return 0;
}

static clattn_status enqueue(const clattn__launch* l) {
  clattn_status status = CLATTN_SUCCESS;
  const clattn__attention_shape* sh = l->shape;
  const clattn_attention_config* c = &l->plan->config;
  cl_kernel main = l->plan->kernels[0];
  cl_uint next = 0;
  CLATTN__CL_CHECK(l->ctx, clattn__set_attention_args(main, sh, l->buffers, &next));
  const size_t group = group_size(c);
  const size_t blocks = (sh->seq_q + c->block_m - 1) / c->block_m;
  size_t global[3] = {blocks * group, sh->heads_q, sh->batch};
  size_t local[3] = {group, 1, 1};
  CLATTN__CL_CHECK(l->ctx,
                   clEnqueueNDRangeKernel(l->queue, main, 3, NULL, global, local, l->num_wait,
                                          l->num_wait ? l->wait : NULL, l->event));
cleanup:
  return status;
}

static size_t tuning_space(const clattn_device_info* info, size_t head_dim,
                           clattn_attention_config* list, size_t cap) {
  static const unsigned tprs[] = {1, 2, 4, 8};
  static const unsigned bms[] = {4, 8, 16, 32, 64, 128};
  static const unsigned bns[] = {4, 8, 16, 32, 64};
  size_t n = 0;
  for (size_t i = 0; i < sizeof tprs / sizeof tprs[0]; ++i) {
    /* More work-items per row than float4 chunks in the head dim only idle. */
    if (4 * tprs[i] > (head_dim > 4 ? head_dim : 4)) continue;
    for (size_t m = 0; m < sizeof bms / sizeof bms[0]; ++m) {
      for (size_t b = 0; b < sizeof bns / sizeof bns[0] && n < cap; ++b) {
        clattn_attention_config c = {.struct_size = sizeof c,
                                     .variant = CLATTN_VARIANT_TILED_LOCAL,
                                     .block_m = bms[m],
                                     .block_n = bns[b],
                                     .rows_per_item = 1,
                                     .threads_per_row = tprs[i]};
        if (check(NULL, info, head_dim, &c) == CLATTN_SUCCESS) list[n++] = c;
      }
    }
  }
  return n;
}

static void describe(const clattn_attention_config* c, char* buf, size_t size) {
  snprintf(buf, size, "block_m=%u block_n=%u threads_per_row=%u", c->block_m, c->block_n,
           c->threads_per_row);
}

const clattn__variant clattn__variant_tiled_local = {
    .id = CLATTN_VARIANT_TILED_LOCAL,
    .name = "tiled_local",
    .short_name = "tiled",
    .source = "attention_tiled",
    .kernels = {"clattn_attention_tiled", NULL},
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
