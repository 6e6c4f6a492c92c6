/* clattn-run: the main job. By default runs the multi-head attention layer (clattn_mha) on
 * random weights and inputs, times it and checks it against the double-precision reference
 * of the whole layer; with --core, the fused attention core alone (clattn_attention).
 *
 * Exit status: 0 when the result is within tolerance, 3 when it is not, 1 on a clattn or
 * OpenCL error, 2 on a bad command line. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clattn/clattn.h"
#include "common/device.h"
#include "common/flags.h"
#include "common/json.h"
#include "common/problem.h"
#include "common/timing.h"

/* Above this many multiply-adds per product (B*Hq*Nq*Nkv*D) the reference checks only every
 * rows_step-th query row, so the check stays a few seconds long. */
#define FULL_CHECK_LIMIT 2e9

typedef struct options {
  const char* device; /* NULL: CLATTN_DEVICE, else the default rule */
  size_t batch, heads, kv_heads, seq, seq_kv, head_dim;
  int causal;
  clattn_variant variant;
  unsigned block_m, block_n, rows_per_item, threads_per_row, num_splits;
  int reps, warmup;
  clattn_layout layout;
  uint64_t seed;
  int json;
  int check;
  int lse;   /* pass an LSE buffer (its values are not checked) */
  int probs; /* also run clattn_attention_probs (implies lse) */
} options;

typedef struct results {
  char device_name[256];
  char platform_name[256];
  const char* device_type;
  clattn_attention_config config;
  double first_ms; /* get_config (builds the kernel) + the first clattn_attention + clFinish */
  double get_config_ms, first_attention_ms;
  double wall_median_ms, wall_min_ms;
  int have_kernel_time; /* the returned event: the last (main) kernel only */
  double kernel_median_ms, kernel_min_ms;
  /* From the end of a marker enqueued just before the call to the end of the returned event:
   * every command of the call (REGISTER_BLOCKED also stages Kᵀ first). */
  int have_span_time;
  double span_median_ms, span_min_ms;
  double flops;
  int checked;
  size_t rows_step, rows_checked;
  size_t nan_count; /* output elements that are NaN where the reference is not */
  double max_abs_err, max_err_over_tol;
  int pass;
  /* --probs: the whole matrix and an interior block against the reference. */
  int probs_run, probs_checked, probs_pass;
  double probs_max_rel_err, probs_max_sum_err;
} results;

/* Largest --reps and --warmup: the times of every call are kept, and a typo should not turn
 * into hours of runs. */
#define MAX_REPS 1000000

static const char kDeviceHelp[] =
    "\"P:D\" or a name substring (default: CLATTN_DEVICE, else\n"
    "first GPU, accelerator, CPU)";

static const char kNotes[] =
    "\n"
    "Exit status: 0 within tolerance, 3 outside it, 1 clattn or OpenCL error, 2 usage.\n";

static const char* const kLayouts[] = {"bhnd", "bnhd", NULL};

/* Parses the core mode's flags into o; returns the parser's result. */
static clattn_flags_result parse_options(int argc, char** argv, options* o) {
  int core = 0, layout = 0;
  const clattn_flag flags[] = {
      CLATTN_FLAG_DEF_STRING("--device", &o->device, "SPEC", kDeviceHelp),
      CLATTN_FLAG_DEF_SIZE("--batch", &o->batch, "batch size (1)"),
      CLATTN_FLAG_DEF_SIZE("--heads", &o->heads, "query heads (8)"),
      CLATTN_FLAG_DEF_SIZE("--kv-heads", &o->kv_heads,
                           "key/value heads, divides --heads (= heads)"),
      CLATTN_FLAG_DEF_SIZE("--seq", &o->seq, "query length (1024)"),
      CLATTN_FLAG_DEF_SIZE("--seq-kv", &o->seq_kv, "key/value length (= seq)"),
      CLATTN_FLAG_DEF_SIZE("--head-dim", &o->head_dim, "head dimension, 1..256 (64)"),
      CLATTN_FLAG_DEF_SET("--causal", &o->causal, "causal mask, bottom-right aligned"),
      CLATTN_FLAG_DEF_SET("--lse", &o->lse, "also write each row's log-sum-exp (an extra buffer)"),
      CLATTN_FLAG_DEF_SET("--probs", &o->probs,
                          "then the probabilities (clattn_attention_probs) of the whole matrix\n"
                          "and of an interior block, from the LSE (implies --lse)"),
      {.name = "--layout",
       .kind = CLATTN_FLAG_CHOICE,
       .ptr = &layout,
       .choices = kLayouts,
       .help = "tensor layout (bhnd)"},
      {.name = "--variant",
       .kind = CLATTN_FLAG_CUSTOM,
       .ptr = &o->variant,
       .parse = clattn_flag_parse_variant,
       .arg = "auto|tiled|regblock",
       .help = "kernel variant (auto: from the device type and\n"
               "shape; also tiled_local, register_blocked, split_kv)"},
      CLATTN_FLAG_DEF_UNSIGNED("--block-m", &o->block_m, "query rows per work-group (0: default)"),
      CLATTN_FLAG_DEF_UNSIGNED("--block-n", &o->block_n, "keys per tile (0: default)"),
      CLATTN_FLAG_DEF_UNSIGNED("--rows-per-item", &o->rows_per_item,
                               "query rows per work-item, register_blocked (0: default)"),
      CLATTN_FLAG_DEF_UNSIGNED("--threads-per-row", &o->threads_per_row,
                               "work-items per query row, tiled_local (0: default)"),
      CLATTN_FLAG_DEF_UNSIGNED("--num-splits", &o->num_splits,
                               "key splits per (batch, kv head), split_kv (0: default)"),
      CLATTN_FLAG_DEF_INT("--reps", &o->reps, MAX_REPS, "timed repetitions (10)"),
      CLATTN_FLAG_DEF_INT("--warmup", &o->warmup, MAX_REPS,
                          "untimed repetitions after the first call (2)"),
      CLATTN_FLAG_DEF_UINT64("--seed", &o->seed, "input generator seed (1)"),
      CLATTN_FLAG_DEF_CLEAR("--no-check", &o->check, "skip the comparison with the reference"),
      CLATTN_FLAG_DEF_SET("--json", &o->json, "print one JSON object"),
      CLATTN_FLAG_DEF_SET("--core", &core, NULL), /* main has chosen the mode */
      CLATTN_FLAG_DEF_END,
  };
  const clattn_flag_spec spec = {
      .tool = "clattn-run",
      .usage =
          "usage: clattn-run --core [options]\n"
          "\n"
          "Core mode (clattn-run --help without --core describes the layer mode).\n"
          "Runs fused attention on random inputs in [-1, 1], times the cl_mem entry point\n"
          "(clattn_attention + clFinish) and checks the output against the double-precision\n"
          "reference.\n"
          "\n",
      .notes = kNotes,
      .flags = flags,
  };
  const clattn_flags_result r = clattn_flags_parse(&spec, argc, argv);
  o->layout = layout == 1 ? CLATTN_LAYOUT_BNHD : CLATTN_LAYOUT_BHND;
  if (o->reps < 1) o->reps = 1;
  return r;
}

static const char* source_name(clattn_config_source s) {
  switch (s) {
    case CLATTN_CONFIG_SOURCE_USER:
      return "user";
    case CLATTN_CONFIG_SOURCE_HEURISTIC:
      return "heuristic";
    case CLATTN_CONFIG_SOURCE_FALLBACK:
      return "fallback";
    case CLATTN_CONFIG_SOURCE_TUNED:
      return "tuned";
    case CLATTN_CONFIG_SOURCE_TUNED_OTHER_DRIVER:
      return "tuned-other-driver";
    default:
      return "unknown";
  }
}

/* Element offset of (b, h, i, 0) of a Q/O-shaped tensor with default strides. */
static size_t row_offset(const clattn_attention_desc* d, size_t b, size_t h, size_t i) {
  if (d->layout == CLATTN_LAYOUT_BNHD) {
    return ((b * d->seq_q + i) * d->heads_q + h) * d->head_dim;
  }
  return ((b * d->heads_q + h) * d->seq_q + i) * d->head_dim;
}

/* Prints a failed clattn call with everything the library says about it. */
static void report_clattn_error(const options* o, clattn_context* ctx, const char* what,
                                clattn_status st) {
  char detail[4096] = "";
  char log[4096] = "";
  if (ctx) {
    clattn_context_get_last_error(ctx, detail, sizeof detail, NULL);
    if (st == CLATTN_ERROR_BUILD_FAILED) {
      clattn_context_get_build_log(ctx, log, sizeof log, NULL);
    }
  }
  if (o->json) {
    printf("{\"ok\":false,\"error\":{\"call\":");
    clattn_tool_json_string(stdout, what);
    printf(",\"status\":");
    clattn_tool_json_string(stdout, clattn_status_name(st));
    printf(",\"message\":");
    clattn_tool_json_string(stdout, clattn_status_string(st));
    printf(",\"detail\":");
    clattn_tool_json_string(stdout, detail);
    printf(",\"build_log\":");
    clattn_tool_json_string(stdout, log);
    printf("}}\n");
  } else {
    fprintf(stderr, "clattn-run: %s failed: %s (%s)\n", what, clattn_status_name(st),
            clattn_status_string(st));
    if (detail[0]) fprintf(stderr, "  last error: %s\n", detail);
    /* The last error often quotes the build log already. */
    if (log[0] && !strstr(detail, log)) fprintf(stderr, "  build log:\n%s\n", log);
  }
}

static void report_cl_error(const options* o, const char* what, cl_int err) {
  if (o->json) {
    printf("{\"ok\":false,\"error\":{\"call\":");
    clattn_tool_json_string(stdout, what);
    printf(",\"status\":\"CLATTN_ERROR_OPENCL\",\"cl_error\":%d}}\n", (int)err);
  } else {
    fprintf(stderr, "clattn-run: %s failed with OpenCL error %d\n", what, (int)err);
  }
}

/* Kernel time of a finished event in ms, or -1 when profiling info is unavailable. */
static double event_ms(cl_event ev) {
  cl_ulong start = 0, end = 0;
  if (!ev) return -1.0;
  if (clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof start, &start, NULL) !=
          CL_SUCCESS ||
      clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL) != CL_SUCCESS ||
      end < start || start == 0) {
    return -1.0;
  }
  return (double)(end - start) * 1e-6;
}

/* From the end of `marker` to the end of `last` in ms, or -1 when either lacks profiling info
 * or the order is implausible. */
static double span_ms(cl_event marker, cl_event last) {
  cl_ulong begin = 0, end = 0;
  if (!marker || !last) return -1.0;
  if (clGetEventProfilingInfo(marker, CL_PROFILING_COMMAND_END, sizeof begin, &begin, NULL) !=
          CL_SUCCESS ||
      clGetEventProfilingInfo(last, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL) !=
          CL_SUCCESS ||
      begin == 0 || end <= begin) {
    return -1.0;
  }
  return (double)(end - begin) * 1e-6;
}

static void print_text(const options* o, const clattn_attention_desc* d, const results* r) {
  printf("device     %s (%s, %s)\n", r->device_name, r->device_type, r->platform_name);
  printf("shape      B=%zu Hq=%zu Hkv=%zu Nq=%zu Nkv=%zu D=%zu %s%s, fp32\n", d->batch, d->heads_q,
         d->heads_kv, d->seq_q, d->seq_kv, d->head_dim,
         d->layout == CLATTN_LAYOUT_BNHD ? "bnhd" : "bhnd", d->causal ? ", causal" : "");
  printf(
      "config     %s block_m=%u block_n=%u rows_per_item=%u threads_per_row=%u num_splits=%u "
      "(source: %s)\n",
      clattn_variant_name(r->config.variant), r->config.block_m, r->config.block_n,
      r->config.rows_per_item, r->config.threads_per_row, r->config.num_splits,
      source_name(r->config.source));
  printf("first call %.3f ms = get_config %.3f ms (builds the kernel) + first run %.3f ms\n",
         r->first_ms, r->get_config_ms, r->first_attention_ms);
  printf("wall       median %.3f ms, min %.3f ms over %d reps (enqueue + clFinish)\n",
         r->wall_median_ms, r->wall_min_ms, o->reps);
  if (r->have_kernel_time) {
    printf("kernel     median %.3f ms, min %.3f ms (main kernel, from the returned event)\n",
           r->kernel_median_ms, r->kernel_min_ms);
  } else {
    printf("kernel     (no profiling info from the event)\n");
  }
  if (r->have_span_time) {
    printf("device     median %.3f ms, min %.3f ms (all commands of the call, profiled)\n",
           r->span_median_ms, r->span_min_ms);
  }
  printf("GFLOP/s    %.2f (wall median)", r->flops / (r->wall_median_ms * 1e6));
  if (r->have_span_time) printf(", %.2f (device median)", r->flops / (r->span_median_ms * 1e6));
  if (r->have_kernel_time) printf(", %.2f (kernel median)", r->flops / (r->kernel_median_ms * 1e6));
  printf(" for %.4g GFLOP\n", r->flops * 1e-9);
  if (r->checked) {
    printf("check      max abs err %.3g, max err/tol %.3g over %zu rows (every %zu%s)",
           r->max_abs_err, r->max_err_over_tol, r->rows_checked, r->rows_step,
           r->rows_step == 1 ? "" : ", sampled");
    if (r->nan_count) printf(", %zu NaN", r->nan_count);
    printf(" -> %s\n", r->pass ? "PASS" : "FAIL");
  } else {
    printf("check      skipped\n");
  }
  if (r->probs_run && r->probs_checked) {
    printf("probs      whole matrix and a block: max rel err %.3g, max |row sum - 1| %.3g -> %s\n",
           r->probs_max_rel_err, r->probs_max_sum_err, r->probs_pass ? "PASS" : "FAIL");
  } else if (r->probs_run) {
    printf("probs      whole matrix and a block: run, not checked\n");
  }
}

static void print_json(const options* o, const clattn_attention_desc* d, const results* r) {
  printf("{\"ok\":true,\"device\":");
  clattn_tool_json_string(stdout, r->device_name);
  printf(",\"device_type\":");
  clattn_tool_json_string(stdout, r->device_type);
  printf(",\"platform\":");
  clattn_tool_json_string(stdout, r->platform_name);
  printf(
      ",\"shape\":{\"batch\":%zu,\"heads_q\":%zu,\"heads_kv\":%zu,\"seq_q\":%zu,\"seq_kv\":%zu,"
      "\"head_dim\":%zu,\"causal\":%s,\"layout\":\"%s\",\"dtype\":\"f32\"}",
      d->batch, d->heads_q, d->heads_kv, d->seq_q, d->seq_kv, d->head_dim,
      d->causal ? "true" : "false", d->layout == CLATTN_LAYOUT_BNHD ? "bnhd" : "bhnd");
  printf(
      ",\"config\":{\"variant\":\"%s\",\"block_m\":%u,\"block_n\":%u,\"rows_per_item\":%u,"
      "\"threads_per_row\":%u,\"num_splits\":%u,\"source\":\"%s\"}",
      clattn_variant_name(r->config.variant), r->config.block_m, r->config.block_n,
      r->config.rows_per_item, r->config.threads_per_row, r->config.num_splits,
      source_name(r->config.source));
  printf(",\"reps\":%d,\"warmup\":%d,\"first_call_ms\":", o->reps, o->warmup);
  clattn_tool_json_number(stdout, r->first_ms);
  printf(",\"get_config_ms\":");
  clattn_tool_json_number(stdout, r->get_config_ms);
  printf(",\"first_run_ms\":");
  clattn_tool_json_number(stdout, r->first_attention_ms);
  printf(",\"wall_ms\":{\"median\":");
  clattn_tool_json_number(stdout, r->wall_median_ms);
  printf(",\"min\":");
  clattn_tool_json_number(stdout, r->wall_min_ms);
  printf("},\"kernel_ms\":");
  if (r->have_kernel_time) {
    printf("{\"median\":");
    clattn_tool_json_number(stdout, r->kernel_median_ms);
    printf(",\"min\":");
    clattn_tool_json_number(stdout, r->kernel_min_ms);
    printf("}");
  } else {
    printf("null");
  }
  printf(",\"device_ms\":");
  if (r->have_span_time) {
    printf("{\"median\":");
    clattn_tool_json_number(stdout, r->span_median_ms);
    printf(",\"min\":");
    clattn_tool_json_number(stdout, r->span_min_ms);
    printf("}");
  } else {
    printf("null");
  }
  printf(",\"flops\":%.17g,\"gflops\":{\"wall_median\":", r->flops);
  clattn_tool_json_number(stdout, r->flops / (r->wall_median_ms * 1e6));
  printf(",\"device_median\":");
  if (r->have_span_time) {
    clattn_tool_json_number(stdout, r->flops / (r->span_median_ms * 1e6));
  } else {
    printf("null");
  }
  printf(",\"kernel_median\":");
  if (r->have_kernel_time) {
    clattn_tool_json_number(stdout, r->flops / (r->kernel_median_ms * 1e6));
  } else {
    printf("null");
  }
  printf("},\"check\":");
  if (r->checked) {
    printf("{\"rows_step\":%zu,\"rows_checked\":%zu,\"max_abs_err\":", r->rows_step,
           r->rows_checked);
    clattn_tool_json_number(stdout, r->max_abs_err);
    printf(",\"max_err_over_tol\":");
    clattn_tool_json_number(stdout, r->max_err_over_tol);
    printf(",\"nan_count\":%zu,\"pass\":%s}", r->nan_count, r->pass ? "true" : "false");
  } else {
    printf("null");
  }
  if (r->probs_run) {
    printf(",\"probs\":");
    if (r->probs_checked) {
      printf("{\"max_rel_err\":");
      clattn_tool_json_number(stdout, r->probs_max_rel_err);
      printf(",\"max_sum_err\":");
      clattn_tool_json_number(stdout, r->probs_max_sum_err);
      printf(",\"pass\":%s}", r->probs_pass ? "true" : "false");
    } else {
      printf("null");
    }
  }
  printf("}\n");
}

/* --probs: the probabilities of the whole matrix and of an interior block (from the LSE of
 * the last fused call in bufs), checked against the reference unless the shape is too large
 * for a full check. The tool's bars are sanity checks (1e-4 of each entry plus 1e-9, rows
 * summing to 1 within 1e-4, masked entries exactly 0); tests/test_probs.c holds the derived
 * bounds. Returns 0, or the tool's exit status for an error (reported). */
static int run_probs(const options* o, clattn_context* ctx, cl_command_queue queue,
                     const clattn_attention_desc* desc, const clattn_attention_buffers* bufs,
                     const float* q, const float* k, results* r) {
  const size_t nq = desc->seq_q, nkv = desc->seq_kv;
  const size_t whole = desc->batch * desc->heads_q * nq * nkv;
  clattn_probs_block block = CLATTN_PROBS_BLOCK_INIT;
  block.head_begin = desc->heads_q > 1 ? 1 : 0;
  block.heads = desc->heads_q > 1 ? desc->heads_q - 1 : 1;
  block.row_begin = nq / 3;
  block.rows = nq / 3 ? nq / 3 : 1;
  block.col_begin = nkv / 3;
  block.cols = nkv / 3 ? nkv / 3 : 1;
  const size_t part = desc->batch * block.heads * block.rows * block.cols;
  int code = 1;
  float* got = NULL;
  double* ref = NULL;
  cl_int err = CL_SUCCESS;
  cl_context cl_ctx = NULL;
  clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL);
  cl_mem p = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, (whole + part) * sizeof(float), NULL, &err);
  if (err != CL_SUCCESS) {
    report_cl_error(o, "clCreateBuffer (probabilities)", err);
    return 1;
  }
  r->probs_run = 1;
  clattn_status st = clattn_attention_probs(ctx, desc, bufs, NULL, p, 0, queue, 0, NULL, NULL);
  if (st == CLATTN_SUCCESS) {
    st = clattn_attention_probs(ctx, desc, bufs, &block, p, whole, queue, 0, NULL, NULL);
  }
  if (st != CLATTN_SUCCESS) {
    report_clattn_error(o, ctx, "clattn_attention_probs", st);
    goto cleanup;
  }
  const double work = (double)whole * (double)desc->head_dim;
  if (!o->check || work > FULL_CHECK_LIMIT) {
    err = clFinish(queue);
    if (err != CL_SUCCESS) {
      report_cl_error(o, "clFinish", err);
      goto cleanup;
    }
    code = 0;
    goto cleanup;
  }
  got = malloc((whole + part) * sizeof *got);
  ref = malloc((whole + part) * sizeof *ref);
  if (!got || !ref) {
    report_clattn_error(o, ctx, "malloc (probabilities)", CLATTN_ERROR_OUT_OF_MEMORY);
    goto cleanup;
  }
  err = clEnqueueReadBuffer(queue, p, CL_TRUE, 0, (whole + part) * sizeof *got, got, 0, NULL, NULL);
  if (err != CL_SUCCESS) {
    report_cl_error(o, "clEnqueueReadBuffer", err);
    goto cleanup;
  }
  if (clattn_ref_attention_probs(desc, q, k, NULL, 0, desc->heads_q, 0, nq, 0, nkv, ref) != 0 ||
      clattn_ref_attention_probs(desc, q, k, NULL, block.head_begin, block.heads, block.row_begin,
                                 block.rows, block.col_begin, block.cols, ref + whole) != 0) {
    report_clattn_error(o, ctx, "clattn_ref_attention_probs", CLATTN_ERROR_INVALID_SHAPE);
    goto cleanup;
  }
  r->probs_checked = 1;
  r->probs_pass = 1;
  for (size_t i = 0; i < whole + part; ++i) {
    const double e = fabs((double)got[i] - ref[i]);
    const int ok = ref[i] == 0.0 ? got[i] == 0.0f : e <= 1e-4 * ref[i] + 1e-9;
    if (!ok) r->probs_pass = 0;
    if (ref[i] > 0.0 && !(e / ref[i] <= r->probs_max_rel_err)) r->probs_max_rel_err = e / ref[i];
  }
  for (size_t row = 0; row < whole / nkv; ++row) {
    double sum = 0.0, want = 0.0;
    for (size_t j = 0; j < nkv; ++j) {
      sum += got[row * nkv + j];
      want += ref[row * nkv + j];
    }
    const double e = fabs(sum - want);
    if (!(e <= r->probs_max_sum_err)) r->probs_max_sum_err = e;
    if (!(e <= 1e-4)) r->probs_pass = 0;
  }
  code = r->probs_pass ? 0 : 3;
cleanup:
  clReleaseMemObject(p);
  free(got);
  free(ref);
  return code;
}

/* The core-only mode (--core). */
static int run_core(int argc, char** argv) {
  options o = {.device = NULL,
               .batch = 1,
               .heads = 8,
               .kv_heads = 0,
               .seq = 1024,
               .seq_kv = 0,
               .head_dim = 64,
               .causal = 0,
               .variant = CLATTN_VARIANT_AUTO,
               .reps = 10,
               .warmup = 2,
               .layout = CLATTN_LAYOUT_BHND,
               .seed = 1,
               .json = 0,
               .check = 1};
  const clattn_flags_result parsed = parse_options(argc, argv, &o);
  if (parsed != CLATTN_FLAGS_OK) {
    if (parsed == CLATTN_FLAGS_EXIT) return 0;
    fprintf(stderr, "(clattn-run --core --help lists the options)\n");
    return 2;
  }
  if (o.probs) o.lse = 1;

  int exit_code = 1;
  clattn_status st = CLATTN_SUCCESS;
  clattn_context* ctx = NULL;
  cl_context cl_ctx = NULL;
  cl_command_queue queue = NULL;
  cl_mem bq = NULL, bk = NULL, bv = NULL, bo = NULL, blse = NULL;
  float *q = NULL, *k = NULL, *v = NULL, *out = NULL;
  double* ref = NULL;
  double *wall = NULL, *kern = NULL, *span = NULL;
  cl_event ev = NULL, marker = NULL;
  results r;
  memset(&r, 0, sizeof r);

  clattn_context_options copt = CLATTN_CONTEXT_OPTIONS_INIT;
  copt.device = o.device;
  st = clattn_context_create(&copt, &ctx);
  if (st != CLATTN_SUCCESS) {
    report_clattn_error(&o, ctx, "clattn_context_create", st);
    goto cleanup;
  }
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  st = clattn_context_get_device_info(ctx, &info);
  if (st != CLATTN_SUCCESS) {
    report_clattn_error(&o, ctx, "clattn_context_get_device_info", st);
    goto cleanup;
  }
  snprintf(r.device_name, sizeof r.device_name, "%s", info.name);
  snprintf(r.platform_name, sizeof r.platform_name, "%s", info.platform_name);
  r.device_type = clattn_tool_device_type_name(info.type);
  clattn_context_get_cl(ctx, &cl_ctx, NULL, &queue);

  clattn_attention_desc desc = CLATTN_ATTENTION_DESC_INIT;
  desc.dtype = CLATTN_DTYPE_F32;
  desc.batch = o.batch;
  desc.heads_q = o.heads;
  desc.heads_kv = o.kv_heads ? o.kv_heads : o.heads;
  desc.seq_q = o.seq;
  desc.seq_kv = o.seq_kv ? o.seq_kv : o.seq;
  desc.head_dim = o.head_dim;
  desc.causal = o.causal;
  desc.layout = o.layout;

  clattn_attention_config requested = CLATTN_ATTENTION_CONFIG_INIT;
  requested.variant = o.variant;
  requested.block_m = o.block_m;
  requested.block_n = o.block_n;
  requested.rows_per_item = o.rows_per_item;
  requested.threads_per_row = o.threads_per_row;
  requested.num_splits = o.num_splits;
  r.config.struct_size = sizeof r.config;

  /* Validates the shape with a detailed message, and builds the kernel (timed as part of the
   * first call). */
  double t0 = clattn_tool_now_ms();
  st = clattn_attention_get_config(ctx, &desc, &requested, &r.config);
  if (st != CLATTN_SUCCESS) {
    report_clattn_error(&o, ctx, "clattn_attention_get_config", st);
    goto cleanup;
  }
  r.get_config_ms = clattn_tool_now_ms() - t0;

  size_t nq = 0, nk = 0, nv = 0, no = 0;
  if ((st = clattn_attention_tensor_size(&desc, 'q', &nq)) != CLATTN_SUCCESS ||
      (st = clattn_attention_tensor_size(&desc, 'k', &nk)) != CLATTN_SUCCESS ||
      (st = clattn_attention_tensor_size(&desc, 'v', &nv)) != CLATTN_SUCCESS ||
      (st = clattn_attention_tensor_size(&desc, 'o', &no)) != CLATTN_SUCCESS) {
    report_clattn_error(&o, ctx, "clattn_attention_tensor_size", st);
    goto cleanup;
  }

  q = malloc(nq * sizeof *q);
  k = malloc(nk * sizeof *k);
  v = malloc(nv * sizeof *v);
  out = malloc(no * sizeof *out);
  wall = malloc((size_t)o.reps * sizeof *wall);
  kern = malloc((size_t)o.reps * sizeof *kern);
  span = malloc((size_t)o.reps * sizeof *span);
  if (!q || !k || !v || !out || !wall || !kern || !span) {
    st = CLATTN_ERROR_OUT_OF_MEMORY;
    report_clattn_error(&o, ctx, "malloc (host inputs)", st);
    goto cleanup;
  }
  uint64_t state = clattn_tool_rng_state(o.seed);
  clattn_ref_fill_uniform(q, nq, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(k, nk, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(v, nv, -1.0f, 1.0f, &state);

  cl_int err = CL_SUCCESS;
  bq = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nq * sizeof *q, q, &err);
  if (err == CL_SUCCESS) {
    bk = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nk * sizeof *k, k, &err);
  }
  if (err == CL_SUCCESS) {
    bv = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nv * sizeof *v, v, &err);
  }
  if (err == CL_SUCCESS) {
    bo = clCreateBuffer(cl_ctx, CL_MEM_WRITE_ONLY, no * sizeof *out, NULL, &err);
  }
  if (err == CL_SUCCESS && o.lse) {
    /* --probs reads the LSE back on the device. */
    blse = clCreateBuffer(cl_ctx, o.probs ? CL_MEM_READ_WRITE : CL_MEM_WRITE_ONLY,
                          desc.batch * desc.heads_q * desc.seq_q * sizeof(float), NULL, &err);
  }
  if (err != CL_SUCCESS) {
    report_cl_error(&o, "clCreateBuffer", err);
    goto cleanup;
  }

  clattn_attention_buffers bufs = CLATTN_ATTENTION_BUFFERS_INIT;
  bufs.q = bq;
  bufs.k = bk;
  bufs.v = bv;
  bufs.o = bo;
  bufs.lse = blse;

  /* The first call pays for what get_config did not (argument set-up, first launch). */
  double t1 = clattn_tool_now_ms();
  st = clattn_attention(ctx, &desc, &bufs, &requested, NULL, 0, NULL, NULL);
  if (st == CLATTN_SUCCESS && (err = clFinish(queue)) != CL_SUCCESS) {
    report_cl_error(&o, "clFinish", err);
    goto cleanup;
  }
  r.first_attention_ms = clattn_tool_now_ms() - t1;
  r.first_ms = r.get_config_ms + r.first_attention_ms;
  if (st != CLATTN_SUCCESS) {
    report_clattn_error(&o, ctx, "clattn_attention", st);
    goto cleanup;
  }

  r.have_kernel_time = 1;
  r.have_span_time = 1;
  for (int rep = -o.warmup; rep < o.reps; ++rep) {
    /* The queue is in-order: the marker completes before the call's first command starts. */
    if (clEnqueueMarkerWithWaitList(queue, 0, NULL, &marker) != CL_SUCCESS) marker = NULL;
    double t = clattn_tool_now_ms();
    st = clattn_attention(ctx, &desc, &bufs, &requested, NULL, 0, NULL, &ev);
    if (st != CLATTN_SUCCESS) {
      report_clattn_error(&o, ctx, "clattn_attention", st);
      goto cleanup;
    }
    if ((err = clFinish(queue)) != CL_SUCCESS) {
      report_cl_error(&o, "clFinish", err);
      goto cleanup;
    }
    double elapsed = clattn_tool_now_ms() - t;
    if (rep >= 0) {
      wall[rep] = elapsed;
      kern[rep] = event_ms(ev);
      if (kern[rep] < 0) r.have_kernel_time = 0;
      span[rep] = span_ms(marker, ev);
      if (span[rep] < 0) r.have_span_time = 0;
    }
    if (ev) clReleaseEvent(ev);
    if (marker) clReleaseEvent(marker);
    ev = marker = NULL;
  }
  r.wall_min_ms = clattn_tool_min(wall, (size_t)o.reps);
  r.wall_median_ms = clattn_tool_median(wall, (size_t)o.reps);
  if (r.have_kernel_time) {
    r.kernel_min_ms = clattn_tool_min(kern, (size_t)o.reps);
    r.kernel_median_ms = clattn_tool_median(kern, (size_t)o.reps);
  }
  if (r.have_span_time) {
    r.span_min_ms = clattn_tool_min(span, (size_t)o.reps);
    r.span_median_ms = clattn_tool_median(span, (size_t)o.reps);
  }
  r.flops = clattn_tool_core_flops(&desc);

  exit_code = 0;
  if (o.check) {
    err = clEnqueueReadBuffer(queue, bo, CL_TRUE, 0, no * sizeof *out, out, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
      report_cl_error(&o, "clEnqueueReadBuffer", err);
      exit_code = 1;
      goto cleanup;
    }
    ref = malloc(no * sizeof *ref);
    if (!ref) {
      report_clattn_error(&o, ctx, "malloc (reference)", CLATTN_ERROR_OUT_OF_MEMORY);
      exit_code = 1;
      goto cleanup;
    }
    double work = (double)desc.batch * (double)desc.heads_q * (double)desc.seq_q *
                  (double)desc.seq_kv * (double)desc.head_dim;
    r.rows_step = work > FULL_CHECK_LIMIT ? (size_t)ceil(work / FULL_CHECK_LIMIT) : 1;
    if (clattn_ref_attention(&desc, q, k, v, NULL, ref, NULL, r.rows_step) != 0) {
      report_clattn_error(&o, ctx, "clattn_ref_attention", CLATTN_ERROR_INVALID_SHAPE);
      exit_code = 1;
      goto cleanup;
    }
    r.checked = 1;
    r.pass = 1;
    for (size_t b = 0; b < desc.batch; ++b) {
      for (size_t h = 0; h < desc.heads_q; ++h) {
        for (size_t i = 0; i < desc.seq_q; i += r.rows_step) {
          double tol = clattn_ref_row_tolerance(&desc, q, k, v, NULL, b, h, i);
          size_t base = row_offset(&desc, b, h, i);
          for (size_t c = 0; c < desc.head_dim; ++c) {
            double e = fabs((double)out[base + c] - ref[base + c]);
            if (isnan(e)) {
              ++r.nan_count;
              r.pass = 0;
              continue;
            }
            if (e > tol) r.pass = 0;
            if (e > r.max_abs_err) r.max_abs_err = e;
            double ratio = tol > 0 ? e / tol : (e > 0 ? (double)INFINITY : 0.0);
            if (ratio > r.max_err_over_tol) r.max_err_over_tol = ratio;
          }
          ++r.rows_checked;
        }
      }
    }
    if (!r.pass) exit_code = 3;
  }
  if (o.probs) {
    const int probs_code = run_probs(&o, ctx, queue, &desc, &bufs, q, k, &r);
    if (probs_code == 1) {
      exit_code = 1;
      goto cleanup;
    }
    if (probs_code) exit_code = probs_code;
  }

  if (o.json) {
    print_json(&o, &desc, &r);
  } else {
    print_text(&o, &desc, &r);
  }

cleanup:
  if (ev) clReleaseEvent(ev);
  if (marker) clReleaseEvent(marker);
  if (bq) clReleaseMemObject(bq);
  if (bk) clReleaseMemObject(bk);
  if (bv) clReleaseMemObject(bv);
  if (bo) clReleaseMemObject(bo);
  if (blse) clReleaseMemObject(blse);
  clattn_context_destroy(ctx);
  free(q);
  free(k);
  free(v);
  free(out);
  free(ref);
  free(wall);
  free(kern);
  free(span);
  return exit_code;
}

/* ---------------------------------------------------------------- layer mode (the default) */

typedef struct layer_options {
  const char* device;
  size_t batch, d_model, heads, kv_heads, head_dim, seq, seq_kv;
  int causal, bias, json, check;
  int weights; /* also return the attention weights, per head and their mean */
  int reps, warmup;
  uint64_t seed;
} layer_options;

/* Parses the layer mode's flags into o; returns the parser's result. */
static clattn_flags_result parse_layer_options(int argc, char** argv, layer_options* o) {
  const clattn_flag flags[] = {
      CLATTN_FLAG_DEF_STRING("--device", &o->device, "SPEC", kDeviceHelp),
      CLATTN_FLAG_DEF_SIZE("--batch", &o->batch, "batch size (1)"),
      CLATTN_FLAG_DEF_SIZE("--d-model", &o->d_model, "model width E (768)"),
      CLATTN_FLAG_DEF_SIZE("--heads", &o->heads, "heads (12)"),
      CLATTN_FLAG_DEF_SIZE("--kv-heads", &o->kv_heads,
                           "key/value heads, divides --heads (= heads)"),
      CLATTN_FLAG_DEF_SIZE("--head-dim", &o->head_dim, "head dimension (d-model / heads)"),
      CLATTN_FLAG_DEF_SIZE("--seq", &o->seq, "sequence length (512)"),
      CLATTN_FLAG_DEF_SIZE("--seq-kv", &o->seq_kv,
                           "cross-attention: keys and values from a second random\n"
                           "input of this length (default: self-attention)"),
      CLATTN_FLAG_DEF_SET("--causal", &o->causal, "causal mask"),
      CLATTN_FLAG_DEF_CLEAR("--no-bias", &o->bias, "no projection biases"),
      CLATTN_FLAG_DEF_SET("--weights", &o->weights,
                          "also return the attention weights, per head and averaged\n"
                          "over heads (PyTorch's need_weights)"),
      CLATTN_FLAG_DEF_INT("--reps", &o->reps, MAX_REPS, "timed repetitions (10)"),
      CLATTN_FLAG_DEF_INT("--warmup", &o->warmup, MAX_REPS,
                          "untimed repetitions after the first call (2)"),
      CLATTN_FLAG_DEF_UINT64("--seed", &o->seed, "generator seed (1)"),
      CLATTN_FLAG_DEF_CLEAR("--no-check", &o->check, "skip the comparison with the reference"),
      CLATTN_FLAG_DEF_SET("--json", &o->json, "print one JSON object"),
      CLATTN_FLAG_DEF_END,
  };
  const clattn_flag_spec spec = {
      .tool = "clattn-run",
      .usage =
          "usage: clattn-run [options]          the multi-head attention layer (default)\n"
          "       clattn-run --core [options]   the attention core alone (--core --help)\n"
          "\n"
          "Creates a clattn_mha layer with random weights (uniform in +-1/sqrt(fan_in), as\n"
          "PyTorch initialises nn.MultiheadAttention) and biases, runs y = MHA(x) on random\n"
          "x in [-1, 1], times the cl_mem entry point (clattn_mha_forward + clFinish) and\n"
          "compares y with the double-precision reference of the whole layer.\n"
          "\n",
      .notes = kNotes,
      .flags = flags,
      .unknown_hint = " (options of the attention core alone need --core)",
  };
  const clattn_flags_result r = clattn_flags_parse(&spec, argc, argv);
  if (o->reps < 1) o->reps = 1;
  return r;
}

static int run_layer(int argc, char** argv) {
  layer_options o = {.batch = 1,
                     .d_model = 768,
                     .heads = 12,
                     .seq = 512,
                     .bias = 1,
                     .check = 1,
                     .reps = 10,
                     .warmup = 2,
                     .seed = 1};
  const clattn_flags_result parsed = parse_layer_options(argc, argv, &o);
  if (parsed != CLATTN_FLAGS_OK) {
    if (parsed == CLATTN_FLAGS_EXIT) return 0;
    fprintf(stderr, "(clattn-run --help lists the options)\n");
    return 2;
  }
  options report = {.json = o.json}; /* what the error reporters read */
  int exit_code = 1;
  clattn_status st;
  clattn_context* ctx = NULL;
  clattn_mha* mha = NULL;
  cl_context cl_ctx = NULL;
  cl_command_queue queue = NULL;
  cl_mem bx = NULL, bkv = NULL, by = NULL, bw = NULL;
  float *w_in = NULL, *b_in = NULL, *wo = NULL, *bo = NULL, *x = NULL, *kv = NULL, *y = NULL;
  double *ref = NULL, *tol = NULL, *wall = NULL, *span = NULL;
  float* got_w = NULL;
  double *ref_w = NULL, *tol_w = NULL;
  cl_event ev = NULL, marker = NULL;
  cl_int err = CL_SUCCESS;

  clattn_context_options copt = CLATTN_CONTEXT_OPTIONS_INIT;
  copt.device = o.device;
  st = clattn_context_create(&copt, &ctx);
  if (st != CLATTN_SUCCESS) {
    report_clattn_error(&report, ctx, "clattn_context_create", st);
    goto cleanup;
  }
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  clattn_context_get_device_info(ctx, &info);
  clattn_context_get_cl(ctx, &cl_ctx, NULL, &queue);

  clattn_mha_desc desc = CLATTN_MHA_DESC_INIT;
  desc.d_model = o.d_model;
  desc.heads = o.heads;
  desc.heads_kv = o.kv_heads;
  desc.head_dim = o.head_dim;
  st = clattn_tool_layer_desc_check(ctx, &desc);
  if (st != CLATTN_SUCCESS) {
    report_clattn_error(&report, ctx, "clattn_mha_create", st);
    goto cleanup;
  }
  /* Sizes for the host arrays, of a description clattn_mha_create accepts. */
  const size_t e = o.d_model, h = o.heads ? o.heads : 1;
  const size_t hkv = o.kv_heads ? o.kv_heads : h;
  const size_t d = o.head_dim ? o.head_dim : e / h;
  const size_t hd = h * d, kvd = hkv * d;
  const int cross = o.seq_kv != 0;
  const size_t seq_kv = cross ? o.seq_kv : o.seq;
  const size_t rows = o.batch * o.seq, rows_kv = o.batch * seq_kv;
  uint64_t state = clattn_tool_rng_state(o.seed);
  const float wb = e ? 1.0f / sqrtf((float)e) : 1.0f;
  w_in = clattn_tool_random_floats((hd + 2 * kvd) * e, wb, &state);
  wo = clattn_tool_random_floats(e * hd, hd ? 1.0f / sqrtf((float)hd) : 1.0f, &state);
  if (o.bias) {
    b_in = clattn_tool_random_floats(hd + 2 * kvd, 0.1f, &state);
    bo = clattn_tool_random_floats(e, 0.1f, &state);
  }
  x = clattn_tool_random_floats(rows * e, 1.0f, &state);
  if (cross) kv = clattn_tool_random_floats(rows_kv * e, 1.0f, &state);
  y = malloc((rows * e > 0 ? rows * e : 1) * sizeof *y);
  wall = malloc((size_t)o.reps * sizeof *wall);
  span = malloc((size_t)o.reps * sizeof *span);
  if (!w_in || !wo || (o.bias && (!b_in || !bo)) || !x || (cross && !kv) || !y || !wall || !span) {
    report_clattn_error(&report, ctx, "malloc (host arrays)", CLATTN_ERROR_OUT_OF_MEMORY);
    goto cleanup;
  }

  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = w_in;
  w.in_proj_bias.host = b_in;
  w.out_proj_weight.host = wo;
  w.out_proj_bias.host = bo;
  double t0 = clattn_tool_now_ms();
  st = clattn_mha_create(ctx, &desc, &w, &mha);
  if (st != CLATTN_SUCCESS) {
    report_clattn_error(&report, ctx, "clattn_mha_create", st);
    goto cleanup;
  }
  const double create_ms = clattn_tool_now_ms() - t0;

  bx = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, rows * e * sizeof *x, x,
                      &err);
  if (err == CL_SUCCESS && cross) {
    bkv = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, rows_kv * e * sizeof *kv,
                         kv, &err);
  }
  if (err == CL_SUCCESS) {
    by = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, rows * e * sizeof *y, NULL, &err);
  }
  /* --weights: per head, then their mean, in one buffer. */
  const size_t n_w = rows * seq_kv * h, n_mean = rows * seq_kv;
  if (err == CL_SUCCESS && o.weights) {
    bw = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, (n_w + n_mean) * sizeof(float), NULL, &err);
  }
  if (err != CL_SUCCESS) {
    report_cl_error(&report, "clCreateBuffer", err);
    goto cleanup;
  }
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = o.batch;
  fwd.seq = o.seq;
  fwd.seq_kv = cross ? seq_kv : 0;
  fwd.causal = o.causal;
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = bx;
  b.key = bkv; /* NULL: self-attention */
  b.y = by;
  if (o.weights) {
    b.attn_weights = bw;
    b.attn_weights_mean = bw;
    b.attn_weights_mean_offset = n_w;
  }
  size_t workspace = 0;
  clattn_mha_workspace_size(mha, &fwd, cross, &workspace);

  /* First call: builds the core's and CLBlast's kernels. */
  t0 = clattn_tool_now_ms();
  st = clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, NULL);
  if (st != CLATTN_SUCCESS) {
    report_clattn_error(&report, ctx, "clattn_mha_forward", st);
    goto cleanup;
  }
  if ((err = clFinish(queue)) != CL_SUCCESS) {
    report_cl_error(&report, "clFinish", err);
    goto cleanup;
  }
  const double first_ms = clattn_tool_now_ms() - t0;
  int have_span = 1;
  for (int rep = -o.warmup; rep < o.reps; ++rep) {
    if (clEnqueueMarkerWithWaitList(queue, 0, NULL, &marker) != CL_SUCCESS) marker = NULL;
    const double t = clattn_tool_now_ms();
    st = clattn_mha_forward(mha, &fwd, &b, NULL, 0, NULL, &ev);
    if (st != CLATTN_SUCCESS) {
      report_clattn_error(&report, ctx, "clattn_mha_forward", st);
      goto cleanup;
    }
    if ((err = clFinish(queue)) != CL_SUCCESS) {
      report_cl_error(&report, "clFinish", err);
      goto cleanup;
    }
    if (rep >= 0) {
      wall[rep] = clattn_tool_now_ms() - t;
      span[rep] = span_ms(marker, ev);
      if (span[rep] < 0) have_span = 0;
    }
    if (ev) clReleaseEvent(ev);
    if (marker) clReleaseEvent(marker);
    ev = marker = NULL;
  }
  const double wall_min = clattn_tool_min(wall, (size_t)o.reps);
  const double wall_med = clattn_tool_median(wall, (size_t)o.reps);
  const double span_med = have_span ? clattn_tool_median(span, (size_t)o.reps) : (double)NAN;
  const clattn_tool_layer_dims dims = {.d_model = e, .heads = h, .heads_kv = hkv, .head_dim = d};
  const double flops = clattn_tool_layer_flops(&dims, o.batch, o.seq, seq_kv, o.causal);
  const double best_ms = have_span ? span_med : wall_med;

  double max_abs = 0.0, max_ratio = 0.0, max_ref = 0.0;
  size_t bad = 0, nan_count = 0;
  int checked = 0;
  exit_code = 0;
  if (o.check) {
    err = clEnqueueReadBuffer(queue, by, CL_TRUE, 0, rows * e * sizeof *y, y, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
      report_cl_error(&report, "clEnqueueReadBuffer", err);
      exit_code = 1;
      goto cleanup;
    }
    ref = malloc(rows * e * sizeof *ref);
    tol = malloc(rows * e * sizeof *tol);
    const clattn_ref_mha_layer L = clattn_tool_ref_layer(&dims, w_in, b_in, wo, bo);
    if (!ref || !tol ||
        clattn_ref_mha_forward(&L, o.batch, o.seq, seq_kv, o.causal, x, kv, kv, NULL, ref, tol) !=
            0) {
      report_clattn_error(&report, ctx, "clattn_ref_mha_forward", CLATTN_ERROR_OUT_OF_MEMORY);
      exit_code = 1;
      goto cleanup;
    }
    checked = 1;
    for (size_t i = 0; i < rows * e; ++i) {
      const double err_i = fabs((double)y[i] - ref[i]);
      if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
      if (isnan(err_i)) {
        ++nan_count;
        continue;
      }
      if (err_i > tol[i]) ++bad;
      if (err_i > max_abs) max_abs = err_i;
      const double ratio = tol[i] > 0 ? err_i / tol[i] : (err_i > 0 ? (double)INFINITY : 0.0);
      if (ratio > max_ratio) max_ratio = ratio;
    }
    if (bad || nan_count) exit_code = 3;
  }
  /* The weights against the reference's, within its tolerance (masked entries exactly 0). */
  double w_ratio = 0.0;
  size_t w_bad = 0;
  if (o.check && o.weights) {
    got_w = malloc((n_w + n_mean) * sizeof *got_w);
    ref_w = malloc((n_w + n_mean) * sizeof *ref_w);
    tol_w = malloc((n_w + n_mean) * sizeof *tol_w);
    const clattn_ref_mha_layer L = clattn_tool_ref_layer(&dims, w_in, b_in, wo, bo);
    if (!got_w || !ref_w || !tol_w ||
        clattn_ref_mha_weights(&L, o.batch, o.seq, seq_kv, o.causal, x, kv, kv, NULL, ref_w, tol_w,
                               ref_w + n_w, tol_w + n_w) != 0) {
      report_clattn_error(&report, ctx, "clattn_ref_mha_weights", CLATTN_ERROR_OUT_OF_MEMORY);
      exit_code = 1;
      goto cleanup;
    }
    err = clEnqueueReadBuffer(queue, bw, CL_TRUE, 0, (n_w + n_mean) * sizeof *got_w, got_w, 0, NULL,
                              NULL);
    if (err != CL_SUCCESS) {
      report_cl_error(&report, "clEnqueueReadBuffer", err);
      exit_code = 1;
      goto cleanup;
    }
    for (size_t i = 0; i < n_w + n_mean; ++i) {
      const double e_i = fabs((double)got_w[i] - ref_w[i]);
      const double ratio = tol_w[i] > 0 ? e_i / tol_w[i] : (e_i > 0 ? (double)INFINITY : 0.0);
      if (!(ratio <= 1.0)) ++w_bad;
      if (!(ratio <= w_ratio)) w_ratio = ratio;
    }
    if (w_bad) exit_code = 3;
  }

  if (o.json) {
    printf("{\"ok\":true,\"mode\":\"layer\",\"device\":");
    clattn_tool_json_string(stdout, info.name);
    printf(",\"device_type\":");
    clattn_tool_json_string(stdout, clattn_tool_device_type_name(info.type));
    printf(",\"platform\":");
    clattn_tool_json_string(stdout, info.platform_name);
    printf(
        ",\"shape\":{\"batch\":%zu,\"seq\":%zu,\"seq_kv\":%zu,\"cross\":%s,\"d_model\":%zu,"
        "\"heads\":%zu,\"heads_kv\":%zu,\"head_dim\":%zu,\"causal\":%s,\"bias\":%s}",
        o.batch, o.seq, seq_kv, cross ? "true" : "false", e, h, hkv, d, o.causal ? "true" : "false",
        o.bias ? "true" : "false");
    printf(",\"workspace_bytes\":%zu,\"reps\":%d,\"create_ms\":", workspace, o.reps);
    clattn_tool_json_number(stdout, create_ms);
    printf(",\"first_call_ms\":");
    clattn_tool_json_number(stdout, first_ms);
    printf(",\"wall_ms\":{\"median\":");
    clattn_tool_json_number(stdout, wall_med);
    printf(",\"min\":");
    clattn_tool_json_number(stdout, wall_min);
    printf("},\"device_ms\":");
    if (have_span) {
      printf("{\"median\":");
      clattn_tool_json_number(stdout, span_med);
      printf("}");
    } else {
      printf("null");
    }
    printf(",\"flops\":%.17g,\"gflops\":", flops);
    clattn_tool_json_number(stdout, flops / (best_ms * 1e6));
    printf(",\"tokens_per_s\":");
    clattn_tool_json_number(stdout, (double)rows / (best_ms * 1e-3));
    printf(",\"check\":");
    if (checked) {
      printf("{\"max_abs_err\":");
      clattn_tool_json_number(stdout, max_abs);
      printf(",\"max_rel_err\":");
      clattn_tool_json_number(stdout, max_ref > 0 ? max_abs / max_ref : 0.0);
      printf(",\"max_err_over_tol\":");
      clattn_tool_json_number(stdout, max_ratio);
      printf(",\"out_of_tolerance\":%zu,\"nan_count\":%zu,\"pass\":%s}", bad, nan_count,
             exit_code == 0 ? "true" : "false");
    } else {
      printf("null");
    }
    if (o.weights) {
      printf(",\"weights\":");
      if (checked) {
        printf("{\"max_err_over_tol\":");
        clattn_tool_json_number(stdout, w_ratio);
        printf(",\"out_of_tolerance\":%zu}", w_bad);
      } else {
        printf("null");
      }
    }
    printf("}\n");
  } else {
    printf("device     %s (%s, %s)\n", info.name, clattn_tool_device_type_name(info.type),
           info.platform_name);
    printf(
        "layer      multi-head %s-attention: d_model=%zu heads=%zu kv_heads=%zu head_dim=%zu%s\n",
        cross ? "cross" : "self", e, h, hkv, d, o.bias ? ", biases" : ", no biases");
    printf("input      B=%zu N=%zu", o.batch, o.seq);
    if (cross) printf(" N_kv=%zu", seq_kv);
    printf("%s, fp32; workspace %.2f MiB\n", o.causal ? ", causal" : "",
           (double)workspace / 1048576.0);
    printf("first call create %.1f ms, first forward %.1f ms (builds the kernels)\n", create_ms,
           first_ms);
    printf("wall       median %.3f ms, min %.3f ms over %d reps (enqueue + clFinish)\n", wall_med,
           wall_min, o.reps);
    if (have_span) {
      printf("device     median %.3f ms (all commands of a forward call, profiled)\n", span_med);
    }
    printf("throughput %.2f GFLOP/s, %.0f tokens/s (%s median; %.4g GFLOP per call)\n",
           flops / (best_ms * 1e6), (double)rows / (best_ms * 1e-3), have_span ? "device" : "wall",
           flops * 1e-9);
    if (checked) {
      printf("check      max abs err %.3g (%.3g of max |y| %.3g), max err/tol %.3g", max_abs,
             max_ref > 0 ? max_abs / max_ref : 0.0, max_ref, max_ratio);
      if (nan_count) printf(", %zu NaN", nan_count);
      printf(" -> %s\n", exit_code == 0 ? "PASS" : "FAIL");
      if (o.weights) {
        printf("weights    per head and mean: max err/tol %.3g, %zu out of tolerance\n", w_ratio,
               w_bad);
      }
    } else {
      printf("check      skipped\n");
    }
  }

cleanup:
  if (ev) clReleaseEvent(ev);
  if (marker) clReleaseEvent(marker);
  if (bx) clReleaseMemObject(bx);
  if (bkv) clReleaseMemObject(bkv);
  if (by) clReleaseMemObject(by);
  if (bw) clReleaseMemObject(bw);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  free(w_in);
  free(b_in);
  free(wo);
  free(bo);
  free(x);
  free(kv);
  free(y);
  free(ref);
  free(tol);
  free(got_w);
  free(ref_w);
  free(tol_w);
  free(wall);
  free(span);
  return exit_code;
}

int main(int argc, char** argv) {
  /* --core anywhere selects the core mode (whose table takes the flag, once). */
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--core") == 0) return run_core(argc, argv);
  }
  return run_layer(argc, argv);
}
