/* The KV cache: a pool of blocks on the device (cl/kv_cache.cl's layout), each sequence's
 * block list and length on the host, mirrored into a device block table; steps (a call's
 * batch: ids checked, blocks taken, per-batch arrays uploaded) and the append copy.
 *
 * Everything is allocated at creation: a step only rewrites host copies and enqueues
 * non-blocking uploads from them. A host copy is rewritten only once its previous upload has
 * completed (the step slots' ring, the block table's last upload event). */
#include "kv_cache.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kernels index with 32-bit unsigned integers. */
#define MAX_INDEX ((size_t)UINT32_MAX)
#define DEFAULT_BLOCK_TOKENS 16
/* Work-items per group of the copy kernels, at most (dimension 0, the head dim). */
#define COPY_GROUP 64
/* Wait lists up to this long are built on the stack. */
#define STACK_WAITS 16
/* clattn__kv_step.slot of a step whose begin failed: its end does nothing. */
#define NO_SLOT ((size_t)-1)

static size_t ceil_div(size_t a, size_t b) { return a / b + (a % b != 0); }

/* a * b, SIZE_MAX on overflow. */
static size_t mul(size_t a, size_t b) { return a && b > SIZE_MAX / a ? SIZE_MAX : a * b; }

static void lock(const clattn_kv_cache* cache) {
  pthread_mutex_lock((pthread_mutex_t*)&cache->lock);
}
static void unlock(const clattn_kv_cache* cache) {
  pthread_mutex_unlock((pthread_mutex_t*)&cache->lock);
}

/* Waits for a pending upload and forgets it. */
static clattn_status wait_upload(clattn_context* ctx, cl_event* e) {
  if (!*e) return CLATTN_SUCCESS;
  const cl_int err = clWaitForEvents(1, e);
  clReleaseEvent(*e);
  *e = NULL;
  return err == CL_SUCCESS ? CLATTN_SUCCESS
                           : clattn__fail_cl(ctx, err, "clWaitForEvents", __FILE__, __LINE__);
}

/* The initial free stack: block 0 on top, so that a fresh cache hands blocks out in order. */
static void free_stack_reset(clattn_kv_cache* c) {
  for (size_t i = 0; i < c->num_blocks; ++i) c->free_blocks[i] = (int32_t)(c->num_blocks - 1 - i);
  c->free_count = c->num_blocks;
  memset(c->lengths, 0, c->max_sequences * sizeof *c->lengths);
  c->tokens_used = 0;
}

/* Returns the blocks of sequence s past its first `length` tokens to the pool (last block
 * first, so that a rollback restores the stack exactly) and sets its length. Locked. */
static void shrink_to(clattn_kv_cache* c, size_t s, size_t length) {
  const size_t held = ceil_div(c->lengths[s], c->block_tokens);
  const size_t keep = ceil_div(length, c->block_tokens);
  for (size_t k = held; k > keep; --k) {
    c->free_blocks[c->free_count++] = c->host_table[s * c->table_stride + k - 1];
  }
  c->tokens_used -= c->lengths[s] - length;
  c->lengths[s] = length;
}

void clattn__kv_cache_dims(const clattn_kv_cache* cache, size_t* heads_kv, size_t* head_dim) {
  if (heads_kv) *heads_kv = cache->heads_kv;
  if (head_dim) *head_dim = cache->head_dim;
}

void clattn__kv_copy_range(const clattn_kv_cache* c, size_t rows, size_t batch, size_t global[3],
                           size_t local[3]) {
  const size_t g = c->copy_group;
  global[0] = ceil_div(c->head_dim, g) * g;
  global[1] = rows;
  global[2] = batch;
  local[0] = g;
  local[1] = 1;
  local[2] = 1;
}

/* ------------------------------------------------------------ creation */

clattn_status clattn_kv_cache_destroy(clattn_kv_cache* c) {
  if (!c) return CLATTN_SUCCESS;
  cl_mem mems[3] = {c->k_pool, c->v_pool, c->table};
  for (int i = 0; i < 3; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  for (int i = 0; i < CLATTN__KV_STEP_SLOTS; ++i) {
    clattn__kv_slot* s = &c->slots[i];
    cl_mem m[3] = {s->ids, s->start, s->lengths};
    for (int j = 0; j < 3; ++j) {
      if (m[j]) clReleaseMemObject(m[j]);
    }
    if (s->ready) clReleaseEvent(s->ready);
    free(s->host_ids);
    free(s->host_start);
    free(s->host_lengths);
  }
  if (c->table_ready) clReleaseEvent(c->table_ready);
  if (c->append) clReleaseKernel(c->append);
  if (c->append_f32) clReleaseKernel(c->append_f32);
  if (c->gather) clReleaseKernel(c->gather);
  free(c->lengths);
  free(c->host_table);
  free(c->free_blocks);
  pthread_mutex_destroy(&c->lock);
  free(c);
  return CLATTN_SUCCESS;
}

/* Checks a descriptor and fills the cache's dimensions. */
static clattn_status dims_resolve(clattn_context* ctx, const clattn_kv_cache_desc* d,
                                  clattn_kv_cache* c) {
  if (!clattn__dtype_size(d->dtype)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "unknown dtype %d", (int)d->dtype);
  }
  c->dtype = d->dtype;
  if (!d->max_sequences || !d->heads_kv || !d->head_dim || !d->capacity) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "max_sequences, heads_kv, head_dim and capacity must be at least 1");
  }
  if (d->head_dim > CLATTN__MAX_HEAD_DIM) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE, "head_dim %zu is larger than %d",
                        d->head_dim, CLATTN__MAX_HEAD_DIM);
  }
  const size_t bt = d->block_tokens ? d->block_tokens : DEFAULT_BLOCK_TOKENS;
  c->max_sequences = d->max_sequences;
  c->heads_kv = d->heads_kv;
  c->head_dim = d->head_dim;
  c->block_tokens = bt;
  c->num_blocks = ceil_div(d->capacity, bt);
  const size_t pool_tokens = mul(c->num_blocks, bt);
  c->block_stride = mul(mul(d->heads_kv, bt), d->head_dim);
  const size_t pool_elements = mul(c->num_blocks, c->block_stride);
  if (pool_tokens == SIZE_MAX || pool_elements > MAX_INDEX || d->max_sequences > INT32_MAX) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "a pool of %zu blocks of %zu tokens x %zu heads x %zu dims is beyond "
                        "32-bit indexing (or max_sequences %zu is above 2^31 - 1)",
                        c->num_blocks, bt, d->heads_kv, d->head_dim, d->max_sequences);
  }
  /* No sequence can outgrow the pool, and lengths are int32 on the device. */
  size_t max_len = d->max_seq_len ? d->max_seq_len : pool_tokens;
  if (max_len > pool_tokens) max_len = pool_tokens;
  if (max_len > INT32_MAX) max_len = INT32_MAX;
  c->max_seq_len = max_len;
  c->table_stride = ceil_div(max_len, bt);
  if (mul(c->max_sequences, c->table_stride) > MAX_INDEX) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "a block table of %zu sequences x %zu blocks is beyond 32-bit indexing",
                        c->max_sequences, c->table_stride);
  }
  const size_t pool_bytes = pool_elements * clattn__dtype_size(c->dtype);
  if (pool_bytes > ctx->info.max_mem_alloc_size) {
    return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY,
                        "the cache's pool of K (%zu bytes) exceeds the device's allocation limit "
                        "(%llu bytes)",
                        pool_bytes, (unsigned long long)ctx->info.max_mem_alloc_size);
  }
  return CLATTN_SUCCESS;
}

/* The kernels and their work-group size. */
static clattn_status kernels_create(clattn_context* ctx, clattn_kv_cache* c) {
  clattn_status status = CLATTN_SUCCESS;
  size_t limit = clattn__max_group(&ctx->info);
  char options[32];
  snprintf(options, sizeof options, "-DKV_DTYPE=%d", (int)c->dtype);
  CLATTN__CHECK(clattn__kernel_create(ctx, "kv_cache", options, "clattn_kv_append", &c->append));
  CLATTN__CHECK(
      clattn__kernel_create(ctx, "kv_cache", options, "clattn_kv_append_f32", &c->append_f32));
  CLATTN__CHECK(clattn__kernel_create(ctx, "kv_cache", options, "clattn_kv_gather", &c->gather));
  cl_kernel kernels[3] = {c->append, c->append_f32, c->gather};
  for (int i = 0; i < 3; ++i) {
    size_t wg = 0;
    CLATTN__CL_CHECK(
        ctx, clGetKernelWorkGroupInfo(kernels[i], ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg,
                                      &wg, NULL));
    if (wg && wg < limit) limit = wg;
  }
  size_t g = c->head_dim < COPY_GROUP ? c->head_dim : COPY_GROUP;
  if (g > limit) g = limit;
  c->copy_group = g ? g : 1;
cleanup:
  return status;
}

clattn_status clattn_kv_cache_create(clattn_context* ctx, const clattn_kv_cache_desc* desc,
                                     clattn_kv_cache** out) {
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (!out) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "out is NULL");
  *out = NULL;
  if (!desc) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "desc is NULL");
  clattn_kv_cache_desc d;
  clattn_status status =
      clattn__struct_copy(ctx, "clattn_kv_cache_desc", desc, sizeof d, sizeof d, &d);
  if (status != CLATTN_SUCCESS) return status;
  clattn_kv_cache* c = clattn__calloc(1, sizeof *c);
  if (!c) return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  if (pthread_mutex_init(&c->lock, NULL) != 0) {
    free(c);
    return clattn__fail(ctx, CLATTN_ERROR_INTERNAL, "pthread_mutex_init failed");
  }
  c->ctx = ctx;
  CLATTN__CHECK(dims_resolve(ctx, &d, c));

  const size_t table_entries = c->max_sequences * c->table_stride;
  c->lengths = clattn__calloc(c->max_sequences, sizeof *c->lengths);
  c->host_table = clattn__calloc(table_entries, sizeof *c->host_table);
  c->free_blocks = clattn__calloc(c->num_blocks, sizeof *c->free_blocks);
  if (!c->lengths || !c->host_table || !c->free_blocks) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  free_stack_reset(c);
  const size_t pool_bytes = c->num_blocks * c->block_stride * clattn__dtype_size(c->dtype);
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_WRITE, pool_bytes, NULL, &c->k_pool));
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_WRITE, pool_bytes, NULL, &c->v_pool));
  /* Uploaded from the zeroed host mirror: every entry names a valid block from the start. */
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, table_entries * sizeof(int32_t),
                                      c->host_table, &c->table));
  const size_t array_bytes = c->max_sequences * sizeof(int32_t);
  for (int i = 0; i < CLATTN__KV_STEP_SLOTS; ++i) {
    clattn__kv_slot* s = &c->slots[i];
    s->host_ids = clattn__calloc(c->max_sequences, sizeof(int32_t));
    s->host_start = clattn__calloc(c->max_sequences, sizeof(int32_t));
    s->host_lengths = clattn__calloc(c->max_sequences, sizeof(int32_t));
    if (!s->host_ids || !s->host_start || !s->host_lengths) {
      status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
      goto cleanup;
    }
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, array_bytes, NULL, &s->ids));
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, array_bytes, NULL, &s->start));
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, array_bytes, NULL, &s->lengths));
  }
  CLATTN__CHECK(kernels_create(ctx, c));
  *out = c;
  c = NULL;
cleanup:
  clattn_kv_cache_destroy(c);
  return status;
}

/* ------------------------------------------------------------ steps */

/* Undoes the bookkeeping of the step in slot s (count sequences, lengths back to start). */
static void rollback(clattn_kv_cache* c, const clattn__kv_slot* s, size_t count) {
  for (size_t i = count; i > 0; --i) {
    shrink_to(c, (size_t)s->host_ids[i - 1], (size_t)s->host_start[i - 1]);
  }
}

/* Enqueues one non-blocking upload, keeping its event in *last (the previous one released:
 * on an in-order queue the last upload completes after the earlier ones). */
static cl_int upload(cl_command_queue queue, cl_mem mem, size_t offset, size_t bytes,
                     const void* host, cl_event* last) {
  cl_event e = NULL;
  const cl_int err = clEnqueueWriteBuffer(queue, mem, CL_FALSE, offset, bytes, host, 0, NULL, &e);
  if (err != CL_SUCCESS) return err;
  if (*last) clReleaseEvent(*last);
  *last = e;
  return CL_SUCCESS;
}

clattn_status clattn__kv_step_begin(clattn_kv_cache* c, size_t count, const int32_t* ids,
                                    size_t tokens, cl_command_queue queue, clattn__kv_step* step) {
  memset(step, 0, sizeof *step);
  step->slot = NO_SLOT;
  clattn_context* ctx = c->ctx;
  if (!queue) queue = ctx->queue;
  lock(c);
  clattn_status status = CLATTN_SUCCESS;
  size_t filled = 0; /* sequences whose bookkeeping the step has changed */
  int changed = 0;   /* the bookkeeping of `filled` sequences is in place */
  const size_t slot_index = c->next_slot;
  clattn__kv_slot* s = &c->slots[slot_index];
  const size_t bt = c->block_tokens;
  if (!count || count > c->max_sequences) {
    status = clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                          "%zu sequences in one call; the cache holds 1 to %zu", count,
                          c->max_sequences);
    goto cleanup;
  }
  /* The slot's host copies may still be read by its previous upload. */
  CLATTN__CHECK(wait_upload(ctx, &s->ready));

  /* Ids: in range and distinct (a sequence's length marks it as seen: lengths are below
   * 2^31, so the top bit of a size_t is free for the check). */
  const size_t seen = (size_t)1 << (sizeof(size_t) * 8 - 1);
  size_t blocks_needed = 0, max_length = 0;
  for (size_t i = 0; i < count; ++i) {
    const int32_t id = ids ? ids[i] : (int32_t)i;
    if (id < 0 || (size_t)id >= c->max_sequences) {
      status = clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                            "sequence id %d (index %zu) is out of range 0..%zu", (int)id, i,
                            c->max_sequences - 1);
      break;
    }
    if (c->lengths[id] & seen) {
      status = clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                            "sequence id %d appears twice in one call (index %zu)", (int)id, i);
      break;
    }
    const size_t len = c->lengths[id];
    c->lengths[id] |= seen;
    s->host_ids[i] = id;
    filled = i + 1;
    if (status == CLATTN_SUCCESS && tokens > c->max_seq_len - len) {
      status = clattn__fail(ctx, CLATTN_ERROR_CACHE_FULL,
                            "sequence %d holds %zu tokens; %zu more exceed its limit of %zu",
                            (int)id, len, tokens, c->max_seq_len);
    }
    if (status != CLATTN_SUCCESS) break;
    blocks_needed += ceil_div(len + tokens, bt) - ceil_div(len, bt);
    if (len + tokens > max_length) max_length = len + tokens;
  }
  for (size_t i = 0; i < filled; ++i) c->lengths[s->host_ids[i]] &= ~seen;
  if (status != CLATTN_SUCCESS) goto cleanup;
  if (blocks_needed > c->free_count) {
    status = clattn__fail(ctx, CLATTN_ERROR_CACHE_FULL,
                          "%zu new tokens for each of %zu sequences need %zu blocks; %zu of %zu "
                          "are free",
                          tokens, count, blocks_needed, c->free_count, c->num_blocks);
    goto cleanup;
  }

  /* Bookkeeping: blocks taken, lengths grown, the step's arrays filled. */
  if (blocks_needed) CLATTN__CHECK(wait_upload(ctx, &c->table_ready));
  for (size_t i = 0; i < count; ++i) {
    const size_t id = (size_t)s->host_ids[i];
    const size_t len = c->lengths[id];
    for (size_t k = ceil_div(len, bt); k < ceil_div(len + tokens, bt); ++k) {
      c->host_table[id * c->table_stride + k] = c->free_blocks[--c->free_count];
    }
    c->lengths[id] = len + tokens;
    c->tokens_used += tokens;
    s->host_start[i] = (int32_t)len;
    s->host_lengths[i] = (int32_t)(len + tokens);
  }
  changed = 1;
  s->taken = blocks_needed;

  /* Uploads: the new block-table entries of each sequence, then the step's arrays. */
  cl_int err = CL_SUCCESS;
  for (size_t i = 0; i < count && blocks_needed && err == CL_SUCCESS; ++i) {
    const size_t id = (size_t)s->host_ids[i];
    const size_t first = ceil_div((size_t)s->host_start[i], bt);
    const size_t end = ceil_div((size_t)s->host_lengths[i], bt);
    if (end == first) continue;
    const size_t at = id * c->table_stride + first;
    err = upload(queue, c->table, at * sizeof(int32_t), (end - first) * sizeof(int32_t),
                 &c->host_table[at], &c->table_ready);
  }
  const size_t bytes = count * sizeof(int32_t);
  if (err == CL_SUCCESS) err = upload(queue, s->ids, 0, bytes, s->host_ids, &s->ready);
  if (err == CL_SUCCESS) err = upload(queue, s->start, 0, bytes, s->host_start, &s->ready);
  if (err == CL_SUCCESS) err = upload(queue, s->lengths, 0, bytes, s->host_lengths, &s->ready);
  /* Submitted now, so that waiting for these events later cannot wait on an unflushed queue. */
  if (err == CL_SUCCESS) err = clFlush(queue);
  CLATTN__CL_CHECK(ctx, err);

  c->next_slot = (slot_index + 1) % CLATTN__KV_STEP_SLOTS;
  step->count = count;
  step->tokens = tokens;
  step->max_length = max_length;
  step->seq_ids = s->ids;
  step->start = s->start;
  step->lengths = s->lengths;
  step->ready = s->ready;
  step->slot = slot_index;
cleanup:
  if (status != CLATTN_SUCCESS) {
    if (changed) rollback(c, s, count);
    unlock(c);
  }
  return status;
}

clattn_status clattn__kv_step_end(clattn_kv_cache* c, clattn__kv_step* step, clattn_status status) {
  if (step->slot == NO_SLOT) return status; /* its begin failed and released the lock */
  if (status != CLATTN_SUCCESS) rollback(c, &c->slots[step->slot], step->count);
  step->slot = NO_SLOT;
  unlock(c);
  return status;
}

clattn_status clattn__kv_step_append(clattn_kv_cache* c, const clattn__kv_step* step,
                                     clattn_dtype src_dtype, cl_mem k, size_t k_offset,
                                     const clattn_strides* ks, cl_mem v, size_t v_offset,
                                     const clattn_strides* vs, cl_command_queue queue,
                                     cl_uint num_wait, const cl_event* wait, cl_event* event) {
  clattn_context* ctx = c->ctx;
  if (event) *event = NULL;
  if (!queue) queue = ctx->queue;
  if (step->slot == NO_SLOT || !step->tokens) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "the step appends no token (or was not begun)");
  }
  const size_t values[8] = {k_offset, ks->batch, ks->head, ks->seq,
                            v_offset, vs->batch, vs->head, vs->seq};
  for (int i = 0; i < 8; ++i) {
    if (values[i] > MAX_INDEX) {
      return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                          "K or V offsets and strides beyond 32-bit indexing");
    }
  }
  if (src_dtype != c->dtype && src_dtype != CLATTN_DTYPE_F32) {
    return clattn__fail(ctx, CLATTN_ERROR_INTERNAL, "no append from dtype %d into a cache of %d",
                        (int)src_dtype, (int)c->dtype);
  }
  clattn_status status = CLATTN_SUCCESS;
  cl_event stack[STACK_WAITS];
  cl_event* waits = stack;
  const cl_uint n = clattn__kv_waits(num_wait, wait, step->ready, NULL, stack, STACK_WAITS, &waits);
  if (!waits) return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  cl_kernel kn = src_dtype == c->dtype ? c->append : c->append_f32;
  cl_int err = CL_SUCCESS;
  cl_uint a = 0;
  clattn__arg_mem(kn, &a, k, &err);
  for (int i = 0; i < 4; ++i) clattn__arg_uint(kn, &a, values[i], &err);
  clattn__arg_mem(kn, &a, v, &err);
  for (int i = 4; i < 8; ++i) clattn__arg_uint(kn, &a, values[i], &err);
  clattn__arg_mem(kn, &a, c->k_pool, &err);
  clattn__arg_mem(kn, &a, c->v_pool, &err);
  clattn__arg_mem(kn, &a, c->table, &err);
  clattn__arg_uint(kn, &a, c->table_stride, &err);
  clattn__arg_mem(kn, &a, step->seq_ids, &err);
  clattn__arg_mem(kn, &a, step->start, &err);
  clattn__arg_uint(kn, &a, c->block_tokens, &err);
  clattn__arg_uint(kn, &a, c->head_dim, &err);
  clattn__arg_uint(kn, &a, c->heads_kv, &err);
  clattn__arg_uint(kn, &a, c->num_blocks, &err);
  clattn__arg_uint(kn, &a, step->tokens, &err);
  CLATTN__CL_CHECK(ctx, err);
  size_t global[3], local[3];
  clattn__kv_copy_range(c, step->tokens * c->heads_kv, step->count, global, local);
  CLATTN__CL_CHECK(
      ctx, clEnqueueNDRangeKernel(queue, kn, 3, NULL, global, local, n, n ? waits : NULL, event));
cleanup:
  if (waits != stack) free(waits);
  return status;
}

cl_uint clattn__kv_waits(cl_uint num_wait, const cl_event* wait, cl_event extra0, cl_event extra1,
                         cl_event* stack, size_t stack_size, cl_event** list) {
  const size_t n = (size_t)num_wait + 2;
  cl_event* w = n <= stack_size ? stack : clattn__malloc(n * sizeof *w);
  *list = w;
  if (!w) return 0;
  cl_uint count = 0;
  for (cl_uint i = 0; i < num_wait; ++i) w[count++] = wait[i];
  if (extra0) w[count++] = extra0;
  if (extra1) w[count++] = extra1;
  return count;
}

/* ------------------------------------------------------------ public calls */

/* The shape of an append (K and V as tensors of `tokens` rows per sequence), checked as the
 * core checks its K and V. */
static clattn_status append_shape(clattn_kv_cache* c, const clattn_kv_append_desc* in,
                                  clattn_kv_append_desc* d, clattn__attention_shape* sh) {
  clattn_context* ctx = c->ctx;
  if (!in) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "desc is NULL");
  clattn_status status =
      clattn__struct_copy(ctx, "clattn_kv_append_desc", in, sizeof *d, sizeof *d, d);
  if (status != CLATTN_SUCCESS) return status;
  if (!d->count || !d->tokens) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "count (%zu) and tokens (%zu) must be at least 1", d->count, d->tokens);
  }
  if (d->count > c->max_sequences) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "%zu sequences in one call; the cache holds 1 to %zu", d->count,
                        c->max_sequences);
  }
  clattn_attention_desc a = CLATTN_ATTENTION_DESC_INIT;
  a.dtype = c->dtype;
  a.batch = d->count;
  a.heads_q = c->heads_kv;
  a.heads_kv = c->heads_kv;
  a.seq_q = d->tokens;
  a.seq_kv = d->tokens;
  a.head_dim = c->head_dim;
  a.layout = d->layout;
  a.k_strides = d->k_strides;
  a.v_strides = d->v_strides;
  return clattn__attention_shape_resolve(ctx, &a, sh);
}

clattn_status clattn_kv_cache_append(clattn_kv_cache* c, const clattn_kv_append_desc* desc,
                                     cl_mem k, size_t k_offset, cl_mem v, size_t v_offset,
                                     cl_command_queue queue, cl_uint num_wait_events,
                                     const cl_event* wait_events, cl_event* event) {
  if (!c) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = c->ctx;
  if (event) *event = NULL;
  clattn_status status = clattn__wait_list_check(ctx, num_wait_events, wait_events);
  if (status != CLATTN_SUCCESS) return status;
  clattn_kv_append_desc d;
  clattn__attention_shape sh;
  status = append_shape(c, desc, &d, &sh);
  if (status != CLATTN_SUCCESS) return status;
  if (!k || !v) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "k and v must not be NULL");
  const size_t item = clattn__dtype_size(c->dtype);
  status = clattn__buffer_check(ctx, k, "k", k_offset, clattn__tensor_span(&sh, 'k'), item,
                                MAX_INDEX + 1);
  if (status == CLATTN_SUCCESS) {
    status = clattn__buffer_check(ctx, v, "v", v_offset, clattn__tensor_span(&sh, 'v'), item,
                                  MAX_INDEX + 1);
  }
  if (status != CLATTN_SUCCESS) return status;
  status = clattn__call_queue(ctx, &queue);
  if (status != CLATTN_SUCCESS) return status;
  clattn__kv_step step;
  status = clattn__kv_step_begin(c, d.count, d.seq_ids, d.tokens, queue, &step);
  if (status != CLATTN_SUCCESS) return status;
  status = clattn__kv_step_append(c, &step, c->dtype, k, k_offset, &sh.k, v, v_offset, &sh.v, queue,
                                  num_wait_events, wait_events, event);
  return clattn__kv_step_end(c, &step, status);
}

clattn_status clattn_kv_cache_append_host(clattn_kv_cache* c, const clattn_kv_append_desc* desc,
                                          const void* k, const void* v) {
  if (!c) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = c->ctx;
  clattn_kv_append_desc d;
  clattn__attention_shape sh;
  clattn_status status = append_shape(c, desc, &d, &sh);
  if (status != CLATTN_SUCCESS) return status;
  if (!k || !v) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "k and v must not be NULL");
  cl_mem kb = NULL, vb = NULL;
  const size_t item = clattn__dtype_size(c->dtype);
  CLATTN__CHECK(
      clattn__buffer_create(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'k') * item, k, &kb));
  CLATTN__CHECK(
      clattn__buffer_create(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'v') * item, v, &vb));
  CLATTN__CHECK(clattn_kv_cache_append(c, desc, kb, 0, vb, 0, ctx->queue, 0, NULL, NULL));
  CLATTN__CL_CHECK(ctx, clFinish(ctx->queue));
cleanup:
  if (kb) clReleaseMemObject(kb);
  if (vb) clReleaseMemObject(vb);
  return status;
}

static clattn_status id_check(const clattn_kv_cache* c, int32_t id) {
  if (id < 0 || (size_t)id >= c->max_sequences) {
    return clattn__fail(c->ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "sequence id %d is out of range 0..%zu", (int)id, c->max_sequences - 1);
  }
  return CLATTN_SUCCESS;
}

clattn_status clattn_kv_cache_seq_length(const clattn_kv_cache* c, int32_t id, size_t* length) {
  if (!c) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (!length) return clattn__fail(c->ctx, CLATTN_ERROR_INVALID_ARGUMENT, "length is NULL");
  clattn_status status = id_check(c, id);
  if (status != CLATTN_SUCCESS) return status;
  lock(c);
  *length = c->lengths[id];
  unlock(c);
  return CLATTN_SUCCESS;
}

clattn_status clattn_kv_cache_truncate(clattn_kv_cache* c, int32_t id, size_t length) {
  if (!c) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_status status = id_check(c, id);
  if (status != CLATTN_SUCCESS) return status;
  lock(c);
  if (length > c->lengths[id]) {
    status = clattn__fail(c->ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                          "cannot truncate sequence %d of %zu tokens to %zu", (int)id,
                          c->lengths[id], length);
  } else {
    shrink_to(c, (size_t)id, length);
  }
  unlock(c);
  return status;
}

clattn_status clattn_kv_cache_free_sequence(clattn_kv_cache* c, int32_t id) {
  return clattn_kv_cache_truncate(c, id, 0);
}

clattn_status clattn_kv_cache_reset(clattn_kv_cache* c) {
  if (!c) return CLATTN_ERROR_INVALID_ARGUMENT;
  lock(c);
  free_stack_reset(c);
  unlock(c);
  return CLATTN_SUCCESS;
}

clattn_status clattn_kv_cache_get_usage(const clattn_kv_cache* c, clattn_kv_cache_usage* usage) {
  if (!c) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (!usage) return clattn__fail(c->ctx, CLATTN_ERROR_INVALID_ARGUMENT, "usage is NULL");
  clattn_kv_cache_usage u;
  clattn_status status =
      clattn__struct_copy(c->ctx, "clattn_kv_cache_usage", usage, sizeof u, sizeof u, &u);
  if (status != CLATTN_SUCCESS) return status;
  const size_t block_bytes = 2 * c->block_stride * clattn__dtype_size(c->dtype); /* K and V */
  lock(c);
  u.block_tokens = c->block_tokens;
  u.blocks_total = c->num_blocks;
  u.blocks_used = c->num_blocks - c->free_count;
  u.tokens_used = c->tokens_used;
  u.bytes_total = c->num_blocks * block_bytes;
  u.bytes_used = u.blocks_used * block_bytes;
  unlock(c);
  *usage = u;
  return CLATTN_SUCCESS;
}

clattn_status clattn_kv_cache_read(clattn_kv_cache* c, int32_t id, void* k, void* v) {
  if (!c) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = c->ctx;
  clattn_status status = id_check(c, id);
  if (status != CLATTN_SUCCESS) return status;
  lock(c);
  const size_t len = c->lengths[id], bt = c->block_tokens, dim = c->head_dim;
  const size_t item = clattn__dtype_size(c->dtype);
  if (len && (!k || !v)) {
    status = clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "k and v must not be NULL");
    goto cleanup;
  }
  CLATTN__CL_CHECK(ctx, clFinish(ctx->queue));
  for (size_t b = 0; b * bt < len; ++b) {
    const size_t block = (size_t)c->host_table[(size_t)id * c->table_stride + b];
    const size_t rows = len - b * bt < bt ? len - b * bt : bt;
    for (size_t h = 0; h < c->heads_kv; ++h) {
      const size_t src = ((h * c->num_blocks + block) * bt * dim) * item;
      const size_t dst = (h * len + b * bt) * dim * item;
      const size_t bytes = rows * dim * item;
      CLATTN__CL_CHECK(ctx, clEnqueueReadBuffer(ctx->queue, c->k_pool, CL_FALSE, src, bytes,
                                                (char*)k + dst, 0, NULL, NULL));
      CLATTN__CL_CHECK(ctx, clEnqueueReadBuffer(ctx->queue, c->v_pool, CL_FALSE, src, bytes,
                                                (char*)v + dst, 0, NULL, NULL));
    }
  }
cleanup:
  /* Also after a failed read: nothing may still write into k and v once this returns. */
  if (len && k && v) {
    const cl_int err = clFinish(ctx->queue);
    if (err != CL_SUCCESS && status == CLATTN_SUCCESS) {
      status = clattn__fail_cl(ctx, err, "clFinish", __FILE__, __LINE__);
    }
  }
  unlock(c);
  return status;
}
