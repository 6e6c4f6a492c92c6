/* The attention core's public entry points: the descriptor resolved, the buffers checked,
 * the plan looked up (made on first use) and enqueued. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Kernels index with 32-bit unsigned integers. */
#define MAX_INDEX ((size_t)UINT32_MAX)

/* Checks one caller buffer: the kernels index up to offset + elements - 1 <= UINT32_MAX. */
static clattn_status buffer_check(const clattn_context* ctx, cl_mem mem, const char* name,
                                  size_t offset, size_t elements, size_t item) {
  return clattn__buffer_check(ctx, mem, name, offset, elements, item, MAX_INDEX + (size_t)1);
}

/* One tensor of a call: its buffer, offset, the elements it spans and their size. */
typedef struct tensor_ref {
  const char* name;
  cl_mem mem;
  size_t offset, span, item;
} tensor_ref;

enum { T_Q, T_K, T_V, T_O, T_LSE, T_COUNT };

static void tensor_refs(const clattn__attention_shape* sh, const clattn_attention_buffers* b,
                        tensor_ref t[T_COUNT]) {
  const size_t qo = clattn__dtype_size(sh->dtype), kv = clattn__dtype_size(sh->kv_dtype);
  t[T_Q] = (tensor_ref){"q", b->q, b->q_offset, clattn__tensor_span(sh, 'q'), qo};
  t[T_K] = (tensor_ref){"k", b->k, b->k_offset, clattn__tensor_span(sh, 'k'), kv};
  t[T_V] = (tensor_ref){"v", b->v, b->v_offset, clattn__tensor_span(sh, 'v'), kv};
  t[T_O] = (tensor_ref){"o", b->o, b->o_offset, clattn__tensor_span(sh, 'o'), qo};
  t[T_LSE] =
      (tensor_ref){"lse", b->lse, b->lse_offset, clattn__tensor_span(sh, 'l'), sizeof(float)};
}

/* 1 when two tensors share a byte of one cl_mem (elements may differ in size). */
static int tensors_overlap(const tensor_ref* a, const tensor_ref* b) {
  return a->mem && a->mem == b->mem && a->offset * a->item < (b->offset + b->span) * b->item &&
         b->offset * b->item < (a->offset + a->span) * a->item;
}

/* Outputs written while the inputs are read: O or the LSE may not share elements with Q, K
 * or V (nor with each other) in one cl_mem. */
static clattn_status aliasing_check(const clattn_context* ctx, const tensor_ref t[T_COUNT]) {
  for (int o = T_O; o <= T_LSE; ++o) {
    for (int i = T_Q; i <= T_V; ++i) {
      if (tensors_overlap(&t[o], &t[i])) {
        return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                            "%s overlaps %s in the same cl_mem (elements %zu..%zu and %zu..%zu): "
                            "outputs must not alias inputs",
                            t[o].name, t[i].name, t[o].offset, t[o].offset + t[o].span - 1,
                            t[i].offset, t[i].offset + t[i].span - 1);
      }
    }
  }
  if (tensors_overlap(&t[T_LSE], &t[T_O])) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "lse overlaps o in the same cl_mem");
  }
  return CLATTN_SUCCESS;
}

/* clattn_attention_buffers as 0.1 published it, before the workspace fields. */
#define BUFFERS_PUBLISHED offsetof(clattn_attention_buffers, workspace)

clattn_status clattn__attention_buffers_check(const clattn_context* ctx,
                                              const clattn__attention_shape* sh,
                                              const clattn_attention_buffers* in, int cached,
                                              clattn_attention_buffers* b) {
  if (!in) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "buffers is NULL");
  clattn_status status = clattn__struct_copy(ctx, "clattn_attention_buffers", in, BUFFERS_PUBLISHED,
                                             sizeof(clattn_attention_buffers), b);
  if (status != CLATTN_SUCCESS) return status;
  if (cached) {
    if (b->k || b->v || b->kv_lengths) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                          "k, v and kv_lengths must be NULL over a KV cache (its own)");
    }
    if (!b->q || !b->o) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "q and o must not be NULL");
    }
  } else if (!b->q || !b->k || !b->v || !b->o) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "q, k, v and o must not be NULL");
  }
  tensor_ref t[T_COUNT];
  tensor_refs(sh, b, t);
  for (int i = 0; i < T_COUNT; ++i) {
    if (!t[i].mem) continue; /* the LSE is optional */
    CLATTN__CHECK(buffer_check(ctx, t[i].mem, t[i].name, t[i].offset, t[i].span, t[i].item));
  }
  if (b->kv_lengths) {
    CLATTN__CHECK(buffer_check(ctx, b->kv_lengths, "kv_lengths", 0, sh->batch, sizeof(int32_t)));
  }
  CLATTN__CHECK(aliasing_check(ctx, t));
cleanup:
  return status;
}

clattn_status clattn_attention_get_config(clattn_context* ctx, const clattn_attention_desc* desc,
                                          const clattn_attention_config* requested,
                                          clattn_attention_config* used) {
  if (!ctx || !used) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn__attention_shape sh;
  clattn__plan* plan = NULL;
  clattn_status status = clattn__attention_shape_resolve(ctx, desc, &sh);
  if (status == CLATTN_SUCCESS) status = clattn__plan_get(ctx, &sh, requested, &plan);
  if (status == CLATTN_SUCCESS) *used = plan->config;
  return status;
}

clattn_status clattn_attention(clattn_context* ctx, const clattn_attention_desc* desc,
                               const clattn_attention_buffers* buffers,
                               const clattn_attention_config* config, cl_command_queue queue,
                               cl_uint num_wait_events, const cl_event* wait_events,
                               cl_event* event) {
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (event) *event = NULL;
  clattn_status status = clattn__wait_list_check(ctx, num_wait_events, wait_events);
  if (status != CLATTN_SUCCESS) return status;
  clattn__attention_shape sh;
  clattn_attention_buffers b;
  clattn__plan* plan = NULL;
  CLATTN__CHECK(clattn__attention_shape_resolve(ctx, desc, &sh));
  CLATTN__CHECK(clattn__attention_buffers_check(ctx, &sh, buffers, 0, &b));
  CLATTN__CHECK(clattn__call_queue(ctx, &queue));
  CLATTN__CHECK(clattn__plan_get(ctx, &sh, config, &plan));
  status = clattn__plan_enqueue(ctx, plan, &sh, &b, b.workspace, b.workspace_offset, queue,
                                num_wait_events, wait_events, event, NULL);
cleanup:
  return status;
}

/* A device buffer of `bytes`, filled from host when src != NULL. */
static clattn_status host_buffer(clattn_context* ctx, cl_mem_flags flags, size_t bytes,
                                 const void* src, cl_mem* out) {
  return clattn__buffer_create(ctx, flags, bytes, src, out);
}

clattn_status clattn_attention_host(clattn_context* ctx, const clattn_attention_desc* desc,
                                    const void* q, const void* k, const void* v, void* o,
                                    float* lse, const int32_t* kv_lengths,
                                    const clattn_attention_config* config) {
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (!q || !k || !v || !o) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "q, k, v and o must not be NULL");
  }
  clattn__attention_shape sh;
  clattn_status status = clattn__attention_shape_resolve(ctx, desc, &sh);
  if (status != CLATTN_SUCCESS) return status;

  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  cl_event done = NULL;
  const size_t f = sizeof(float), e = clattn__dtype_size(sh.dtype); /* LSE, tensors */
  const size_t o_span = clattn__tensor_span(&sh, 'o');
  /* Where O has gaps between rows, upload it so that reading it back leaves them intact. */
  const int o_dense = o_span == sh.batch * sh.heads_q * sh.seq_q * sh.head_dim;
  CLATTN__CHECK(host_buffer(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'q') * e, q, &b.q));
  CLATTN__CHECK(host_buffer(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'k') * e, k, &b.k));
  CLATTN__CHECK(host_buffer(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'v') * e, v, &b.v));
  CLATTN__CHECK(host_buffer(ctx, CL_MEM_READ_WRITE, o_span * e, o_dense ? NULL : o, &b.o));
  if (lse) {
    CLATTN__CHECK(
        host_buffer(ctx, CL_MEM_WRITE_ONLY, clattn__tensor_span(&sh, 'l') * f, NULL, &b.lse));
  }
  if (kv_lengths) {
    CLATTN__CHECK(
        host_buffer(ctx, CL_MEM_READ_ONLY, sh.batch * sizeof(int32_t), kv_lengths, &b.kv_lengths));
  }
  CLATTN__CHECK(clattn_attention(ctx, desc, &b, config, ctx->queue, 0, NULL, &done));
  CLATTN__CL_CHECK(
      ctx, clEnqueueReadBuffer(ctx->queue, b.o, CL_FALSE, 0, o_span * e, o, 1, &done, NULL));
  if (lse) {
    CLATTN__CL_CHECK(
        ctx, clEnqueueReadBuffer(ctx->queue, b.lse, CL_FALSE, 0, clattn__tensor_span(&sh, 'l') * f,
                                 lse, 1, &done, NULL));
  }
  CLATTN__CL_CHECK(ctx, clFinish(ctx->queue));
cleanup:
  if (done) clReleaseEvent(done);
  cl_mem mems[6] = {b.q, b.k, b.v, b.o, b.lse, b.kv_lengths};
  for (int i = 0; i < 6; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  return status;
}
