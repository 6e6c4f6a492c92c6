/* The core mode's problem: random Q, K and V in [-1, 1], their buffers and O's, and the
 * sampled double-precision reference every implementation is compared with. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

/* Above this many multiply-adds per product (B*Hq*Nq*Nkv*D) errors are checked on every
 * rows_step-th query row only, as clattn-run does. */
#define FULL_CHECK_LIMIT 2e9

static const char* const core_stage_names[] = {"Q·Kᵀ GEMM", "softmax", "P·V GEMM"};
static const char* const core_stage_keys[] = {"qk_gemm", "softmax", "pv_gemm"};

int bench_core_inputs(bench* B, char* err, size_t err_size) {
  const clattn_attention_desc* d = &B->desc;
  B->stage_count = 3;
  B->stage_names = core_stage_names;
  B->stage_keys = core_stage_keys;
  clattn_status st;
  if ((st = clattn_attention_tensor_size(d, 'q', &B->nq)) != CLATTN_SUCCESS ||
      (st = clattn_attention_tensor_size(d, 'k', &B->nk)) != CLATTN_SUCCESS ||
      (st = clattn_attention_tensor_size(d, 'v', &B->nv)) != CLATTN_SUCCESS ||
      (st = clattn_attention_tensor_size(d, 'o', &B->no)) != CLATTN_SUCCESS) {
    char detail[700] = "";
    clattn_context_get_last_error(NULL, detail, sizeof detail, NULL);
    snprintf(err, err_size, "invalid shape: %s: %s", clattn_status_name(st), detail);
    return 2;
  }
  B->flops = clattn_tool_core_flops(d);
  B->q = malloc(B->nq * sizeof *B->q);
  B->k = malloc(B->nk * sizeof *B->k);
  B->v = malloc(B->nv * sizeof *B->v);
  B->out = malloc(B->no * sizeof *B->out);
  B->ref = malloc(B->no * sizeof *B->ref);
  if (!B->q || !B->k || !B->v || !B->out || !B->ref) {
    snprintf(err, err_size, "out of host memory");
    return 1;
  }
  uint64_t state = clattn_tool_rng_state(B->o->seed);
  clattn_ref_fill_uniform(B->q, B->nq, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(B->k, B->nk, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(B->v, B->nv, -1.0f, 1.0f, &state);
  /* In a 16-bit dtype the reference reads exactly the values the device does. */
  clattn_tool_round_floats(B->q, B->nq, d->dtype);
  clattn_tool_round_floats(B->k, B->nk, d->dtype);
  clattn_tool_round_floats(B->v, B->nv, d->dtype);
  void* bits[3] = {clattn_tool_to_dtype(B->q, B->nq, d->dtype),
                   clattn_tool_to_dtype(B->k, B->nk, d->dtype),
                   clattn_tool_to_dtype(B->v, B->nv, d->dtype)};
  cl_int e = bits[0] && bits[1] && bits[2] ? CL_SUCCESS : CL_OUT_OF_HOST_MEMORY;
  const cl_mem_flags in = CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR;
  const size_t item = bench_item(B);
  if (e == CL_SUCCESS) B->bq = clCreateBuffer(B->cl_ctx, in, B->nq * item, bits[0], &e);
  if (e == CL_SUCCESS) B->bk = clCreateBuffer(B->cl_ctx, in, B->nk * item, bits[1], &e);
  if (e == CL_SUCCESS) B->bv = clCreateBuffer(B->cl_ctx, in, B->nv * item, bits[2], &e);
  if (e == CL_SUCCESS) {
    B->bo = clCreateBuffer(B->cl_ctx, CL_MEM_READ_WRITE, B->no * item, NULL, &e);
  }
  for (int i = 0; i < 3; ++i) free(bits[i]);
  if (e != CL_SUCCESS) {
    snprintf(err, err_size, "clCreateBuffer (inputs) failed: OpenCL error %d", (int)e);
    return 1;
  }
  B->out_mem = B->bo;
  B->out_elems = B->no;

  const double work = bench_work_macs(d);
  B->rows_step = work > FULL_CHECK_LIMIT ? (size_t)ceil(work / FULL_CHECK_LIMIT) : 1;
  if (clattn_ref_attention(d, B->q, B->k, B->v, NULL, B->ref, NULL, B->rows_step) != 0) {
    snprintf(err, err_size, "the reference rejected the shape");
    return 1;
  }
  return 0;
}

void bench_core_release(bench* B) {
  cl_mem mems[4] = {B->bq, B->bk, B->bv, B->bo};
  for (int i = 0; i < 4; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  free(B->q);
  free(B->k);
  free(B->v);
  free(B->out);
  free(B->ref);
}
