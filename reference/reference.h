/* CPU reference for the attention core and the layer, in double precision: the library
 * clattn_reference, linked by the tests and the tools (clattn-run, clattn-bench) so that both
 * compare against one implementation. Not installed. */
#ifndef CLATTN_REFERENCE_REFERENCE_H
#define CLATTN_REFERENCE_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "clattn/clattn.h"

/* Computes O (and LSE, natural log) for one descriptor, reading and writing through the
 * descriptor's strides and layout exactly as clattn_attention does (offset 0). Rows with no
 * visible key get O = 0 and LSE = -INFINITY. o and lse are double arrays sized like the
 * float tensors (clattn_attention_tensor_size). lse and kv_lengths may be NULL.
 * rows_step > 1 computes only every rows_step-th query row (others untouched), for large
 * shapes. Returns 0 on success, -1 on an invalid descriptor. */
int clattn_ref_attention(const clattn_attention_desc* desc, const float* q, const float* k,
                         const float* v, const int32_t* kv_lengths, double* o, double* lse,
                         size_t rows_step);

/* Strides of tensor `which` ('q', 'k', 'v', 'o') under the header's rule: the descriptor's
 * own, or those of its layout when all three are 0. */
clattn_strides clattn_ref_strides(const clattn_attention_desc* desc, char which);

/* Per-row error bound for comparing a float32 result with the reference: see the comment in
 * reference.c for its derivation. Computed for query row i of (batch b, head h). */
double clattn_ref_row_tolerance(const clattn_attention_desc* desc, const float* q, const float* k,
                                const float* v, const int32_t* kv_lengths, size_t b, size_t h,
                                size_t i);

/* Fills n floats with uniform values in [lo, hi) from a fixed-seed generator (xorshift). */
void clattn_ref_fill_uniform(float* x, size_t n, float lo, float hi, uint64_t* state);

/* ------------------------------------------------------------ the multi-head attention layer */

/* One layer, PyTorch nn.MultiheadAttention's convention (weights [out, in], y = x·Wᵀ + b):
 * wq [heads·head_dim, d_model], wk [heads_kv·head_dim, k_dim], wv [heads_kv·head_dim,
 * v_dim], wo [d_model, heads·head_dim]; biases may be NULL (zeros). scale 0: 1/sqrt(head_dim).
 * Written from the formulas alone, independently of the library. */
typedef struct clattn_ref_mha_layer {
  size_t d_model, heads, heads_kv, head_dim, k_dim, v_dim;
  double scale;
  const float *wq, *wk, *wv, *wo;
  const float *bq, *bk, *bv, *bo;
  /* Rotary embeddings of Q and K after their projection, position p = the row within its
   * sequence (queries 0 .. seq-1, keys 0 .. seq_kv-1): pair i < rope_dims/2 of each head,
   * dims (i, i + rope_dims/2) for CLATTN_ROPE_NEOX or (2i, 2i + 1) for CLATTN_ROPE_GPTJ,
   * rotated by p·theta^(-2i/rope_dims): (a, b) -> (a cos - b sin, a sin + b cos).
   * rope 0: none; rope_dims 0: head_dim; rope_theta 0: 10000. */
  int rope;
  size_t rope_dims;
  double rope_theta;
} clattn_ref_mha_layer;

/* y [batch, seq, d_model] (double) of the layer on x [batch, seq, d_model], with key
 * [batch, seq_kv, k_dim] and value [batch, seq_kv, v_dim] (both NULL: self-attention,
 * seq_kv = seq). causal: key j visible to query i when j <= i + seq_kv - seq. kv_lengths
 * (NULL: none): keys j >= kv_lengths[b] masked. A row that sees no key has attention output
 * 0 (y = bo). tol (NULL: not computed) gets a per-element tolerance for a float32
 * implementation that projects with GEMMs (any summation order) and runs an online-softmax
 * core: 10 standard deviations of a first-order probabilistic rounding error model; see
 * reference.c for its derivation. Returns 0, or -1 on bad arguments. */
int clattn_ref_mha_forward(const clattn_ref_mha_layer* layer, size_t batch, size_t seq,
                           size_t seq_kv, int causal, const float* x, const float* key,
                           const float* value, const int32_t* kv_lengths, double* y, double* tol);

/* ------------------------------------------------------------ probabilities (attention maps) */

/* P[b, h, i, j] = exp(s_ij) / sum_{j' visible} exp(s_ij') in double, from the formulas, for
 * query heads [head_begin, head_begin + heads), rows [row_begin, row_begin + rows) and columns
 * [col_begin, col_begin + cols) of every batch index, into p [batch][heads][rows][cols]
 * (contiguous). Masks as clattn_ref_attention; masked entries, and rows that see no key, are 0.
 * Counts must be at least 1 and ranges inside the shape. Returns 0, or -1 on bad arguments. */
int clattn_ref_attention_probs(const clattn_attention_desc* desc, const float* q, const float* k,
                               const int32_t* kv_lengths, size_t head_begin, size_t heads,
                               size_t row_begin, size_t rows, size_t col_begin, size_t cols,
                               double* p);

/* The layer's attention weights for the same inputs as clattn_ref_mha_forward (value is not
 * used): w [batch, heads, seq, seq_kv] (PyTorch's need_weights with average_attn_weights=False)
 * and mean [batch, seq, seq_kv], their mean over heads (average_attn_weights=True); each of w,
 * w_tol, mean, mean_tol may be NULL. Masked entries and rows that see no key are 0, with
 * tolerance 0 (the implementation must give exactly 0). The tolerances follow the layer's
 * statistical model (see reference.c). Returns 0, or -1 on bad arguments. */
int clattn_ref_mha_weights(const clattn_ref_mha_layer* layer, size_t batch, size_t seq,
                           size_t seq_kv, int causal, const float* x, const float* key,
                           const float* value, const int32_t* kv_lengths, double* w, double* w_tol,
                           double* mean, double* mean_tol);

#endif
