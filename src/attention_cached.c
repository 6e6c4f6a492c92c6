/* The attention core over a KV cache: each sequence's cached K and V as the keys, causal
 * masks aligned to each sequence's own length (CLATTN__CAUSAL_PER_LENGTH).
 *
 * Two paths, chosen per call by the plan's variant: a variant that reads pages
 * (reads_pages, SPLIT_KV) gets the pools, the block table and the step's arrays in place;
 * any other first has the batch's K and V gathered into contiguous workspace
 * ([count][heads_kv][longest][head_dim], from the context's pool) and runs over them as over
 * padded tensors with per-sequence key lengths. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"

#define MAX_INDEX ((size_t)UINT32_MAX)
#define STACK_WAITS 16

/* 1 when the call should read the pages in place: its requested variant reads them, or it
 * leaves the choice to clattn and the variant clattn would pick for a paged shape does. */
static int reads_pages(const clattn_context* ctx, const clattn__attention_shape* paged,
                       const clattn_attention_config* config) {
  if (config && config->variant != CLATTN_VARIANT_AUTO) {
    const clattn__variant* v = clattn__variant_find(config->variant);
    return v && v->reads_pages;
  }
  return clattn__variant_preferred(&ctx->info, paged) < clattn__variant_count();
}

/* Reads the pages in place. */
static clattn_status attend_paged(clattn_kv_cache* c, const clattn__kv_step* step,
                                  const clattn__attention_shape* sh,
                                  const clattn_attention_buffers* buffers,
                                  const clattn_attention_config* config, cl_command_queue queue,
                                  cl_uint num_wait, const cl_event* wait, cl_event* event) {
  clattn_context* ctx = c->ctx;
  clattn__plan* plan = NULL;
  clattn_status status = clattn__plan_get(ctx, sh, config, &plan);
  if (status != CLATTN_SUCCESS) return status;
  clattn_attention_buffers b = *buffers;
  b.k = c->k_pool;
  b.v = c->v_pool;
  b.k_offset = b.v_offset = 0;
  b.kv_lengths = step->lengths;
  const clattn__paged_kv paged = {.block_table = c->table,
                                  .table_stride = c->table_stride,
                                  .block_tokens = c->block_tokens,
                                  .block_stride = c->block_tokens * c->head_dim,
                                  .seq_ids = step->seq_ids};
  return clattn__plan_enqueue(ctx, plan, sh, &b, buffers->workspace, buffers->workspace_offset,
                              queue, num_wait, wait, event, &paged);
}

/* Gathers the batch's K and V into workspace, then runs the plan over them. */
static clattn_status attend_gathered(clattn_kv_cache* c, const clattn__kv_step* step,
                                     clattn__attention_shape* sh,
                                     const clattn_attention_buffers* buffers,
                                     const clattn_attention_config* config, cl_command_queue queue,
                                     cl_uint num_wait, const cl_event* wait, cl_event* event) {
  clattn_context* ctx = c->ctx;
  const size_t len = sh->seq_kv, dim = c->head_dim;
  /* K then V in one buffer, both indexed with 32-bit integers. */
  const size_t elements = step->count * c->heads_kv * len * dim; /* < 2^31 * 2^32 * 2^8: fits */
  if (elements > MAX_INDEX / 2) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                        "the batch's gathered K and V (%zu elements each) are beyond 32-bit "
                        "indexing",
                        elements);
  }
  sh->k = sh->v = (clattn_strides){.batch = c->heads_kv * len * dim, .head = len * dim, .seq = dim};
  clattn__plan* plan = NULL;
  clattn_status status = clattn__plan_get(ctx, sh, config, &plan);
  if (status != CLATTN_SUCCESS) return status;
  /* One lease holds the gathered K and V and, unless the caller lends a workspace, the
   * plan's own scratch after them. It is sized for the longest length of the shape class
   * (seq_kv's power-of-two bucket, as plans are), so that a decode loop, whose lengths grow a
   * token per step, grows it only when it also needs a new plan. */
  clattn__attention_shape cap = *sh;
  cap.seq_kv = len < ((size_t)1 << 30) ? ((size_t)2 << clattn__seq_bucket(len)) - 1 : len;
  if (cap.seq_kv > c->max_seq_len && len <= c->max_seq_len) cap.seq_kv = c->max_seq_len;
  const size_t cap_elements = step->count * c->heads_kv * cap.seq_kv * dim;
  const int own_scratch = buffers->workspace == NULL;
  const size_t scratch = own_scratch ? clattn__plan_workspace_bytes(plan, &cap) : 0;
  const size_t item = clattn__dtype_size(c->dtype); /* gathered in the cache's dtype */
  const size_t scratch_offset = (2 * elements * item + 15) / 16 * 16;
  const size_t gather_cap = (2 * cap_elements * item + 15) / 16 * 16;
  const size_t bytes =
      scratch == SIZE_MAX || scratch > SIZE_MAX - gather_cap ? SIZE_MAX : gather_cap + scratch;
  if (cap_elements > MAX_INDEX / 2 || bytes > ctx->info.max_mem_alloc_size) {
    return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY,
                        "the batch's gathered K and V and the attention's scratch (%zu bytes) "
                        "exceed the device's allocation limit (%llu bytes) or 32-bit indexing",
                        bytes, (unsigned long long)ctx->info.max_mem_alloc_size);
  }

  clattn__workspace_lease lease;
  status = clattn__workspace_acquire(ctx, bytes, &lease);
  if (status != CLATTN_SUCCESS) return status;
  cl_event last = NULL;
  cl_event stack[STACK_WAITS];
  cl_event* waits = stack;
  /* The slot's previous user may still be running, on another queue. */
  const cl_uint n =
      clattn__kv_waits(num_wait, wait, step->ready, lease.previous, stack, STACK_WAITS, &waits);
  if (!waits) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  cl_kernel kn = c->gather;
  cl_int err = CL_SUCCESS;
  cl_uint a = 0;
  clattn__arg_mem(kn, &a, c->k_pool, &err);
  clattn__arg_mem(kn, &a, c->v_pool, &err);
  clattn__arg_mem(kn, &a, c->table, &err);
  clattn__arg_uint(kn, &a, c->table_stride, &err);
  clattn__arg_mem(kn, &a, step->seq_ids, &err);
  clattn__arg_mem(kn, &a, step->lengths, &err);
  clattn__arg_uint(kn, &a, c->block_tokens, &err);
  clattn__arg_uint(kn, &a, dim, &err);
  clattn__arg_uint(kn, &a, c->heads_kv, &err);
  clattn__arg_uint(kn, &a, c->num_blocks, &err);
  clattn__arg_uint(kn, &a, len, &err);
  clattn__arg_mem(kn, &a, lease.mem, &err);
  clattn__arg_uint(kn, &a, 0, &err);
  clattn__arg_uint(kn, &a, elements, &err);
  CLATTN__CL_CHECK(ctx, err);
  size_t global[3], local[3];
  clattn__kv_copy_range(c, len * c->heads_kv, step->count, global, local);
  CLATTN__CL_CHECK(
      ctx, clEnqueueNDRangeKernel(queue, kn, 3, NULL, global, local, n, n ? waits : NULL, &last));

  clattn_attention_buffers b = *buffers;
  b.k = b.v = lease.mem;
  b.k_offset = 0;
  b.v_offset = elements;
  b.kv_lengths = step->lengths;
  cl_event gathered = last;
  last = NULL;
  /* The queue is in-order: the attention runs after the gather. */
  status = clattn__plan_enqueue(ctx, plan, sh, &b, own_scratch ? lease.mem : buffers->workspace,
                                own_scratch ? scratch_offset : buffers->workspace_offset, queue, 0,
                                NULL, &last, NULL);
  clReleaseEvent(gathered);
  if (status != CLATTN_SUCCESS && last) {
    clReleaseEvent(last);
    last = NULL;
  }
cleanup:
  if (!last && status != CLATTN_SUCCESS) {
    /* Commands enqueued so far may still use the slot: the next user waits for a marker after
     * them (the queue is in-order) and after the events they waited on. */
    clEnqueueMarkerWithWaitList(queue, n, n ? waits : NULL, &last);
  }
  clattn__workspace_release(ctx, &lease, last);
  if (waits && waits != stack) free(waits);
  if (event && status == CLATTN_SUCCESS) {
    *event = last;
  } else if (last) {
    clReleaseEvent(last);
  }
  return status;
}

clattn_status clattn__kv_step_attend(clattn_kv_cache* c, const clattn__kv_step* step,
                                     const clattn__attention_shape* q_shape,
                                     const clattn_attention_buffers* buffers,
                                     const clattn_attention_config* config, cl_command_queue queue,
                                     cl_uint num_wait, const cl_event* wait, cl_event* event) {
  clattn_context* ctx = c->ctx;
  if (event) *event = NULL;
  if (!queue) queue = ctx->queue;
  if (q_shape->batch != step->count || q_shape->head_dim != c->head_dim ||
      q_shape->heads_q % c->heads_kv) {
    return clattn__fail(ctx, CLATTN_ERROR_INTERNAL,
                        "attention over a cache: batch %zu, heads %zu, head_dim %zu against a "
                        "step of %zu sequences and a cache of %zu heads of %zu",
                        q_shape->batch, q_shape->heads_q, q_shape->head_dim, step->count,
                        c->heads_kv, c->head_dim);
  }
  clattn_attention_config req;
  if (config) {
    clattn_status status =
        clattn__struct_copy(ctx, "clattn_attention_config", config, sizeof(clattn_attention_config),
                            sizeof(clattn_attention_config), &req);
    if (status != CLATTN_SUCCESS) return status;
    config = &req;
  }
  clattn__attention_shape sh = *q_shape;
  sh.heads_kv = c->heads_kv;
  sh.kv_dtype = c->dtype;
  /* A batch of empty sequences still runs: every length is 0, so every row sees no key. */
  sh.seq_kv = step->max_length ? step->max_length : 1;
  sh.causal = q_shape->causal ? CLATTN__CAUSAL_PER_LENGTH : 0;
  sh.paged = 0;

  clattn__attention_shape paged = sh;
  paged.paged = 1;
  paged.k = paged.v = (clattn_strides){
      .batch = 0, .head = c->num_blocks * c->block_tokens * c->head_dim, .seq = c->head_dim};
  if (reads_pages(ctx, &paged, config)) {
    return attend_paged(c, step, &paged, buffers, config, queue, num_wait, wait, event);
  }
  return attend_gathered(c, step, &sh, buffers, config, queue, num_wait, wait, event);
}

/* ------------------------------------------------------------ public entry points */

clattn_status clattn__kv_cached_shape(clattn_kv_cache* c, const clattn_attention_desc* desc,
                                      clattn__attention_shape* sh) {
  clattn_context* ctx = c->ctx;
  if (!desc) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "desc is NULL");
  clattn_attention_desc d;
  clattn_status status =
      clattn__struct_copy(ctx, "clattn_attention_desc", desc, sizeof d, sizeof d, &d);
  if (status != CLATTN_SUCCESS) return status;
  if (d.seq_kv) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "seq_kv is %zu; over a KV cache it must be 0 (the cache's lengths)",
                        d.seq_kv);
  }
  const size_t heads_kv = d.heads_kv ? d.heads_kv : d.heads_q;
  if (heads_kv != c->heads_kv || d.head_dim != c->head_dim) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "heads_kv %zu and head_dim %zu differ from the cache's (%zu and %zu)",
                        heads_kv, d.head_dim, c->heads_kv, c->head_dim);
  }
  if (d.batch > c->max_sequences) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "%zu sequences in one call; the cache holds 1 to %zu", d.batch,
                        c->max_sequences);
  }
  d.seq_kv = 1;
  d.k_strides = d.v_strides = (clattn_strides){0, 0, 0};
  return clattn__attention_shape_resolve(ctx, &d, sh);
}

clattn_status clattn_attention_cached(clattn_kv_cache* c, const clattn_attention_desc* desc,
                                      const int32_t* seq_ids,
                                      const clattn_attention_buffers* buffers,
                                      const clattn_attention_config* config, cl_command_queue queue,
                                      cl_uint num_wait_events, const cl_event* wait_events,
                                      cl_event* event) {
  if (!c) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = c->ctx;
  if (event) *event = NULL;
  clattn_status status = clattn__wait_list_check(ctx, num_wait_events, wait_events);
  if (status != CLATTN_SUCCESS) return status;
  clattn__attention_shape sh;
  clattn_attention_buffers b;
  status = clattn__kv_cached_shape(c, desc, &sh);
  if (status != CLATTN_SUCCESS) return status;
  status = clattn__attention_buffers_check(ctx, &sh, buffers, 1, &b);
  if (status != CLATTN_SUCCESS) return status;
  status = clattn__call_queue(ctx, &queue);
  if (status != CLATTN_SUCCESS) return status;
  clattn__kv_step step;
  status = clattn__kv_step_begin(c, sh.batch, seq_ids, 0, queue, &step);
  if (status != CLATTN_SUCCESS) return status;
  status =
      clattn__kv_step_attend(c, &step, &sh, &b, config, queue, num_wait_events, wait_events, event);
  return clattn__kv_step_end(c, &step, status); /* no token appended: nothing to roll back */
}

clattn_status clattn_attention_cached_host(clattn_kv_cache* c, const clattn_attention_desc* desc,
                                           const int32_t* seq_ids, const void* q, void* o,
                                           float* lse, const clattn_attention_config* config) {
  if (!c) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = c->ctx;
  if (!q || !o) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "q and o must not be NULL");
  clattn__attention_shape sh;
  clattn_status status = clattn__kv_cached_shape(c, desc, &sh);
  if (status != CLATTN_SUCCESS) return status;
  const size_t f = sizeof(float), e = clattn__dtype_size(sh.dtype); /* LSE, Q and O */
  const size_t o_span = clattn__tensor_span(&sh, 'o'), l_span = clattn__tensor_span(&sh, 'l');
  /* Where O has gaps between rows, upload it so that reading it back leaves them intact. */
  const int o_dense = o_span == sh.batch * sh.heads_q * sh.seq_q * sh.head_dim;
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  cl_event done = NULL;
  CLATTN__CHECK(
      clattn__buffer_create(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'q') * e, q, &b.q));
  CLATTN__CHECK(
      clattn__buffer_create(ctx, CL_MEM_READ_WRITE, o_span * e, o_dense ? NULL : o, &b.o));
  if (lse) CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_WRITE_ONLY, l_span * f, NULL, &b.lse));
  CLATTN__CHECK(clattn_attention_cached(c, desc, seq_ids, &b, config, ctx->queue, 0, NULL, &done));
  CLATTN__CL_CHECK(
      ctx, clEnqueueReadBuffer(ctx->queue, b.o, CL_FALSE, 0, o_span * e, o, 1, &done, NULL));
  if (lse) {
    CLATTN__CL_CHECK(
        ctx, clEnqueueReadBuffer(ctx->queue, b.lse, CL_FALSE, 0, l_span * f, lse, 1, &done, NULL));
  }
  CLATTN__CL_CHECK(ctx, clFinish(ctx->queue));
cleanup:
  if (status != CLATTN_SUCCESS) clFinish(ctx->queue); /* no read may still write o or lse */
  if (done) clReleaseEvent(done);
  cl_mem mems[3] = {b.q, b.o, b.lse};
  for (int i = 0; i < 3; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  return status;
}
