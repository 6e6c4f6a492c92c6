/* --mha: the whole layer (projections, attention, output projection; self-attention) on
 * random weights like PyTorch's initialisation: its inputs, and the implementations
 * (fused: clattn_mha_forward; unfused_clblast: the same CLBlast GEMMs around the unfused
 * attention; reference: the double-precision layer; no naive layer). */
#define CL_TARGET_OPENCL_VERSION 120
#include <clblast_c.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

static double layer_macs(const bench* B) { return 0.5 * B->flops; }

static size_t layer_in_width(const bench* B) { return (B->h + 2 * B->hkv) * B->d; }

/* The core's descriptor inside the layer (heads read through strides from the projected
 * rows), to report the config the layer's attention runs with. */
static clattn_attention_desc layer_core_desc(const bench* B) {
  const size_t ld = layer_in_width(B), hd = B->h * B->d;
  clattn_attention_desc d = B->desc;
  d.q_strides = (clattn_strides){.batch = B->o->seq * ld, .head = B->d, .seq = ld};
  d.k_strides = d.q_strides;
  d.v_strides = d.q_strides;
  d.o_strides = (clattn_strides){.batch = B->o->seq * hd, .head = B->d, .seq = hd};
  return d;
}

static clattn_tool_layer_dims layer_dims(const bench* B) {
  return (clattn_tool_layer_dims){
      .d_model = B->e, .heads = B->h, .heads_kv = B->hkv, .head_dim = B->d};
}

static clattn_ref_mha_layer layer_reference_weights(const bench* B) {
  const clattn_tool_layer_dims dims = layer_dims(B);
  return clattn_tool_ref_layer(&dims, B->w_in, B->b_in, B->w_out, B->b_out);
}

int bench_layer_fused_setup(bench* B, impl* m) {
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = B->o->batch;
  fwd.seq = B->o->seq;
  fwd.causal = B->o->causal;
  clattn_status st = clattn_mha_workspace_size(B->mha, &fwd, 0, &m->bytes_allocated);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_mha_workspace_size", st);
    return -1;
  }
  m->bytes_known = 1;
  const clattn_attention_desc core = layer_core_desc(B);
  m->used = (clattn_attention_config)CLATTN_ATTENTION_CONFIG_INIT;
  st = clattn_attention_get_config(B->ctx, &core, NULL, &m->used);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_attention_get_config", st);
    return -1;
  }
  clattn_mha_info info = CLATTN_MHA_INFO_INIT;
  st = clattn_mha_get_info(B->mha, &info);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_mha_get_info", st);
    return -1;
  }
  const char* gemm = info.gemm_kernel == CLATTN_GEMM_CLATTN ? "clattn" : "clblast";
  const clattn_attention_config* c = &m->used;
  snprintf(m->config_json, sizeof m->config_json,
           "{\"layer\":\"clattn_mha_forward\",\"gemm\":\"%s\",\"gemm_tuning\":\"%s\","
           "\"core\":{\"variant\":\"%s\",\"block_m\":%u,\"block_n\":%u,\"rows_per_item\":%u,"
           "\"threads_per_row\":%u,\"source\":\"%s\"}}",
           gemm, bench_gemm_tuning_label(B), clattn_variant_name(c->variant), c->block_m,
           c->block_n, c->rows_per_item, c->threads_per_row, bench_config_origin(c->source));
  char tiles[96];
  clattn_attention_config_describe(c, tiles, sizeof tiles, NULL);
  snprintf(m->config_text, sizeof m->config_text, "mha, gemm %s, core %s (%s)", gemm, tiles,
           bench_config_origin(c->source));
  return 0;
}

int bench_layer_fused_run(bench* B, impl* m) {
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = B->o->batch;
  fwd.seq = B->o->seq;
  fwd.causal = B->o->causal;
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = B->bx;
  b.y = B->by;
  clattn_status st = clattn_mha_forward(B->mha, &fwd, &b, B->queue, 0, NULL, NULL);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_mha_forward", st);
    return -1;
  }
  cl_int e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "clFinish failed: %d", (int)e);
    return -1;
  }
  return 0;
}

int bench_layer_unfused_setup(bench* B, impl* m) {
  const bench_options* o = B->o;
  const size_t s_elems = o->batch * B->h * o->seq * o->seq;
  if (bench_skip_large_scores(B, m, s_elems)) return 0;
  const size_t qkv = B->rows * layer_in_width(B), concat = B->rows * B->h * B->d;
  cl_int e = CL_SUCCESS;
  m->scratch = clCreateBuffer(B->cl_ctx, CL_MEM_READ_WRITE, s_elems * sizeof(float), NULL, &e);
  if (e == CL_SUCCESS) {
    m->qkv = clCreateBuffer(B->cl_ctx, CL_MEM_READ_WRITE, qkv * sizeof(float), NULL, &e);
  }
  if (e == CL_SUCCESS) {
    m->concat = clCreateBuffer(B->cl_ctx, CL_MEM_READ_WRITE, concat * sizeof(float), NULL, &e);
  }
  if (e == CL_SUCCESS) {
    m->ones = clCreateBuffer(B->cl_ctx, CL_MEM_READ_ONLY, B->rows * sizeof(float), NULL, &e);
  }
  const float one = 1.0f;
  if (e == CL_SUCCESS) {
    e = clEnqueueFillBuffer(B->queue, m->ones, &one, sizeof one, 0, B->rows * sizeof(float), 0,
                            NULL, NULL);
  }
  if (e == CL_SUCCESS) e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "allocating the unfused layer's buffers failed: %d", (int)e);
    return -1;
  }
  m->bytes_known = 1;
  m->bytes_allocated = (s_elems + qkv + concat + B->rows) * sizeof(float);
  if (bench_softmax_setup(B, m, o->seq, o->seq, o->causal) != 0) return -1;
  snprintf(m->config_json, sizeof m->config_json,
           "{\"gemm\":\"CLBlastSgemm / CLBlastSgemmStridedBatched\",\"gemm_tuning\":\"%s\","
           "\"bias\":\"rank-1 GEMM with a column of ones\",\"softmax\":\"one work-item per row, "
           "float16\"}",
           bench_gemm_tuning_label(B));
  snprintf(m->config_text, sizeof m->config_text, "%s GEMMs + softmax", bench_gemm_tuning_word(B));
  return 0;
}

/* One row-major CLBlast GEMM, C = alpha·A·op(B) + beta·C, with a message on failure. */
static int layer_gemm(impl* m, cl_command_queue q, int trans_b, size_t rows, size_t cols,
                      size_t inner, float alpha, cl_mem a, size_t a_off, size_t lda, cl_mem b,
                      size_t b_off, size_t ldb, float beta, cl_mem c, size_t c_off, size_t ldc,
                      size_t batch, size_t a_stride, size_t b_stride, size_t c_stride,
                      const char* what) {
  const CLBlastTranspose tb = trans_b ? CLBlastTransposeYes : CLBlastTransposeNo;
  CLBlastStatusCode s =
      batch == 1
          ? CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo, tb, rows, cols, inner, alpha, a,
                         a_off, lda, b, b_off, ldb, beta, c, c_off, ldc, &q, NULL)
          : CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, CLBlastTransposeNo, tb, rows, cols,
                                       inner, alpha, a, a_off, lda, a_stride, b, b_off, ldb,
                                       b_stride, beta, c, c_off, ldc, c_stride, batch, &q, NULL);
  if (s != CLBlastSuccess) {
    bench_set_error(m, "CLBlast GEMM (%s) failed: CLBlast status %d", what, (int)s);
    return -1;
  }
  return 0;
}

/* QKV = 1·b_inᵀ + x·W_inᵀ; per sequence, S = Q_h·K_gᵀ (all heads in one batched GEMM when
 * there is one key/value head per query head, else one GEMM per head), the row softmax,
 * O_h = P·V_g written into the heads' concatenation; y = 1·boᵀ + concat·W_oᵀ. */
int bench_layer_unfused_run(bench* B, impl* m) {
  const bench_options* o = B->o;
  const size_t n = o->seq, D = B->d, ld = layer_in_width(B), hd = B->h * D;
  const size_t group = B->h / B->hkv;
  const float alpha = (float)(1.0 / sqrt((double)D) * 1.4426950408889634);
  cl_command_queue q = B->queue;
  cl_event mark[MAX_STAGES + 1] = {NULL};
  int rc = -1, stage = 0;
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[stage++]);
  if (layer_gemm(m, q, 0, B->rows, ld, 1, 1.0f, m->ones, 0, 1, B->bb_in, 0, ld, 0.0f, m->qkv, 0, ld,
                 1, 0, 0, 0, "input bias") ||
      layer_gemm(m, q, 1, B->rows, ld, B->e, 1.0f, B->bx, 0, B->e, B->bw_in, 0, B->e, 1.0f, m->qkv,
                 0, ld, 1, 0, 0, 0, "QKV projection")) {
    goto cleanup;
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[stage++]);
  for (size_t b = 0; b < o->batch; ++b) {
    const size_t row0 = b * n * ld, s0 = b * B->h * n * n;
    const size_t heads_per_call = group == 1 ? B->h : 1;
    for (size_t h = 0; h < B->h; h += heads_per_call) {
      if (layer_gemm(m, q, 1, n, n, D, alpha, m->qkv, row0 + h * D, ld, m->qkv,
                     row0 + hd + (h / group) * D, ld, 0.0f, m->scratch, s0 + h * n * n, n,
                     heads_per_call, D, D, n * n, "Q·Kᵀ")) {
        goto cleanup;
      }
    }
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[stage++]);
  size_t global[2] = {n, o->batch * B->h};
  cl_int e = clEnqueueNDRangeKernel(q, m->kernel, 2, NULL, global, NULL, 0, NULL, NULL);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "clEnqueueNDRangeKernel (softmax) failed: %d", (int)e);
    goto cleanup;
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[stage++]);
  for (size_t b = 0; b < o->batch; ++b) {
    const size_t row0 = b * n * ld, s0 = b * B->h * n * n;
    const size_t heads_per_call = group == 1 ? B->h : 1;
    for (size_t h = 0; h < B->h; h += heads_per_call) {
      if (layer_gemm(m, q, 0, n, D, n, 1.0f, m->scratch, s0 + h * n * n, n, m->qkv,
                     row0 + hd + B->hkv * D + (h / group) * D, ld, 0.0f, m->concat,
                     b * n * hd + h * D, hd, heads_per_call, n * n, D, D, "P·V")) {
        goto cleanup;
      }
    }
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[stage++]);
  if (layer_gemm(m, q, 0, B->rows, B->e, 1, 1.0f, m->ones, 0, 1, B->bb_out, 0, B->e, 0.0f, B->by, 0,
                 B->e, 1, 0, 0, 0, "output bias") ||
      layer_gemm(m, q, 1, B->rows, B->e, hd, 1.0f, m->concat, 0, hd, B->bw_out, 0, hd, 1.0f, B->by,
                 0, B->e, 1, 0, 0, 0, "output projection")) {
    goto cleanup;
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[stage]);
  e = clFinish(q);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "clFinish failed: %d", (int)e);
    goto cleanup;
  }
  bench_stage_times(m, mark, B->stage_count);
  rc = 0;
cleanup:
  clFinish(q);
  for (int i = 0; i <= MAX_STAGES; ++i) {
    if (mark[i]) clReleaseEvent(mark[i]);
  }
  return rc;
}

int bench_layer_naive_setup(bench* B, impl* m) {
  (void)B;
  snprintf(m->skip_reason, sizeof m->skip_reason,
           "no naive layer (the naive kernel is an attention core: run without --mha)");
  m->skipped = 1;
  return 0;
}

int bench_layer_reference_setup(bench* B, impl* m) {
  return bench_reference_prepare(B, m, layer_macs(B), B->out_elems, "the reference");
}

int bench_layer_reference_run(bench* B, impl* m) {
  const clattn_ref_mha_layer L = layer_reference_weights(B);
  if (clattn_ref_mha_forward(&L, B->o->batch, B->o->seq, B->o->seq, B->o->causal, B->x, NULL, NULL,
                             NULL, m->ref_out, NULL) != 0) {
    bench_set_error(m, "clattn_ref_mha_forward rejected the shape");
    return -1;
  }
  return 0;
}

static const char* const layer_stage_names[] = {"QKV projection", "Q·Kᵀ GEMMs", "softmax",
                                                "P·V GEMMs", "output projection"};
static const char* const layer_stage_keys[] = {"qkv_gemm", "qk_gemm", "softmax", "pv_gemm",
                                               "out_gemm"};

/* Layer mode: random weights like PyTorch's initialisation (uniform in ±1/sqrt(fan_in)),
 * biases in ±0.1, x in [-1, 1]; the layer, the buffers the unfused path reads, and the
 * reference y. Returns 0, or 2 with err set for a bad shape, 1 for other failures. */
int bench_layer_inputs(bench* B, char* err, size_t err_size) {
  const bench_options* o = B->o;
  if (o->variant != CLATTN_VARIANT_AUTO || o->block_m || o->block_n || o->rows_per_item ||
      o->threads_per_row) {
    snprintf(err, err_size,
             "--variant and the tile flags pick the core's config; the layer takes its config "
             "from the tuning file or the defaults (time the core without --mha)");
    return 2;
  }
  if (o->seq_kv && o->seq_kv != o->seq) {
    snprintf(err, err_size,
             "--mha times self-attention (--seq-kv must equal --seq); clattn-run --seq-kv "
             "times the layer's cross-attention");
    return 2;
  }
  B->layer = 1;
  B->e = o->d_model;
  B->h = o->heads;
  B->hkv = o->kv_heads ? o->kv_heads : o->heads;
  if (!B->e || !B->h || !o->batch || !o->seq) {
    snprintf(err, err_size, "--d-model, --heads, --batch and --seq must be at least 1");
    return 2;
  }
  if (o->head_dim_given) {
    B->d = o->head_dim;
  } else if (B->e % B->h == 0) {
    B->d = B->e / B->h;
  } else {
    snprintf(err, err_size, "--d-model %zu is not a multiple of --heads %zu: give --head-dim", B->e,
             B->h);
    return 2;
  }
  B->rows = o->batch * o->seq;
  const size_t hd = B->h * B->d, nin = (B->h + 2 * B->hkv) * B->d;

  clattn_mha_desc desc = CLATTN_MHA_DESC_INIT;
  desc.d_model = B->e;
  desc.heads = B->h;
  desc.heads_kv = B->hkv;
  desc.head_dim = B->d;
  desc.dtype = o->dtype;
  uint64_t state = clattn_tool_rng_state(o->seed);
  B->w_in = clattn_tool_random_floats(nin * B->e, 1.0f / sqrtf((float)B->e), &state);
  B->b_in = clattn_tool_random_floats(nin, 0.1f, &state);
  B->w_out = clattn_tool_random_floats(B->e * hd, 1.0f / sqrtf((float)hd), &state);
  B->b_out = clattn_tool_random_floats(B->e, 0.1f, &state);
  B->x = clattn_tool_random_floats(B->rows * B->e, 1.0f, &state);
  B->out = malloc(B->rows * B->e * sizeof *B->out);
  B->ref_y = malloc(B->rows * B->e * sizeof *B->ref_y);
  B->tol_y = malloc(B->rows * B->e * sizeof *B->tol_y);
  if (!B->w_in || !B->b_in || !B->w_out || !B->b_out || !B->x || !B->out || !B->ref_y ||
      !B->tol_y) {
    snprintf(err, err_size, "out of host memory");
    return 1;
  }
  /* In a 16-bit dtype the weights and x are its values, given to the layer in its storage
   * (the unfused path, float32 only, is skipped then). */
  const float* floats[5] = {B->w_in, B->b_in, B->w_out, B->b_out, B->x};
  const size_t counts[5] = {nin * B->e, nin, B->e * hd, B->e, B->rows * B->e};
  void* bits[5] = {NULL};
  int have_bits = 1;
  for (int i = 0; i < 5; ++i) {
    clattn_tool_round_floats((float*)floats[i], counts[i], o->dtype);
    bits[i] = clattn_tool_to_dtype(floats[i], counts[i], o->dtype);
    have_bits &= bits[i] != NULL;
  }
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = bits[0];
  w.in_proj_bias.host = bits[1];
  w.out_proj_weight.host = bits[2];
  w.out_proj_bias.host = bits[3];
  clattn_status st =
      have_bits ? clattn_mha_create(B->ctx, &desc, &w, &B->mha) : CLATTN_ERROR_OUT_OF_MEMORY;
  cl_int e = CL_SUCCESS;
  const cl_mem_flags in = CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR;
  const size_t item = bench_item(B);
  if (st == CLATTN_SUCCESS) {
    B->bx = clCreateBuffer(B->cl_ctx, in, B->rows * B->e * item, bits[4], &e);
  }
  for (int i = 0; i < 5; ++i) free(bits[i]);
  if (st != CLATTN_SUCCESS) {
    char detail[700] = "";
    clattn_context_get_last_error(B->ctx, detail, sizeof detail, NULL);
    snprintf(err, err_size, "clattn_mha_create failed: %s: %s", clattn_status_name(st), detail);
    return st == CLATTN_ERROR_INVALID_ARGUMENT || st == CLATTN_ERROR_INVALID_SHAPE ||
                   st == CLATTN_ERROR_UNSUPPORTED
               ? 2
               : 1;
  }
  if (e == CL_SUCCESS) {
    B->by = clCreateBuffer(B->cl_ctx, CL_MEM_READ_WRITE, B->rows * B->e * item, NULL, &e);
  }
  if (e == CL_SUCCESS) {
    B->bw_in = clCreateBuffer(B->cl_ctx, in, nin * B->e * sizeof(float), B->w_in, &e);
  }
  if (e == CL_SUCCESS) B->bb_in = clCreateBuffer(B->cl_ctx, in, nin * sizeof(float), B->b_in, &e);
  if (e == CL_SUCCESS) {
    B->bw_out = clCreateBuffer(B->cl_ctx, in, B->e * hd * sizeof(float), B->w_out, &e);
  }
  if (e == CL_SUCCESS) {
    B->bb_out = clCreateBuffer(B->cl_ctx, in, B->e * sizeof(float), B->b_out, &e);
  }
  if (e != CL_SUCCESS) {
    snprintf(err, err_size, "clCreateBuffer (layer inputs) failed: OpenCL error %d", (int)e);
    return 1;
  }
  B->out_mem = B->by;
  B->out_elems = B->rows * B->e;
  B->rows_step = 1;
  B->stage_count = 5;
  B->stage_names = layer_stage_names;
  B->stage_keys = layer_stage_keys;
  const clattn_tool_layer_dims dims = layer_dims(B);
  B->flops = clattn_tool_layer_flops(&dims, o->batch, o->seq, o->seq, o->causal);
  const clattn_ref_mha_layer L = layer_reference_weights(B);
  if (clattn_ref_mha_forward(&L, o->batch, o->seq, o->seq, o->causal, B->x, NULL, NULL, NULL,
                             B->ref_y, B->tol_y) != 0) {
    snprintf(err, err_size, "the layer reference rejected the shape");
    return 1;
  }
  /* The core's shape inside the layer, for the report and the core's config. */
  B->desc.head_dim = B->d;
  B->desc.heads_kv = B->hkv;
  B->desc.seq_kv = o->seq;
  return 0;
}

void bench_layer_release(bench* B) {
  cl_mem mems[6] = {B->bx, B->by, B->bw_in, B->bb_in, B->bw_out, B->bb_out};
  for (int i = 0; i < 6; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  clattn_mha_destroy(B->mha);
  free(B->w_in);
  free(B->b_in);
  free(B->w_out);
  free(B->b_out);
  free(B->x);
  free(B->ref_y);
  free(B->tol_y);
}
