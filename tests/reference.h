/* CPU reference for the attention core, in double precision. Shared by the tests and the
 * tools (clattn-run) so both compare against one implementation. */
#ifndef CLATTN_TESTS_REFERENCE_H
#define CLATTN_TESTS_REFERENCE_H

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

#endif
