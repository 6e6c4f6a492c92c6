/* unfused_clblast: CLBlast strided-batched GEMM for S = Q·Kᵀ, a row-softmax kernel, CLBlast
 * strided-batched GEMM for O = P·V, with S stored in full (N×N per head); and what the layer's
 * unfused path shares with it (the softmax, the score matrix's size check, stage times, the
 * GEMM parameters in force). */
#define CL_TARGET_OPENCL_VERSION 120
#include <clblast_c.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "clattn/clattn_tuning.h"

/* Which GEMM parameters CLBlast runs with: a tuning file's entry applied when the context was
 * created, clattn's built-in ones (PoCL's CPU devices), or CLBlast's own. The setting is
 * process-wide per device, so clattn's layer and the unfused paths here share it. */
const char* bench_gemm_tuning_label(const bench* B) {
  clattn_tuning_info ti = CLATTN_TUNING_INFO_INIT;
  if (clattn_context_get_tuning_info(B->ctx, &ti) == CLATTN_SUCCESS && ti.gemm_source != 0) {
    return ti.gemm_source == CLATTN_CONFIG_SOURCE_TUNED ? "tuned" : "tuned (other driver)";
  }
  if (B->info.type == CLATTN_DEVICE_TYPE_CPU &&
      strstr(B->info.platform_name, "Portable Computing Language")) {
    return "built-in (PoCL CPU)";
  }
  return "CLBlast default";
}

/* The same in one word, for the table. */
const char* bench_gemm_tuning_word(const bench* B) {
  const char* l = bench_gemm_tuning_label(B);
  return strncmp(l, "tuned", 5) == 0      ? "tuned"
         : strncmp(l, "built-in", 8) == 0 ? "built-in"
                                          : "CLBlast";
}

/* Device time between consecutive markers (the queue is in-order) into m->last_stage_ms. */
void bench_stage_times(impl* m, cl_event* mark, int stages) {
  for (int i = 0; i < stages; ++i) {
    cl_ulong a = 0, b = 0;
    m->last_stage_ms[i] = (double)NAN;
    if (mark[i] && mark[i + 1] &&
        clGetEventProfilingInfo(mark[i], CL_PROFILING_COMMAND_END, sizeof a, &a, NULL) ==
            CL_SUCCESS &&
        clGetEventProfilingInfo(mark[i + 1], CL_PROFILING_COMMAND_END, sizeof b, &b, NULL) ==
            CL_SUCCESS &&
        b >= a) {
      m->last_stage_ms[i] = (double)(b - a) * 1e-6;
    }
  }
}

/* Builds the unfused paths' row softmax over S [rows, seq_kv] (rows = batch·heads·seq_q). */
int bench_softmax_setup(bench* B, impl* m, size_t seq_q, size_t seq_kv, int causal) {
  m->program = bench_build_program(B, "softmax", "", m->error, sizeof m->error);
  if (!m->program) return -1;
  cl_int e = CL_SUCCESS;
  m->kernel = clCreateKernel(m->program, "bench_softmax_rows", &e);
  cl_uint sq = (cl_uint)seq_q, skv = (cl_uint)seq_kv;
  cl_int c = causal;
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 0, sizeof(cl_mem), &m->scratch);
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 1, sizeof sq, &sq);
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 2, sizeof skv, &skv);
  if (e == CL_SUCCESS) e = clSetKernelArg(m->kernel, 3, sizeof c, &c);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "setting up the softmax kernel failed: %d", (int)e);
    return -1;
  }
  return 0;
}

/* Skips an unfused path whose score matrix (bytes) the device cannot hold; 1 when skipped. */
int bench_skip_large_scores(const bench* B, impl* m, size_t s_elems) {
  const size_t bytes = s_elems * sizeof(float);
  if (bytes / sizeof(float) == s_elems && bytes <= B->info.max_mem_alloc_size &&
      bytes <= B->info.global_mem_size / 2) {
    return 0;
  }
  snprintf(m->skip_reason, sizeof m->skip_reason,
           "the score matrix needs %.3g GB; the device allows %.3g GB per buffer and has %.3g GB",
           (double)bytes * 1e-9, (double)B->info.max_mem_alloc_size * 1e-9,
           (double)B->info.global_mem_size * 1e-9);
  m->skipped = 1;
  return 1;
}

/* Unfused: S = Q·Kᵀ (alpha = scale·log2 e), P = softmax(S) in place, O = P·V. With the
 * [B, H, N, D] layout the query heads of one key/value head are contiguous, so one GEMM per
 * (batch, kv head) with M = group * Nq covers MHA, GQA and MQA. */
int bench_unfused_setup(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  const size_t s_elems = d->batch * d->heads_q * d->seq_q * d->seq_kv;
  const size_t bytes = s_elems * sizeof(float);
  if (bench_skip_large_scores(B, m, s_elems)) return 0;
  cl_int e = CL_SUCCESS;
  m->scratch = clCreateBuffer(B->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "clCreateBuffer (S, %zu bytes) failed: %d", bytes, (int)e);
    return -1;
  }
  m->bytes_known = 1;
  m->bytes_allocated = bytes;
  if (bench_softmax_setup(B, m, d->seq_q, d->seq_kv, d->causal) != 0) return -1;
  /* The GEMM parameters in force for the device, the same the layer runs with. */
  snprintf(m->config_json, sizeof m->config_json,
           "{\"gemm\":\"CLBlastSgemmStridedBatched\",\"gemm_tuning\":\"%s\","
           "\"softmax\":\"one work-item per row, float16\",\"batches\":%zu}",
           bench_gemm_tuning_label(B), d->batch * bench_heads_kv(d));
  snprintf(m->config_text, sizeof m->config_text, "2 %s GEMMs + softmax",
           bench_gemm_tuning_word(B));
  return 0;
}

int bench_unfused_run(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  const size_t hkv = bench_heads_kv(d);
  const size_t group = d->heads_q / hkv;
  const size_t rows = group * d->seq_q; /* query rows per (batch, kv head) */
  const size_t batches = d->batch * hkv;
  const float alpha = (float)(1.0 / sqrt((double)d->head_dim) * 1.4426950408889634);
  cl_command_queue q = B->queue;
  /* Markers between the stages give each stage's device time (the queue is in-order). */
  cl_event mark[4] = {NULL, NULL, NULL, NULL};
  int rc = -1;
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[0]);
  CLBlastStatusCode s = CLBlastSgemmStridedBatched(
      CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes, rows, d->seq_kv, d->head_dim,
      alpha, B->bq, 0, d->head_dim, rows * d->head_dim, B->bk, 0, d->head_dim,
      d->seq_kv * d->head_dim, 0.0f, m->scratch, 0, d->seq_kv, rows * d->seq_kv, batches, &q, NULL);
  if (s != CLBlastSuccess) {
    bench_set_error(m, "CLBlastSgemmStridedBatched (Q·Kᵀ) failed: CLBlast status %d", (int)s);
    goto cleanup;
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[1]);
  size_t global[2] = {d->seq_q, d->batch * d->heads_q};
  cl_int e = clEnqueueNDRangeKernel(q, m->kernel, 2, NULL, global, NULL, 0, NULL, NULL);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "clEnqueueNDRangeKernel (softmax) failed: %d", (int)e);
    goto cleanup;
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[2]);
  s = CLBlastSgemmStridedBatched(
      CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, rows, d->head_dim, d->seq_kv,
      1.0f, m->scratch, 0, d->seq_kv, rows * d->seq_kv, B->bv, 0, d->head_dim,
      d->seq_kv * d->head_dim, 0.0f, B->bo, 0, d->head_dim, rows * d->head_dim, batches, &q, NULL);
  if (s != CLBlastSuccess) {
    bench_set_error(m, "CLBlastSgemmStridedBatched (P·V) failed: CLBlast status %d", (int)s);
    goto cleanup;
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[3]);
  e = clFinish(q);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "clFinish failed: %d", (int)e);
    goto cleanup;
  }
  bench_stage_times(m, mark, 3);
  rc = 0;
cleanup:
  for (int i = 0; i < 4; ++i) {
    if (mark[i]) clReleaseEvent(mark[i]);
  }
  return rc;
}
