/* The multi-head attention layer: weights on the device, the input projections as CLBlast
 * GEMMs (src/gemm.c), the fused attention core reading the projected heads through strides,
 * and the output projection as one more GEMM on top of a bias broadcast. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The bias kernel indexes with 32-bit unsigned integers, as the core does. */
#define MAX_INDEX ((size_t)UINT32_MAX)

struct clattn_mha {
  clattn_context* ctx; /* borrowed: must outlive the layer */
  size_t d_model, heads, heads_kv, head_dim, k_dim, v_dim;
  float scale;
  size_t q_width;  /* H·D: width of Q, of O and of the attention output */
  size_t kv_width; /* Hkv·D: width of K and of V */
  /* Wq [H·D, E] | Wk [Hkv·D, k_dim] | Wv [Hkv·D, v_dim], back to back. With
   * k_dim = v_dim = E this is the packed [(H + 2·Hkv)·D, E] matrix of the fused GEMM. */
  cl_mem w_in;
  size_t wk_offset, wv_offset;
  cl_mem b_in;  /* [bq; bk; bv], (H + 2·Hkv)·D; NULL when no input bias was given */
  cl_mem w_out; /* Wo [E, H·D] */
  cl_mem b_out; /* bo [E]; NULL when none was given */

  /* Everything below is per-call state, guarded by `lock`. */
  pthread_mutex_t lock;
  cl_kernel bias_kernel; /* created on first use */
  cl_mem workspace;
  size_t workspace_bytes;
  cl_event last; /* the last command of the previous forward call, or NULL */
};

/* ------------------------------------------------------------------------ creation */

/* a * b with overflow reported as SIZE_MAX. */
static size_t mul(size_t a, size_t b) {
  if (a && b > SIZE_MAX / a) return SIZE_MAX;
  return a * b;
}

/* a + b with overflow reported as SIZE_MAX. */
static size_t add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

static int tensor_given(const clattn_mha_tensor* t) { return t->host != NULL || t->mem != NULL; }

/* Checks that a weight tensor is usable for `elements` floats: not both sources, and a
 * cl_mem of the context that is large enough. */
static clattn_status tensor_check(const clattn_context* ctx, const clattn_mha_tensor* t,
                                  const char* name, size_t elements) {
  if (t->host && t->mem) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "%s: give either a host array or a cl_mem, not both", name);
  }
  if (!t->mem) return CLATTN_SUCCESS;
  cl_context owner = NULL;
  size_t bytes = 0;
  cl_int err = clGetMemObjectInfo(t->mem, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
  if (err == CL_SUCCESS) err = clGetMemObjectInfo(t->mem, CL_MEM_SIZE, sizeof bytes, &bytes, NULL);
  if (err != CL_SUCCESS) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "%s is not a valid cl_mem (%s)", name,
                        clattn__cl_error_name(err));
  }
  if (owner != ctx->cl_ctx) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "%s belongs to another cl_context than the layer's", name);
  }
  const size_t need = t->offset > SIZE_MAX - elements ? SIZE_MAX : t->offset + elements;
  if (need == SIZE_MAX || need > bytes / sizeof(float)) {
    return clattn__fail(ctx, CLATTN_ERROR_BUFFER_TOO_SMALL,
                        "%s holds %zu bytes; offset %zu + %zu floats need more", name, bytes,
                        t->offset, elements);
  }
  return CLATTN_SUCCESS;
}

/* Enqueues the copy of `elements` floats of a given tensor into dst at dst_offset (floats). */
static clattn_status tensor_upload(clattn_context* ctx, const clattn_mha_tensor* t, cl_mem dst,
                                   size_t dst_offset, size_t elements) {
  clattn_status status = CLATTN_SUCCESS;
  const size_t f = sizeof(float);
  if (t->host) {
    /* Blocking: the caller's array may go away as soon as clattn_mha_create returns. */
    CLATTN__CL_CHECK(ctx, clEnqueueWriteBuffer(ctx->queue, dst, CL_TRUE, dst_offset * f,
                                               elements * f, t->host, 0, NULL, NULL));
  } else if (t->mem) {
    CLATTN__CL_CHECK(ctx, clEnqueueCopyBuffer(ctx->queue, t->mem, dst, t->offset * f,
                                              dst_offset * f, elements * f, 0, NULL, NULL));
  }
cleanup:
  return status;
}

static clattn_status desc_resolve(const clattn_context* ctx, const clattn_mha_desc* d,
                                  clattn_mha* m) {
  if (!d) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "desc is NULL");
  if (d->struct_size != sizeof(clattn_mha_desc)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "clattn_mha_desc.struct_size is %zu, expected %zu (use "
                        "CLATTN_MHA_DESC_INIT)",
                        d->struct_size, sizeof(clattn_mha_desc));
  }
  if (!d->d_model || !d->heads) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE, "d_model and heads must be at least 1");
  }
  size_t head_dim = d->head_dim;
  if (!head_dim) {
    if (d->d_model % d->heads) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                          "d_model (%zu) is not divisible by heads (%zu); give head_dim",
                          d->d_model, d->heads);
    }
    head_dim = d->d_model / d->heads;
  }
  if (head_dim > CLATTN__MAX_HEAD_DIM) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE, "head_dim %zu is larger than %d", head_dim,
                        CLATTN__MAX_HEAD_DIM);
  }
  const size_t heads_kv = d->heads_kv ? d->heads_kv : d->heads;
  if (d->heads % heads_kv) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "heads (%zu) is not a multiple of heads_kv (%zu)", d->heads, heads_kv);
  }
  if (!isfinite(d->scale)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "scale is not finite");
  }
  m->d_model = d->d_model;
  m->heads = d->heads;
  m->heads_kv = heads_kv;
  m->head_dim = head_dim;
  m->k_dim = d->k_dim ? d->k_dim : d->d_model;
  m->v_dim = d->v_dim ? d->v_dim : m->k_dim;
  m->scale = d->scale != 0.0f ? d->scale : (float)(1.0 / sqrt((double)head_dim));
  m->q_width = mul(d->heads, head_dim);
  m->kv_width = mul(heads_kv, head_dim);
  /* Every matrix must be indexable by the kernels and CLBlast alike. */
  const size_t widest = m->d_model > m->k_dim ? (m->d_model > m->v_dim ? m->d_model : m->v_dim)
                                              : (m->k_dim > m->v_dim ? m->k_dim : m->v_dim);
  if (m->q_width > MAX_INDEX || mul(m->q_width + 2 * m->kv_width, widest) > MAX_INDEX) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED, "weights beyond 32-bit indexing");
  }
  return CLATTN_SUCCESS;
}

/* Uploads the weights into the layer's buffers (ctx->queue; finished before returning). */
static clattn_status weights_load(clattn_context* ctx, const clattn_mha_weights* w, clattn_mha* m) {
  if (!w) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "weights is NULL");
  if (w->struct_size != sizeof(clattn_mha_weights)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "clattn_mha_weights.struct_size is %zu, expected %zu (use "
                        "CLATTN_MHA_WEIGHTS_INIT)",
                        w->struct_size, sizeof(clattn_mha_weights));
  }
  clattn_status status = CLATTN_SUCCESS;
  const size_t f = sizeof(float);
  const size_t hq = m->q_width, hk = m->kv_width, e = m->d_model;
  const size_t wq_n = hq * e, wk_n = hk * m->k_dim, wv_n = hk * m->v_dim;
  const int packed = tensor_given(&w->in_proj_weight);
  const int separate = tensor_given(&w->q_proj_weight) || tensor_given(&w->k_proj_weight) ||
                       tensor_given(&w->v_proj_weight);
  if (packed && separate) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "give either in_proj_weight or q/k/v_proj_weight, not both");
  }
  if (!packed && !(tensor_given(&w->q_proj_weight) && tensor_given(&w->k_proj_weight) &&
                   tensor_given(&w->v_proj_weight))) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "the input projection weights are missing: give in_proj_weight or all "
                        "of q_proj_weight, k_proj_weight and v_proj_weight");
  }
  if (packed && (m->k_dim != e || m->v_dim != e)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "in_proj_weight needs k_dim = v_dim = d_model (%zu); k_dim is %zu, "
                        "v_dim %zu: give q/k/v_proj_weight",
                        e, m->k_dim, m->v_dim);
  }
  if (!tensor_given(&w->out_proj_weight)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "out_proj_weight is missing");
  }
  const int packed_bias = tensor_given(&w->in_proj_bias);
  const int separate_bias = tensor_given(&w->q_proj_bias) || tensor_given(&w->k_proj_bias) ||
                            tensor_given(&w->v_proj_bias);
  if (packed_bias && separate_bias) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "give either in_proj_bias or q/k/v_proj_bias, not both");
  }
  CLATTN__CHECK(tensor_check(ctx, &w->in_proj_weight, "in_proj_weight", wq_n + wk_n + wv_n));
  CLATTN__CHECK(tensor_check(ctx, &w->q_proj_weight, "q_proj_weight", wq_n));
  CLATTN__CHECK(tensor_check(ctx, &w->k_proj_weight, "k_proj_weight", wk_n));
  CLATTN__CHECK(tensor_check(ctx, &w->v_proj_weight, "v_proj_weight", wv_n));
  CLATTN__CHECK(tensor_check(ctx, &w->in_proj_bias, "in_proj_bias", hq + 2 * hk));
  CLATTN__CHECK(tensor_check(ctx, &w->q_proj_bias, "q_proj_bias", hq));
  CLATTN__CHECK(tensor_check(ctx, &w->k_proj_bias, "k_proj_bias", hk));
  CLATTN__CHECK(tensor_check(ctx, &w->v_proj_bias, "v_proj_bias", hk));
  CLATTN__CHECK(tensor_check(ctx, &w->out_proj_weight, "out_proj_weight", e * hq));
  CLATTN__CHECK(tensor_check(ctx, &w->out_proj_bias, "out_proj_bias", e));

  m->wk_offset = wq_n;
  m->wv_offset = wq_n + wk_n;
  CLATTN__CHECK(
      clattn__buffer_create(ctx, CL_MEM_READ_ONLY, (wq_n + wk_n + wv_n) * f, NULL, &m->w_in));
  if (packed) {
    CLATTN__CHECK(tensor_upload(ctx, &w->in_proj_weight, m->w_in, 0, wq_n + wk_n + wv_n));
  } else {
    CLATTN__CHECK(tensor_upload(ctx, &w->q_proj_weight, m->w_in, 0, wq_n));
    CLATTN__CHECK(tensor_upload(ctx, &w->k_proj_weight, m->w_in, m->wk_offset, wk_n));
    CLATTN__CHECK(tensor_upload(ctx, &w->v_proj_weight, m->w_in, m->wv_offset, wv_n));
  }
  if (packed_bias || separate_bias) {
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, (hq + 2 * hk) * f, NULL, &m->b_in));
    if (packed_bias) {
      CLATTN__CHECK(tensor_upload(ctx, &w->in_proj_bias, m->b_in, 0, hq + 2 * hk));
    } else {
      /* Biases left out are zeros. */
      const cl_float zero = 0.0f;
      CLATTN__CL_CHECK(ctx, clEnqueueFillBuffer(ctx->queue, m->b_in, &zero, sizeof zero, 0,
                                                (hq + 2 * hk) * f, 0, NULL, NULL));
      CLATTN__CHECK(tensor_upload(ctx, &w->q_proj_bias, m->b_in, 0, hq));
      CLATTN__CHECK(tensor_upload(ctx, &w->k_proj_bias, m->b_in, hq, hk));
      CLATTN__CHECK(tensor_upload(ctx, &w->v_proj_bias, m->b_in, hq + hk, hk));
    }
  }
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, e * hq * f, NULL, &m->w_out));
  CLATTN__CHECK(tensor_upload(ctx, &w->out_proj_weight, m->w_out, 0, e * hq));
  if (tensor_given(&w->out_proj_bias)) {
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, e * f, NULL, &m->b_out));
    CLATTN__CHECK(tensor_upload(ctx, &w->out_proj_bias, m->b_out, 0, e));
  }
  /* Device-to-device copies read the caller's buffers, which it may release after we return. */
  CLATTN__CL_CHECK(ctx, clFinish(ctx->queue));
cleanup:
  return status;
}

clattn_status clattn_mha_create(clattn_context* ctx, const clattn_mha_desc* desc,
                                const clattn_mha_weights* weights, clattn_mha** out) {
  if (!out)
    return ctx ? clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "out is NULL")
               : CLATTN_ERROR_INVALID_ARGUMENT;
  *out = NULL;
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_status status = CLATTN_SUCCESS;
  clattn_mha* m = clattn__calloc(1, sizeof *m);
  if (!m) return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  if (pthread_mutex_init(&m->lock, NULL) != 0) {
    free(m);
    return clattn__fail(ctx, CLATTN_ERROR_INTERNAL, "pthread_mutex_init failed");
  }
  m->ctx = ctx;
  CLATTN__CHECK(desc_resolve(ctx, desc, m));
  CLATTN__CHECK(weights_load(ctx, weights, m));
  *out = m;
  m = NULL;
cleanup:
  clattn_mha_destroy(m);
  return status;
}

clattn_status clattn_mha_destroy(clattn_mha* m) {
  if (!m) return CLATTN_SUCCESS;
  cl_mem mems[5] = {m->w_in, m->b_in, m->w_out, m->b_out, m->workspace};
  for (int i = 0; i < 5; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  if (m->bias_kernel) clReleaseKernel(m->bias_kernel);
  if (m->last) clReleaseEvent(m->last);
  pthread_mutex_destroy(&m->lock);
  free(m);
  return CLATTN_SUCCESS;
}

/* ------------------------------------------------------------------------ forward */

/* A resolved forward call: sizes and where each intermediate lives in the workspace. */
typedef struct mha_plan {
  size_t batch, seq, seq_kv;
  int causal, cross, fused_kv; /* fused_kv: key and value are one input (one K|V GEMM) */
  size_t rows, rows_kv;        /* batch·seq, batch·seq_kv */
  /* Projections: self-attention, one [rows, (H + 2·Hkv)·D] matrix P at 0 (Q | K | V per
   * row); cross-attention, Q [rows, H·D] at 0 and K | V [rows_kv, 2·Hkv·D] at kv_offset. */
  size_t q_ld, kv_ld;      /* row widths of the Q and K|V matrices */
  size_t q_at, k_at, v_at; /* element offsets of Q, K and V in the workspace */
  size_t o_at;             /* attention output [rows, H·D] */
  size_t workspace;        /* floats */
} mha_plan;

static clattn_status plan_make(const clattn_mha* m, const clattn_mha_forward_desc* fwd, int cross,
                               mha_plan* p) {
  const clattn_context* ctx = m->ctx;
  if (!fwd) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "fwd is NULL");
  if (fwd->struct_size != sizeof(clattn_mha_forward_desc)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "clattn_mha_forward_desc.struct_size is %zu, expected %zu (use "
                        "CLATTN_MHA_FORWARD_DESC_INIT)",
                        fwd->struct_size, sizeof(clattn_mha_forward_desc));
  }
  if (!fwd->batch || !fwd->seq) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE, "batch and seq must be at least 1");
  }
  if (!cross && fwd->seq_kv && fwd->seq_kv != fwd->seq) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "self-attention (no key input) needs seq_kv 0 or seq (%zu), not %zu",
                        fwd->seq, fwd->seq_kv);
  }
  if (!cross && (m->k_dim != m->d_model || m->v_dim != m->d_model)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "the layer's k_dim (%zu) and v_dim (%zu) differ from d_model (%zu): give "
                        "key and value inputs",
                        m->k_dim, m->v_dim, m->d_model);
  }
  memset(p, 0, sizeof *p);
  p->batch = fwd->batch;
  p->seq = fwd->seq;
  p->seq_kv = fwd->seq_kv ? fwd->seq_kv : fwd->seq;
  p->causal = fwd->causal != 0;
  p->cross = cross;
  p->rows = mul(p->batch, p->seq);
  p->rows_kv = mul(p->batch, p->seq_kv);
  const size_t hq = m->q_width, hk = m->kv_width;
  if (!cross) {
    p->q_ld = p->kv_ld = hq + 2 * hk;
    p->q_at = 0;
    p->k_at = hq;
    p->v_at = hq + hk;
    p->o_at = mul(p->rows, p->q_ld);
  } else {
    p->q_ld = hq;
    p->kv_ld = 2 * hk;
    p->q_at = 0;
    p->k_at = mul(p->rows, hq);
    p->v_at = add(p->k_at, hk);
    p->o_at = add(p->k_at, mul(p->rows_kv, p->kv_ld));
  }
  p->workspace = add(p->o_at, mul(p->rows, hq));
  /* Everything a kernel or CLBlast touches must be 32-bit indexable. */
  const size_t io = mul(p->rows, m->d_model > hq ? m->d_model : hq);
  const size_t kv_in = mul(p->rows_kv, m->k_dim > m->v_dim ? m->k_dim : m->v_dim);
  if (p->workspace > MAX_INDEX || io > MAX_INDEX || kv_in > MAX_INDEX) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                        "batch %zu, seq %zu, seq_kv %zu: tensors beyond 32-bit indexing", p->batch,
                        p->seq, p->seq_kv);
  }
  return CLATTN_SUCCESS;
}

clattn_status clattn_mha_workspace_size(const clattn_mha* mha, const clattn_mha_forward_desc* fwd,
                                        int cross, size_t* bytes) {
  if (!mha || !bytes) return CLATTN_ERROR_INVALID_ARGUMENT;
  mha_plan p;
  clattn_status status = plan_make(mha, fwd, cross != 0, &p);
  if (status == CLATTN_SUCCESS) *bytes = p.workspace * sizeof(float);
  return status;
}

/* Checks one caller buffer: offset + elements at most MAX_INDEX, as the call plan's sizes. */
static clattn_status io_check(const clattn_context* ctx, cl_mem mem, const char* name,
                              size_t offset, size_t elements, size_t item) {
  return clattn__buffer_check(ctx, mem, name, offset, elements, item, MAX_INDEX);
}

static clattn_status buffers_check(const clattn_mha* m, const mha_plan* p,
                                   const clattn_mha_buffers* b) {
  const clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  const size_t f = sizeof(float);
  CLATTN__CHECK(io_check(ctx, b->x, "x", b->x_offset, mul(p->rows, m->d_model), f));
  CLATTN__CHECK(io_check(ctx, b->y, "y", b->y_offset, mul(p->rows, m->d_model), f));
  if (p->cross) {
    CLATTN__CHECK(io_check(ctx, b->key, "key", b->key_offset, mul(p->rows_kv, m->k_dim), f));
    if (b->value) {
      CLATTN__CHECK(
          io_check(ctx, b->value, "value", b->value_offset, mul(p->rows_kv, m->v_dim), f));
    }
  }
  if (b->kv_lengths) {
    CLATTN__CHECK(io_check(ctx, b->kv_lengths, "kv_lengths", 0, p->batch, sizeof(int32_t)));
  }
cleanup:
  return status;
}

/* Grows the workspace to `floats` (contents are not kept). Commands already enqueued on the
 * old buffer still complete: OpenCL frees it only after them. */
static clattn_status workspace_reserve(clattn_mha* m, size_t floats) {
  const size_t bytes = floats * sizeof(float);
  if (m->workspace && m->workspace_bytes >= bytes) return CLATTN_SUCCESS;
  if (bytes > m->ctx->info.max_mem_alloc_size) {
    return clattn__fail(m->ctx, CLATTN_ERROR_OUT_OF_MEMORY,
                        "the layer's workspace (%zu bytes) exceeds the device's allocation "
                        "limit (%llu bytes)",
                        bytes, (unsigned long long)m->ctx->info.max_mem_alloc_size);
  }
  cl_mem grown = NULL;
  clattn_status status = clattn__buffer_create(m->ctx, CL_MEM_READ_WRITE, bytes, NULL, &grown);
  if (status != CLATTN_SUCCESS) return status;
  if (m->workspace) clReleaseMemObject(m->workspace);
  m->workspace = grown;
  m->workspace_bytes = bytes;
  return CLATTN_SUCCESS;
}

/* C[rows, cols] (leading dimension ldc) = bias row broadcast (bias NULL: zeros). */
static clattn_status bias_rows(clattn_mha* m, cl_command_queue queue, cl_mem c, size_t c_offset,
                               size_t ldc, cl_mem bias, size_t bias_offset, size_t rows,
                               size_t cols) {
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  if (!m->bias_kernel) {
    CLATTN__CHECK(clattn__kernel_create(ctx, "bias", "", "clattn_bias_rows", &m->bias_kernel));
  }
  cl_kernel k = m->bias_kernel;
  const cl_uint u[] = {(cl_uint)c_offset, (cl_uint)ldc, (cl_uint)bias_offset};
  const cl_int has_bias = bias != NULL;
  const cl_uint shape[] = {(cl_uint)rows, (cl_uint)cols};
  cl_int err = clSetKernelArg(k, 0, sizeof c, &c);
  err |= clSetKernelArg(k, 1, sizeof u[0], &u[0]);
  err |= clSetKernelArg(k, 2, sizeof u[1], &u[1]);
  err |= clSetKernelArg(k, 3, sizeof bias, &bias); /* NULL is allowed for a __global pointer */
  err |= clSetKernelArg(k, 4, sizeof u[2], &u[2]);
  err |= clSetKernelArg(k, 5, sizeof has_bias, &has_bias);
  err |= clSetKernelArg(k, 6, sizeof shape[0], &shape[0]);
  err |= clSetKernelArg(k, 7, sizeof shape[1], &shape[1]);
  CLATTN__CL_CHECK(ctx, err);
  const size_t global[2] = {cols, rows};
  CLATTN__CL_CHECK(ctx, clEnqueueNDRangeKernel(queue, k, 2, NULL, global, NULL, 0, NULL, NULL));
cleanup:
  return status;
}

/* C = A·Wᵀ (+ the bias rows already in C when `accumulate`): A [m, k] at a_offset with
 * leading dimension lda, W [n, k] row-major, C [m, n] with leading dimension ldc. */
static clattn_status project(clattn_context* ctx, cl_command_queue queue, cl_mem a, size_t a_offset,
                             size_t lda, cl_mem w, size_t w_offset, cl_mem c, size_t c_offset,
                             size_t ldc, size_t m, size_t n, size_t k, int accumulate,
                             cl_event* event) {
  clattn__gemm_args g = {.trans_a = 0,
                         .trans_b = 1,
                         .m = m,
                         .n = n,
                         .k = k,
                         .alpha = 1.0f,
                         .beta = accumulate ? 1.0f : 0.0f,
                         .a = a,
                         .b = w,
                         .c = c,
                         .a_offset = a_offset,
                         .b_offset = w_offset,
                         .c_offset = c_offset,
                         .lda = lda,
                         .ldb = k,
                         .ldc = ldc};
  return clattn__gemm(ctx, queue, &g, event);
}

/* Input projections into the workspace: P = x·W_qkvᵀ (+ b) for self-attention, or
 * Q = x·Wqᵀ and K | V = key·[Wk; Wv]ᵀ (or K and V from their own inputs). */
static clattn_status project_inputs(clattn_mha* m, const mha_plan* p, const clattn_mha_buffers* b,
                                    cl_command_queue queue) {
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  cl_mem ws = m->workspace;
  const size_t e = m->d_model, hq = m->q_width, hk = m->kv_width;
  const int bias = m->b_in != NULL;
  if (!p->cross) {
    const size_t width = hq + 2 * hk;
    if (bias) CLATTN__CHECK(bias_rows(m, queue, ws, 0, width, m->b_in, 0, p->rows, width));
    CLATTN__CHECK(project(ctx, queue, b->x, b->x_offset, e, m->w_in, 0, ws, 0, width, p->rows,
                          width, e, bias, NULL));
    goto cleanup;
  }
  if (bias) CLATTN__CHECK(bias_rows(m, queue, ws, p->q_at, hq, m->b_in, 0, p->rows, hq));
  CLATTN__CHECK(project(ctx, queue, b->x, b->x_offset, e, m->w_in, 0, ws, p->q_at, hq, p->rows, hq,
                        e, bias, NULL));
  if (bias) {
    CLATTN__CHECK(bias_rows(m, queue, ws, p->k_at, p->kv_ld, m->b_in, hq, p->rows_kv, 2 * hk));
  }
  if (p->fused_kv) {
    /* Wk and Wv are back to back in w_in: one [2·Hkv·D, k_dim] matrix. */
    CLATTN__CHECK(project(ctx, queue, b->key, b->key_offset, m->k_dim, m->w_in, m->wk_offset, ws,
                          p->k_at, p->kv_ld, p->rows_kv, 2 * hk, m->k_dim, bias, NULL));
  } else {
    cl_mem value = b->value ? b->value : b->key;
    const size_t value_offset = b->value ? b->value_offset : b->key_offset;
    CLATTN__CHECK(project(ctx, queue, b->key, b->key_offset, m->k_dim, m->w_in, m->wk_offset, ws,
                          p->k_at, p->kv_ld, p->rows_kv, hk, m->k_dim, bias, NULL));
    CLATTN__CHECK(project(ctx, queue, value, value_offset, m->v_dim, m->w_in, m->wv_offset, ws,
                          p->v_at, p->kv_ld, p->rows_kv, hk, m->v_dim, bias, NULL));
  }
cleanup:
  return status;
}

/* The attention core on the projected heads: Q, K and V are read in place through strides
 * ([batch, seq, heads, head_dim] inside wider rows); O is written as [batch, seq, H·D]. */
static clattn_status attend(clattn_mha* m, const mha_plan* p, const clattn_mha_buffers* b,
                            cl_command_queue queue) {
  clattn_attention_desc d = CLATTN_ATTENTION_DESC_INIT;
  d.dtype = CLATTN_DTYPE_F32;
  d.batch = p->batch;
  d.heads_q = m->heads;
  d.heads_kv = m->heads_kv;
  d.seq_q = p->seq;
  d.seq_kv = p->seq_kv;
  d.head_dim = m->head_dim;
  d.scale = m->scale;
  d.causal = p->causal;
  d.q_strides = (clattn_strides){.batch = p->seq * p->q_ld, .head = m->head_dim, .seq = p->q_ld};
  d.k_strides =
      (clattn_strides){.batch = p->seq_kv * p->kv_ld, .head = m->head_dim, .seq = p->kv_ld};
  d.v_strides = d.k_strides;
  d.o_strides =
      (clattn_strides){.batch = p->seq * m->q_width, .head = m->head_dim, .seq = m->q_width};
  clattn_attention_buffers ab = CLATTN_ATTENTION_BUFFERS_INIT;
  ab.q = ab.k = ab.v = ab.o = m->workspace;
  ab.q_offset = p->q_at;
  ab.k_offset = p->k_at;
  ab.v_offset = p->v_at;
  ab.o_offset = p->o_at;
  ab.kv_lengths = b->kv_lengths;
  return clattn_attention(m->ctx, &d, &ab, NULL, queue, 0, NULL, NULL);
}

/* Enqueues the whole forward pass; the caller holds m->lock. */
static clattn_status forward_locked(clattn_mha* m, const mha_plan* p, const clattn_mha_buffers* b,
                                    cl_command_queue queue, cl_uint num_wait, const cl_event* wait,
                                    cl_event* event) {
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  cl_event* waits = NULL;
  cl_event done = NULL;
  int enqueued = 0;
  CLATTN__CHECK(workspace_reserve(m, p->workspace));

  /* CLBlast takes no wait list: a marker carries the caller's events and the previous call's
   * last command (the workspace is shared, possibly with another queue). */
  const cl_uint count = num_wait + (m->last != NULL);
  if (count) {
    waits = clattn__malloc(count * sizeof *waits);
    if (!waits) {
      status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
      goto cleanup;
    }
    if (num_wait) memcpy(waits, wait, num_wait * sizeof *waits);
    if (m->last) waits[num_wait] = m->last;
    CLATTN__CL_CHECK(ctx, clEnqueueMarkerWithWaitList(queue, count, waits, NULL));
  }
  enqueued = 1;
  CLATTN__CHECK(project_inputs(m, p, b, queue));
  CLATTN__CHECK(attend(m, p, b, queue));
  /* y = bo, then y += O·Woᵀ; without bo, y = O·Woᵀ (CLBlast does not read C when beta is 0,
   * so whatever y held, NaN included, is overwritten). */
  const size_t e = m->d_model;
  const int bias = m->b_out != NULL;
  if (bias) CLATTN__CHECK(bias_rows(m, queue, b->y, b->y_offset, e, m->b_out, 0, p->rows, e));
  CLATTN__CHECK(project(ctx, queue, m->workspace, p->o_at, m->q_width, m->w_out, 0, b->y,
                        b->y_offset, e, p->rows, e, m->q_width, bias, &done));
cleanup:
  if (enqueued && !done) {
    /* Some commands may be in flight on the workspace: the next call must still wait. */
    clEnqueueMarkerWithWaitList(queue, 0, NULL, &done);
  }
  if (done) {
    if (m->last) clReleaseEvent(m->last);
    m->last = done;
    if (event && status == CLATTN_SUCCESS) {
      clRetainEvent(done);
      *event = done;
    }
  }
  free(waits);
  return status;
}

clattn_status clattn_mha_forward(clattn_mha* m, const clattn_mha_forward_desc* fwd,
                                 const clattn_mha_buffers* b, cl_command_queue queue,
                                 cl_uint num_wait_events, const cl_event* wait_events,
                                 cl_event* event) {
  if (event) *event = NULL;
  if (!m) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = m->ctx;
  if (num_wait_events && !wait_events) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "num_wait_events is %u but wait_events is NULL", num_wait_events);
  }
  if (!b) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "buffers is NULL");
  if (b->struct_size != sizeof(clattn_mha_buffers)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "clattn_mha_buffers.struct_size is %zu, expected %zu (use "
                        "CLATTN_MHA_BUFFERS_INIT)",
                        b->struct_size, sizeof(clattn_mha_buffers));
  }
  if (!b->x || !b->y) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "x and y must not be NULL");
  }
  if (!b->key && b->value) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "value is set but key is NULL: give key for cross-attention");
  }
  if (b->key && !b->value && m->k_dim != m->v_dim) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "value is NULL but the layer's k_dim (%zu) and v_dim (%zu) differ: give "
                        "a value input",
                        m->k_dim, m->v_dim);
  }
  clattn_status status;
  mha_plan p;
  CLATTN__CHECK(plan_make(m, fwd, b->key != NULL, &p));
  /* One K|V GEMM where key and value are the same input. */
  p.fused_kv = p.cross && m->k_dim == m->v_dim &&
               (!b->value || (b->value == b->key && b->value_offset == b->key_offset));
  CLATTN__CHECK(buffers_check(m, &p, b));
  if (queue && queue != ctx->queue) {
    CLATTN__CHECK(clattn__queue_check(ctx, queue));
  } else {
    queue = ctx->queue;
  }
  pthread_mutex_lock(&m->lock);
  status = forward_locked(m, &p, b, queue, num_wait_events, wait_events, event);
  pthread_mutex_unlock(&m->lock);
cleanup:
  return status;
}

clattn_status clattn_mha_forward_host(clattn_mha* m, const clattn_mha_forward_desc* fwd,
                                      const float* x, const float* key, const float* value,
                                      float* y, const int32_t* kv_lengths) {
  if (!m) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = m->ctx;
  if (!x || !y) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "x and y must be set");
  if (!key && value) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "value is set but key is NULL: give key for cross-attention");
  }
  if (key && !value && m->k_dim != m->v_dim) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "value is NULL but the layer's k_dim (%zu) and v_dim (%zu) differ: give "
                        "a value input",
                        m->k_dim, m->v_dim);
  }
  clattn_status status;
  mha_plan p;
  cl_event done = NULL;
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  CLATTN__CHECK(plan_make(m, fwd, key != NULL, &p));
  if (kv_lengths) {
    for (size_t i = 0; i < p.batch; ++i) {
      if (kv_lengths[i] < 0 || (size_t)kv_lengths[i] > p.seq_kv) {
        status = clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                              "kv_lengths[%zu] is %d, outside [0, seq_kv = %zu]", i,
                              (int)kv_lengths[i], p.seq_kv);
        goto cleanup;
      }
    }
  }
  const size_t f = sizeof(float), io = p.rows * m->d_model * f;
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, io, x, &b.x));
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_WRITE, io, NULL, &b.y));
  if (key) {
    CLATTN__CHECK(
        clattn__buffer_create(ctx, CL_MEM_READ_ONLY, p.rows_kv * m->k_dim * f, key, &b.key));
    if (value && value != key) {
      CLATTN__CHECK(
          clattn__buffer_create(ctx, CL_MEM_READ_ONLY, p.rows_kv * m->v_dim * f, value, &b.value));
    }
  }
  if (kv_lengths) {
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, p.batch * sizeof(int32_t),
                                        kv_lengths, &b.kv_lengths));
  }
  CLATTN__CHECK(clattn_mha_forward(m, fwd, &b, ctx->queue, 0, NULL, &done));
  CLATTN__CL_CHECK(ctx, clEnqueueReadBuffer(ctx->queue, b.y, CL_TRUE, 0, io, y, 1, &done, NULL));
cleanup:
  if (done) clReleaseEvent(done);
  cl_mem mems[5] = {b.x, b.y, b.key, b.value, b.kv_lengths};
  for (int i = 0; i < 5; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  return status;
}
