/* naive: one work-item per query row, scalar, online softmax (naive.cl). */
#include <math.h>
#include <stdio.h>

#include "bench.h"

int bench_naive_setup(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  char opts[64];
  snprintf(opts, sizeof opts, "-DHEAD_DIM=%zu", d->head_dim);
  m->program = bench_build_program(B, "naive", opts, m->error, sizeof m->error);
  if (!m->program) return -1;
  cl_int e = CL_SUCCESS;
  m->kernel = clCreateKernel(m->program, "bench_attention_naive", &e);
  cl_uint hq = (cl_uint)d->heads_q, group = (cl_uint)(d->heads_q / bench_heads_kv(d));
  cl_uint sq = (cl_uint)d->seq_q, skv = (cl_uint)d->seq_kv;
  cl_float scale = (cl_float)(1.0 / sqrt((double)d->head_dim) * 1.4426950408889634);
  cl_int causal = d->causal;
  const cl_mem mems[4] = {B->bq, B->bk, B->bv, B->bo};
  for (cl_uint i = 0; i < 4 && e == CL_SUCCESS; ++i) {
    e = clSetKernelArg(m->kernel, i, sizeof(cl_mem), &mems[i]);
  }
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 4, sizeof hq, &hq);
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 5, sizeof group, &group);
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 6, sizeof sq, &sq);
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 7, sizeof skv, &skv);
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 8, sizeof scale, &scale);
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 9, sizeof causal, &causal);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "setting up the naive kernel failed: %d", (int)e);
    return -1;
  }
  m->bytes_known = 1;
  m->bytes_allocated = 0;
  snprintf(m->config_json, sizeof m->config_json,
           "{\"work_item\":\"one query row\",\"arithmetic\":\"scalar\"}");
  snprintf(m->config_text, sizeof m->config_text, "1 row per work-item");
  return 0;
}

int bench_naive_run(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  size_t global[3] = {d->seq_q, d->heads_q, d->batch};
  cl_int e = clEnqueueNDRangeKernel(B->queue, m->kernel, 3, NULL, global, NULL, 0, NULL, NULL);
  if (e == CL_SUCCESS) e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "running the naive kernel failed: %d", (int)e);
    return -1;
  }
  return 0;
}
