/* The multi-head attention layer: weights on the device in the layout the GEMM kernels read
 * as it is (B [k, n] row-major), the input projections as GEMMs with their biases
 * (src/gemm.c: clattn's kernel or CLBlast's) into Q, K and V, the fused attention core
 * reading the projected heads through strides, and the output projection as one more
 * GEMM. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The bias kernel indexes with 32-bit unsigned integers, as the core does. */
#define MAX_INDEX ((size_t)UINT32_MAX)

/* The workspace's buffers: the projections and the heads' output, CLBlast's and the core's
 * scratch, the core's LSE when attention weights are asked for, and in a 16-bit layer the
 * float32 copies of x, key, value and y. */
enum { WS_Q, WS_K, WS_V, WS_O, WS_TEMP, WS_CORE, WS_LSE, WS_X, WS_KEY, WS_VALUE, WS_Y, WS_COUNT };

struct clattn_mha {
  clattn_context* ctx; /* borrowed: must outlive the layer */
  clattn_dtype dtype;  /* storage of x, key, value, y and the given weights */
  size_t d_model, heads, heads_kv, head_dim, k_dim, v_dim;
  float scale;
  size_t q_width;  /* H·D: width of Q, of O and of the attention output */
  size_t kv_width; /* Hkv·D: width of K and of V */
  /* The weights transposed, each in its own buffer: the GEMMs' B matrices [k, n], read by
   * clattn's GEMM kernel and by CLBlast's without a copy (row-major B is read as it is, and
   * offset 0 with a leading dimension of n is what lets CLBlast skip its copy). */
  cl_mem w_q;   /* Wqᵀ [E, H·D] */
  cl_mem w_k;   /* Wkᵀ [k_dim, Hkv·D] */
  cl_mem w_v;   /* Wvᵀ [v_dim, Hkv·D] */
  cl_mem w_out; /* Woᵀ [H·D, E] */
  cl_mem b_in;  /* [bq; bk; bv], (H + 2·Hkv)·D; NULL when no input bias was given */
  cl_mem b_out; /* bo [E]; NULL when none was given */
  /* Rotary embeddings of Q and K (cl/rope.cl); rope_kernel NULL: none. rope_freq holds the
   * inverse frequencies theta^(-2i/rope_dims), i < rope_half, each as a float pair hi, lo
   * (computed in double). The kernel is created once; its arguments are set under `lock`. */
  int rope_neox;
  size_t rope_half;
  double rope_theta;
  cl_mem rope_freq;
  cl_kernel rope_kernel;
  size_t rope_local; /* its work-group size */
  /* A 16-bit layer's conversions (cl/convert.cl, kernels the context keeps for every layer of
   * the dtype; their arguments are set under their own lock): x, key and value widened into the
   * workspace, y rounded from it; NULL in a float32 layer. Arguments set under `lock`. */
  clattn__op_kernel *widen, *narrow;

  /* Everything below is per-call state, guarded by `lock`. */
  pthread_mutex_t lock;
  /* The workspace: Q, K, V and the core's output O, each a buffer of its own at offset 0
   * (CLBlast copies a C or A elsewhere), and CLBlast's temporary buffer for the copies it
   * still makes. Each grows to the largest call and is reused. */
  struct {
    cl_mem mem;
    size_t bytes;
  } ws[WS_COUNT];
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

/* Checks that a weight tensor is usable for `elements` elements of the layer's dtype: not
 * both sources, and a buffer of the context that is large enough. */
static clattn_status tensor_check(const clattn_mha* m, const clattn_mha_tensor* t, const char* name,
                                  size_t elements) {
  if (t->host && t->mem) {
    return clattn__fail(m->ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "%s: give either a host array or a cl_mem, not both", name);
  }
  if (!t->mem) return CLATTN_SUCCESS;
  /* A buffer of the layer's cl_context, large enough (desc_resolve bounds the sizes). */
  return clattn__buffer_check(m->ctx, t->mem, name, t->offset, elements,
                              clattn__dtype_size(m->dtype), SIZE_MAX);
}

/* Reads n elements of a given tensor from element `first` on into dst as float32, converting
 * from the layer's dtype (a cl_mem is read back on ctx->queue, blocking). */
static clattn_status tensor_read(const clattn_mha* m, const clattn_mha_tensor* t, size_t first,
                                 size_t n, float* dst) {
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  const size_t item = clattn__dtype_size(m->dtype);
  void* read = NULL;
  const void* src = t->host ? (const char*)t->host + first * item : NULL;
  if (!src) {
    read = clattn__malloc(n * item);
    if (!read) return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    CLATTN__CL_CHECK(
        ctx, clEnqueueReadBuffer(ctx->queue, t->mem, CL_TRUE, (t->offset + first) * item, n * item,
                                 read, 0, NULL, NULL));
    src = read;
  }
  clattn_convert(src, m->dtype, dst, CLATTN_DTYPE_F32, n);
cleanup:
  free(read);
  return status;
}

/* Creates *out holding Wᵀ [cols, rows] in float32, the transpose of `rows` rows of a row-major
 * weight W [.., cols] from its row `first` on. Transposed on the host: once per layer, and no
 * kernel to build. */
static clattn_status weight_load_transposed(const clattn_mha* m, const clattn_mha_tensor* t,
                                            size_t first, size_t rows, size_t cols, cl_mem* out) {
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  const size_t f = sizeof(float), n = rows * cols;
  float* w = clattn__malloc(n * f);
  float* wt = clattn__malloc(n * f);
  if (!w || !wt) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  CLATTN__CHECK(tensor_read(m, t, first * cols, n, w));
  /* In 32x32 blocks, so that neither side strides through memory a float at a time. */
  enum { BLOCK = 32 };
  for (size_t r0 = 0; r0 < rows; r0 += BLOCK) {
    for (size_t c0 = 0; c0 < cols; c0 += BLOCK) {
      const size_t r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;
      const size_t c1 = c0 + BLOCK < cols ? c0 + BLOCK : cols;
      for (size_t r = r0; r < r1; ++r) {
        for (size_t c = c0; c < c1; ++c) wt[c * rows + r] = w[r * cols + c];
      }
    }
  }
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, n * f, wt, out));
cleanup:
  free(w);
  free(wt);
  return status;
}

/* clattn_mha_desc as 0.2 published it: up to `scale`. */
#define MHA_DESC_V0_2 offsetof(clattn_mha_desc, rope)

/* Checks the rotary fields of a descriptor and records them in m. */
static clattn_status rope_resolve(const clattn_context* ctx, const clattn_mha_desc* d,
                                  size_t head_dim, clattn_mha* m) {
  if (d->rope != CLATTN_ROPE_NONE && d->rope != CLATTN_ROPE_NEOX && d->rope != CLATTN_ROPE_GPTJ) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "rope is %d: expected CLATTN_ROPE_NONE, CLATTN_ROPE_NEOX or "
                        "CLATTN_ROPE_GPTJ",
                        (int)d->rope);
  }
  if (d->rope_dims > head_dim || d->rope_dims % 2) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "rope_dims %zu must be even and at most head_dim (%zu)", d->rope_dims,
                        head_dim);
  }
  if (!isfinite(d->rope_theta) || d->rope_theta < 0.0f) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "rope_theta %g must be finite and above 0 (0: 10000)",
                        (double)d->rope_theta);
  }
  const size_t dims = d->rope_dims ? d->rope_dims : head_dim;
  if (d->rope != CLATTN_ROPE_NONE && dims % 2) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "rope_dims 0 means head_dim (%zu), which is odd: give an even rope_dims",
                        head_dim);
  }
  m->rope_neox = d->rope == CLATTN_ROPE_NEOX;
  m->rope_half = d->rope != CLATTN_ROPE_NONE ? dims / 2 : 0;
  m->rope_theta = d->rope_theta != 0.0f ? (double)d->rope_theta : 10000.0;
  return CLATTN_SUCCESS;
}

static clattn_status desc_resolve(const clattn_context* ctx, const clattn_mha_desc* desc,
                                  clattn_mha* m) {
  if (!desc) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "desc is NULL");
  clattn_mha_desc copy;
  clattn_status status = clattn__struct_copy(ctx, "clattn_mha_desc", desc, MHA_DESC_V0_2,
                                             sizeof(clattn_mha_desc), &copy);
  if (status != CLATTN_SUCCESS) return status;
  if (desc->struct_size <= offsetof(clattn_mha_desc, rope_dims)) {
    /* 0.2's struct ended at `scale`; its sizeof (padding included) reaches over `rope`, so
     * those bytes are padding, not a style. */
    copy.rope = CLATTN_ROPE_NONE;
  }
  const clattn_mha_desc* d = &copy;
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
  CLATTN__CHECK(rope_resolve(ctx, d, head_dim, m));
  /* 0.3's struct ended at rope_theta, and its sizeof reaches over `dtype` as padding, which
   * its _INIT macro zero-fills (C11 6.7.9: the remainder is initialized as static storage,
   * padding to zero bits): F32. Another value there is refused, not guessed at. */
  if (!clattn__dtype_size(d->dtype)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "unknown dtype %d", (int)d->dtype);
  }
  m->dtype = d->dtype;
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
cleanup:
  return status;
}

/* Uploads the weights into the layer's buffers in float32 (every copy is blocking: the
 * caller may release its arrays and buffers once clattn_mha_create returns). */
static clattn_status weights_load(clattn_context* ctx, const clattn_mha_weights* given,
                                  clattn_mha* m) {
  if (!given) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "weights is NULL");
  clattn_mha_weights copy;
  clattn_status copied =
      clattn__struct_copy(ctx, "clattn_mha_weights", given, sizeof(clattn_mha_weights),
                          sizeof(clattn_mha_weights), &copy);
  if (copied != CLATTN_SUCCESS) return copied;
  const clattn_mha_weights* w = &copy;
  clattn_status status = CLATTN_SUCCESS;
  float* bias = NULL;
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
  CLATTN__CHECK(tensor_check(m, &w->in_proj_weight, "in_proj_weight", wq_n + wk_n + wv_n));
  CLATTN__CHECK(tensor_check(m, &w->q_proj_weight, "q_proj_weight", wq_n));
  CLATTN__CHECK(tensor_check(m, &w->k_proj_weight, "k_proj_weight", wk_n));
  CLATTN__CHECK(tensor_check(m, &w->v_proj_weight, "v_proj_weight", wv_n));
  CLATTN__CHECK(tensor_check(m, &w->in_proj_bias, "in_proj_bias", hq + 2 * hk));
  CLATTN__CHECK(tensor_check(m, &w->q_proj_bias, "q_proj_bias", hq));
  CLATTN__CHECK(tensor_check(m, &w->k_proj_bias, "k_proj_bias", hk));
  CLATTN__CHECK(tensor_check(m, &w->v_proj_bias, "v_proj_bias", hk));
  CLATTN__CHECK(tensor_check(m, &w->out_proj_weight, "out_proj_weight", e * hq));
  CLATTN__CHECK(tensor_check(m, &w->out_proj_bias, "out_proj_bias", e));

  if (packed) {
    CLATTN__CHECK(weight_load_transposed(m, &w->in_proj_weight, 0, hq, e, &m->w_q));
    CLATTN__CHECK(weight_load_transposed(m, &w->in_proj_weight, hq, hk, e, &m->w_k));
    CLATTN__CHECK(weight_load_transposed(m, &w->in_proj_weight, hq + hk, hk, e, &m->w_v));
  } else {
    CLATTN__CHECK(weight_load_transposed(m, &w->q_proj_weight, 0, hq, e, &m->w_q));
    CLATTN__CHECK(weight_load_transposed(m, &w->k_proj_weight, 0, hk, m->k_dim, &m->w_k));
    CLATTN__CHECK(weight_load_transposed(m, &w->v_proj_weight, 0, hk, m->v_dim, &m->w_v));
  }
  /* The biases in float32, [bq; bk; bv] in one buffer (those left out are zeros) and bo. */
  bias = clattn__calloc(hq + 2 * hk + e, f);
  if (!bias) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  if (packed_bias) {
    CLATTN__CHECK(tensor_read(m, &w->in_proj_bias, 0, hq + 2 * hk, bias));
  } else if (separate_bias) {
    if (tensor_given(&w->q_proj_bias)) CLATTN__CHECK(tensor_read(m, &w->q_proj_bias, 0, hq, bias));
    if (tensor_given(&w->k_proj_bias)) {
      CLATTN__CHECK(tensor_read(m, &w->k_proj_bias, 0, hk, bias + hq));
    }
    if (tensor_given(&w->v_proj_bias)) {
      CLATTN__CHECK(tensor_read(m, &w->v_proj_bias, 0, hk, bias + hq + hk));
    }
  }
  if (packed_bias || separate_bias) {
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, (hq + 2 * hk) * f, bias, &m->b_in));
  }
  CLATTN__CHECK(weight_load_transposed(m, &w->out_proj_weight, 0, e, hq, &m->w_out));
  if (tensor_given(&w->out_proj_bias)) {
    float* bo = bias + hq + 2 * hk;
    CLATTN__CHECK(tensor_read(m, &w->out_proj_bias, 0, e, bo));
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, e * f, bo, &m->b_out));
  }
cleanup:
  free(bias);
  return status;
}

/* A 16-bit layer's conversion kernels (none for float32), from the context's. */
static clattn_status convert_create(clattn_context* ctx, clattn_mha* m) {
  if (m->dtype == CLATTN_DTYPE_F32) return CLATTN_SUCCESS;
  char options[32];
  snprintf(options, sizeof options, "-DQO_DTYPE=%d", (int)m->dtype);
  clattn_status status =
      clattn__op_kernel_get(ctx, "convert", options, "clattn_convert_widen", &m->widen);
  if (status != CLATTN_SUCCESS) return status;
  return clattn__op_kernel_get(ctx, "convert", options, "clattn_convert_narrow", &m->narrow);
}

/* The rotary embeddings' table and kernel (ctx->queue; finished before returning). */
static clattn_status rope_create(clattn_context* ctx, clattn_mha* m) {
  if (!m->rope_half) return CLATTN_SUCCESS;
  clattn_status status = CLATTN_SUCCESS;
  const size_t half = m->rope_half;
  float* table = clattn__malloc(2 * half * sizeof(float));
  if (!table) return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  for (size_t i = 0; i < half; ++i) {
    /* theta^(-2i/rope_dims) = exp(-(i / half) ln theta), in double, kept as hi + lo. */
    const double f = exp(-((double)i / (double)half) * log(m->rope_theta));
    table[2 * i] = (float)f;
    table[2 * i + 1] = (float)(f - (double)table[2 * i]);
  }
  CLATTN__CHECK(
      clattn__buffer_create(ctx, CL_MEM_READ_ONLY, 2 * half * sizeof(float), table, &m->rope_freq));
  CLATTN__CHECK(clattn__kernel_create(ctx, "rope", "", "clattn_rope", &m->rope_kernel));
  size_t limit = 0;
  CLATTN__CL_CHECK(ctx,
                   clGetKernelWorkGroupInfo(m->rope_kernel, ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                                            sizeof limit, &limit, NULL));
  m->rope_local = 64;
  while (m->rope_local > 1 && m->rope_local > limit) m->rope_local /= 2;
cleanup:
  free(table);
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
  CLATTN__CHECK(rope_create(ctx, m));
  CLATTN__CHECK(convert_create(ctx, m));
  *out = m;
  m = NULL;
cleanup:
  clattn_mha_destroy(m);
  return status;
}

clattn_status clattn_mha_destroy(clattn_mha* m) {
  if (!m) return CLATTN_SUCCESS;
  cl_mem mems[7] = {m->w_q, m->w_k, m->w_v, m->w_out, m->b_in, m->b_out, m->rope_freq};
  for (int i = 0; i < 7; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  if (m->rope_kernel) clReleaseKernel(m->rope_kernel);
  for (int i = 0; i < WS_COUNT; ++i) {
    if (m->ws[i].mem) clReleaseMemObject(m->ws[i].mem);
  }
  if (m->last) clReleaseEvent(m->last);
  pthread_mutex_destroy(&m->lock);
  free(m);
  return CLATTN_SUCCESS;
}

/* ------------------------------------------------------------------------ forward */

/* A resolved forward call: its sizes, and what its workspace holds. */
typedef struct mha_plan {
  size_t batch, seq, seq_kv;
  int causal, cross;
  size_t rows, rows_kv; /* batch·seq, batch·seq_kv */
  size_t q_floats;      /* Q [rows, H·D], and the core's output O alike */
  size_t kv_floats;     /* K and V [rows_kv, Hkv·D] each */
  size_t temp_bytes;    /* CLBlast's temporary buffer: the most one of the GEMMs needs */
  /* The attention core on the projected heads: its shape, its plan (owned by the context)
   * and the scratch it takes from the layer's workspace. */
  clattn__attention_shape core;
  clattn__plan* core_plan;
  size_t core_bytes;
} mha_plan;

/* The core's shape over the layer's Q, K, V and O ([batch, seq, heads, head_dim] rows, O as
 * [batch, seq, H·D]) and its plan, made on the first call of the shape class. */
static clattn_status core_plan(const clattn_mha* m, mha_plan* p) {
  const size_t hq = m->q_width, hk = m->kv_width;
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
  d.q_strides = (clattn_strides){.batch = p->seq * hq, .head = m->head_dim, .seq = hq};
  d.k_strides = (clattn_strides){.batch = p->seq_kv * hk, .head = m->head_dim, .seq = hk};
  d.v_strides = d.k_strides;
  d.o_strides = d.q_strides;
  clattn_status status = clattn__attention_shape_resolve(m->ctx, &d, &p->core);
  if (status == CLATTN_SUCCESS) status = clattn__plan_get(m->ctx, &p->core, NULL, &p->core_plan);
  if (status != CLATTN_SUCCESS) return status;
  p->core_bytes = clattn__plan_workspace_bytes(p->core_plan, &p->core);
  if (p->core_bytes == SIZE_MAX) {
    return clattn__fail(m->ctx, CLATTN_ERROR_UNSUPPORTED,
                        "the attention core's workspace for this shape is beyond 32-bit indexing");
  }
  return CLATTN_SUCCESS;
}

/* The call's GEMMs, in order: Q = x·Wqᵀ, K = key·Wkᵀ, V = value·Wvᵀ (key and value being x
 * in self-attention) and y = O·Woᵀ, each adding to the bias rows already in C where the
 * layer has biases. */
enum { GEMM_Q, GEMM_K, GEMM_V, GEMM_OUT, GEMM_COUNT };

/* C [m, n] = A [m, k] (leading dimension k, at a_offset) · B [k, n] (+ bias [n] from
 * bias_offset on every row; bias may be NULL), all row-major, with B one of the layer's
 * transposed weights and C at c_offset with leading dimension n. */
static clattn__gemm_args projection(size_t m, size_t n, size_t k, cl_mem a, size_t a_offset,
                                    cl_mem w, cl_mem c, size_t c_offset, cl_mem bias,
                                    size_t bias_offset, cl_mem temp) {
  clattn__gemm_args g = {.m = m,
                         .n = n,
                         .k = k,
                         .alpha = 1.0f,
                         .beta = 0.0f,
                         .a = a,
                         .b = w,
                         .c = c,
                         .a_offset = a_offset,
                         .c_offset = c_offset,
                         .lda = k,
                         .ldb = n,
                         .ldc = n,
                         .bias = bias,
                         .bias_offset = bias_offset,
                         .temp = temp};
  return g;
}

/* Fills the call's GEMMs. b NULL: the caller's matrices at offset 0 and no buffers (for
 * sizing); otherwise the caller's buffers and the layer's workspace. */
static void gemms_make(const clattn_mha* m, const mha_plan* p, const clattn_mha_buffers* b,
                       clattn__gemm_args g[GEMM_COUNT]) {
  const clattn_mha_buffers none = CLATTN_MHA_BUFFERS_INIT;
  const int sizing = b == NULL;
  if (sizing) b = &none;
  const size_t hq = m->q_width, hk = m->kv_width;
  cl_mem key = p->cross ? b->key : b->x;
  size_t key_offset = p->cross ? b->key_offset : b->x_offset;
  cl_mem value = p->cross && b->value ? b->value : key;
  size_t value_offset = p->cross && b->value ? b->value_offset : key_offset;
  cl_mem ws[WS_COUNT] = {NULL};
  for (int i = 0; i < WS_COUNT && !sizing; ++i) ws[i] = m->ws[i].mem;
  g[GEMM_Q] = projection(p->rows, hq, m->d_model, b->x, b->x_offset, m->w_q, ws[WS_Q], 0, m->b_in,
                         0, ws[WS_TEMP]);
  g[GEMM_K] = projection(p->rows_kv, hk, m->k_dim, key, key_offset, m->w_k, ws[WS_K], 0, m->b_in,
                         hq, ws[WS_TEMP]);
  g[GEMM_V] = projection(p->rows_kv, hk, m->v_dim, value, value_offset, m->w_v, ws[WS_V], 0,
                         m->b_in, hq + hk, ws[WS_TEMP]);
  g[GEMM_OUT] = projection(p->rows, m->d_model, hq, ws[WS_O], 0, m->w_out, b->y, b->y_offset,
                           m->b_out, 0, ws[WS_TEMP]);
}

/* Sets p->temp_bytes for the caller's offsets (b NULL: offsets 0). */
static clattn_status plan_temp(const clattn_mha* m, mha_plan* p, const clattn_mha_buffers* b) {
  clattn_status status = CLATTN_SUCCESS;
  clattn__gemm_args g[GEMM_COUNT];
  gemms_make(m, p, b, g);
  p->temp_bytes = 0;
  for (int i = 0; i < GEMM_COUNT; ++i) {
    size_t bytes = 0;
    CLATTN__CHECK(clattn__gemm_temp_size(m->ctx, &g[i], &bytes));
    if (bytes > p->temp_bytes) p->temp_bytes = bytes;
  }
cleanup:
  return status;
}

/* The call's sizes (checked); with_core 0 leaves the core's plan out (a cached forward's
 * attention goes through the cache). */
static clattn_status plan_sizes(const clattn_mha* m, const clattn_mha_forward_desc* given,
                                int cross, int with_core, mha_plan* p) {
  clattn_context* ctx = m->ctx;
  if (!given) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "fwd is NULL");
  clattn_mha_forward_desc copy;
  clattn_status status =
      clattn__struct_copy(ctx, "clattn_mha_forward_desc", given, sizeof(clattn_mha_forward_desc),
                          sizeof(clattn_mha_forward_desc), &copy);
  if (status != CLATTN_SUCCESS) return status;
  const clattn_mha_forward_desc* fwd = &copy;
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
  p->q_floats = mul(p->rows, m->q_width);
  p->kv_floats = mul(p->rows_kv, m->kv_width);
  /* Everything a kernel or CLBlast touches must be 32-bit indexable. */
  const size_t io = mul(p->rows, m->d_model > m->q_width ? m->d_model : m->q_width);
  const size_t kv_in = mul(p->rows_kv, m->k_dim > m->v_dim ? m->k_dim : m->v_dim);
  if (p->q_floats > MAX_INDEX || p->kv_floats > MAX_INDEX || io > MAX_INDEX || kv_in > MAX_INDEX) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                        "batch %zu, seq %zu, seq_kv %zu: tensors beyond 32-bit indexing", p->batch,
                        p->seq, p->seq_kv);
  }
  return with_core ? core_plan(m, p) : CLATTN_SUCCESS;
}

static clattn_status plan_make(const clattn_mha* m, const clattn_mha_forward_desc* given, int cross,
                               mha_plan* p) {
  return plan_sizes(m, given, cross, 1, p);
}

/* Bytes of the float32 copies of x, key, value and y a 16-bit layer keeps (0 in float32). */
static size_t convert_bytes(const clattn_mha* m, const mha_plan* p) {
  if (m->dtype == CLATTN_DTYPE_F32) return 0;
  size_t n = mul(mul(p->rows, m->d_model), 2);
  if (p->cross) n = add(n, mul(p->rows_kv, add(m->k_dim, m->v_dim)));
  return mul(n, sizeof(float));
}

clattn_status clattn_mha_workspace_size(const clattn_mha* mha, const clattn_mha_forward_desc* fwd,
                                        int cross, size_t* bytes) {
  if (!mha || !bytes) return CLATTN_ERROR_INVALID_ARGUMENT;
  mha_plan p;
  clattn_status status = plan_make(mha, fwd, cross != 0, &p);
  /* CLBlast's copies for inputs and outputs at offset 0 (a call whose x, key, value or y is
   * at another offset may need more, for CLBlast's copy of that matrix). */
  if (status == CLATTN_SUCCESS) status = plan_temp(mha, &p, NULL);
  if (status == CLATTN_SUCCESS) {
    *bytes = add(add(mul(add(p.q_floats, p.kv_floats), 2 * sizeof(float)), p.temp_bytes),
                 add(p.core_bytes, convert_bytes(mha, &p)));
  }
  return status;
}

/* clattn_mha_buffers as 0.3 published it, before the attention weights. */
#define MHA_BUFFERS_V0_3 offsetof(clattn_mha_buffers, attn_weights)

/* Checks one caller buffer: offset + elements at most MAX_INDEX, as the call plan's sizes. */
static clattn_status io_check(const clattn_context* ctx, cl_mem mem, const char* name,
                              size_t offset, size_t elements, size_t item) {
  return clattn__buffer_check(ctx, mem, name, offset, elements, item, MAX_INDEX);
}

static clattn_status buffers_check(const clattn_mha* m, const mha_plan* p,
                                   const clattn_mha_buffers* b) {
  const clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  const size_t f = clattn__dtype_size(m->dtype);
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

/* Grows one workspace buffer to `bytes` (contents are not kept). Commands already enqueued
 * on the old buffer still complete: OpenCL frees it only after them. */
static clattn_status workspace_reserve(clattn_mha* m, int which, size_t bytes) {
  if (!bytes || (m->ws[which].mem && m->ws[which].bytes >= bytes)) return CLATTN_SUCCESS;
  if (bytes > m->ctx->info.max_mem_alloc_size) {
    return clattn__fail(m->ctx, CLATTN_ERROR_OUT_OF_MEMORY,
                        "the layer's workspace (a buffer of %zu bytes) exceeds the device's "
                        "allocation limit (%llu bytes)",
                        bytes, (unsigned long long)m->ctx->info.max_mem_alloc_size);
  }
  cl_mem grown = NULL;
  clattn_status status = clattn__buffer_create(m->ctx, CL_MEM_READ_WRITE, bytes, NULL, &grown);
  if (status != CLATTN_SUCCESS) return status;
  if (m->ws[which].mem) clReleaseMemObject(m->ws[which].mem);
  m->ws[which].mem = grown;
  m->ws[which].bytes = bytes;
  return CLATTN_SUCCESS;
}

static clattn_status workspace_reserve_all(clattn_mha* m, const mha_plan* p) {
  clattn_status status = CLATTN_SUCCESS;
  const size_t f = sizeof(float);
  CLATTN__CHECK(workspace_reserve(m, WS_Q, p->q_floats * f));
  CLATTN__CHECK(workspace_reserve(m, WS_K, p->kv_floats * f));
  CLATTN__CHECK(workspace_reserve(m, WS_V, p->kv_floats * f));
  CLATTN__CHECK(workspace_reserve(m, WS_O, p->q_floats * f));
  CLATTN__CHECK(workspace_reserve(m, WS_TEMP, p->temp_bytes));
  CLATTN__CHECK(workspace_reserve(m, WS_CORE, p->core_bytes));
  if (m->dtype != CLATTN_DTYPE_F32) {
    CLATTN__CHECK(workspace_reserve(m, WS_X, mul(p->rows, m->d_model) * f));
    CLATTN__CHECK(workspace_reserve(m, WS_Y, mul(p->rows, m->d_model) * f));
    if (p->cross) {
      CLATTN__CHECK(workspace_reserve(m, WS_KEY, mul(p->rows_kv, m->k_dim) * f));
      CLATTN__CHECK(workspace_reserve(m, WS_VALUE, mul(p->rows_kv, m->v_dim) * f));
    }
  }
cleanup:
  return status;
}

/* The float32 buffers a call computes on: the caller's own in a float32 layer; in a 16-bit
 * one, the workspace's widened x, key and value and the float32 y the output projection
 * writes (all at offset 0), which convert_inputs and convert_output fill and read. */
static clattn_mha_buffers f32_view(const clattn_mha* m, const clattn_mha_buffers* b) {
  clattn_mha_buffers f = *b;
  if (m->dtype == CLATTN_DTYPE_F32) return f;
  f.x = m->ws[WS_X].mem;
  f.y = m->ws[WS_Y].mem;
  f.x_offset = f.y_offset = 0;
  if (b->key) {
    f.key = m->ws[WS_KEY].mem;
    f.key_offset = 0;
  }
  if (b->value) {
    f.value = m->ws[WS_VALUE].mem;
    f.value_offset = 0;
  }
  return f;
}

/* One conversion launch of n elements, in work-groups of a fixed size (the same for every
 * call, so that no driver compiles the kernel again for a new global size). */
static clattn_status convert(clattn_mha* m, clattn__op_kernel* op, cl_mem src, size_t src_offset,
                             cl_mem dst, size_t dst_offset, size_t n, cl_command_queue queue,
                             cl_event* event) {
  clattn_context* ctx = m->ctx;
  size_t local = 64;
  while (local > 1 && local > op->group_limit) local /= 2;
  const size_t global = add(n, local - 1) / local * local;
  if (global > MAX_INDEX) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED, "a conversion beyond 32-bit indexing");
  }
  cl_uint i = 0;
  cl_int err = CL_SUCCESS;
  pthread_mutex_lock(&op->lock);
  clattn__arg_mem(op->kernel, &i, src, &err);
  clattn__arg_uint(op->kernel, &i, src_offset, &err);
  clattn__arg_mem(op->kernel, &i, dst, &err);
  clattn__arg_uint(op->kernel, &i, dst_offset, &err);
  clattn__arg_uint(op->kernel, &i, n, &err);
  if (err == CL_SUCCESS) {
    err = clEnqueueNDRangeKernel(queue, op->kernel, 1, NULL, &global, &local, 0, NULL, event);
  }
  pthread_mutex_unlock(&op->lock);
  if (err != CL_SUCCESS)
    return clattn__fail_cl(ctx, err, "clEnqueueNDRangeKernel (conversion)", __FILE__, __LINE__);
  return CLATTN_SUCCESS;
}

/* A 16-bit layer's inputs widened into the float32 view f (nothing in a float32 layer). */
static clattn_status convert_inputs(clattn_mha* m, const mha_plan* p, const clattn_mha_buffers* b,
                                    const clattn_mha_buffers* f, cl_command_queue queue) {
  if (m->dtype == CLATTN_DTYPE_F32) return CLATTN_SUCCESS;
  clattn_status status = CLATTN_SUCCESS;
  CLATTN__CHECK(
      convert(m, m->widen, b->x, b->x_offset, f->x, 0, mul(p->rows, m->d_model), queue, NULL));
  if (b->key) {
    CLATTN__CHECK(convert(m, m->widen, b->key, b->key_offset, f->key, 0, mul(p->rows_kv, m->k_dim),
                          queue, NULL));
  }
  if (b->value) {
    CLATTN__CHECK(convert(m, m->widen, b->value, b->value_offset, f->value, 0,
                          mul(p->rows_kv, m->v_dim), queue, NULL));
  }
cleanup:
  return status;
}

/* The output projection into the float32 view's y, and in a 16-bit layer y rounded from it
 * into the caller's; *event gets the call's last command. */
static clattn_status project_output(clattn_mha* m, const mha_plan* p, const clattn_mha_buffers* b,
                                    const clattn_mha_buffers* f, const clattn__gemm_args* g,
                                    cl_command_queue queue, cl_event* event) {
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  const size_t e = m->d_model;
  const int narrow = m->dtype != CLATTN_DTYPE_F32;
  /* y = O·Woᵀ + bo (no GEMM reads C here, so whatever y held, NaN included, is
   * overwritten). */
  CLATTN__CHECK(clattn__gemm(ctx, queue, g, narrow ? NULL : event));
  if (narrow) {
    CLATTN__CHECK(convert(m, m->narrow, f->y, 0, b->y, b->y_offset, mul(p->rows, e), queue, event));
  }
cleanup:
  return status;
}

/* The input projections into Q, K and V, each with its bias when the layer has biases. */
static clattn_status project_inputs(clattn_mha* m, const clattn__gemm_args g[GEMM_COUNT],
                                    cl_command_queue queue) {
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  CLATTN__CHECK(clattn__gemm(ctx, queue, &g[GEMM_Q], NULL));
  CLATTN__CHECK(clattn__gemm(ctx, queue, &g[GEMM_K], NULL));
  CLATTN__CHECK(clattn__gemm(ctx, queue, &g[GEMM_V], NULL));
cleanup:
  return status;
}

/* Rotates Q (q_rows rows of H heads, q_seq per sequence) and K (k_rows rows of Hkv heads,
 * k_seq per sequence) in the layer's workspace in place, one launch for both (cl/rope.cl):
 * positions start[b] + row (start NULL: from 0). Nothing without rope; the caller holds
 * m->lock (the kernel's arguments). */
static clattn_status rope_apply(clattn_mha* m, size_t q_rows, size_t q_seq, size_t k_rows,
                                size_t k_seq, cl_mem start, cl_command_queue queue) {
  if (!m->rope_kernel) return CLATTN_SUCCESS;
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  const size_t pairs =
      add(mul(mul(q_rows, m->heads), m->rope_half), mul(mul(k_rows, m->heads_kv), m->rope_half));
  /* q_rows·H·D and k_rows·Hkv·D are each within 32 bits (plan_make), so their halves sum
   * within 32 bits too; rounded up to the work-group, checked all the same. */
  const size_t local = m->rope_local, global = add(pairs, local - 1) / local * local;
  if (global > MAX_INDEX) {
    return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED, "rotary embeddings beyond 32-bit indexing");
  }
  cl_kernel kr = m->rope_kernel;
  cl_uint i = 0;
  cl_int err = CL_SUCCESS;
  const cl_int neox = m->rope_neox, has_start = start != NULL;
  clattn__arg_mem(kr, &i, m->ws[WS_Q].mem, &err);
  clattn__arg_uint(kr, &i, 0, &err);
  clattn__arg_uint(kr, &i, q_rows, &err);
  clattn__arg_uint(kr, &i, m->heads, &err);
  clattn__arg_uint(kr, &i, q_seq, &err);
  clattn__arg_mem(kr, &i, m->ws[WS_K].mem, &err);
  clattn__arg_uint(kr, &i, 0, &err);
  clattn__arg_uint(kr, &i, k_rows, &err);
  clattn__arg_uint(kr, &i, m->heads_kv, &err);
  clattn__arg_uint(kr, &i, k_seq, &err);
  clattn__arg_uint(kr, &i, m->head_dim, &err);
  clattn__arg_uint(kr, &i, m->rope_half, &err);
  err |= clSetKernelArg(kr, i++, sizeof neox, &neox);
  clattn__arg_mem(kr, &i, m->rope_freq, &err);
  clattn__arg_mem(kr, &i, start, &err); /* NULL is allowed for a __global pointer */
  err |= clSetKernelArg(kr, i++, sizeof has_start, &has_start);
  CLATTN__CL_CHECK(ctx, err);
  CLATTN__CL_CHECK(ctx, clEnqueueNDRangeKernel(queue, kr, 1, NULL, &global, &local, 0, NULL, NULL));
cleanup:
  return status;
}

/* ------------------------------------------------------------------------ attention weights */

static int weights_wanted(const clattn_mha_buffers* b) {
  return b->attn_weights != NULL || b->attn_weights_mean != NULL;
}

/* Checks a call's weight buffers for `cols` keys per row (seq_kv; over a cache, the longest
 * sequence after the append): their sizes, and no element shared with another of the call's
 * buffers in one cl_mem (the weights are written while x, key and value may still be read and
 * before y is). */
static clattn_status weights_check(const clattn_mha* m, const mha_plan* p,
                                   const clattn_mha_buffers* b, size_t cols) {
  const clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  const size_t f = sizeof(float), rows_cols = mul(p->rows, cols);
  const struct {
    const char* name;
    cl_mem mem;
    size_t offset, span;
  } t[7] = {{"attn_weights", b->attn_weights, b->attn_weights_offset, mul(rows_cols, m->heads)},
            {"attn_weights_mean", b->attn_weights_mean, b->attn_weights_mean_offset, rows_cols},
            {"x", b->x, b->x_offset, mul(p->rows, m->d_model)},
            {"y", b->y, b->y_offset, mul(p->rows, m->d_model)},
            {"key", p->cross ? b->key : NULL, b->key_offset, mul(p->rows_kv, m->k_dim)},
            {"value", p->cross ? b->value : NULL, b->value_offset, mul(p->rows_kv, m->v_dim)},
            {"kv_lengths", b->kv_lengths, 0, p->batch}};
  for (int w = 0; w < 2; ++w) {
    if (!t[w].mem) continue;
    if (t[w].span > MAX_INDEX) {
      return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                          "%s: %zu weights are beyond 32-bit indexing", t[w].name, t[w].span);
    }
    CLATTN__CHECK(io_check(ctx, t[w].mem, t[w].name, t[w].offset, t[w].span, f));
    for (int o = 0; o < 7; ++o) {
      if (o == w || t[o].mem != t[w].mem) continue;
      if (t[w].offset < t[o].offset + t[o].span && t[o].offset < t[w].offset + t[w].span) {
        return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                            "%s overlaps %s in the same cl_mem: the weights must not alias the "
                            "call's other buffers",
                            t[w].name, t[o].name);
      }
    }
  }
cleanup:
  return status;
}

/* The weights (and their mean over heads) from the layer's Q and K and the core's LSE, into the
 * caller's buffers, through the probabilities kernel (src/probs.c). paged (a cached forward):
 * the cache's step instead of the layer's K. */
static clattn_status weights_enqueue(clattn_mha* m, const mha_plan* p, const clattn_mha_buffers* b,
                                     const clattn__attention_shape* core, clattn_kv_cache* cache,
                                     const clattn__kv_step* step, cl_command_queue queue) {
  clattn_status status = CLATTN_SUCCESS;
  clattn_attention_buffers ab = CLATTN_ATTENTION_BUFFERS_INIT;
  ab.q = m->ws[WS_Q].mem;
  ab.k = m->ws[WS_K].mem;
  ab.lse = m->ws[WS_LSE].mem;
  ab.kv_lengths = b->kv_lengths;
  const clattn__probs_region all = {
      .heads = m->heads, .rows = p->seq, .cols = step ? step->max_length : p->seq_kv};
  cl_mem out[2] = {b->attn_weights, b->attn_weights_mean};
  const size_t at[2] = {b->attn_weights_offset, b->attn_weights_mean_offset};
  for (int mean = 0; mean < 2; ++mean) {
    if (!out[mean]) continue;
    if (step) {
      ab.k = NULL;
      CLATTN__CHECK(clattn__kv_step_probs(cache, step, core, &ab, &all, mean, out[mean], at[mean],
                                          queue, 0, NULL, NULL));
    } else {
      CLATTN__CHECK(clattn__probs_enqueue(m->ctx, core, &ab, &all, mean, out[mean], at[mean], queue,
                                          0, NULL, NULL, NULL));
    }
  }
cleanup:
  return status;
}

/* The attention core on the projected heads, through its plan: Q, K and V are read in place
 * through strides; O is written as [batch, seq, H·D]; its scratch is the layer's. */
static clattn_status attend(clattn_mha* m, const mha_plan* p, const clattn_mha_buffers* b,
                            cl_command_queue queue) {
  clattn_attention_buffers ab = CLATTN_ATTENTION_BUFFERS_INIT;
  ab.q = m->ws[WS_Q].mem;
  ab.k = m->ws[WS_K].mem;
  ab.v = m->ws[WS_V].mem;
  ab.o = m->ws[WS_O].mem;
  ab.kv_lengths = b->kv_lengths;
  if (weights_wanted(b)) ab.lse = m->ws[WS_LSE].mem; /* for the weights */
  return clattn__plan_enqueue(m->ctx, p->core_plan, &p->core, &ab, m->ws[WS_CORE].mem, 0, queue, 0,
                              NULL, NULL, NULL);
}

/* Enqueues the whole forward pass; the caller holds m->lock. */
static clattn_status forward_locked(clattn_mha* m, mha_plan* p, const clattn_mha_buffers* b,
                                    cl_command_queue queue, cl_uint num_wait, const cl_event* wait,
                                    cl_event* event) {
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  cl_event* waits = NULL;
  cl_event done = NULL;
  int enqueued = 0;
  clattn__gemm_args g[GEMM_COUNT];
  /* The GEMMs run on the float32 view: the caller's buffers, or in a 16-bit layer the
   * workspace's copies at offset 0 (CLBlast's copies depend on the offsets alone). */
  CLATTN__CHECK(plan_temp(m, p, m->dtype == CLATTN_DTYPE_F32 ? b : NULL));
  CLATTN__CHECK(workspace_reserve_all(m, p));
  if (weights_wanted(b)) {
    CLATTN__CHECK(workspace_reserve(m, WS_LSE, mul(p->rows, m->heads) * sizeof(float)));
  }
  const clattn_mha_buffers f = f32_view(m, b);
  gemms_make(m, p, &f, g);

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
  CLATTN__CHECK(convert_inputs(m, p, b, &f, queue));
  CLATTN__CHECK(project_inputs(m, g, queue));
  CLATTN__CHECK(rope_apply(m, p->rows, p->seq, p->rows_kv, p->seq_kv, NULL, queue));
  CLATTN__CHECK(attend(m, p, b, queue));
  if (weights_wanted(b)) CLATTN__CHECK(weights_enqueue(m, p, b, &p->core, NULL, NULL, queue));
  CLATTN__CHECK(project_output(m, p, b, &f, &g[GEMM_OUT], queue, &done));
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
                                 const clattn_mha_buffers* given, cl_command_queue queue,
                                 cl_uint num_wait_events, const cl_event* wait_events,
                                 cl_event* event) {
  if (event) *event = NULL;
  if (!m) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = m->ctx;
  clattn_status status = clattn__wait_list_check(ctx, num_wait_events, wait_events);
  if (status != CLATTN_SUCCESS) return status;
  if (!given) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "buffers is NULL");
  clattn_mha_buffers copy;
  status = clattn__struct_copy(ctx, "clattn_mha_buffers", given, MHA_BUFFERS_V0_3,
                               sizeof(clattn_mha_buffers), &copy);
  if (status != CLATTN_SUCCESS) return status;
  const clattn_mha_buffers* b = &copy;
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
  mha_plan p;
  CLATTN__CHECK(plan_make(m, fwd, b->key != NULL, &p));
  CLATTN__CHECK(buffers_check(m, &p, b));
  CLATTN__CHECK(weights_check(m, &p, b, p.seq_kv));
  CLATTN__CHECK(clattn__call_queue(ctx, &queue));
  pthread_mutex_lock(&m->lock);
  status = forward_locked(m, &p, b, queue, num_wait_events, wait_events, event);
  pthread_mutex_unlock(&m->lock);
cleanup:
  return status;
}

clattn_status clattn_mha_forward_weights_host(clattn_mha* m, const clattn_mha_forward_desc* fwd,
                                              const void* x, const void* key, const void* value,
                                              void* y, const int32_t* kv_lengths,
                                              float* attn_weights, float* attn_weights_mean) {
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
  /* x, key, value and y in the layer's dtype; the weights float32. */
  const size_t e = clattn__dtype_size(m->dtype), f = sizeof(float), io = p.rows * m->d_model * e;
  const size_t mean_bytes = mul(mul(p.rows, p.seq_kv), f), w_bytes = mul(mean_bytes, m->heads);
  if ((attn_weights && w_bytes / f > MAX_INDEX) ||
      (attn_weights_mean && mean_bytes / f > MAX_INDEX)) {
    status = clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED, "the weights are beyond 32-bit indexing");
    goto cleanup;
  }
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, io, x, &b.x));
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_WRITE, io, NULL, &b.y));
  if (key) {
    CLATTN__CHECK(
        clattn__buffer_create(ctx, CL_MEM_READ_ONLY, p.rows_kv * m->k_dim * e, key, &b.key));
    if (value && value != key) {
      CLATTN__CHECK(
          clattn__buffer_create(ctx, CL_MEM_READ_ONLY, p.rows_kv * m->v_dim * e, value, &b.value));
    }
  }
  if (kv_lengths) {
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, p.batch * sizeof(int32_t),
                                        kv_lengths, &b.kv_lengths));
  }
  if (attn_weights) {
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_WRITE_ONLY, w_bytes, NULL, &b.attn_weights));
  }
  if (attn_weights_mean) {
    CLATTN__CHECK(
        clattn__buffer_create(ctx, CL_MEM_WRITE_ONLY, mean_bytes, NULL, &b.attn_weights_mean));
  }
  CLATTN__CHECK(clattn_mha_forward(m, fwd, &b, ctx->queue, 0, NULL, &done));
  CLATTN__CL_CHECK(ctx, clEnqueueReadBuffer(ctx->queue, b.y, CL_FALSE, 0, io, y, 1, &done, NULL));
  if (attn_weights) {
    CLATTN__CL_CHECK(ctx, clEnqueueReadBuffer(ctx->queue, b.attn_weights, CL_FALSE, 0, w_bytes,
                                              attn_weights, 1, &done, NULL));
  }
  if (attn_weights_mean) {
    CLATTN__CL_CHECK(ctx, clEnqueueReadBuffer(ctx->queue, b.attn_weights_mean, CL_FALSE, 0,
                                              mean_bytes, attn_weights_mean, 1, &done, NULL));
  }
  CLATTN__CL_CHECK(ctx, clFinish(ctx->queue));
cleanup:
  if (status != CLATTN_SUCCESS) clFinish(ctx->queue); /* no read may still write the outputs */
  if (done) clReleaseEvent(done);
  cl_mem mems[7] = {b.x, b.y, b.key, b.value, b.kv_lengths, b.attn_weights, b.attn_weights_mean};
  for (int i = 0; i < 7; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  return status;
}

clattn_status clattn_mha_forward_host(clattn_mha* m, const clattn_mha_forward_desc* fwd,
                                      const void* x, const void* key, const void* value, void* y,
                                      const int32_t* kv_lengths) {
  return clattn_mha_forward_weights_host(m, fwd, x, key, value, y, kv_lengths, NULL, NULL);
}

/* ------------------------------------------------------------------------ over a KV cache */

/* Enqueues a forward over the cache within a begun step; the caller holds m->lock and the
 * step (its end rolls the cache back when this fails). */
static clattn_status forward_cached_locked(clattn_mha* m, clattn_kv_cache* cache,
                                           const clattn__kv_step* step, mha_plan* p,
                                           const clattn_mha_buffers* b, cl_command_queue queue,
                                           cl_uint num_wait, const cl_event* wait,
                                           cl_event* event) {
  clattn_context* ctx = m->ctx;
  clattn_status status = CLATTN_SUCCESS;
  cl_event* waits = NULL;
  cl_event done = NULL;
  int enqueued = 0;
  clattn__gemm_args g[GEMM_COUNT];
  CLATTN__CHECK(plan_temp(m, p, m->dtype == CLATTN_DTYPE_F32 ? b : NULL));
  CLATTN__CHECK(workspace_reserve_all(m, p));
  if (weights_wanted(b)) {
    CLATTN__CHECK(workspace_reserve(m, WS_LSE, mul(p->rows, m->heads) * sizeof(float)));
  }
  const clattn_mha_buffers f = f32_view(m, b);
  gemms_make(m, p, &f, g);

  /* A marker carries the caller's events, the previous call's last command and the upload of
   * the step's arrays (CLBlast takes no wait list). */
  const cl_uint count = num_wait + (m->last != NULL) + (step->ready != NULL);
  if (count) {
    waits = clattn__malloc(count * sizeof *waits);
    if (!waits) {
      status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
      goto cleanup;
    }
    cl_uint n = num_wait;
    if (num_wait) memcpy(waits, wait, num_wait * sizeof *waits);
    if (m->last) waits[n++] = m->last;
    if (step->ready) waits[n++] = step->ready;
    CLATTN__CL_CHECK(ctx, clEnqueueMarkerWithWaitList(queue, count, waits, NULL));
  }
  enqueued = 1;
  /* Q, K, V of the new tokens; Q and K rotated from each sequence's cached length on. */
  CLATTN__CHECK(convert_inputs(m, p, b, &f, queue));
  CLATTN__CHECK(project_inputs(m, g, queue));
  CLATTN__CHECK(rope_apply(m, p->rows, p->seq, p->rows, p->seq, step->start, queue));
  const size_t hq = m->q_width, hk = m->kv_width, dh = m->head_dim;
  const clattn_strides kv = {.batch = p->seq * hk, .head = dh, .seq = hk};
  CLATTN__CHECK(clattn__kv_step_append(cache, step, CLATTN_DTYPE_F32, m->ws[WS_K].mem, 0, &kv,
                                       m->ws[WS_V].mem, 0, &kv, queue, 0, NULL, NULL));
  /* The queries over each sequence's whole cache, into O [batch, seq, H·D]. */
  clattn_attention_desc d = CLATTN_ATTENTION_DESC_INIT;
  d.dtype = CLATTN_DTYPE_F32;
  d.batch = p->batch;
  d.heads_q = m->heads;
  d.heads_kv = m->heads_kv;
  d.seq_q = p->seq;
  d.seq_kv = 1; /* the cache's business */
  d.head_dim = dh;
  d.scale = m->scale;
  d.causal = p->causal;
  d.q_strides = (clattn_strides){.batch = p->seq * hq, .head = dh, .seq = hq};
  d.k_strides = d.v_strides = (clattn_strides){.batch = hk, .head = dh, .seq = hk};
  d.o_strides = d.q_strides;
  clattn__attention_shape q_shape;
  CLATTN__CHECK(clattn__attention_shape_resolve(ctx, &d, &q_shape));
  clattn_attention_buffers ab = CLATTN_ATTENTION_BUFFERS_INIT;
  ab.q = m->ws[WS_Q].mem;
  ab.o = m->ws[WS_O].mem;
  if (weights_wanted(b)) ab.lse = m->ws[WS_LSE].mem; /* for the weights */
  CLATTN__CHECK(clattn__kv_step_attend(cache, step, &q_shape, &ab, NULL, queue, 0, NULL, NULL));
  if (weights_wanted(b)) CLATTN__CHECK(weights_enqueue(m, p, b, &q_shape, cache, step, queue));
  CLATTN__CHECK(project_output(m, p, b, &f, &g[GEMM_OUT], queue, &done));
cleanup:
  if (enqueued && !done) clEnqueueMarkerWithWaitList(queue, 0, NULL, &done);
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

/* Checks a cached forward's descriptor against the layer and the cache and fills its plan. */
static clattn_status cached_plan(const clattn_mha* m, const clattn_kv_cache* cache,
                                 const clattn_mha_forward_desc* fwd, mha_plan* p) {
  clattn_context* ctx = m->ctx;
  if (!fwd) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "fwd is NULL");
  clattn_mha_forward_desc copy;
  clattn_status status =
      clattn__struct_copy(ctx, "clattn_mha_forward_desc", fwd, sizeof(clattn_mha_forward_desc),
                          sizeof(clattn_mha_forward_desc), &copy);
  if (status != CLATTN_SUCCESS) return status;
  if (copy.seq_kv) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "seq_kv is %zu; a forward over a KV cache must give 0 (the keys are the "
                        "cache's)",
                        copy.seq_kv);
  }
  size_t heads_kv = 0, head_dim = 0;
  clattn__kv_cache_dims(cache, &heads_kv, &head_dim);
  if (heads_kv != m->heads_kv || head_dim != m->head_dim) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE,
                        "the cache's heads_kv %zu and head_dim %zu differ from the layer's (%zu "
                        "and %zu)",
                        heads_kv, head_dim, m->heads_kv, m->head_dim);
  }
  return plan_sizes(m, &copy, 0, 0, p);
}

clattn_status clattn_mha_forward_cached(clattn_mha* m, clattn_kv_cache* cache,
                                        const clattn_mha_forward_desc* fwd, const int32_t* seq_ids,
                                        const clattn_mha_buffers* given, cl_command_queue queue,
                                        cl_uint num_wait_events, const cl_event* wait_events,
                                        cl_event* event) {
  if (event) *event = NULL;
  if (!m) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = m->ctx;
  if (!cache) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "cache is NULL");
  clattn_status status = clattn__wait_list_check(ctx, num_wait_events, wait_events);
  if (status != CLATTN_SUCCESS) return status;
  if (!given) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "buffers is NULL");
  clattn_mha_buffers copy;
  status = clattn__struct_copy(ctx, "clattn_mha_buffers", given, MHA_BUFFERS_V0_3,
                               sizeof(clattn_mha_buffers), &copy);
  if (status != CLATTN_SUCCESS) return status;
  const clattn_mha_buffers* b = &copy;
  if (!b->x || !b->y) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "x and y must not be NULL");
  }
  if (b->key || b->value || b->kv_lengths) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "a forward over a KV cache is self-attention with the cache's lengths: "
                        "key, value and kv_lengths must be NULL");
  }
  mha_plan p;
  CLATTN__CHECK(cached_plan(m, cache, fwd, &p));
  CLATTN__CHECK(buffers_check(m, &p, b));
  CLATTN__CHECK(clattn__call_queue(ctx, &queue));
  pthread_mutex_lock(&m->lock);
  clattn__kv_step step;
  status = clattn__kv_step_begin(cache, p.batch, seq_ids, p.seq, queue, &step);
  if (status == CLATTN_SUCCESS) {
    /* The weights' columns are known now: the longest sequence after the append. */
    status = weights_check(m, &p, b, step.max_length);
    if (status == CLATTN_SUCCESS) {
      status =
          forward_cached_locked(m, cache, &step, &p, b, queue, num_wait_events, wait_events, event);
    }
    /* A failure rolls the step's lengths and blocks back: the cache is as before the call. */
    status = clattn__kv_step_end(cache, &step, status);
  }
  pthread_mutex_unlock(&m->lock);
cleanup:
  return status;
}

clattn_status clattn_mha_forward_cached_host(clattn_mha* m, clattn_kv_cache* cache,
                                             const clattn_mha_forward_desc* fwd,
                                             const int32_t* seq_ids, const void* x, void* y) {
  if (!m) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* ctx = m->ctx;
  if (!x || !y) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "x and y must be set");
  if (!cache) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "cache is NULL");
  clattn_status status;
  mha_plan p;
  cl_event done = NULL;
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  CLATTN__CHECK(cached_plan(m, cache, fwd, &p));
  const size_t io = p.rows * m->d_model * clattn__dtype_size(m->dtype);
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_ONLY, io, x, &b.x));
  CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_WRITE, io, NULL, &b.y));
  CLATTN__CHECK(clattn_mha_forward_cached(m, cache, fwd, seq_ids, &b, ctx->queue, 0, NULL, &done));
  CLATTN__CL_CHECK(ctx, clEnqueueReadBuffer(ctx->queue, b.y, CL_TRUE, 0, io, y, 1, &done, NULL));
cleanup:
  if (done) clReleaseEvent(done);
  if (b.x) clReleaseMemObject(b.x);
  if (b.y) clReleaseMemObject(b.y);
  return status;
}

/* clattn_mha_info as 0.4 published it, before gemm_kernel. */
#define MHA_INFO_V0_4 offsetof(clattn_mha_info, gemm_kernel)

clattn_status clattn_mha_get_info(const clattn_mha* m, clattn_mha_info* info) {
  if (!m) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (!info) return clattn__fail(m->ctx, CLATTN_ERROR_INVALID_ARGUMENT, "info is NULL");
  clattn_mha_info i;
  const size_t given = info->struct_size;
  clattn_status status =
      clattn__struct_copy(m->ctx, "clattn_mha_info", info, MHA_INFO_V0_4, sizeof i, &i);
  if (status != CLATTN_SUCCESS) return status;
  i.dtype = m->dtype;
  i.gemm_path = m->dtype == CLATTN_DTYPE_F32 ? CLATTN_MHA_GEMM_F32 : CLATTN_MHA_GEMM_F32_CONVERTED;
  const size_t weights = m->q_width * (m->d_model + m->d_model) +
                         m->kv_width * (m->k_dim + m->v_dim); /* Wq, Wo, Wk, Wv */
  const size_t biases = (m->b_in ? m->q_width + 2 * m->kv_width : 0) + (m->b_out ? m->d_model : 0);
  i.weight_bytes = (weights + biases) * sizeof(float);
  i.gemm_kernel = m->ctx->gemm_own ? CLATTN_GEMM_CLATTN : CLATTN_GEMM_CLBLAST;
  i.struct_size = given;
  memcpy(info, &i, given); /* the caller's version of the struct: no more */
  return CLATTN_SUCCESS;
}
