/* Descriptors: struct sizes across versions, and the attention descriptor resolved into a
 * shape (defaults applied, strides explicit, every index checked for 32-bit kernels). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* Kernels index with 32-bit unsigned integers. */
#define MAX_INDEX ((size_t)UINT32_MAX)

clattn_status clattn__struct_copy(const clattn_context* ctx, const char* type, const void* in,
                                  size_t published, size_t current, void* out) {
  size_t given;
  memcpy(&given, in, sizeof given); /* every descriptor starts with size_t struct_size */
  if (given < published || given > current) {
    if (published == current) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                          "%s.struct_size is %zu, expected %zu (use its _INIT macro)", type, given,
                          current);
    }
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "%s.struct_size is %zu, expected %zu to %zu (use its _INIT macro)", type,
                        given, published, current);
  }
  memset(out, 0, current);
  memcpy(out, in, given);
  memcpy(out, &current, sizeof current);
  return CLATTN_SUCCESS;
}

unsigned clattn__seq_bucket(size_t n) {
  unsigned b = 0;
  while (n > 1) {
    n >>= 1;
    ++b;
  }
  return b;
}

static clattn_status shape_fail(const clattn_context* ctx, const char* what) {
  return clattn__fail(ctx, CLATTN_ERROR_INVALID_SHAPE, "%s", what);
}

/* a * b + c with overflow reported as SIZE_MAX. */
static size_t mul_add(size_t a, size_t b, size_t c) {
  if (a && b > (SIZE_MAX - c) / a) return SIZE_MAX;
  return a * b + c;
}

/* Strides of a tensor with `heads` heads and `seq` rows, all 0 meaning the layout's
 * (SIZE_MAX where they overflow: the span check then refuses them). */
static clattn_strides resolve_strides(clattn_strides s, clattn_layout layout, size_t heads,
                                      size_t seq, size_t head_dim) {
  if (s.batch || s.head || s.seq) return s;
  clattn_strides r;
  if (layout == CLATTN_LAYOUT_BNHD) {
    r.head = head_dim;
    r.seq = mul_add(heads, head_dim, 0);
    r.batch = mul_add(seq, r.seq, 0);
  } else {
    r.seq = head_dim;
    r.head = mul_add(seq, head_dim, 0);
    r.batch = mul_add(heads, r.head, 0);
  }
  return r;
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
                                              const clattn_attention_desc* desc,
                                              clattn__attention_shape* sh) {
  if (!desc) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "desc is NULL");
  clattn_attention_desc copy;
  clattn_status status =
      clattn__struct_copy(ctx, "clattn_attention_desc", desc, sizeof(clattn_attention_desc),
                          sizeof(clattn_attention_desc), &copy);
  if (status != CLATTN_SUCCESS) return status;
  const clattn_attention_desc* d = &copy;
  if (!clattn__dtype_size(d->dtype)) {
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
  memset(sh, 0, sizeof *sh);
  sh->dtype = d->dtype;
  sh->kv_dtype = d->dtype;
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
  /* Spans first: strides that overflow are too large, not overlapping. */
  const char* names = "qkvol";
  for (const char* w = names; *w; ++w) {
    if (clattn__tensor_span(sh, *w) > MAX_INDEX) {
      return clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                          "tensor %c spans more than 2^32 elements (32-bit indexing)", *w);
    }
  }
  if (!rows_disjoint(&sh->o, sh->batch, sh->heads_q, sh->seq_q, sh->head_dim)) {
    return shape_fail(ctx, "o_strides make different output rows overlap");
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
