/* Problem set-up shared by the tools: random inputs and weights, flop counts, and the layer
 * reference's view of packed weights, so that clattn-run and clattn-bench build the same
 * problem from the same flags. */
#ifndef CLATTN_TOOLS_COMMON_PROBLEM_H
#define CLATTN_TOOLS_COMMON_PROBLEM_H

#include <stddef.h>
#include <stdint.h>

#include "clattn/clattn.h"
#include "reference.h"

/* The generator state for --seed (xorshift needs a nonzero state: 0 picks a fixed one). */
uint64_t clattn_tool_rng_state(uint64_t seed);

/* A float array of n uniform values in [-bound, bound), or NULL when out of memory. */
float* clattn_tool_random_floats(size_t n, float bound, uint64_t* state);

/* Rounds n floats in place to the nearest values of a dtype (nothing for F32), so that the
 * reference computes on exactly the values a 16-bit tensor holds. */
void clattn_tool_round_floats(float* x, size_t n, clattn_dtype dtype);

/* n floats in a dtype's storage (malloc'd; NULL when out of memory): a copy for F32. */
void* clattn_tool_to_dtype(const float* x, size_t n, clattn_dtype dtype);

/* Query-key pairs a mask leaves visible in one (batch, head): all Nq·Nkv, or for causal
 * masks the sum over i of clamp(i + Nkv - Nq + 1, 0, Nkv) (bottom-right alignment). */
double clattn_tool_visible_pairs(size_t seq_q, size_t seq_kv, int causal);

/* Flops of one attention call: 4·B·Hq·D per visible query-key pair (Q·Kᵀ and P·V). */
double clattn_tool_core_flops(const clattn_attention_desc* desc);

/* The layer's dimensions as the tools resolve them (heads_kv and head_dim never 0). */
typedef struct clattn_tool_layer_dims {
  size_t d_model, heads, heads_kv, head_dim;
} clattn_tool_layer_dims;

/* Flops of one layer call: the Q, K and V projections, the attention over the visible pairs
 * and the output projection, 2 per multiply-add. */
double clattn_tool_layer_flops(const clattn_tool_layer_dims* dims, size_t batch, size_t seq,
                               size_t seq_kv, int causal);

/* What clattn_mha_create says of desc, asked before the tool makes any weight (a shape it
 * refuses could otherwise ask for gigabytes of host weights first): the library checks the
 * description before the weights, so with none it stops at them (INVALID_ARGUMENT) when the
 * description is good. Returns CLATTN_SUCCESS then, else the description's status (its
 * message in ctx's last error). */
clattn_status clattn_tool_layer_desc_check(clattn_context* ctx, const clattn_mha_desc* desc);

/* The reference's view of weights packed as nn.MultiheadAttention's in_proj_weight [Q; K; V]
 * rows (w_in, b_in) and out_proj (w_out, b_out); b_in and b_out may be NULL. */
clattn_ref_mha_layer clattn_tool_ref_layer(const clattn_tool_layer_dims* dims, const float* w_in,
                                           const float* b_in, const float* w_out,
                                           const float* b_out);

#endif
