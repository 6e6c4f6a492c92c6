/* SPLIT_KV (cl/attention_splitkv.cl), the decode variant ("flash-decoding"): the query rows
 * of one kv head (heads_q / heads_kv query heads x seq_q positions) are few, so one
 * work-item keeps rows_per_item of them in registers and walks a share of the keys, reading
 * each K and V row once for all of them; the keys of a (batch, kv head) are split across
 * num_splits work-items whose partial results a merge kernel combines exactly. Rows beyond
 * rows_per_item take more chunks (each reads the keys again), so every shape runs, but the
 * variant is preferred only where the rows fit one chunk. It also reads a KV cache's pages in
 * place (clattn__launch.paged). */
#include <stdint.h>
#include <stdio.h>

#include "internal.h"

/* Query rows of one kv head up to which the variant is preferred (one chunk of registers:
 * at head_dim 128, 32 rows of Q and accumulators are 32 KiB). */
#define ROWS_LIMIT 32
/* Default rows per work-item cover the group's rows up to this many floats of Q per
 * work-item (and as many of accumulators). */
#define DEFAULT_ROW_FLOATS 4096
#define MAX_ROWS 64
/* Q and accumulators of one work-item: at most this many floats each (32 KiB). */
#define MAX_ROW_FLOATS 8192
#define DEFAULT_BLOCK_N 16
#define MAX_BLOCK_N 128
/* The default num_splits, chosen per call: enough work-items to fill the compute units this
 * many times over, each split seeing at least MIN_SPLIT_KEYS keys, and at most
 * MAX_AUTO_SPLITS splits. */
#define GROUPS_PER_UNIT 8
#define MIN_SPLIT_KEYS 256
#define MAX_AUTO_SPLITS 64
#define MAX_SPLITS 1024

static size_t group_size(const clattn_attention_config* c) {
  (void)c;
  return 1;
}

/* The most query rows one kv head has in a seq_q bucket: group x (2^(b+1) - 1). */
static size_t bucket_rows(const clattn__attention_shape* shape) {
  const size_t group = shape->heads_q / shape->heads_kv;
  return group * (((size_t)2 << clattn__seq_bucket(shape->seq_q)) - 1);
}

/* Above the others (2 at most) on every device where the rows fit one chunk (decode); never
 * otherwise, except for a KV cache's pages, which only this variant reads. */
static int preference(const clattn_device_info* info, const clattn__attention_shape* shape) {
  (void)info;
  if (bucket_rows(shape) <= ROWS_LIMIT) return 3;
  return shape->paged ? 1 : 0;
}

static void defaults(const clattn_device_info* info, const clattn__attention_shape* shape,
                     clattn_attention_config* c) {
  (void)info;
  if (!c->rows_per_item) {
    size_t rows = c->block_m ? c->block_m : bucket_rows(shape);
    size_t cap = DEFAULT_ROW_FLOATS / shape->head_dim;
    if (cap < 1) cap = 1;
    if (rows > cap) rows = cap;
    if (rows > MAX_ROWS) rows = MAX_ROWS;
    c->rows_per_item = (unsigned)rows;
  }
  if (!c->block_m) c->block_m = c->rows_per_item;
  if (!c->block_n) c->block_n = DEFAULT_BLOCK_N;
  if (!c->threads_per_row) c->threads_per_row = 1;
  /* num_splits 0 stays: chosen per call from the batch, heads, keys and compute units. */
}

static clattn_status check(const clattn_context* ctx, const clattn_device_info* info,
                           size_t head_dim, const clattn_attention_config* c) {
  (void)info;
  if (c->rows_per_item < 1 || c->rows_per_item > MAX_ROWS || c->block_m != c->rows_per_item) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "rows_per_item %u must be 1..%d and block_m equal to it (got %u)",
                        c->rows_per_item, MAX_ROWS, c->block_m);
  }
  if ((size_t)c->rows_per_item * head_dim > MAX_ROW_FLOATS) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "rows_per_item %u x head_dim %zu exceeds %d floats of registers per "
                        "work-item",
                        c->rows_per_item, head_dim, MAX_ROW_FLOATS);
  }
  if (c->threads_per_row != 1) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "threads_per_row must be 1 for the split-KV variant");
  }
  if (c->block_n < 1 || c->block_n > MAX_BLOCK_N) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG, "block_n %u must be 1..%d", c->block_n,
                        MAX_BLOCK_N);
  }
  if (c->num_splits > MAX_SPLITS) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG, "num_splits %u must be 0 (default) to %d",
                        c->num_splits, MAX_SPLITS);
  }
  return CLATTN_SUCCESS;
}

static int shrink(clattn_attention_config* c) {
  if (c->rows_per_item <= 1) return 0;
  c->rows_per_item /= 2;
  c->block_m = c->rows_per_item;
  return 1;
}

/* Loads and stores run in vectors of the widest width that divides the head dim. */
static unsigned vec_width(size_t head_dim) {
  for (unsigned w = 16; w > 1; w /= 2) {
    if (head_dim % w == 0) return w;
  }
  return 1;
}

static void build_options(const clattn__attention_shape* shape, const clattn_attention_config* c,
                          char* options, size_t size) {
  snprintf(options, size, "-DHEAD_DIM=%zu -DROWS=%u -DBLOCK_N=%u -DVEC=%u", shape->head_dim,
           c->rows_per_item, c->block_n, vec_width(shape->head_dim));
}

static size_t chunks(const clattn__attention_shape* shape, const clattn_attention_config* c) {
  const size_t rows = shape->heads_q / shape->heads_kv * shape->seq_q;
  return (rows + c->rows_per_item - 1) / c->rows_per_item;
}

/* The default split count's upper bound, from the keys alone (what the workspace holds). */
static size_t auto_split_bound(const clattn__attention_shape* shape) {
  size_t s = shape->seq_kv / MIN_SPLIT_KEYS;
  if (s < 1) s = 1;
  return s < MAX_AUTO_SPLITS ? s : MAX_AUTO_SPLITS;
}

/* The split count of a call: the config's, or enough work-items (batch x heads_kv x chunks x
 * splits) to fill the compute units GROUPS_PER_UNIT times, within auto_split_bound. */
static size_t splits_of(const clattn__attention_shape* shape, const clattn_attention_config* c,
                        cl_uint compute_units) {
  if (c->num_splits) return c->num_splits;
  const size_t base = shape->batch * shape->heads_kv * chunks(shape, c);
  const size_t target = (size_t)(compute_units ? compute_units : 1) * GROUPS_PER_UNIT;
  size_t s = (target + base - 1) / base;
  const size_t bound = auto_split_bound(shape);
  return s < 1 ? 1 : s > bound ? bound : s;
}

/* Partial results of every split: rows x splits x (head_dim accumulators + max + sum), for
 * the config's split count or the default's bound. One split writes O directly: none. */
static size_t workspace_bytes(const clattn__attention_shape* shape,
                              const clattn_attention_config* c) {
  const size_t splits = c->num_splits ? c->num_splits : auto_split_bound(shape);
  if (splits <= 1) return 0;
  const size_t rows = shape->batch * shape->heads_q * shape->seq_q; /* < 2^32: checked */
  const size_t per = splits * (shape->head_dim + 2);                /* < 2^19 */
  if (rows > UINT32_MAX / per) return SIZE_MAX;
  return rows * per * sizeof(float);
}

static clattn_status enqueue(const clattn__launch* l) {
  clattn_status status = CLATTN_SUCCESS;
  const clattn__attention_shape* sh = l->shape;
  const clattn_attention_config* c = &l->plan->config;
  const clattn_attention_buffers* b = l->buffers;
  cl_kernel main = l->plan->kernels[0], merge = l->plan->kernels[1];
  const size_t splits = splits_of(sh, c, l->ctx->info.compute_units);
  const size_t rows = sh->batch * sh->heads_q * sh->seq_q;
  const size_t ws_off = l->workspace_offset / sizeof(float);
  const size_t ml_off = ws_off + rows * splits * sh->head_dim;
  const clattn__paged_kv* pg = l->paged;
  /* Unpaged: the lengths stand in for the table and ids, which are never read. */
  cl_mem table = pg ? pg->block_table : b->kv_lengths;
  cl_mem ids = pg ? pg->seq_ids : b->kv_lengths;
  cl_uint a = 0;
  cl_int err = clattn__set_attention_args(main, sh, b, &a);
  clattn__arg_mem(main, &a, splits > 1 ? l->workspace : NULL, &err);
  clattn__arg_uint(main, &a, ws_off, &err);
  clattn__arg_uint(main, &a, ml_off, &err);
  clattn__arg_uint(main, &a, splits, &err);
  clattn__arg_mem(main, &a, table, &err);
  clattn__arg_uint(main, &a, pg ? pg->table_stride : 0, &err);
  clattn__arg_uint(main, &a, pg ? pg->block_tokens : 1, &err);
  clattn__arg_uint(main, &a, pg ? pg->block_stride : 0, &err);
  clattn__arg_mem(main, &a, ids, &err);
  clattn__arg_uint(main, &a, pg != NULL, &err);
  CLATTN__CL_CHECK(l->ctx, err);
  size_t global[3] = {splits, chunks(sh, c) * sh->heads_kv, sh->batch};
  size_t local[3] = {1, 1, 1};
  if (splits == 1) {
    CLATTN__CL_CHECK(l->ctx,
                     clEnqueueNDRangeKernel(l->queue, main, 3, NULL, global, local, l->num_wait,
                                            l->num_wait ? l->wait : NULL, l->event));
    goto cleanup;
  }
  CLATTN__CL_CHECK(l->ctx, clEnqueueNDRangeKernel(l->queue, main, 3, NULL, global, local,
                                                  l->num_wait, l->num_wait ? l->wait : NULL, NULL));
  a = 0;
  clattn__arg_mem(merge, &a, b->o, &err);
  clattn__arg_uint(merge, &a, b->o_offset, &err);
  clattn__arg_uint(merge, &a, sh->o.batch, &err);
  clattn__arg_uint(merge, &a, sh->o.head, &err);
  clattn__arg_uint(merge, &a, sh->o.seq, &err);
  clattn__arg_mem(merge, &a, b->lse, &err);
  clattn__arg_uint(merge, &a, b->lse_offset, &err);
  clattn__arg_uint(merge, &a, b->lse != NULL, &err);
  clattn__arg_uint(merge, &a, sh->heads_q, &err);
  clattn__arg_uint(merge, &a, sh->seq_q, &err);
  clattn__arg_mem(merge, &a, l->workspace, &err);
  clattn__arg_uint(merge, &a, ws_off, &err);
  clattn__arg_uint(merge, &a, ml_off, &err);
  clattn__arg_uint(merge, &a, splits, &err);
  CLATTN__CL_CHECK(l->ctx, err);
  size_t merge_global[1] = {rows};
  size_t merge_local[1] = {1};
  /* The queue is in-order, so the merge runs after the partial kernel. */
  CLATTN__CL_CHECK(l->ctx, clEnqueueNDRangeKernel(l->queue, merge, 1, NULL, merge_global,
                                                  merge_local, 0, NULL, l->event));
cleanup:
  return status;
}

static size_t tuning_space(const clattn_device_info* info, size_t head_dim,
                           clattn_attention_config* list, size_t cap) {
  static const unsigned rows[] = {1, 2, 4, 8, 16, 32};
  static const unsigned bns[] = {8, 16, 32, 64};
  static const unsigned splits[] = {0, 1, 2, 4, 8, 16, 32, 64};
  size_t n = 0;
  for (size_t r = 0; r < sizeof rows / sizeof rows[0]; ++r) {
    for (size_t k = 0; k < sizeof bns / sizeof bns[0]; ++k) {
      for (size_t s = 0; s < sizeof splits / sizeof splits[0] && n < cap; ++s) {
        clattn_attention_config c = {.struct_size = sizeof c,
                                     .variant = CLATTN_VARIANT_SPLIT_KV,
                                     .block_m = rows[r],
                                     .block_n = bns[k],
                                     .rows_per_item = rows[r],
                                     .threads_per_row = 1,
                                     .num_splits = splits[s]};
        if (check(NULL, info, head_dim, &c) == CLATTN_SUCCESS) list[n++] = c;
      }
    }
  }
  return n;
}

static void describe(const clattn_attention_config* c, char* buf, size_t size) {
  if (c->num_splits) {
    snprintf(buf, size, "rows=%u block_n=%u splits=%u", c->rows_per_item, c->block_n,
             c->num_splits);
  } else {
    snprintf(buf, size, "rows=%u block_n=%u splits=auto", c->rows_per_item, c->block_n);
  }
}

const clattn__variant clattn__variant_split_kv = {
    .id = CLATTN_VARIANT_SPLIT_KV,
    .name = "split_kv",
    .short_name = "splitkv",
    .source = "attention_splitkv",
    .kernels = {"clattn_attention_splitkv", "clattn_splitkv_merge", NULL},
    .reads_pages = 1,
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
