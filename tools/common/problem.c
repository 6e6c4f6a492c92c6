/* Problem set-up shared by the tools (see problem.h). */
#include "common/problem.h"

#include <stdlib.h>

uint64_t clattn_tool_rng_state(uint64_t seed) { return seed ? seed : 0x9e3779b97f4a7c15ull; }

float* clattn_tool_random_floats(size_t n, float bound, uint64_t* state) {
  float* p = malloc((n ? n : 1) * sizeof *p);
  if (p) clattn_ref_fill_uniform(p, n, -bound, bound, state);
  return p;
}

double clattn_tool_visible_pairs(size_t seq_q, size_t seq_kv, int causal) {
  if (!causal) return (double)seq_q * (double)seq_kv;
  double pairs = 0.0;
  long long nq = (long long)seq_q, nkv = (long long)seq_kv;
  for (long long i = 0; i < nq; ++i) {
    long long seen = i + nkv - nq + 1;
    if (seen < 0) seen = 0;
    if (seen > nkv) seen = nkv;
    pairs += (double)seen;
  }
  return pairs;
}

double clattn_tool_core_flops(const clattn_attention_desc* desc) {
  return 4.0 * (double)desc->batch * (double)desc->heads_q * (double)desc->head_dim *
         clattn_tool_visible_pairs(desc->seq_q, desc->seq_kv, desc->causal);
}

double clattn_tool_layer_flops(const clattn_tool_layer_dims* dims, size_t batch, size_t seq,
                               size_t seq_kv, int causal) {
  const double e = (double)dims->d_model, d = (double)dims->head_dim;
  const double hd = (double)dims->heads * d, kvd = (double)dims->heads_kv * d;
  const double rows = (double)batch * (double)seq, rows_kv = (double)batch * (double)seq_kv;
  const double proj = 2.0 * rows * e * hd + 2.0 * rows_kv * e * 2.0 * kvd;
  const double attn = 4.0 * (double)batch * (double)dims->heads * d *
                      clattn_tool_visible_pairs(seq, seq_kv, causal);
  return proj + attn + 2.0 * rows * hd * e;
}

clattn_ref_mha_layer clattn_tool_ref_layer(const clattn_tool_layer_dims* dims, const float* w_in,
                                           const float* b_in, const float* w_out,
                                           const float* b_out) {
  const size_t e = dims->d_model, hd = dims->heads * dims->head_dim;
  const size_t kvd = dims->heads_kv * dims->head_dim;
  clattn_ref_mha_layer L = {.d_model = e,
                            .heads = dims->heads,
                            .heads_kv = dims->heads_kv,
                            .head_dim = dims->head_dim,
                            .k_dim = e,
                            .v_dim = e,
                            .wq = w_in,
                            .wk = w_in + hd * e,
                            .wv = w_in + (hd + kvd) * e,
                            .wo = w_out,
                            .bq = b_in,
                            .bk = b_in ? b_in + hd : NULL,
                            .bv = b_in ? b_in + hd + kvd : NULL,
                            .bo = b_out};
  return L;
}

clattn_status clattn_tool_layer_desc_check(clattn_context* ctx, const clattn_mha_desc* desc) {
  clattn_mha* mha = NULL;
  clattn_status st = clattn_mha_create(ctx, desc, NULL, &mha);
  clattn_mha_destroy(mha);
  return st == CLATTN_ERROR_INVALID_ARGUMENT ? CLATTN_SUCCESS : st;
}

void clattn_tool_round_floats(float* x, size_t n, clattn_dtype dtype) {
  if (dtype == CLATTN_DTYPE_F32) return;
  /* Through the dtype and back, in chunks (16-bit elements need half the room). */
  enum { CHUNK = 4096 };
  uint16_t bits[CHUNK];
  for (size_t i = 0; i < n; i += CHUNK) {
    const size_t m = n - i < CHUNK ? n - i : CHUNK;
    clattn_convert(x + i, CLATTN_DTYPE_F32, bits, dtype, m);
    clattn_convert(bits, dtype, x + i, CLATTN_DTYPE_F32, m);
  }
}

void* clattn_tool_to_dtype(const float* x, size_t n, clattn_dtype dtype) {
  size_t item = 0;
  if (clattn_dtype_size(dtype, &item) != CLATTN_SUCCESS) return NULL;
  void* out = malloc(n ? n * item : 1);
  if (out && clattn_convert(x, CLATTN_DTYPE_F32, out, dtype, n) != CLATTN_SUCCESS) {
    free(out);
    out = NULL;
  }
  return out;
}
