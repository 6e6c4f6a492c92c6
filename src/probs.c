/* Attention maps: the probabilities of a block recomputed from Q, K and a fused call's LSE by
 * cl/attention_probs.cl, over plain tensors or a KV cache's pages; the layer's attention
 * weights (src/mha.c) go through clattn__probs_enqueue too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"

/* Kernels index with 32-bit unsigned integers. */
#define MAX_INDEX ((size_t)UINT32_MAX)
/* Columns per work-item (the kernel's TILE_N). */
#define TILE_N 8
/* Work-items of one group at most, and along the columns at most. */
#define GROUP_ITEMS 64
#define GROUP_COLS 16
#define STACK_WAITS 16

/* ------------------------------------------------------------ regions and checks */

clattn_status clattn__probs_region_resolve(const clattn_context* ctx,
                                           const clattn_probs_block* block, size_t heads_q,
                                           size_t seq_q, size_t seq_kv, clattn__probs_region* r) {
  clattn_probs_block b = CLATTN_PROBS_BLOCK_INIT;
  if (block) {
    clattn_status status =
        clattn__struct_copy(ctx, "clattn_probs_block", block, sizeof(clattn_probs_block),
                            sizeof(clattn_probs_block), &b);
    if (status != CLATTN_SUCCESS) return status;
  }
  const char* names[3] = {"heads", "rows", "cols"};
  const size_t begin[3] = {b.head_begin, b.row_begin, b.col_begin};
  const size_t count[3] = {b.heads, b.rows, b.cols};
  const size_t dim[3] = {heads_q, seq_q, seq_kv};
  size_t resolved[3];
  for (int i = 0; i < 3; ++i) {
    /* An empty dimension (a cache whose sequences are all empty) has an empty block. */
    if (dim[i] == 0 && begin[i] == 0 && count[i] == 0) {
      resolved[i] = 0;
      continue;
    }
    if (begin[i] >= dim[i] || count[i] > dim[i] - begin[i]) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                          "block %s [%zu, %zu + %zu) is beyond the %zu of the shape", names[i],
                          begin[i], begin[i], count[i], dim[i]);
    }
    resolved[i] = count[i] ? count[i] : dim[i] - begin[i];
  }
  r->head_begin = b.head_begin;
  r->heads = resolved[0];
  r->row_begin = b.row_begin;
  r->rows = resolved[1];
  r->col_begin = b.col_begin;
  r->cols = resolved[2];
  return CLATTN_SUCCESS;
}

/* Elements of a region's output; SIZE_MAX where it overflows. */
static size_t region_elements(const clattn__probs_region* r, size_t batch, int mean) {
  size_t n = batch;
  const size_t f[3] = {mean ? 1 : r->heads, r->rows, r->cols};
  for (int i = 0; i < 3; ++i) {
    if (f[i] && n > SIZE_MAX / f[i]) return SIZE_MAX;
    n *= f[i];
  }
  return n;
}

/* 1 when [a, a + na) and [b, b + nb) share an element. */
static int ranges_overlap(size_t a, size_t na, size_t b, size_t nb) {
  return a < b + nb && b < a + na;
}

/* Refuses a buffer created with `flag` (CL_MEM_WRITE_ONLY for one the kernel reads,
 * CL_MEM_READ_ONLY for the output): the kernel's access would be undefined. */
static clattn_status access_check(const clattn_context* ctx, cl_mem mem, const char* name,
                                  cl_mem_flags flag) {
  cl_mem_flags flags = 0;
  const cl_int err = clGetMemObjectInfo(mem, CL_MEM_FLAGS, sizeof flags, &flags, NULL);
  if (err != CL_SUCCESS) return clattn__fail_cl(ctx, err, "clGetMemObjectInfo", __FILE__, __LINE__);
  if (flags & flag) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "%s was created %s; the kernel %s it",
                        name, flag == CL_MEM_WRITE_ONLY ? "CL_MEM_WRITE_ONLY" : "CL_MEM_READ_ONLY",
                        flag == CL_MEM_WRITE_ONLY ? "reads" : "writes");
  }
  return CLATTN_SUCCESS;
}

/* Copies a caller's buffers struct and checks q, k (cached: k, v and kv_lengths NULL), lse and
 * kv_lengths against the shape. */
static clattn_status inputs_check(const clattn_context* ctx, const clattn__attention_shape* sh,
                                  const clattn_attention_buffers* in, int cached,
                                  clattn_attention_buffers* b) {
  if (!in) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "buffers is NULL");
  clattn_status status = clattn__struct_copy(ctx, "clattn_attention_buffers", in,
                                             offsetof(clattn_attention_buffers, workspace),
                                             sizeof(clattn_attention_buffers), b);
  if (status != CLATTN_SUCCESS) return status;
  if (cached && (b->k || b->v || b->kv_lengths)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "k, v and kv_lengths must be NULL over a KV cache (its own)");
  }
  if (!b->q || (!cached && !b->k)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        cached ? "q must not be NULL" : "q and k must not be NULL");
  }
  if (!b->lse) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "lse is NULL: the probabilities need the LSE a fused call wrote");
  }
  const size_t limit = MAX_INDEX + 1;
  CLATTN__CHECK(clattn__buffer_check(ctx, b->q, "q", b->q_offset, clattn__tensor_span(sh, 'q'),
                                     clattn__dtype_size(sh->dtype), limit));
  if (!cached) {
    CLATTN__CHECK(clattn__buffer_check(ctx, b->k, "k", b->k_offset, clattn__tensor_span(sh, 'k'),
                                       clattn__dtype_size(sh->kv_dtype), limit));
  }
  CLATTN__CHECK(clattn__buffer_check(ctx, b->lse, "lse", b->lse_offset,
                                     clattn__tensor_span(sh, 'l'), sizeof(float), limit));
  if (b->kv_lengths) {
    CLATTN__CHECK(clattn__buffer_check(ctx, b->kv_lengths, "kv_lengths", 0, sh->batch,
                                       sizeof(int32_t), limit));
  }
  /* The fused call writes the LSE: a buffer made for it alone may be CL_MEM_WRITE_ONLY. */
  CLATTN__CHECK(access_check(ctx, b->lse, "lse", CL_MEM_WRITE_ONLY));
  CLATTN__CHECK(access_check(ctx, b->q, "q", CL_MEM_WRITE_ONLY));
  if (!cached) CLATTN__CHECK(access_check(ctx, b->k, "k", CL_MEM_WRITE_ONLY));
  if (b->kv_lengths) {
    CLATTN__CHECK(access_check(ctx, b->kv_lengths, "kv_lengths", CL_MEM_WRITE_ONLY));
  }
cleanup:
  return status;
}

/* Checks the output: a buffer of `elements` floats from p_offset within 32-bit indexing, sharing
 * no element with the inputs it is computed from. */
static clattn_status output_check(const clattn_context* ctx, const clattn__attention_shape* sh,
                                  const clattn_attention_buffers* b, cl_mem p, size_t p_offset,
                                  size_t elements) {
  if (!p) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "p is NULL");
  if (elements > MAX_INDEX + 1 || p_offset > MAX_INDEX + 1 - elements) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                        "the block's %zu probabilities from p_offset %zu are beyond 32-bit "
                        "indexing",
                        elements, p_offset);
  }
  clattn_status status =
      clattn__buffer_check(ctx, p, "p", p_offset, elements, sizeof(float), MAX_INDEX + 1);
  if (status == CLATTN_SUCCESS) status = access_check(ctx, p, "p", CL_MEM_READ_ONLY);
  if (status != CLATTN_SUCCESS) return status;
  /* Compared in bytes: q and k are of their dtypes, p, lse and kv_lengths 4-byte elements. */
  const struct {
    const char* name;
    cl_mem mem;
    size_t offset, span, item;
  } in[4] = {
      {"q", b->q, b->q_offset, clattn__tensor_span(sh, 'q'), clattn__dtype_size(sh->dtype)},
      {"k", b->k, b->k_offset, clattn__tensor_span(sh, 'k'), clattn__dtype_size(sh->kv_dtype)},
      {"lse", b->lse, b->lse_offset, clattn__tensor_span(sh, 'l'), sizeof(float)},
      {"kv_lengths", b->kv_lengths, 0, sh->batch, sizeof(int32_t)}};
  for (int i = 0; i < 4; ++i) {
    if (in[i].mem == p && ranges_overlap(p_offset * sizeof(float), elements * sizeof(float),
                                         in[i].offset * in[i].item, in[i].span * in[i].item)) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                          "p overlaps %s in the same cl_mem (elements %zu..%zu and %zu..%zu): "
                          "the output must not alias an input",
                          in[i].name, p_offset, p_offset + elements - 1, in[i].offset,
                          in[i].offset + in[i].span - 1);
    }
  }
  return CLATTN_SUCCESS;
}

/* ------------------------------------------------------------ enqueue */

/* Loads and dot products run in vectors of the widest width that divides the head dim. */
static unsigned vec_width(size_t head_dim) {
  for (unsigned w = 16; w > 1; w /= 2) {
    if (head_dim % w == 0) return w;
  }
  return 1;
}

/* The smallest power of two at least n (n <= 2^31), capped at cap. */
static size_t pow2_at_least(size_t n, size_t cap) {
  size_t p = 1;
  while (p < n && p < cap) p *= 2;
  return p;
}

clattn_status clattn__probs_enqueue(clattn_context* ctx, const clattn__attention_shape* sh,
                                    const clattn_attention_buffers* b,
                                    const clattn__probs_region* r, int mean, cl_mem p,
                                    size_t p_offset, cl_command_queue queue, cl_uint num_wait,
                                    const cl_event* wait, cl_event* event,
                                    const clattn__paged_kv* paged) {
  clattn_status status = CLATTN_SUCCESS;
  const size_t elements = region_elements(r, sh->batch, mean);
  if (elements > MAX_INDEX + 1 || p_offset > MAX_INDEX + 1 - elements) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                        "%zu probabilities from p_offset %zu are beyond 32-bit indexing", elements,
                        p_offset);
  }
  if (elements == 0) {
    /* Nothing to compute; the event still orders what follows after the wait list. */
    CLATTN__CL_CHECK(ctx,
                     clEnqueueMarkerWithWaitList(queue, num_wait, num_wait ? wait : NULL, event));
    return CLATTN_SUCCESS;
  }
  char options[128];
  snprintf(options, sizeof options,
           "-DHEAD_DIM=%zu -DVEC=%u -DTILE_N=%d -DQO_DTYPE=%d -DKV_DTYPE=%d", sh->head_dim,
           vec_width(sh->head_dim), TILE_N, (int)sh->dtype, (int)sh->kv_dtype);
  clattn__op_kernel* op = NULL;
  CLATTN__CHECK(clattn__op_kernel_get(ctx, "attention_probs", options,
                                      mean ? "clattn_probs_mean" : "clattn_probs", &op));

  /* Up to GROUP_COLS work-items along the columns (fewer for a narrow block), the rest of
   * GROUP_ITEMS along the rows, within the kernel's and the device's limits. */
  size_t items = GROUP_ITEMS < op->group_limit ? GROUP_ITEMS : op->group_limit;
  if (items < 1) items = 1;
  size_t l0 = pow2_at_least((r->cols + TILE_N - 1) / TILE_N, GROUP_COLS);
  while (l0 > items || l0 > ctx->info.max_work_item_sizes[0]) l0 /= 2;
  size_t l1 = pow2_at_least(r->rows, items / l0);
  while (l1 > 1 && l1 > ctx->info.max_work_item_sizes[1]) l1 /= 2;
  const size_t span0 = l0 * TILE_N;
  size_t global[3] = {(r->cols + span0 - 1) / span0 * l0, (r->rows + l1 - 1) / l1 * l1,
                      mean ? sh->batch : sh->batch * r->heads};
  size_t local[3] = {l0, l1, 1};

  cl_kernel kn = op->kernel;
  const clattn__paged_kv* pg = paged;
  /* Unpaged: the lengths (or Q) stand in for the table and ids, which are never read. */
  cl_mem stand_in = b->kv_lengths ? b->kv_lengths : b->q;
  pthread_mutex_lock(&op->lock);
  cl_uint a = 0;
  cl_int err = clattn__set_attention_args(kn, sh, b, &a);
  clattn__arg_uint(kn, &a, r->head_begin, &err);
  clattn__arg_uint(kn, &a, r->heads, &err);
  clattn__arg_uint(kn, &a, r->row_begin, &err);
  clattn__arg_uint(kn, &a, r->rows, &err);
  clattn__arg_uint(kn, &a, r->col_begin, &err);
  clattn__arg_uint(kn, &a, r->cols, &err);
  clattn__arg_mem(kn, &a, p, &err);
  clattn__arg_uint(kn, &a, p_offset, &err);
  clattn__arg_mem(kn, &a, pg ? pg->block_table : stand_in, &err);
  clattn__arg_uint(kn, &a, pg ? pg->table_stride : 0, &err);
  clattn__arg_uint(kn, &a, pg ? pg->block_tokens : 1, &err);
  clattn__arg_uint(kn, &a, pg ? pg->block_stride : 0, &err);
  clattn__arg_mem(kn, &a, pg ? pg->seq_ids : stand_in, &err);
  clattn__arg_uint(kn, &a, pg != NULL, &err);
  if (err == CL_SUCCESS) {
    err = clEnqueueNDRangeKernel(queue, kn, 3, NULL, global, local, num_wait,
                                 num_wait ? wait : NULL, event);
  }
  pthread_mutex_unlock(&op->lock);
  CLATTN__CL_CHECK(ctx, err);
cleanup:
  return status;
}

/* ------------------------------------------------------------ over a KV cache */

clattn_status clattn__kv_step_probs(clattn_kv_cache* c, const clattn__kv_step* step,
                                    const clattn__attention_shape* q_shape,
                                    const clattn_attention_buffers* buffers,
                                    const clattn__probs_region* region, int mean, cl_mem p,
                                    size_t p_offset, cl_command_queue queue, cl_uint num_wait,
                                    const cl_event* wait, cl_event* event) {
  clattn_context* ctx = c->ctx;
  if (q_shape->batch != step->count || q_shape->head_dim != c->head_dim ||
      q_shape->heads_q % c->heads_kv) {
    return clattn__fail(ctx, CLATTN_ERROR_INTERNAL,
                        "probabilities over a cache: batch %zu, heads %zu, head_dim %zu against a "
                        "step of %zu sequences and a cache of %zu heads of %zu",
                        q_shape->batch, q_shape->heads_q, q_shape->head_dim, step->count,
                        c->heads_kv, c->head_dim);
  }
  /* The shape clattn__kv_step_attend gives a page-reading variant. */
  clattn__attention_shape sh = *q_shape;
  sh.heads_kv = c->heads_kv;
  sh.kv_dtype = c->dtype;
  sh.seq_kv = step->max_length ? step->max_length : 1;
  sh.causal = q_shape->causal ? CLATTN__CAUSAL_PER_LENGTH : 0;
  sh.paged = 1;
  sh.k = sh.v = (clattn_strides){
      .batch = 0, .head = c->num_blocks * c->block_tokens * c->head_dim, .seq = c->head_dim};
  clattn_attention_buffers b = *buffers;
  b.k = c->k_pool;
  b.k_offset = 0;
  b.v = NULL;
  b.o = NULL;
  b.kv_lengths = step->lengths;
  const clattn__paged_kv paged = {.block_table = c->table,
                                  .table_stride = c->table_stride,
                                  .block_tokens = c->block_tokens,
                                  .block_stride = c->block_tokens * c->head_dim,
                                  .seq_ids = step->seq_ids};
  cl_event stack[STACK_WAITS];
  cl_event* waits = stack;
  const cl_uint n = clattn__kv_waits(num_wait, wait, step->ready, NULL, stack, STACK_WAITS, &waits);
  if (!waits) return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  clattn_status status = clattn__probs_enqueue(ctx, &sh, &b, region, mean, p, p_offset, queue, n,
                                               waits, event, &paged);
  if (waits != stack) free(waits);
  return status;
}

/* ------------------------------------------------------------ public entry points */

clattn_status clattn_attention_probs(clattn_context* ctx, const clattn_attention_desc* desc,
                                     const clattn_attention_buffers* buffers,
                                     const clattn_probs_block* block, cl_mem p, size_t p_offset,
                                     cl_command_queue queue, cl_uint num_wait_events,
                                     const cl_event* wait_events, cl_event* event) {
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (event) *event = NULL;
  clattn_status status = clattn__wait_list_check(ctx, num_wait_events, wait_events);
  if (status != CLATTN_SUCCESS) return status;
  clattn__attention_shape sh;
  clattn_attention_buffers b;
  clattn__probs_region r;
  CLATTN__CHECK(clattn__attention_shape_resolve(ctx, desc, &sh));
  CLATTN__CHECK(inputs_check(ctx, &sh, buffers, 0, &b));
  CLATTN__CHECK(clattn__probs_region_resolve(ctx, block, sh.heads_q, sh.seq_q, sh.seq_kv, &r));
  CLATTN__CHECK(output_check(ctx, &sh, &b, p, p_offset, region_elements(&r, sh.batch, 0)));
  CLATTN__CHECK(clattn__call_queue(ctx, &queue));
  b.v = NULL;
  b.o = NULL;
  status = clattn__probs_enqueue(ctx, &sh, &b, &r, 0, p, p_offset, queue, num_wait_events,
                                 wait_events, event, NULL);
cleanup:
  return status;
}

clattn_status clattn_attention_probs_host(clattn_context* ctx, const clattn_attention_desc* desc,
                                          const void* q, const void* k, const float* lse,
                                          const int32_t* kv_lengths,
                                          const clattn_probs_block* block, float* p) {
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (!q || !k || !lse || !p) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "q, k, lse and p must not be NULL");
  }
  clattn__attention_shape sh;
  clattn__probs_region r;
  clattn_status status = clattn__attention_shape_resolve(ctx, desc, &sh);
  if (status != CLATTN_SUCCESS) return status;
  status = clattn__probs_region_resolve(ctx, block, sh.heads_q, sh.seq_q, sh.seq_kv, &r);
  if (status != CLATTN_SUCCESS) return status;
  const size_t count = region_elements(&r, sh.batch, 0);
  if (count == SIZE_MAX || count > MAX_INDEX + 1) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                        "the block's %zu probabilities are beyond 32-bit indexing", count);
  }
  const size_t f = sizeof(float), e = clattn__dtype_size(sh.dtype); /* LSE and P, Q and K */
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  cl_mem mp = NULL;
  cl_event done = NULL;
  CLATTN__CHECK(
      clattn__buffer_create(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'q') * e, q, &b.q));
  CLATTN__CHECK(
      clattn__buffer_create(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'k') * e, k, &b.k));
  CLATTN__CHECK(
      clattn__buffer_create(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'l') * f, lse, &b.lse));
  if (kv_lengths) {
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, sh.batch * sizeof(int32_t),
                                        kv_lengths, &b.kv_lengths));
  }
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_WRITE_ONLY, count * f, NULL, &mp));
  CLATTN__CHECK(clattn_attention_probs(ctx, desc, &b, block, mp, 0, ctx->queue, 0, NULL, &done));
  CLATTN__CL_CHECK(ctx,
                   clEnqueueReadBuffer(ctx->queue, mp, CL_TRUE, 0, count * f, p, 1, &done, NULL));
cleanup:
  if (status != CLATTN_SUCCESS) clFinish(ctx->queue); /* no read may still write p */
  if (done) clReleaseEvent(done);
  cl_mem mems[5] = {b.q, b.k, b.lse, b.kv_lengths, mp};
  for (int i = 0; i < 5; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  return status;
}

clattn_status clattn_attention_probs_cached(clattn_kv_cache* c, const clattn_attention_desc* desc,
                                            const int32_t* seq_ids,
                                            const clattn_attention_buffers* buffers,
                                            const clattn_probs_block* block, cl_mem p,
                                            size_t p_offset, cl_command_queue queue,
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
  status = inputs_check(ctx, &sh, buffers, 1, &b);
  if (status != CLATTN_SUCCESS) return status;
  if (!p) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "p is NULL");
  status = clattn__call_queue(ctx, &queue);
  if (status != CLATTN_SUCCESS) return status;
  clattn__kv_step step;
  status = clattn__kv_step_begin(c, sh.batch, seq_ids, 0, queue, &step);
  if (status != CLATTN_SUCCESS) return status;
  /* The columns are known now: up to the longest sequence of the call. */
  clattn__probs_region r;
  status = clattn__probs_region_resolve(ctx, block, sh.heads_q, sh.seq_q, step.max_length, &r);
  if (status == CLATTN_SUCCESS) {
    status = output_check(ctx, &sh, &b, p, p_offset, region_elements(&r, sh.batch, 0));
  }
  if (status == CLATTN_SUCCESS) {
    status = clattn__kv_step_probs(c, &step, &sh, &b, &r, 0, p, p_offset, queue, num_wait_events,
                                   wait_events, event);
  }
  return clattn__kv_step_end(c, &step, status); /* no token appended: nothing to roll back */
}
