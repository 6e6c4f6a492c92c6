/* clattn-bench: clattn's fused attention side by side with the alternatives and with the
 * device's own multiply-add peak, measured in one run on the same inputs.
 *
 * Implementations (--impl picks some, default all):
 *   fused            clattn_attention with its default (or the given) config;
 *   unfused_clblast  CLBlast strided-batched GEMM for S = Q·Kᵀ, a row-softmax kernel, CLBlast
 *                    strided-batched GEMM for O = P·V (S stored in full: N×N per head);
 *   naive            one work-item per query row, scalar, online softmax;
 *   reference        the double-precision CPU reference (tests/reference.c), only where the
 *                    shape is small enough (--reference-limit).
 * The peak is measured by a throughput kernel (tools/bench/peak.cl): many independent FMA
 * chains in the device's widest vectors, the best of several runs spread over the whole
 * benchmark. Implementations run in turns (one call each per round), so that load changes on
 * a shared machine hit all of them alike and their ratios stay meaningful.
 *
 * --mha --d-model E times the whole layer instead (projections, attention, output projection;
 * self-attention): `fused` is clattn_mha_forward, `unfused_clblast` the same CLBlast GEMMs for
 * the projections around the unfused attention above, `reference` the double-precision layer
 * (tests/reference.c); there is no naive layer. GFLOP/s count the projections too.
 *
 * --startup measures context creation plus the first attention call in fresh processes: once
 * with an empty PoCL kernel cache (cold) and once with the cache that run filled (warm).
 *
 * Exit status: 0 when every implementation ran, 1 on an error, 2 on a bad command line. */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700 /* nftw */
#define CL_TARGET_OPENCL_VERSION 120
#include <clblast_c.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_kernels.h"
#include "clattn/clattn_tuning.h"
#include "reference.h"
#include "tool_util.h"

/* Above this many multiply-adds per product (B*Hq*Nq*Nkv*D) errors are checked on every
 * rows_step-th query row only, as clattn-run does. */
#define FULL_CHECK_LIMIT 2e9
/* Shortest run of the peak kernel, so launch overhead does not count. */
#define PEAK_MIN_MS 40.0
/* Stages of the unfused paths, timed with markers between them. */
#define MAX_STAGES 5

enum { IMPL_FUSED, IMPL_UNFUSED, IMPL_NAIVE, IMPL_REFERENCE, IMPL_COUNT };
static const char* const impl_names[IMPL_COUNT] = {"fused", "unfused_clblast", "naive",
                                                   "reference"};

typedef struct options {
  const char* device;
  size_t batch, heads, kv_heads, seq, seq_kv, head_dim;
  int causal;
  /* The whole layer (--mha --d-model); head_dim is then d_model / heads unless given. */
  int mha;
  size_t d_model;
  int head_dim_given;
  clattn_variant variant;
  unsigned block_m, block_n, rows_per_item, threads_per_row;
  long reps, warmup;
  double max_seconds;     /* per implementation: stop repeating once its calls took this long */
  double reference_limit; /* largest B*Hq*Nq*Nkv*D the timed reference runs */
  int want[IMPL_COUNT];
  uint64_t seed;
  int json, no_peak, startup, startup_child;
} options;

/* What every implementation shares: the device, the shape, inputs, output and reference. */
typedef struct bench {
  const options* o;
  clattn_context* ctx;
  cl_context cl_ctx;
  cl_device_id device;
  cl_command_queue queue;
  clattn_device_info info;
  clattn_attention_desc desc;
  size_t nq, nk, nv, no;
  float *q, *k, *v, *out;
  cl_mem bq, bk, bv, bo;
  /* The output every implementation writes (O, or y in layer mode), checked after warm-up. */
  cl_mem out_mem;
  size_t out_elems;
  double flops;
  /* Layer mode: dimensions (E, H, Hkv, D; rows = batch * seq), host weights and input, their
   * buffers, the layer, and the reference y with its per-element tolerance. */
  int layer;
  size_t e, h, hkv, d, rows;
  float *w_in, *b_in, *w_out, *b_out, *x, *y;
  cl_mem bx, by, bw_in, bb_in, bw_out, bb_out;
  clattn_mha* mha;
  double *ref_y, *tol_y;
  /* Names of the unfused path's stages (text, JSON). */
  int stage_count;
  const char* const* stage_names;
  const char* const* stage_keys;
  /* Reference values of every rows_step-th query row, and their error bounds. */
  double* ref;
  size_t rows_step;
  int have_ref;
  /* Peak */
  cl_program peak_program;
  cl_kernel peak_kernel;
  cl_mem peak_out;
  size_t peak_global, peak_local; /* local 0: the driver's choice */
  int peak_iters, peak_vec, peak_chains, peak_runs;
  double peak_gflops;
} bench;

typedef struct impl {
  int id;
  int active; /* still being timed */
  int skipped;
  char skip_reason[256];
  char error[1024];
  char config_json[512];
  char config_text[128];
  int bytes_known;
  size_t bytes_allocated;
  /* state */
  clattn_attention_config requested, used;
  cl_program program;
  cl_kernel kernel;
  cl_mem scratch;
  cl_mem qkv, concat, ones; /* unfused layer: projected rows, heads' outputs, a column of 1 */
  double* ref_out;          /* reference impl: full double output */
  /* results */
  double first_ms;
  double* times;
  long count;
  /* unfused_clblast: profiled time of each stage (bench.stage_names) per call */
  double* stage_times[MAX_STAGES];
  double last_stage_ms[MAX_STAGES];
  double spent_ms;
  int checked;
  size_t rows_checked, nan_count;
  double max_abs_err, max_err_over_tol;
} impl;

/* ---------------------------------------------------------------- small helpers */

/* "default" for the built-in heuristic; other sources by name. */
static const char* config_origin(clattn_config_source s) {
  switch (s) {
    case CLATTN_CONFIG_SOURCE_USER:
      return "user";
    case CLATTN_CONFIG_SOURCE_HEURISTIC:
      return "default";
    case CLATTN_CONFIG_SOURCE_FALLBACK:
      return "fallback";
    default:
      return "other";
  }
}

static const char* bench_source(const char* name) {
  for (size_t i = 0; i < clattn_bench_kernel_source_count; ++i) {
    if (strcmp(clattn_bench_kernel_sources[i].name, name) == 0) {
      return clattn_bench_kernel_sources[i].text;
    }
  }
  return NULL;
}

/* Builds tools/bench/<name>.cl with options; on failure writes the log into err. */
static cl_program build_bench_program(const bench* B, const char* name, const char* options,
                                      char* err, size_t err_size) {
  const char* text = bench_source(name);
  if (!text) {
    snprintf(err, err_size, "no embedded bench kernel %s.cl", name);
    return NULL;
  }
  cl_int e = CL_SUCCESS;
  cl_program p = clCreateProgramWithSource(B->cl_ctx, 1, &text, NULL, &e);
  if (e != CL_SUCCESS) {
    snprintf(err, err_size, "clCreateProgramWithSource(%s.cl) failed: %d", name, (int)e);
    return NULL;
  }
  char full[256];
  snprintf(full, sizeof full, "-cl-std=CL1.2 %s", options);
  e = clBuildProgram(p, 1, &B->device, full, NULL, NULL);
  if (e != CL_SUCCESS) {
    char log[700] = "";
    clGetProgramBuildInfo(p, B->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
    snprintf(err, err_size, "building %s.cl (%s) failed: %d: %s", name, full, (int)e, log);
    clReleaseProgram(p);
    return NULL;
  }
  return p;
}

/* ---------------------------------------------------------------- command line */

static void print_usage(FILE* f) {
  fprintf(f,
          "usage: clattn-bench [options]\n"
          "\n"
          "Times clattn's fused attention beside an unfused CLBlast path, a naive kernel and\n"
          "the CPU reference on the same random inputs, and the device's FMA peak, in one run.\n"
          "\n"
          "  --device SPEC          \"P:D\" or a name substring (default: CLATTN_DEVICE, else\n"
          "                         first GPU, accelerator, CPU)\n"
          "  --batch N              batch size (1)\n"
          "  --heads N              query heads (8)\n"
          "  --kv-heads N           key/value heads, divides --heads (= heads)\n"
          "  --seq N                query length (1024)\n"
          "  --seq-kv N             key/value length (= seq)\n"
          "  --head-dim N           head dimension, 1..256 (64)\n"
          "  --causal               causal mask, bottom-right aligned\n"
          "  --mha --d-model N      time the whole layer instead (self-attention: Q/K/V\n"
          "                         projections, attention, output projection, biases);\n"
          "                         --head-dim defaults to d_model / heads there\n"
          "  --impl LIST            comma-separated: fused,unfused_clblast,naive,reference\n"
          "                         (default: all)\n"
          "  --variant auto|tiled|regblock, --block-m N, --block-n N, --rows-per-item N,\n"
          "  --threads-per-row N    fused config (default: clattn's default for the device)\n"
          "  --reps N               timed calls per implementation (10)\n"
          "  --warmup N             untimed calls first, the first one builds (2, at least 1)\n"
          "  --max-seconds S        stop timing an implementation once its calls took S\n"
          "                         seconds (30; at least one timed call)\n"
          "  --reference-limit X    time the CPU reference only up to X multiply-adds\n"
          "                         B*H*Nq*Nkv*D (1e9)\n"
          "  --no-peak              skip the peak measurement\n"
          "  --seed N               input generator seed (1)\n"
          "  --startup              measure context creation + first call in fresh processes,\n"
          "                         with an empty and then a warm PoCL kernel cache\n"
          "  --json                 print one JSON object\n"
          "  --help                 print this help\n");
}

static int parse_size(const char* flag, const char* text, size_t* out) {
  char* end = NULL;
  errno = 0;
  if (!text || text[0] == '-' || text[0] == '\0') goto bad;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || *end != '\0' || v > SIZE_MAX) goto bad;
  *out = (size_t)v;
  return 0;
bad:
  fprintf(stderr, "clattn-bench: %s needs a non-negative integer, got '%s'\n", flag,
          text ? text : "");
  return -1;
}

static int parse_double(const char* flag, const char* text, double* out) {
  char* end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || *end != '\0' || !(v > 0) || !isfinite(v)) {
    fprintf(stderr, "clattn-bench: %s needs a positive number, got '%s'\n", flag, text);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_impls(const char* text, int* want) {
  for (int i = 0; i < IMPL_COUNT; ++i) want[i] = 0;
  const char* p = text;
  while (*p) {
    const char* comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    int found = 0;
    for (int i = 0; i < IMPL_COUNT; ++i) {
      if (strlen(impl_names[i]) == len && strncmp(impl_names[i], p, len) == 0) {
        want[i] = found = 1;
      }
    }
    if (!found) {
      fprintf(stderr, "clattn-bench: unknown implementation '%.*s' in --impl\n", (int)len, p);
      return -1;
    }
    p += len + (comma ? 1 : 0);
  }
  return 0;
}

static int parse_options(int argc, char** argv, options* o) {
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    const char* val = i + 1 < argc ? argv[i + 1] : NULL;
    size_t n = 0;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      print_usage(stdout);
      exit(0);
    } else if (strcmp(a, "--causal") == 0) {
      o->causal = 1;
    } else if (strcmp(a, "--json") == 0) {
      o->json = 1;
    } else if (strcmp(a, "--mha") == 0) {
      o->mha = 1;
    } else if (strcmp(a, "--no-peak") == 0) {
      o->no_peak = 1;
    } else if (strcmp(a, "--startup") == 0) {
      o->startup = 1;
    } else if (strcmp(a, "--startup-child") == 0) {
      o->startup_child = 1; /* internal: one measured start-up, see run_startup */
    } else if (!val) {
      fprintf(stderr, "clattn-bench: unknown argument or missing value: '%s'\n", a);
      return -1;
    } else {
      ++i;
      if (strcmp(a, "--device") == 0) {
        o->device = val;
      } else if (strcmp(a, "--impl") == 0) {
        if (parse_impls(val, o->want) != 0) return -1;
      } else if (strcmp(a, "--max-seconds") == 0) {
        if (parse_double(a, val, &o->max_seconds) != 0) return -1;
      } else if (strcmp(a, "--reference-limit") == 0) {
        if (parse_double(a, val, &o->reference_limit) != 0) return -1;
      } else if (strcmp(a, "--variant") == 0) {
        if (strcmp(val, "auto") == 0) {
          o->variant = CLATTN_VARIANT_AUTO;
        } else if (strcmp(val, "tiled") == 0) {
          o->variant = CLATTN_VARIANT_TILED_LOCAL;
        } else if (strcmp(val, "regblock") == 0) {
          o->variant = CLATTN_VARIANT_REGISTER_BLOCKED;
        } else {
          fprintf(stderr, "clattn-bench: --variant takes auto, tiled or regblock\n");
          return -1;
        }
      } else if (parse_size(a, val, &n) != 0) {
        return -1;
      } else if (strcmp(a, "--batch") == 0) {
        o->batch = n;
      } else if (strcmp(a, "--heads") == 0) {
        o->heads = n;
      } else if (strcmp(a, "--kv-heads") == 0) {
        o->kv_heads = n;
      } else if (strcmp(a, "--seq") == 0) {
        o->seq = n;
      } else if (strcmp(a, "--seq-kv") == 0) {
        o->seq_kv = n;
      } else if (strcmp(a, "--head-dim") == 0) {
        o->head_dim = n;
        o->head_dim_given = 1;
      } else if (strcmp(a, "--d-model") == 0) {
        o->d_model = n;
      } else if (strcmp(a, "--block-m") == 0) {
        o->block_m = (unsigned)n;
      } else if (strcmp(a, "--block-n") == 0) {
        o->block_n = (unsigned)n;
      } else if (strcmp(a, "--rows-per-item") == 0) {
        o->rows_per_item = (unsigned)n;
      } else if (strcmp(a, "--threads-per-row") == 0) {
        o->threads_per_row = (unsigned)n;
      } else if (strcmp(a, "--reps") == 0) {
        o->reps = (long)n;
      } else if (strcmp(a, "--warmup") == 0) {
        o->warmup = (long)n;
      } else if (strcmp(a, "--seed") == 0) {
        o->seed = (uint64_t)n;
      } else {
        fprintf(stderr, "clattn-bench: unknown argument '%s'\n", a);
        return -1;
      }
    }
  }
  if (o->reps < 1) o->reps = 1;
  if (o->warmup < 1) o->warmup = 1;
  return 0;
}

/* ---------------------------------------------------------------- device peak */

/* One run of the peak kernel; GFLOP/s from its profiled time, or a negative value. */
static double peak_run(bench* B, double* ms_out) {
  cl_event ev = NULL;
  size_t global = B->peak_global;
  size_t local = B->peak_local;
  cl_int e = clSetKernelArg(B->peak_kernel, 3, sizeof(cl_int), &B->peak_iters);
  if (e == CL_SUCCESS) {
    e = clEnqueueNDRangeKernel(B->queue, B->peak_kernel, 1, NULL, &global, local ? &local : NULL, 0,
                               NULL, &ev);
  }
  if (e == CL_SUCCESS) e = clFinish(B->queue);
  cl_ulong start = 0, end = 0;
  if (e == CL_SUCCESS) {
    e = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof start, &start, NULL);
  }
  if (e == CL_SUCCESS) {
    e = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL);
  }
  if (ev) clReleaseEvent(ev);
  if (e != CL_SUCCESS || end <= start) return -1.0;
  double ms = (double)(end - start) * 1e-6;
  if (ms_out) *ms_out = ms;
  double flops = 2.0 * B->peak_vec * B->peak_chains * (double)B->peak_iters * (double)global;
  double g = flops / (ms * 1e6);
  B->peak_runs++;
  if (g > B->peak_gflops) B->peak_gflops = g;
  return g;
}

/* Builds the peak kernel, sizes a run to at least PEAK_MIN_MS and takes the best of three. */
static int peak_setup(bench* B, char* err, size_t err_size) {
  cl_uint native = 0;
  clGetDeviceInfo(B->device, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT, sizeof native, &native, NULL);
  cl_uint preferred = 0;
  clGetDeviceInfo(B->device, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT, sizeof preferred, &preferred,
                  NULL);
  cl_uint w = native > preferred ? native : preferred;
  B->peak_vec = w >= 16 ? 16 : w >= 8 ? 8 : w >= 4 ? 4 : w >= 2 ? 2 : 1;
  /* CPUs: enough chains to cover the FMA latency times the FMA ports (4 x 2 on Zen and
   * Skylake-X, with some to spare); GPUs hide latency across work-items instead. */
  const int cpu = B->info.type == CLATTN_DEVICE_TYPE_CPU;
  B->peak_chains = cpu ? 12 : 8;
  size_t per_unit = cpu ? 16 : 2048;
  B->peak_global = (size_t)(B->info.compute_units ? B->info.compute_units : 1) * per_unit;
  /* On a CPU a work-group runs on one core: one work-item per group spreads them over all
   * cores (a driver left to choose may put them all in one group). */
  B->peak_local = cpu ? 1 : 0;
  char opts[64];
  snprintf(opts, sizeof opts, "-DVEC=%d -DCHAINS=%d", B->peak_vec, B->peak_chains);
  B->peak_program = build_bench_program(B, "peak", opts, err, err_size);
  if (!B->peak_program) return -1;
  cl_int e = CL_SUCCESS;
  B->peak_kernel = clCreateKernel(B->peak_program, "bench_fma_peak", &e);
  if (e == CL_SUCCESS) {
    B->peak_out =
        clCreateBuffer(B->cl_ctx, CL_MEM_WRITE_ONLY, B->peak_global * sizeof(float), NULL, &e);
  }
  cl_float a = 0.999999f, b = 1e-7f;
  if (e == CL_SUCCESS) e = clSetKernelArg(B->peak_kernel, 0, sizeof(cl_mem), &B->peak_out);
  if (e == CL_SUCCESS) e = clSetKernelArg(B->peak_kernel, 1, sizeof a, &a);
  if (e == CL_SUCCESS) e = clSetKernelArg(B->peak_kernel, 2, sizeof b, &b);
  if (e != CL_SUCCESS) {
    snprintf(err, err_size, "setting up the peak kernel failed: OpenCL error %d", (int)e);
    return -1;
  }
  B->peak_iters = 64;
  for (int tries = 0; tries < 20; ++tries) {
    double ms = 0.0;
    if (peak_run(B, &ms) < 0) {
      snprintf(err, err_size, "the peak kernel failed to run or to report its time");
      return -1;
    }
    if (ms >= PEAK_MIN_MS) break;
    double scale = ms > 0.5 ? 1.25 * PEAK_MIN_MS / ms : 8.0;
    B->peak_iters = (int)fmin(1 << 28, B->peak_iters * scale);
  }
  B->peak_gflops = 0.0; /* the calibration runs include the first launch */
  B->peak_runs = 0;
  for (int i = 0; i < 3; ++i) peak_run(B, NULL);
  return 0;
}

/* ---------------------------------------------------------------- implementations */

static void set_error(impl* m, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(impl* m, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m->error, sizeof m->error, fmt, ap);
  va_end(ap);
}

static void clattn_error(const bench* B, impl* m, const char* what, clattn_status st) {
  char detail[700] = "";
  clattn_context_get_last_error(B->ctx, detail, sizeof detail, NULL);
  set_error(m, "%s failed: %s: %s", what, clattn_status_name(st), detail);
}

static double work_macs(const clattn_attention_desc* d) {
  return (double)d->batch * (double)d->heads_q * (double)d->seq_q * (double)d->seq_kv *
         (double)d->head_dim;
}

static int setup_fused(bench* B, impl* m) {
  const options* o = B->o;
  m->requested = (clattn_attention_config)CLATTN_ATTENTION_CONFIG_INIT;
  m->requested.variant = o->variant;
  m->requested.block_m = o->block_m;
  m->requested.block_n = o->block_n;
  m->requested.rows_per_item = o->rows_per_item;
  m->requested.threads_per_row = o->threads_per_row;
  m->used = (clattn_attention_config)CLATTN_ATTENTION_CONFIG_INIT;
  clattn_status st = clattn_attention_get_config(B->ctx, &B->desc, &m->requested, &m->used);
  if (st != CLATTN_SUCCESS) {
    clattn_error(B, m, "clattn_attention_get_config", st);
    return -1;
  }
  st = clattn_attention_workspace_size(B->ctx, &B->desc, &m->requested, &m->bytes_allocated);
  if (st != CLATTN_SUCCESS) {
    clattn_error(B, m, "clattn_attention_workspace_size", st);
    return -1;
  }
  m->bytes_known = 1;
  const clattn_attention_config* c = &m->used;
  snprintf(m->config_json, sizeof m->config_json,
           "{\"variant\":\"%s\",\"block_m\":%u,\"block_n\":%u,\"rows_per_item\":%u,"
           "\"threads_per_row\":%u,\"source\":\"%s\"}",
           tool_variant_name(c->variant), c->block_m, c->block_n, c->rows_per_item,
           c->threads_per_row, config_origin(c->source));
  if (c->variant == CLATTN_VARIANT_REGISTER_BLOCKED) {
    snprintf(m->config_text, sizeof m->config_text, "regblock %ux%u (%s)", c->rows_per_item,
             c->block_n, config_origin(c->source));
  } else {
    snprintf(m->config_text, sizeof m->config_text, "tiled m%u n%u t%u (%s)", c->block_m,
             c->block_n, c->threads_per_row, config_origin(c->source));
  }
  return 0;
}

static int run_fused(bench* B, impl* m) {
  clattn_attention_buffers bufs = CLATTN_ATTENTION_BUFFERS_INIT;
  bufs.q = B->bq;
  bufs.k = B->bk;
  bufs.v = B->bv;
  bufs.o = B->bo;
  clattn_status st =
      clattn_attention(B->ctx, &B->desc, &bufs, &m->requested, B->queue, 0, NULL, NULL);
  if (st != CLATTN_SUCCESS) {
    clattn_error(B, m, "clattn_attention", st);
    return -1;
  }
  cl_int e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    set_error(m, "clFinish failed: %d", (int)e);
    return -1;
  }
  return 0;
}

static size_t heads_kv_of(const clattn_attention_desc* d) {
  return d->heads_kv ? d->heads_kv : d->heads_q;
}

/* Which GEMM parameters CLBlast runs with: a tuning file's entry applied when the context was
 * created, clattn's built-in ones (PoCL's CPU devices), or CLBlast's own. The setting is
 * process-wide per device, so clattn's layer and the unfused paths here share it. */
static const char* gemm_tuning_label(const bench* B) {
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
static const char* gemm_tuning_word(const bench* B) {
  const char* l = gemm_tuning_label(B);
  return strncmp(l, "tuned", 5) == 0      ? "tuned"
         : strncmp(l, "built-in", 8) == 0 ? "built-in"
                                          : "CLBlast";
}

/* Device time between consecutive markers (the queue is in-order) into m->last_stage_ms. */
static void stage_times_from_marks(impl* m, cl_event* mark, int stages) {
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
static int softmax_setup(bench* B, impl* m, size_t seq_q, size_t seq_kv, int causal) {
  m->program = build_bench_program(B, "softmax", "", m->error, sizeof m->error);
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
    set_error(m, "setting up the softmax kernel failed: %d", (int)e);
    return -1;
  }
  return 0;
}

/* Skips an unfused path whose score matrix (bytes) the device cannot hold; 1 when skipped. */
static int skip_large_scores(const bench* B, impl* m, size_t s_elems) {
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
static int setup_unfused(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  const size_t s_elems = d->batch * d->heads_q * d->seq_q * d->seq_kv;
  const size_t bytes = s_elems * sizeof(float);
  if (skip_large_scores(B, m, s_elems)) return 0;
  cl_int e = CL_SUCCESS;
  m->scratch = clCreateBuffer(B->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
  if (e != CL_SUCCESS) {
    set_error(m, "clCreateBuffer (S, %zu bytes) failed: %d", bytes, (int)e);
    return -1;
  }
  m->bytes_known = 1;
  m->bytes_allocated = bytes;
  if (softmax_setup(B, m, d->seq_q, d->seq_kv, d->causal) != 0) return -1;
  /* The GEMM parameters in force for the device, the same the layer runs with. */
  snprintf(m->config_json, sizeof m->config_json,
           "{\"gemm\":\"CLBlastSgemmStridedBatched\",\"gemm_tuning\":\"%s\","
           "\"softmax\":\"one work-item per row, float16\",\"batches\":%zu}",
           gemm_tuning_label(B), d->batch * heads_kv_of(d));
  snprintf(m->config_text, sizeof m->config_text, "2 %s GEMMs + softmax", gemm_tuning_word(B));
  return 0;
}

static int run_unfused(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  const size_t hkv = heads_kv_of(d);
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
    set_error(m, "CLBlastSgemmStridedBatched (Q·Kᵀ) failed: CLBlast status %d", (int)s);
    goto cleanup;
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[1]);
  size_t global[2] = {d->seq_q, d->batch * d->heads_q};
  cl_int e = clEnqueueNDRangeKernel(q, m->kernel, 2, NULL, global, NULL, 0, NULL, NULL);
  if (e != CL_SUCCESS) {
    set_error(m, "clEnqueueNDRangeKernel (softmax) failed: %d", (int)e);
    goto cleanup;
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[2]);
  s = CLBlastSgemmStridedBatched(
      CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, rows, d->head_dim, d->seq_kv,
      1.0f, m->scratch, 0, d->seq_kv, rows * d->seq_kv, B->bv, 0, d->head_dim,
      d->seq_kv * d->head_dim, 0.0f, B->bo, 0, d->head_dim, rows * d->head_dim, batches, &q, NULL);
  if (s != CLBlastSuccess) {
    set_error(m, "CLBlastSgemmStridedBatched (P·V) failed: CLBlast status %d", (int)s);
    goto cleanup;
  }
  clEnqueueMarkerWithWaitList(q, 0, NULL, &mark[3]);
  e = clFinish(q);
  if (e != CL_SUCCESS) {
    set_error(m, "clFinish failed: %d", (int)e);
    goto cleanup;
  }
  stage_times_from_marks(m, mark, 3);
  rc = 0;
cleanup:
  for (int i = 0; i < 4; ++i) {
    if (mark[i]) clReleaseEvent(mark[i]);
  }
  return rc;
}

static int setup_naive(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  char opts[64];
  snprintf(opts, sizeof opts, "-DHEAD_DIM=%zu", d->head_dim);
  m->program = build_bench_program(B, "naive", opts, m->error, sizeof m->error);
  if (!m->program) return -1;
  cl_int e = CL_SUCCESS;
  m->kernel = clCreateKernel(m->program, "bench_attention_naive", &e);
  cl_uint hq = (cl_uint)d->heads_q, group = (cl_uint)(d->heads_q / heads_kv_of(d));
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
    set_error(m, "setting up the naive kernel failed: %d", (int)e);
    return -1;
  }
  m->bytes_known = 1;
  m->bytes_allocated = 0;
  snprintf(m->config_json, sizeof m->config_json,
           "{\"work_item\":\"one query row\",\"arithmetic\":\"scalar\"}");
  snprintf(m->config_text, sizeof m->config_text, "1 row per work-item");
  return 0;
}

static int run_naive(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  size_t global[3] = {d->seq_q, d->heads_q, d->batch};
  cl_int e = clEnqueueNDRangeKernel(B->queue, m->kernel, 3, NULL, global, NULL, 0, NULL, NULL);
  if (e == CL_SUCCESS) e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    set_error(m, "running the naive kernel failed: %d", (int)e);
    return -1;
  }
  return 0;
}

/* The CPU reference, timed only up to --reference-limit multiply-adds; its output (elems
 * doubles) goes to m->ref_out. */
static int reference_setup(bench* B, impl* m, double work, size_t elems, const char* errors) {
  if (work > B->o->reference_limit) {
    snprintf(m->skip_reason, sizeof m->skip_reason,
             "%.3g multiply-adds exceed --reference-limit %.3g (errors still use %s)", work,
             B->o->reference_limit, errors);
    m->skipped = 1;
    return 0;
  }
  m->ref_out = malloc(elems * sizeof *m->ref_out);
  if (!m->ref_out) {
    set_error(m, "out of host memory for the reference output");
    return -1;
  }
  snprintf(m->config_json, sizeof m->config_json,
           "{\"host\":\"CPU\",\"precision\":\"double\",\"threads\":1}");
  snprintf(m->config_text, sizeof m->config_text, "CPU double, 1 thread");
  m->bytes_known = 0; /* host memory only */
  return 0;
}

static int setup_reference(bench* B, impl* m) {
  return reference_setup(B, m, work_macs(&B->desc), B->no, "a sampled reference");
}

static int run_reference(bench* B, impl* m) {
  if (clattn_ref_attention(&B->desc, B->q, B->k, B->v, NULL, m->ref_out, NULL, 1) != 0) {
    set_error(m, "clattn_ref_attention rejected the shape");
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- layer implementations */

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

static int setup_layer_fused(bench* B, impl* m) {
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = B->o->batch;
  fwd.seq = B->o->seq;
  fwd.causal = B->o->causal;
  clattn_status st = clattn_mha_workspace_size(B->mha, &fwd, 0, &m->bytes_allocated);
  if (st != CLATTN_SUCCESS) {
    clattn_error(B, m, "clattn_mha_workspace_size", st);
    return -1;
  }
  m->bytes_known = 1;
  const clattn_attention_desc core = layer_core_desc(B);
  m->used = (clattn_attention_config)CLATTN_ATTENTION_CONFIG_INIT;
  st = clattn_attention_get_config(B->ctx, &core, NULL, &m->used);
  if (st != CLATTN_SUCCESS) {
    clattn_error(B, m, "clattn_attention_get_config", st);
    return -1;
  }
  const clattn_attention_config* c = &m->used;
  snprintf(m->config_json, sizeof m->config_json,
           "{\"layer\":\"clattn_mha_forward\",\"gemm_tuning\":\"%s\",\"core\":{\"variant\":\"%s\","
           "\"block_m\":%u,\"block_n\":%u,\"rows_per_item\":%u,\"threads_per_row\":%u,"
           "\"source\":\"%s\"}}",
           gemm_tuning_label(B), tool_variant_name(c->variant), c->block_m, c->block_n,
           c->rows_per_item, c->threads_per_row, config_origin(c->source));
  if (c->variant == CLATTN_VARIANT_REGISTER_BLOCKED) {
    snprintf(m->config_text, sizeof m->config_text, "mha, core regblock %ux%u (%s)",
             c->rows_per_item, c->block_n, config_origin(c->source));
  } else {
    snprintf(m->config_text, sizeof m->config_text, "mha, core tiled m%u n%u (%s)", c->block_m,
             c->block_n, config_origin(c->source));
  }
  return 0;
}

static int run_layer_fused(bench* B, impl* m) {
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = B->o->batch;
  fwd.seq = B->o->seq;
  fwd.causal = B->o->causal;
  clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
  b.x = B->bx;
  b.y = B->by;
  clattn_status st = clattn_mha_forward(B->mha, &fwd, &b, B->queue, 0, NULL, NULL);
  if (st != CLATTN_SUCCESS) {
    clattn_error(B, m, "clattn_mha_forward", st);
    return -1;
  }
  cl_int e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    set_error(m, "clFinish failed: %d", (int)e);
    return -1;
  }
  return 0;
}

static int setup_layer_unfused(bench* B, impl* m) {
  const options* o = B->o;
  const size_t s_elems = o->batch * B->h * o->seq * o->seq;
  if (skip_large_scores(B, m, s_elems)) return 0;
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
    set_error(m, "allocating the unfused layer's buffers failed: %d", (int)e);
    return -1;
  }
  m->bytes_known = 1;
  m->bytes_allocated = (s_elems + qkv + concat + B->rows) * sizeof(float);
  if (softmax_setup(B, m, o->seq, o->seq, o->causal) != 0) return -1;
  snprintf(m->config_json, sizeof m->config_json,
           "{\"gemm\":\"CLBlastSgemm / CLBlastSgemmStridedBatched\",\"gemm_tuning\":\"%s\","
           "\"bias\":\"rank-1 GEMM with a column of ones\",\"softmax\":\"one work-item per row, "
           "float16\"}",
           gemm_tuning_label(B));
  snprintf(m->config_text, sizeof m->config_text, "%s GEMMs + softmax", gemm_tuning_word(B));
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
    set_error(m, "CLBlast GEMM (%s) failed: CLBlast status %d", what, (int)s);
    return -1;
  }
  return 0;
}

/* QKV = 1·b_inᵀ + x·W_inᵀ; per sequence, S = Q_h·K_gᵀ (all heads in one batched GEMM when
 * there is one key/value head per query head, else one GEMM per head), the row softmax,
 * O_h = P·V_g written into the heads' concatenation; y = 1·boᵀ + concat·W_oᵀ. */
static int run_layer_unfused(bench* B, impl* m) {
  const options* o = B->o;
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
    set_error(m, "clEnqueueNDRangeKernel (softmax) failed: %d", (int)e);
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
    set_error(m, "clFinish failed: %d", (int)e);
    goto cleanup;
  }
  stage_times_from_marks(m, mark, B->stage_count);
  rc = 0;
cleanup:
  clFinish(q);
  for (int i = 0; i <= MAX_STAGES; ++i) {
    if (mark[i]) clReleaseEvent(mark[i]);
  }
  return rc;
}

static int setup_layer_naive(bench* B, impl* m) {
  (void)B;
  snprintf(m->skip_reason, sizeof m->skip_reason,
           "no naive layer (the naive kernel is an attention core: run without --mha)");
  m->skipped = 1;
  return 0;
}

static int setup_layer_reference(bench* B, impl* m) {
  return reference_setup(B, m, layer_macs(B), B->out_elems, "the reference");
}

static clattn_ref_mha_layer layer_reference_weights(const bench* B) {
  const size_t hd = B->h * B->d, kvd = B->hkv * B->d;
  clattn_ref_mha_layer L = {.d_model = B->e,
                            .heads = B->h,
                            .heads_kv = B->hkv,
                            .head_dim = B->d,
                            .k_dim = B->e,
                            .v_dim = B->e,
                            .wq = B->w_in,
                            .wk = B->w_in + hd * B->e,
                            .wv = B->w_in + (hd + kvd) * B->e,
                            .wo = B->w_out,
                            .bq = B->b_in,
                            .bk = B->b_in + hd,
                            .bv = B->b_in + hd + kvd,
                            .bo = B->b_out};
  return L;
}

static int run_layer_reference(bench* B, impl* m) {
  const clattn_ref_mha_layer L = layer_reference_weights(B);
  if (clattn_ref_mha_forward(&L, B->o->batch, B->o->seq, B->o->seq, B->o->causal, B->x, NULL, NULL,
                             NULL, m->ref_out, NULL) != 0) {
    set_error(m, "clattn_ref_mha_forward rejected the shape");
    return -1;
  }
  return 0;
}

typedef int (*impl_fn)(bench*, impl*);
static const impl_fn setup_fns[IMPL_COUNT] = {setup_fused, setup_unfused, setup_naive,
                                              setup_reference};
static const impl_fn run_fns[IMPL_COUNT] = {run_fused, run_unfused, run_naive, run_reference};
static const impl_fn layer_setup_fns[IMPL_COUNT] = {setup_layer_fused, setup_layer_unfused,
                                                    setup_layer_naive, setup_layer_reference};
static const impl_fn layer_run_fns[IMPL_COUNT] = {run_layer_fused, run_layer_unfused, NULL,
                                                  run_layer_reference};

/* Compares the output of the last call (O on the device, or the reference's own array) with
 * the sampled reference. */
static int check_output(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  if (m->id != IMPL_REFERENCE) {
    cl_int e = clEnqueueReadBuffer(B->queue, B->out_mem, CL_TRUE, 0, B->out_elems * sizeof(float),
                                   B->out, 0, NULL, NULL);
    if (e != CL_SUCCESS) {
      set_error(m, "reading the output back failed: %d", (int)e);
      return -1;
    }
  }
  m->checked = 1;
  if (B->layer) { /* every element of y, with the layer reference's own tolerance */
    for (size_t i = 0; i < B->out_elems; ++i) {
      const double x = m->ref_out ? m->ref_out[i] : (double)B->out[i];
      const double err = fabs(x - B->ref_y[i]);
      if (isnan(err)) {
        m->nan_count++;
        continue;
      }
      if (err > m->max_abs_err) m->max_abs_err = err;
      const double tol = B->tol_y[i];
      const double r = tol > 0 ? err / tol : (err > 0 ? (double)INFINITY : 0.0);
      if (r > m->max_err_over_tol) m->max_err_over_tol = r;
    }
    m->rows_checked = B->rows;
    return 0;
  }
  for (size_t b = 0; b < d->batch; ++b) {
    for (size_t h = 0; h < d->heads_q; ++h) {
      for (size_t i = 0; i < d->seq_q; i += B->rows_step) {
        size_t base = ((b * d->heads_q + h) * d->seq_q + i) * d->head_dim;
        double tol = clattn_ref_row_tolerance(d, B->q, B->k, B->v, NULL, b, h, i);
        for (size_t c = 0; c < d->head_dim; ++c) {
          const double x = m->ref_out ? m->ref_out[base + c] : (double)B->out[base + c];
          double err = fabs(x - B->ref[base + c]);
          if (isnan(err)) {
            m->nan_count++;
            continue;
          }
          if (err > m->max_abs_err) m->max_abs_err = err;
          double r = tol > 0 ? err / tol : (err > 0 ? (double)INFINITY : 0.0);
          if (r > m->max_err_over_tol) m->max_err_over_tol = r;
        }
        m->rows_checked++;
      }
    }
  }
  return 0;
}

/* One timed call; 0 on success. */
static int timed_call(bench* B, impl* m, double* ms) {
  double t = tool_now_ms();
  int rc = (B->layer ? layer_run_fns : run_fns)[m->id](B, m);
  *ms = tool_now_ms() - t;
  m->spent_ms += *ms;
  return rc;
}

/* Warm-up calls (the first builds kernels; the last, on an output filled with NaN, is the one
 * checked against the reference). */
static int warm_up(bench* B, impl* m) {
  const options* o = B->o;
  const float nan_value = NAN;
  /* The reference has nothing to build or warm: one call, the checked one. */
  const long calls = m->id == IMPL_REFERENCE ? 1 : o->warmup;
  for (long w = 0; w < calls; ++w) {
    int last = w == calls - 1 || m->spent_ms > 0.5e3 * o->max_seconds;
    if (last && m->id != IMPL_REFERENCE) {
      cl_int e = clEnqueueFillBuffer(B->queue, B->out_mem, &nan_value, sizeof nan_value, 0,
                                     B->out_elems * sizeof(float), 0, NULL, NULL);
      if (e == CL_SUCCESS) e = clFinish(B->queue);
      if (e != CL_SUCCESS) {
        set_error(m, "clEnqueueFillBuffer failed: %d", (int)e);
        return -1;
      }
    }
    double ms = 0.0;
    if (timed_call(B, m, &ms) != 0) return -1;
    if (w == 0) m->first_ms = ms;
    if (last) return check_output(B, m);
  }
  return 0;
}

/* ---------------------------------------------------------------- output */

static void print_text(const bench* B, const impl* impls) {
  const clattn_attention_desc* d = &B->desc;
  printf("device   %s (%s, %s, %u compute units)\n", B->info.name,
         tool_device_type_name(B->info.type), B->info.platform_name, B->info.compute_units);
  if (B->layer) {
    printf(
        "layer    d_model=%zu H=%zu Hkv=%zu D=%zu B=%zu N=%zu%s, self-attention with biases, fp32; "
        "%.4g GFLOP per call (projections 2*B*N*E*(H+2*Hkv)*D, attention 4*B*H*D per visible "
        "pair, output 2*B*N*H*D*E)\n",
        B->e, B->h, B->hkv, B->d, d->batch, d->seq_q, d->causal ? ", causal" : "", B->flops * 1e-9);
  } else {
    printf(
        "shape    B=%zu Hq=%zu Hkv=%zu Nq=%zu Nkv=%zu D=%zu%s, fp32, [B,H,N,D]; %.4g GFLOP per "
        "call (4*B*H*D per visible query-key pair)\n",
        d->batch, d->heads_q, heads_kv_of(d), d->seq_q, d->seq_kv, d->head_dim,
        d->causal ? ", causal" : "", B->flops * 1e-9);
  }
  if (B->peak_runs) {
    printf(
        "peak     %.1f GFLOP/s: best of %d runs of %d independent FMA chains of float%d per "
        "work-item, %zu work-items\n",
        B->peak_gflops, B->peak_runs, B->peak_chains, B->peak_vec, B->peak_global);
  } else {
    printf("peak     not measured\n");
  }
  if (B->layer) {
    printf("errors   against the double-precision layer reference on every element of y\n");
  } else {
    printf("errors   against the double-precision reference on every %zu%s query row\n",
           B->rows_step, B->rows_step == 1 ? "st" : "th");
  }
  printf("\n%-16s %-34s %10s %10s %9s %7s %10s %9s %12s\n", "impl", "config", "median ms", "min ms",
         "GFLOP/s", "% peak", "max |err|", "err/tol", "device bytes");
  for (int i = 0; i < IMPL_COUNT; ++i) {
    const impl* m = &impls[i];
    if (!B->o->want[i]) continue;
    if (m->skipped) {
      printf("%-16s skipped: %s\n", impl_names[i], m->skip_reason);
      continue;
    }
    if (m->error[0]) {
      printf("%-16s error: %s\n", impl_names[i], m->error);
      continue;
    }
    double med = tool_median(m->times, (size_t)m->count);
    double mn = tool_min(m->times, (size_t)m->count);
    double g = B->flops / (med * 1e6);
    printf("%-16s %-34s %10.3f %10.3f %9.2f ", impl_names[i], m->config_text, med, mn, g);
    if (B->peak_runs) {
      printf("%6.1f%%", 100.0 * g / B->peak_gflops);
    } else {
      printf("%7s", "-");
    }
    printf(" %10.3g %9.3g", m->max_abs_err, m->max_err_over_tol);
    if (m->bytes_known) {
      printf(" %12zu", m->bytes_allocated);
    } else {
      printf(" %12s", "host");
    }
    if (m->nan_count) printf("  (%zu NaN)", m->nan_count);
    if (m->count < B->o->reps) printf("  (%ld reps: time limit)", m->count);
    printf("\n");
    if (m->id == IMPL_UNFUSED) {
      printf("%-16s stages (profiled medians):", "");
      for (int t = 0; t < B->stage_count; ++t) {
        printf("%s %s %.3f ms", t ? "," : "", B->stage_names[t],
               tool_median(m->stage_times[t], (size_t)m->count));
      }
      printf("\n");
    }
  }
  const impl* f = &impls[IMPL_FUSED];
  if (B->o->want[IMPL_FUSED] && !f->skipped && !f->error[0] && f->count) {
    double fm = tool_median(f->times, (size_t)f->count);
    for (int i = 1; i < IMPL_COUNT; ++i) {
      const impl* m = &impls[i];
      if (!B->o->want[i] || m->skipped || m->error[0] || !m->count) continue;
      printf("fused is %.2fx %s (median over median)\n",
             tool_median(m->times, (size_t)m->count) / fm, impl_names[i]);
    }
  }
  if (B->layer) {
    printf(
        "\nx, y and the weights are shared and not counted; fused's bytes are the layer's "
        "workspace (clattn_mha_workspace_size), unfused's the score matrix, the projected rows, "
        "the heads' outputs and a column of ones (CLBlast's own temporaries not counted).\n");
  } else {
    printf(
        "\nInputs and output (Q, K, V, O: %zu bytes) are shared and not counted; fused's "
        "bytes are the scratch each call allocates, unfused's the score matrix (CLBlast's "
        "own temporaries not counted).\n",
        (B->nq + B->nk + B->nv + B->no) * sizeof(float));
  }
}

static void print_json(const bench* B, const impl* impls, int argc, char** argv) {
  const clattn_attention_desc* d = &B->desc;
  printf("{\"device\":");
  tool_json_string(stdout, B->info.name);
  printf(",\"device_type\":");
  tool_json_string(stdout, tool_device_type_name(B->info.type));
  printf(",\"platform\":");
  tool_json_string(stdout, B->info.platform_name);
  printf(",\"driver\":");
  tool_json_string(stdout, B->info.driver_version);
  printf(",\"compute_units\":%u", B->info.compute_units);
  printf(",\"command\":\"");
  for (int i = 0; i < argc; ++i) {
    if (i) putchar(' ');
    for (const char* p = argv[i]; *p; ++p) {
      if (*p == '"' || *p == '\\') putchar('\\');
      if ((unsigned char)*p >= 0x20) putchar(*p);
    }
  }
  printf("\"");
  printf(
      ",\"mode\":\"%s\",\"shape\":{\"batch\":%zu,\"heads_q\":%zu,\"heads_kv\":%zu,\"seq_q\":%zu,"
      "\"seq_kv\":%zu,\"head_dim\":%zu,\"causal\":%s,",
      B->layer ? "layer" : "core", d->batch, d->heads_q, heads_kv_of(d), d->seq_q, d->seq_kv,
      d->head_dim, d->causal ? "true" : "false");
  if (B->layer) {
    printf("\"d_model\":%zu,\"bias\":true,\"dtype\":\"f32\"}", B->e);
  } else {
    printf("\"layout\":\"bhnd\",\"dtype\":\"f32\"}");
  }
  printf(",\"flops_per_call\":%.17g", B->flops);
  printf(",\"peak_gflops\":");
  if (B->peak_runs) {
    tool_json_number(stdout, B->peak_gflops);
    printf(
        ",\"peak\":{\"kernel\":\"independent FMA chains\",\"vector_width\":%d,\"chains\":%d,"
        "\"work_items\":%zu,\"runs\":%d}",
        B->peak_vec, B->peak_chains, B->peak_global, B->peak_runs);
  } else {
    printf("null");
  }
  if (B->layer) {
    printf(",\"check\":{\"rows_step\":1}");
  } else {
    printf(",\"check\":{\"rows_step\":%zu},\"io_bytes\":%zu", B->rows_step,
           (B->nq + B->nk + B->nv + B->no) * sizeof(float));
  }
  printf(",\"results\":[");
  int first = 1;
  for (int i = 0; i < IMPL_COUNT; ++i) {
    const impl* m = &impls[i];
    if (!B->o->want[i] || m->skipped || m->error[0]) continue;
    double med = tool_median(m->times, (size_t)m->count);
    double g = B->flops / (med * 1e6);
    printf("%s{\"impl\":\"%s\",\"config\":%s,\"ms\":", first ? "" : ",", impl_names[i],
           m->config_json);
    first = 0;
    tool_json_number(stdout, med);
    printf(",\"ms_min\":");
    tool_json_number(stdout, tool_min(m->times, (size_t)m->count));
    printf(",\"gflops\":");
    tool_json_number(stdout, g);
    printf(",\"pct_peak\":");
    tool_json_number(stdout, B->peak_runs ? 100.0 * g / B->peak_gflops : (double)NAN);
    printf(",\"max_abs_err\":");
    tool_json_number(stdout, m->max_abs_err);
    printf(",\"max_err_over_tol\":");
    tool_json_number(stdout, m->max_err_over_tol);
    printf(",\"nan_count\":%zu,\"bytes_allocated\":", m->nan_count);
    if (m->bytes_known) {
      printf("%zu", m->bytes_allocated);
    } else {
      printf("null");
    }
    printf(",\"reps\":%ld,\"first_call_ms\":", m->count);
    tool_json_number(stdout, m->first_ms);
    if (m->id == IMPL_UNFUSED) {
      printf(",\"stages_ms\":{");
      for (int t = 0; t < B->stage_count; ++t) {
        printf("%s\"%s\":", t ? "," : "", B->stage_keys[t]);
        tool_json_number(stdout, tool_median(m->stage_times[t], (size_t)m->count));
      }
      printf("}");
    }
    printf("}");
  }
  printf("],\"skipped\":[");
  first = 1;
  for (int i = 0; i < IMPL_COUNT; ++i) {
    const impl* m = &impls[i];
    if (!B->o->want[i] || (!m->skipped && !m->error[0])) continue;
    printf("%s{\"impl\":\"%s\",\"reason\":", first ? "" : ",", impl_names[i]);
    tool_json_string(stdout, m->skipped ? m->skip_reason : m->error);
    printf("}");
    first = 0;
  }
  printf("],\"ratios\":{");
  const impl* f = &impls[IMPL_FUSED];
  first = 1;
  if (B->o->want[IMPL_FUSED] && !f->skipped && !f->error[0] && f->count) {
    double fm = tool_median(f->times, (size_t)f->count);
    for (int i = 1; i < IMPL_COUNT; ++i) {
      const impl* m = &impls[i];
      if (!B->o->want[i] || m->skipped || m->error[0] || !m->count) continue;
      printf("%s\"fused_speedup_over_%s\":", first ? "" : ",", impl_names[i]);
      tool_json_number(stdout, tool_median(m->times, (size_t)m->count) / fm);
      first = 0;
    }
  }
  printf("}}\n");
}

/* ---------------------------------------------------------------- start-up */

static int remove_entry(const char* path, const struct stat* sb, int flag, struct FTW* ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* In a fresh process (--startup-child): context creation, then the first clattn_attention +
 * clFinish on device buffers. Prints "context_ms first_call_ms". */
static int startup_child(const options* o, const clattn_attention_desc* desc) {
  double t0 = tool_now_ms();
  clattn_context* ctx = NULL;
  clattn_context_options copt = CLATTN_CONTEXT_OPTIONS_INIT;
  copt.device = o->device;
  clattn_status st = clattn_context_create(&copt, &ctx);
  double t1 = tool_now_ms();
  if (st != CLATTN_SUCCESS) {
    fprintf(stderr, "clattn-bench: clattn_context_create failed: %s\n", clattn_status_name(st));
    return 1;
  }
  cl_context cl_ctx = NULL;
  cl_command_queue queue = NULL;
  clattn_context_get_cl(ctx, &cl_ctx, NULL, &queue);
  size_t n[4] = {0, 0, 0, 0};
  const char which[4] = {'q', 'k', 'v', 'o'};
  cl_mem mem[4] = {NULL, NULL, NULL, NULL};
  int rc = 1;
  for (int i = 0; i < 4; ++i) {
    clattn_attention_tensor_size(desc, which[i], &n[i]);
    cl_int e = CL_SUCCESS;
    mem[i] = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, n[i] * sizeof(float), NULL, &e);
    float zero = 0.0f;
    if (e == CL_SUCCESS) {
      e = clEnqueueFillBuffer(queue, mem[i], &zero, sizeof zero, 0, n[i] * sizeof(float), 0, NULL,
                              NULL);
    }
    if (e != CL_SUCCESS) goto cleanup;
  }
  if (clFinish(queue) != CL_SUCCESS) goto cleanup;
  clattn_attention_buffers bufs = CLATTN_ATTENTION_BUFFERS_INIT;
  bufs.q = mem[0];
  bufs.k = mem[1];
  bufs.v = mem[2];
  bufs.o = mem[3];
  double t2 = tool_now_ms();
  st = clattn_attention(ctx, desc, &bufs, NULL, NULL, 0, NULL, NULL);
  if (st != CLATTN_SUCCESS || clFinish(queue) != CL_SUCCESS) {
    fprintf(stderr, "clattn-bench: the first clattn_attention failed: %s\n",
            clattn_status_name(st));
    goto cleanup;
  }
  double t3 = tool_now_ms();
  printf("%.3f %.3f\n", t1 - t0, t3 - t2);
  rc = 0;
cleanup:
  for (int i = 0; i < 4; ++i) {
    if (mem[i]) clReleaseMemObject(mem[i]);
  }
  clattn_context_destroy(ctx);
  return rc;
}

/* Runs this program again with --startup-child and POCL_CACHE_DIR=cache_dir; fills the
 * child's two figures and the whole process's wall time. */
static int run_child(char** child_argv, const char* cache_dir, double* ctx_ms, double* first_ms,
                     double* process_ms) {
  int fd[2];
  if (pipe(fd) != 0) return -1;
  double t0 = tool_now_ms();
  pid_t pid = fork();
  if (pid < 0) {
    close(fd[0]);
    close(fd[1]);
    return -1;
  }
  if (pid == 0) {
    dup2(fd[1], STDOUT_FILENO);
    close(fd[0]);
    close(fd[1]);
    setenv("POCL_CACHE_DIR", cache_dir, 1);
    execv("/proc/self/exe", child_argv);
    _exit(127);
  }
  close(fd[1]);
  char buf[256];
  size_t len = 0;
  ssize_t got;
  while (len < sizeof buf - 1 && (got = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0) {
    len += (size_t)got;
  }
  buf[len] = '\0';
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  *process_ms = tool_now_ms() - t0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  if (sscanf(buf, "%lf %lf", ctx_ms, first_ms) != 2) return -1;
  return 0;
}

static int run_startup(const options* o, const clattn_attention_desc* d, int argc, char** argv) {
  /* The child gets the same arguments with --startup replaced. */
  char** child_argv = calloc((size_t)argc + 1, sizeof *child_argv);
  if (!child_argv) return 1;
  for (int i = 0; i < argc; ++i) {
    child_argv[i] = strcmp(argv[i], "--startup") == 0 ? "--startup-child" : argv[i];
  }
  char dir[] = "/tmp/clattn-bench-cache-XXXXXX";
  if (!mkdtemp(dir)) {
    fprintf(stderr, "clattn-bench: mkdtemp failed: %s\n", strerror(errno));
    free(child_argv);
    return 1;
  }
  double c[2] = {0, 0}, f[2] = {0, 0}, p[2] = {0, 0};
  int rc = 0;
  for (int pass = 0; pass < 2 && rc == 0; ++pass) {
    if (run_child(child_argv, dir, &c[pass], &f[pass], &p[pass]) != 0) {
      fprintf(stderr, "clattn-bench: the %s start-up run failed\n", pass ? "warm" : "cold");
      rc = 1;
    }
  }
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(child_argv);
  if (rc) return rc;
  const char* names[2] = {"cold", "warm"};
  if (o->json) {
    printf(
        "{\"startup\":{\"shape\":{\"batch\":%zu,\"heads_q\":%zu,\"heads_kv\":%zu,\"seq_q\":%zu,"
        "\"seq_kv\":%zu,\"head_dim\":%zu,\"causal\":%s},\"cache\":\"POCL_CACHE_DIR, empty "
        "for cold\"",
        d->batch, d->heads_q, heads_kv_of(d), d->seq_q, d->seq_kv, d->head_dim,
        d->causal ? "true" : "false");
    for (int i = 0; i < 2; ++i) {
      printf(
          ",\"%s\":{\"context_ms\":%.3f,\"first_call_ms\":%.3f,\"total_ms\":%.3f,"
          "\"process_ms\":%.3f}",
          names[i], c[i], f[i], c[i] + f[i], p[i]);
    }
    printf("}}\n");
  } else {
    printf("start-up: context creation + first clattn_attention (+ clFinish), fresh processes\n");
    printf("%-5s %12s %15s %10s %12s\n", "cache", "context ms", "first call ms", "total ms",
           "process ms");
    for (int i = 0; i < 2; ++i) {
      printf("%-5s %12.1f %15.1f %10.1f %12.1f\n", names[i], c[i], f[i], c[i] + f[i], p[i]);
    }
    printf(
        "cold: POCL_CACHE_DIR set to a new empty directory; warm: the same directory again.\n"
        "process ms: fork to exit, including loading libraries and tearing down.\n");
  }
  return 0;
}

/* ---------------------------------------------------------------- layer mode */

static const char* const core_stage_names[] = {"Q·Kᵀ GEMM", "softmax", "P·V GEMM"};
static const char* const core_stage_keys[] = {"qk_gemm", "softmax", "pv_gemm"};
static const char* const layer_stage_names[] = {"QKV projection", "Q·Kᵀ GEMMs", "softmax",
                                                "P·V GEMMs", "output projection"};
static const char* const layer_stage_keys[] = {"qkv_gemm", "qk_gemm", "softmax", "pv_gemm",
                                               "out_gemm"};

static float* random_floats(size_t n, float bound, uint64_t* state) {
  float* p = malloc((n ? n : 1) * sizeof *p);
  if (p) clattn_ref_fill_uniform(p, n, -bound, bound, state);
  return p;
}

/* Layer mode: random weights like PyTorch's initialisation (uniform in ±1/sqrt(fan_in)),
 * biases in ±0.1, x in [-1, 1]; the layer, the buffers the unfused path reads, and the
 * reference y. Returns 0, or 2 with err set for a bad shape, 1 for other failures. */
static int layer_inputs(bench* B, char* err, size_t err_size) {
  const options* o = B->o;
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
  uint64_t state = o->seed ? o->seed : 0x9e3779b97f4a7c15ull;
  B->w_in = random_floats(nin * B->e, 1.0f / sqrtf((float)B->e), &state);
  B->b_in = random_floats(nin, 0.1f, &state);
  B->w_out = random_floats(B->e * hd, 1.0f / sqrtf((float)hd), &state);
  B->b_out = random_floats(B->e, 0.1f, &state);
  B->x = random_floats(B->rows * B->e, 1.0f, &state);
  B->out = malloc(B->rows * B->e * sizeof *B->out);
  B->ref_y = malloc(B->rows * B->e * sizeof *B->ref_y);
  B->tol_y = malloc(B->rows * B->e * sizeof *B->tol_y);
  if (!B->w_in || !B->b_in || !B->w_out || !B->b_out || !B->x || !B->out || !B->ref_y ||
      !B->tol_y) {
    snprintf(err, err_size, "out of host memory");
    return 1;
  }
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = B->w_in;
  w.in_proj_bias.host = B->b_in;
  w.out_proj_weight.host = B->w_out;
  w.out_proj_bias.host = B->b_out;
  clattn_status st = clattn_mha_create(B->ctx, &desc, &w, &B->mha);
  if (st != CLATTN_SUCCESS) {
    char detail[700] = "";
    clattn_context_get_last_error(B->ctx, detail, sizeof detail, NULL);
    snprintf(err, err_size, "clattn_mha_create failed: %s: %s", clattn_status_name(st), detail);
    return st == CLATTN_ERROR_INVALID_ARGUMENT || st == CLATTN_ERROR_INVALID_SHAPE ||
                   st == CLATTN_ERROR_UNSUPPORTED
               ? 2
               : 1;
  }
  cl_int e = CL_SUCCESS;
  const cl_mem_flags in = CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR;
  B->bx = clCreateBuffer(B->cl_ctx, in, B->rows * B->e * sizeof(float), B->x, &e);
  if (e == CL_SUCCESS) {
    B->by = clCreateBuffer(B->cl_ctx, CL_MEM_READ_WRITE, B->rows * B->e * sizeof(float), NULL, &e);
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
  const double proj = 2.0 * (double)B->rows * (double)B->e * (double)nin;
  const double attn = 4.0 * (double)o->batch * (double)B->h * (double)B->d *
                      tool_visible_pairs(o->seq, o->seq, o->causal);
  B->flops = proj + attn + 2.0 * (double)B->rows * (double)hd * (double)B->e;
  const clattn_ref_mha_layer L = layer_reference_weights(B);
  if (clattn_ref_mha_forward(&L, o->batch, o->seq, o->seq, o->causal, B->x, NULL, NULL, NULL,
                             B->ref_y, B->tol_y) != 0) {
    snprintf(err, err_size, "the layer reference rejected the shape");
    return 1;
  }
  return 0;
}

static void layer_release(bench* B) {
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

/* ---------------------------------------------------------------- main */

int main(int argc, char** argv) {
  options o = {.batch = 1,
               .heads = 8,
               .seq = 1024,
               .head_dim = 64,
               .variant = CLATTN_VARIANT_AUTO,
               .reps = 10,
               .warmup = 2,
               .max_seconds = 30.0,
               .reference_limit = 1e9,
               .want = {1, 1, 1, 1},
               .seed = 1};
  if (parse_options(argc, argv, &o) != 0) {
    fprintf(stderr, "(clattn-bench --help lists the options)\n");
    return 2;
  }
  const int layer_mode = o.mha || o.d_model;
  if (layer_mode && !o.d_model) {
    fprintf(stderr, "clattn-bench: --mha needs --d-model\n");
    return 2;
  }
  if (layer_mode && (o.startup || o.startup_child)) {
    fprintf(stderr, "clattn-bench: --startup measures the attention core; drop --mha\n");
    return 2;
  }

  bench B;
  memset(&B, 0, sizeof B);
  B.o = &o;
  B.desc = (clattn_attention_desc)CLATTN_ATTENTION_DESC_INIT;
  B.desc.batch = o.batch;
  B.desc.heads_q = o.heads;
  B.desc.heads_kv = o.kv_heads ? o.kv_heads : o.heads;
  B.desc.seq_q = o.seq;
  B.desc.seq_kv = o.seq_kv ? o.seq_kv : o.seq;
  B.desc.head_dim = o.head_dim;
  B.desc.causal = o.causal;
  B.stage_count = 3;
  B.stage_names = core_stage_names;
  B.stage_keys = core_stage_keys;
  if (o.startup_child) return startup_child(&o, &B.desc);
  if (o.startup) return run_startup(&o, &B.desc, argc, argv);

  int exit_code = 1;
  impl impls[IMPL_COUNT];
  memset(impls, 0, sizeof impls);
  char err[1024] = "";
  clattn_context_options copt = CLATTN_CONTEXT_OPTIONS_INIT;
  copt.device = o.device;
  clattn_status st = clattn_context_create(&copt, &B.ctx);
  if (st != CLATTN_SUCCESS) {
    char detail[1024] = "";
    clattn_context_get_last_error(NULL, detail, sizeof detail, NULL);
    fprintf(stderr, "clattn-bench: clattn_context_create failed: %s: %s\n", clattn_status_name(st),
            detail);
    goto cleanup;
  }
  B.info = (clattn_device_info)CLATTN_DEVICE_INFO_INIT;
  clattn_context_get_device_info(B.ctx, &B.info);
  clattn_context_get_cl(B.ctx, &B.cl_ctx, &B.device, &B.queue);

  const clattn_attention_desc* d = &B.desc;
  if (layer_mode) {
    int rc = layer_inputs(&B, err, sizeof err);
    if (rc != 0) {
      fprintf(stderr, "clattn-bench: %s\n", err);
      exit_code = rc;
      goto cleanup;
    }
    B.desc.head_dim = B.d;
    B.desc.heads_kv = B.hkv;
    B.desc.seq_kv = o.seq;
    goto inputs_ready;
  }
  if ((st = clattn_attention_tensor_size(d, 'q', &B.nq)) != CLATTN_SUCCESS ||
      (st = clattn_attention_tensor_size(d, 'k', &B.nk)) != CLATTN_SUCCESS ||
      (st = clattn_attention_tensor_size(d, 'v', &B.nv)) != CLATTN_SUCCESS ||
      (st = clattn_attention_tensor_size(d, 'o', &B.no)) != CLATTN_SUCCESS) {
    char detail[1024] = "";
    clattn_context_get_last_error(NULL, detail, sizeof detail, NULL);
    fprintf(stderr, "clattn-bench: invalid shape: %s: %s\n", clattn_status_name(st), detail);
    exit_code = 2;
    goto cleanup;
  }
  B.flops = 4.0 * (double)d->batch * (double)d->heads_q * (double)d->head_dim *
            tool_visible_pairs(d->seq_q, d->seq_kv, d->causal);
  B.q = malloc(B.nq * sizeof *B.q);
  B.k = malloc(B.nk * sizeof *B.k);
  B.v = malloc(B.nv * sizeof *B.v);
  B.out = malloc(B.no * sizeof *B.out);
  B.ref = malloc(B.no * sizeof *B.ref);
  if (!B.q || !B.k || !B.v || !B.out || !B.ref) {
    fprintf(stderr, "clattn-bench: out of host memory\n");
    goto cleanup;
  }
  uint64_t state = o.seed ? o.seed : 0x9e3779b97f4a7c15ull;
  clattn_ref_fill_uniform(B.q, B.nq, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(B.k, B.nk, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(B.v, B.nv, -1.0f, 1.0f, &state);
  cl_int e = CL_SUCCESS;
  const cl_mem_flags in = CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR;
  B.bq = clCreateBuffer(B.cl_ctx, in, B.nq * sizeof(float), B.q, &e);
  if (e == CL_SUCCESS) B.bk = clCreateBuffer(B.cl_ctx, in, B.nk * sizeof(float), B.k, &e);
  if (e == CL_SUCCESS) B.bv = clCreateBuffer(B.cl_ctx, in, B.nv * sizeof(float), B.v, &e);
  if (e == CL_SUCCESS) {
    B.bo = clCreateBuffer(B.cl_ctx, CL_MEM_READ_WRITE, B.no * sizeof(float), NULL, &e);
  }
  if (e != CL_SUCCESS) {
    fprintf(stderr, "clattn-bench: clCreateBuffer (inputs) failed: OpenCL error %d\n", (int)e);
    goto cleanup;
  }
  B.out_mem = B.bo;
  B.out_elems = B.no;

  /* The sampled reference every implementation is compared with. */
  double work = work_macs(d);
  B.rows_step = work > FULL_CHECK_LIMIT ? (size_t)ceil(work / FULL_CHECK_LIMIT) : 1;
  if (clattn_ref_attention(d, B.q, B.k, B.v, NULL, B.ref, NULL, B.rows_step) != 0) {
    fprintf(stderr, "clattn-bench: the reference rejected the shape\n");
    goto cleanup;
  }

inputs_ready:
  if (!o.no_peak && peak_setup(&B, err, sizeof err) != 0) {
    fprintf(stderr, "clattn-bench: peak: %s\n", err);
    goto cleanup;
  }

  for (int i = 0; i < IMPL_COUNT; ++i) {
    impl* m = &impls[i];
    m->id = i;
    if (!o.want[i]) continue;
    m->times = calloc((size_t)o.reps, sizeof *m->times);
    int ok = m->times != NULL;
    for (int t = 0; t < MAX_STAGES; ++t) {
      m->stage_times[t] = calloc((size_t)o.reps, sizeof(double));
      ok = ok && m->stage_times[t];
    }
    if (!ok) {
      set_error(m, "out of host memory");
      continue;
    }
    if ((B.layer ? layer_setup_fns : setup_fns)[i](&B, m) != 0 || m->skipped) continue;
    if (warm_up(&B, m) != 0) continue;
    m->active = 1;
  }

  /* Rounds: every active implementation once, and one run of the peak kernel. */
  for (long round = 0; round < o.reps; ++round) {
    int any = 0;
    for (int i = 0; i < IMPL_COUNT; ++i) {
      impl* m = &impls[i];
      if (!m->active) continue;
      double ms = 0.0;
      if (timed_call(&B, m, &ms) != 0) {
        m->active = 0;
        continue;
      }
      if (m->id == IMPL_UNFUSED) {
        for (int t = 0; t < B.stage_count; ++t) m->stage_times[t][m->count] = m->last_stage_ms[t];
      }
      m->times[m->count++] = ms;
      if (m->spent_ms > 1e3 * o.max_seconds) m->active = 0;
      any = 1;
    }
    if (!o.no_peak) peak_run(&B, NULL);
    if (!any) break;
  }

  if (o.json) {
    print_json(&B, impls, argc, argv);
  } else {
    print_text(&B, impls);
  }
  exit_code = 0;
  for (int i = 0; i < IMPL_COUNT; ++i) {
    if (o.want[i] && impls[i].error[0]) {
      fprintf(stderr, "clattn-bench: %s: %s\n", impl_names[i], impls[i].error);
      exit_code = 1;
    }
  }

cleanup:
  for (int i = 0; i < IMPL_COUNT; ++i) {
    impl* m = &impls[i];
    if (m->kernel) clReleaseKernel(m->kernel);
    if (m->program) clReleaseProgram(m->program);
    cl_mem mems[4] = {m->scratch, m->qkv, m->concat, m->ones};
    for (int t = 0; t < 4; ++t) {
      if (mems[t]) clReleaseMemObject(mems[t]);
    }
    free(m->ref_out);
    free(m->times);
    for (int t = 0; t < MAX_STAGES; ++t) free(m->stage_times[t]);
  }
  if (B.peak_kernel) clReleaseKernel(B.peak_kernel);
  if (B.peak_program) clReleaseProgram(B.peak_program);
  if (B.peak_out) clReleaseMemObject(B.peak_out);
  cl_mem mems[4] = {B.bq, B.bk, B.bv, B.bo};
  for (int i = 0; i < 4; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  layer_release(&B);
  clattn_context_destroy(B.ctx);
  free(B.q);
  free(B.k);
  free(B.v);
  free(B.out);
  free(B.ref);
  return exit_code;
}
