/* The attention core: validating a descriptor and its buffers, enqueuing the fused kernel. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Kernels index with 32-bit unsigned integers. */
#define MAX_INDEX ((size_t)UINT32_MAX)

static clattn_status shape_fail(const clattn_context* ctx, const char* what) {
  return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE, "%s", what);
}

/* Strides of a tensor with `heads` heads and `seq` rows, all 0 meaning the layout's. */
static clattn_strides resolve_strides(clattn_strides s, clattn_layout layout, size_t heads,
                                      size_t seq, size_t head_dim) {
  if (s.batch || s.head || s.seq) return s;
  clattn_strides r;
  if (layout == CLATTN_LAYOUT_BNHD) {
    r.head = head_dim;
    r.seq = heads * head_dim;
    r.batch = seq * heads * head_dim;
  } else {
    r.seq = head_dim;
    r.head = seq * head_dim;
    r.batch = heads * seq * head_dim;
  }
  return r;
}

/* a * b + c with overflow reported as SIZE_MAX. */
static size_t mul_add(size_t a, size_t b, size_t c) {
  if (a && b > (SIZE_MAX - c) / a) return SIZE_MAX;
  return a * b + c;
}

static size_t span(const clattn_strides* s, size_t batch, size_t heads, size_t seq,
                   size_t head_dim) {
  size_t n = head_dim;
  n = mul_add(s->seq, seq - 1, n);
  n = mul_add(s->head, heads - 1, n);
  n = mul_add(s->batch, batch - 1, n);
  return n;
}

size_t clattn__tensor_span(const clattn__attention_shape* sh, char which) {
  switch (which) {
    case 'q':
      return span(&sh->q, sh->batch, sh->heads_q, sh->seq_q, sh->head_dim);
    case 'k':
      return span(&sh->k, sh->batch, sh->heads_kv, sh->seq_kv, sh->head_dim);
    case 'v':
      return span(&sh->v, sh->batch, sh->heads_kv, sh->seq_kv, sh->head_dim);
    case 'o':
      return span(&sh->o, sh->batch, sh->heads_q, sh->seq_q, sh->head_dim);
    case 'l':
      return mul_add(mul_add(sh->batch, sh->heads_q, 0), sh->seq_q, 0);
    default:
      return 0;
  }
}

/* 1 when distinct (batch, head, row) rows of O never share an element: sorted by stride,
 * each stride must step over everything the smaller ones span. */
static int rows_disjoint(const clattn_strides* s, size_t batch, size_t heads, size_t seq,
                         size_t head_dim) {
  size_t stride[3] = {s->batch, s->head, s->seq};
  size_t extent[3] = {batch, heads, seq};
  for (int i = 0; i < 3; ++i) {
    for (int j = i + 1; j < 3; ++j) {
      if (stride[j] < stride[i]) {
        size_t t = stride[i];
        stride[i] = stride[j];
        stride[j] = t;
        t = extent[i];
        extent[i] = extent[j];
        extent[j] = t;
      }
    }
  }
  size_t covered = head_dim;
  for (int i = 0; i < 3; ++i) {
    if (extent[i] == 1) continue;
    if (stride[i] < covered) return 0;
    covered = mul_add(stride[i], extent[i] - 1, covered);
  }
  return 1;
}

clattn_status clattn__attention_shape_resolve(const clattn_context* ctx,
                                              const clattn_attention_desc* d,
                                              clattn__attention_shape* sh) {
  if (!d) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "desc is NULL");
  if (d->struct_size != sizeof(clattn_attention_desc)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "clattn_attention_desc.struct_size is %zu, expected %zu (use "
                        "CLATTN_ATTENTION_DESC_INIT)",
                        d->struct_size, sizeof(clattn_attention_desc));
  }
  if (d->dtype != CLATTN_DTYPE_F32) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "unknown dtype %d", (int)d->dtype);
  }
  if (d->layout != CLATTN_LAYOUT_BHND && d->layout != CLATTN_LAYOUT_BNHD) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "unknown layout %d", (int)d->layout);
  }
  if (!d->batch || !d->heads_q || !d->seq_q || !d->seq_kv || !d->head_dim) {
    return shape_fail(ctx, "batch, heads_q, seq_q, seq_kv and head_dim must be at least 1");
  }
  if (d->head_dim > CLATTN__MAX_HEAD_DIM) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE, "head_dim %zu is larger than %d",
                        d->head_dim, CLATTN__MAX_HEAD_DIM);
  }
  size_t heads_kv = d->heads_kv ? d->heads_kv : d->heads_q;
  if (d->heads_q % heads_kv) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "heads_q (%zu) is not a multiple of heads_kv (%zu)", d->heads_q, heads_kv);
  }
  if (!isfinite(d->scale)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "scale is not finite");
  }
  if (d->batch > MAX_INDEX || d->heads_q > MAX_INDEX || d->seq_q > INT32_MAX ||
      d->seq_kv > INT32_MAX) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED, "dimensions beyond 32-bit indexing");
  }
  sh->batch = d->batch;
  sh->heads_q = d->heads_q;
  sh->heads_kv = heads_kv;
  sh->seq_q = d->seq_q;
  sh->seq_kv = d->seq_kv;
  sh->head_dim = d->head_dim;
  sh->scale = d->scale != 0.0f ? d->scale : (float)(1.0 / sqrt((double)d->head_dim));
  sh->causal = d->causal != 0;
  sh->q = resolve_strides(d->q_strides, d->layout, d->heads_q, d->seq_q, d->head_dim);
  sh->k = resolve_strides(d->k_strides, d->layout, heads_kv, d->seq_kv, d->head_dim);
  sh->v = resolve_strides(d->v_strides, d->layout, heads_kv, d->seq_kv, d->head_dim);
  sh->o = resolve_strides(d->o_strides, d->layout, d->heads_q, d->seq_q, d->head_dim);
  if (!rows_disjoint(&sh->o, sh->batch, sh->heads_q, sh->seq_q, sh->head_dim)) {
    return shape_fail(ctx, "o_strides make different output rows overlap");
  }
  const char* names = "qkvol";
  for (const char* w = names; *w; ++w) {
    if (clattn__tensor_span(sh, *w) > MAX_INDEX) {
      return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                          "tensor %c spans more than 2^32 elements (32-bit indexing)", *w);
    }
  }
  return CLATTN_SUCCESS;
}

clattn_status clattn_attention_tensor_size(const clattn_attention_desc* desc, char which,
                                           size_t* elements) {
  if (!elements || !strchr("qkvol", which) || which == '\0') return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn__attention_shape sh;
  clattn_status status = clattn__attention_shape_resolve(NULL, desc, &sh);
  if (status != CLATTN_SUCCESS) return status;
  *elements = clattn__tensor_span(&sh, which);
  return CLATTN_SUCCESS;
}

/* Checks one caller buffer: the kernels index up to offset + elements - 1 <= UINT32_MAX. */
static clattn_status buffer_check(const clattn_context* ctx, cl_mem mem, const char* name,
                                  size_t offset, size_t elements, size_t item) {
  return clattn__buffer_check(ctx, mem, name, offset, elements, item, MAX_INDEX + (size_t)1);
}

static clattn_status buffers_check(const clattn_context* ctx, const clattn__attention_shape* sh,
                                   const clattn_attention_buffers* b) {
  if (!b) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "buffers is NULL");
  if (b->struct_size != sizeof(clattn_attention_buffers)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "clattn_attention_buffers.struct_size is %zu, expected %zu", b->struct_size,
                        sizeof(clattn_attention_buffers));
  }
  if (!b->q || !b->k || !b->v || !b->o) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "q, k, v and o must not be NULL");
  }
  clattn_status status;
  const size_t f = sizeof(float);
  CLATTN__CHECK(buffer_check(ctx, b->q, "q", b->q_offset, clattn__tensor_span(sh, 'q'), f));
  CLATTN__CHECK(buffer_check(ctx, b->k, "k", b->k_offset, clattn__tensor_span(sh, 'k'), f));
  CLATTN__CHECK(buffer_check(ctx, b->v, "v", b->v_offset, clattn__tensor_span(sh, 'v'), f));
  CLATTN__CHECK(buffer_check(ctx, b->o, "o", b->o_offset, clattn__tensor_span(sh, 'o'), f));
  if (b->lse) {
    CLATTN__CHECK(buffer_check(ctx, b->lse, "lse", b->lse_offset, clattn__tensor_span(sh, 'l'), f));
  }
  if (b->kv_lengths) {
    CLATTN__CHECK(buffer_check(ctx, b->kv_lengths, "kv_lengths", 0, sh->batch, sizeof(int32_t)));
  }
cleanup:
  return status;
}

clattn_status clattn_attention_get_config(clattn_context* ctx, const clattn_attention_desc* desc,
                                          const clattn_attention_config* requested,
                                          clattn_attention_config* used) {
  if (!ctx || !used) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn__attention_shape sh;
  clattn_status status = clattn__attention_shape_resolve(ctx, desc, &sh);
  if (status != CLATTN_SUCCESS) return status;
  return clattn__config_resolve(ctx, &sh, requested, used, NULL);
}

/* Kernel argument setters that accumulate errors (CL error codes are negative). */
static void arg_mem(cl_kernel k, cl_uint* i, cl_mem m, cl_int* err) {
  *err |= clSetKernelArg(k, (*i)++, sizeof m, &m);
}
static void arg_uint(cl_kernel k, cl_uint* i, size_t x, cl_int* err) {
  cl_uint u = (cl_uint)x;
  *err |= clSetKernelArg(k, (*i)++, sizeof u, &u);
}
static void arg_int(cl_kernel k, cl_uint* i, int x, cl_int* err) {
  cl_int v = x;
  *err |= clSetKernelArg(k, (*i)++, sizeof v, &v);
}
static void arg_float(cl_kernel k, cl_uint* i, float x, cl_int* err) {
  cl_float v = x;
  *err |= clSetKernelArg(k, (*i)++, sizeof v, &v);
}

/* Sets the arguments shared by every variant (CLATTN_ATTENTION_ARGS in cl/common.cl);
 * returns the index of the next argument in *next. */
static cl_int set_common_args(cl_kernel kernel, const clattn__attention_shape* sh,
                              const clattn_attention_buffers* b, cl_uint* next) {
  cl_int err = CL_SUCCESS;
  cl_uint i = 0;
  const cl_mem mems[4] = {b->q, b->k, b->v, b->o};
  const size_t offsets[4] = {b->q_offset, b->k_offset, b->v_offset, b->o_offset};
  const clattn_strides* strides[4] = {&sh->q, &sh->k, &sh->v, &sh->o};
  for (int t = 0; t < 4; ++t) {
    arg_mem(kernel, &i, mems[t], &err);
    arg_uint(kernel, &i, offsets[t], &err);
    arg_uint(kernel, &i, strides[t]->batch, &err);
    arg_uint(kernel, &i, strides[t]->head, &err);
    arg_uint(kernel, &i, strides[t]->seq, &err);
  }
  arg_mem(kernel, &i, b->lse, &err); /* NULL is allowed for a __global pointer */
  arg_uint(kernel, &i, b->lse_offset, &err);
  arg_int(kernel, &i, b->lse != NULL, &err);
  arg_mem(kernel, &i, b->kv_lengths, &err);
  arg_int(kernel, &i, b->kv_lengths != NULL, &err);
  arg_uint(kernel, &i, sh->heads_q, &err);
  arg_uint(kernel, &i, sh->heads_q / sh->heads_kv, &err);
  arg_uint(kernel, &i, sh->seq_q, &err);
  arg_uint(kernel, &i, sh->seq_kv, &err);
  arg_float(kernel, &i, (float)(sh->scale * 1.4426950408889634), &err); /* log2 units */
  arg_int(kernel, &i, sh->causal, &err);
  *next = i;
  return err;
}

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

/* Register-blocked variant: stages Kᵀ in a scratch buffer owned by this call, then runs. */
static clattn_status enqueue_regblock(clattn_context* ctx, const clattn__attention_shape* sh,
                                      const clattn_attention_config* c,
                                      const clattn_attention_buffers* b, cl_kernel main,
                                      cl_command_queue queue, cl_uint num_wait,
                                      const cl_event* wait, cl_event* event) {
  clattn_status status = CLATTN_SUCCESS;
  cl_kernel stage = NULL;
  cl_mem kt = NULL;
  const size_t kt_stride = clattn__kt_stride(sh, c);
  const size_t kt_elems = sh->batch * sh->heads_kv * sh->head_dim * kt_stride;
  if (kt_stride > MAX_INDEX || kt_elems > MAX_INDEX ||
      kt_elems * sizeof(float) > ctx->info.max_mem_alloc_size) {
    return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY,
                        "the staged Kᵀ (%zu floats) exceeds the device's allocation limit",
                        kt_elems);
  }
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_WRITE, kt_elems * sizeof(float), NULL, &kt));

  char options[256];
  clattn__config_options(sh, c, options, sizeof options);
  CLATTN__CHECK(clattn__kernel_create(ctx, clattn__config_source_name(c), options,
                                      "clattn_stage_kt", &stage));
  cl_uint a = 0;
  cl_int err = CL_SUCCESS;
  arg_mem(stage, &a, b->k, &err);
  arg_uint(stage, &a, b->k_offset, &err);
  arg_uint(stage, &a, sh->k.batch, &err);
  arg_uint(stage, &a, sh->k.head, &err);
  arg_uint(stage, &a, sh->k.seq, &err);
  arg_uint(stage, &a, sh->heads_kv, &err);
  arg_uint(stage, &a, sh->seq_kv, &err);
  arg_mem(stage, &a, kt, &err);
  arg_uint(stage, &a, kt_stride, &err);
  CLATTN__CL_CHECK(ctx, err);
  /* One work-item per 16 keys of one dim (kt_stride is a multiple of block_n, thus of 16). */
  size_t stage_global[3] = {kt_stride / 16, sh->head_dim, sh->batch * sh->heads_kv};
  CLATTN__CL_CHECK(ctx, clEnqueueNDRangeKernel(queue, stage, 3, NULL, stage_global, NULL, num_wait,
                                               num_wait ? wait : NULL, NULL));

  err = set_common_args(main, sh, b, &a);
  arg_mem(main, &a, kt, &err);
  arg_uint(main, &a, kt_stride, &err);
  CLATTN__CL_CHECK(ctx, err);
  size_t global[3] = {(sh->seq_q + c->rows_per_item - 1) / c->rows_per_item, sh->heads_q,
                      sh->batch};
  size_t local[3] = {1, 1, 1};
  /* The queue is in-order, so the main kernel runs after the staging one. */
  CLATTN__CL_CHECK(ctx,
                   clEnqueueNDRangeKernel(queue, main, 3, NULL, global, local, 0, NULL, event));
cleanup:
  /* OpenCL keeps the scratch buffer alive until the commands that use it complete. */
  if (kt) clReleaseMemObject(kt);
  if (stage) clReleaseKernel(stage);
  return status;
}

static clattn_status enqueue_tiled(clattn_context* ctx, const clattn__attention_shape* sh,
                                   const clattn_attention_config* c,
                                   const clattn_attention_buffers* b, cl_kernel main,
                                   cl_command_queue queue, cl_uint num_wait, const cl_event* wait,
                                   cl_event* event) {
  clattn_status status = CLATTN_SUCCESS;
  cl_uint next = 0;
  CLATTN__CL_CHECK(ctx, set_common_args(main, sh, b, &next));
  const size_t group = clattn__config_group_size(c);
  size_t global[3] = {round_up(sh->seq_q, c->block_m) / c->block_m * group, sh->heads_q, sh->batch};
  size_t local[3] = {group, 1, 1};
  CLATTN__CL_CHECK(ctx, clEnqueueNDRangeKernel(queue, main, 3, NULL, global, local, num_wait,
                                               num_wait ? wait : NULL, event));
cleanup:
  return status;
}

clattn_status clattn_attention(clattn_context* ctx, const clattn_attention_desc* desc,
                               const clattn_attention_buffers* buffers,
                               const clattn_attention_config* config, cl_command_queue queue,
                               cl_uint num_wait_events, const cl_event* wait_events,
                               cl_event* event) {
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (event) *event = NULL;
  if (num_wait_events && !wait_events) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "num_wait_events is %u but wait_events is NULL", num_wait_events);
  }
  clattn_status status;
  cl_kernel kernel = NULL;
  clattn__attention_shape sh;
  clattn_attention_config used;
  CLATTN__CHECK(clattn__attention_shape_resolve(ctx, desc, &sh));
  CLATTN__CHECK(buffers_check(ctx, &sh, buffers));
  if (queue && queue != ctx->queue) {
    CLATTN__CHECK(clattn__queue_check(ctx, queue));
  } else {
    queue = ctx->queue;
  }
  CLATTN__CHECK(clattn__config_resolve(ctx, &sh, config, &used, &kernel));
  if (used.variant == CLATTN_VARIANT_TILED_LOCAL) {
    status =
        enqueue_tiled(ctx, &sh, &used, buffers, kernel, queue, num_wait_events, wait_events, event);
  } else {
    status = enqueue_regblock(ctx, &sh, &used, buffers, kernel, queue, num_wait_events, wait_events,
                              event);
  }
cleanup:
  if (kernel) clReleaseKernel(kernel);
  return status;
}

/* A device buffer holding `elements` floats (or ints), filled from host when src != NULL. */
static clattn_status host_buffer(clattn_context* ctx, cl_mem_flags flags, size_t bytes,
                                 const void* src, cl_mem* out) {
  return clattn__buffer_create(ctx, flags, bytes, src, out);
}

clattn_status clattn_attention_host(clattn_context* ctx, const clattn_attention_desc* desc,
                                    const float* q, const float* k, const float* v, float* o,
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
  const size_t f = sizeof(float);
  const size_t o_span = clattn__tensor_span(&sh, 'o');
  /* Where O has gaps between rows, upload it so that reading it back leaves them intact. */
  const int o_dense = o_span == sh.batch * sh.heads_q * sh.seq_q * sh.head_dim;
  CLATTN__CHECK(host_buffer(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'q') * f, q, &b.q));
  CLATTN__CHECK(host_buffer(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'k') * f, k, &b.k));
  CLATTN__CHECK(host_buffer(ctx, CL_MEM_READ_ONLY, clattn__tensor_span(&sh, 'v') * f, v, &b.v));
  CLATTN__CHECK(host_buffer(ctx, CL_MEM_READ_WRITE, o_span * f, o_dense ? NULL : o, &b.o));
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
      ctx, clEnqueueReadBuffer(ctx->queue, b.o, CL_FALSE, 0, o_span * f, o, 1, &done, NULL));
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
