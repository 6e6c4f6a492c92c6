/* What clattn-bench's files share: its options, the state every implementation reads
 * (bench), each implementation's own (impl), and the functions of each file. */
#ifndef CLATTN_TOOLS_BENCH_BENCH_H
#define CLATTN_TOOLS_BENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "clattn/clattn.h"
#include "common/device.h"
#include "common/json.h"
#include "common/problem.h"
#include "common/timing.h"

/* Stages of the unfused paths, timed with markers between them. */
#define MAX_STAGES 5

enum { IMPL_FUSED, IMPL_UNFUSED, IMPL_NAIVE, IMPL_REFERENCE, IMPL_CACHED, IMPL_COUNT };
/* "fused", "unfused_clblast", "naive", "reference", "cached", then NULL: --impl's words
 * (the parser's list ends at the NULL) and the report's. */
extern const char* const bench_impl_names[IMPL_COUNT + 1];

typedef struct bench_options {
  const char* device;
  size_t batch, heads, kv_heads, seq, seq_kv, head_dim;
  int causal;
  /* The whole layer (--mha --d-model); head_dim is then d_model / heads unless given. */
  int mha;
  size_t d_model;
  int head_dim_given;
  clattn_variant variant;
  unsigned block_m, block_n, rows_per_item, threads_per_row, num_splits;
  /* Decode mode (--decode): the core's shape with decode defaults, K and V bytes reported. */
  int decode;
  size_t block_tokens; /* cached: the KV cache's tokens per block (0: the library's) */
  clattn_dtype dtype;  /* storage of Q, K, V, O (the layer: x, y and its weights) */
  int reps, warmup;
  double max_seconds;     /* per implementation: stop repeating once its calls took this long */
  double reference_limit; /* largest B*Hq*Nq*Nkv*D the timed reference runs */
  int want[IMPL_COUNT];
  uint64_t seed;
  int json, no_peak, startup, startup_child;
  /* Memory bandwidth: a copy of bandwidth_mb MB and a read of twice that (--no-bandwidth). */
  int no_bandwidth;
  size_t bandwidth_mb;
} bench_options;

/* One of the bandwidth kernels (bandwidth.c): its launch, the bytes one run moves, and the
 * GB/s of every run (the best is the figure). */
typedef struct bench_bandwidth {
  cl_kernel kernel;
  size_t global, local;
  double bytes_read, bytes_written;
  double best_gbps;
  double* gbps;
  int runs, cap;
} bench_bandwidth;

/* What every implementation shares: the device, the shape, inputs, output and reference. */
typedef struct bench {
  const bench_options* o;
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
  /* Bandwidth: the program (NULL when not measured), its buffers and its two kernels. */
  cl_program band_program;
  cl_mem band_src, band_dst, band_out;
  int band_vec;
  bench_bandwidth band_copy, band_read;
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
  clattn_kv_cache* cache;   /* cached impl: the cache holding K and V */
  clattn_attention_desc cached_desc; /* cached impl: the call's descriptor (seq_kv 0) */
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

/* flags.c: fills o from the command line. Returns a clattn_flags_result: 0 parsed, 1 --help
 * or --version answered (exit 0), 2 refused with a message (exit 2). */
int bench_parse_options(int argc, char** argv, bench_options* o);

/* Bytes of one element of the run's dtype. */
size_t bench_item(const bench* B);

/* core.c and layer.c: the mode's inputs, output and reference, and the stage names of its
 * unfused path. 0, or 2 with err set for a bad shape, 1 for other failures. The release
 * functions free what the set-up made (also after a failed one). */
int bench_core_inputs(bench* B, char* err, size_t err_size);
void bench_core_release(bench* B);
int bench_layer_inputs(bench* B, char* err, size_t err_size);
void bench_layer_release(bench* B);

/* program.c: builds tools/bench/<name>.cl with options; NULL with the log in err on failure. */
cl_program bench_build_program(const bench* B, const char* name, const char* options, char* err,
                               size_t err_size);

/* peak.c: sets up and calibrates the peak kernel (0, or -1 with err set), and one run of it,
 * which returns its GFLOP/s (negative on failure) and keeps the best in B->peak_gflops. */
int bench_peak_setup(bench* B, char* err, size_t err_size);
double bench_peak_run(bench* B, double* ms_out);
void bench_peak_release(bench* B);

/* bandwidth.c: sets up the copy and read kernels and runs each three times (0, or -1 with
 * err set); one more run of each; what the set-up made. */
int bench_bandwidth_setup(bench* B, char* err, size_t err_size);
void bench_bandwidth_run(bench* B);
void bench_bandwidth_release(bench* B);

/* impl.c: an implementation's set-up and one call (with clFinish) in the current mode; 0 on
 * success, else -1 with m->error set. A set-up may skip instead (m->skipped, m->skip_reason). */
int bench_impl_setup(bench* B, impl* m);
int bench_impl_run(bench* B, impl* m);
/* Releases what an implementation's set-up and timing made (also after a failure). */
void bench_impl_release(impl* m);
#if defined(__GNUC__)
void bench_set_error(impl* m, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
#else
void bench_set_error(impl* m, const char* fmt, ...);
#endif
/* m->error from a failed clattn call and the context's last error. */
void bench_clattn_error(const bench* B, impl* m, const char* what, clattn_status st);
/* "default" for the built-in heuristic; other sources by name. */
const char* bench_config_origin(clattn_config_source s);
double bench_work_macs(const clattn_attention_desc* d);
size_t bench_heads_kv(const clattn_attention_desc* d);

/* The core's implementations (impl_*.c) and the layer's (layer.c). */
int bench_fused_setup(bench* B, impl* m);
int bench_fused_run(bench* B, impl* m);
int bench_unfused_setup(bench* B, impl* m);
int bench_unfused_run(bench* B, impl* m);
int bench_naive_setup(bench* B, impl* m);
int bench_naive_run(bench* B, impl* m);
int bench_reference_setup(bench* B, impl* m);
int bench_reference_run(bench* B, impl* m);
int bench_cached_setup(bench* B, impl* m);
int bench_cached_run(bench* B, impl* m);
int bench_layer_cached_setup(bench* B, impl* m);
int bench_layer_fused_setup(bench* B, impl* m);
int bench_layer_fused_run(bench* B, impl* m);
int bench_layer_unfused_setup(bench* B, impl* m);
int bench_layer_unfused_run(bench* B, impl* m);
int bench_layer_naive_setup(bench* B, impl* m);
int bench_layer_reference_setup(bench* B, impl* m);
int bench_layer_reference_run(bench* B, impl* m);

/* impl_unfused.c: what the layer's unfused path shares with the core's. */
const char* bench_gemm_tuning_label(const bench* B);
const char* bench_gemm_tuning_word(const bench* B);
void bench_stage_times(impl* m, cl_event* mark, int stages);
int bench_softmax_setup(bench* B, impl* m, size_t seq_q, size_t seq_kv, int causal);
int bench_skip_large_scores(const bench* B, impl* m, size_t s_elems);

/* impl_reference.c: skips the reference above --reference-limit multiply-adds (errors then
 * use `errors`), else allocates its output of elems doubles. */
int bench_reference_prepare(bench* B, impl* m, double work, size_t elems, const char* errors);

/* check.c: compares the last call's output with the reference into m's error fields. */
int bench_check_output(bench* B, impl* m);

/* report.c: the table, or one JSON object (with the command line). */
void bench_print_text(const bench* B, const impl* impls);
void bench_print_json(const bench* B, const impl* impls, int argc, char** argv);

/* startup.c: --startup (runs this program twice more) and its child (--startup-child). */
int bench_run_startup(const bench_options* o, const clattn_attention_desc* d, int argc,
                      char** argv);
int bench_startup_child(const bench_options* o, const clattn_attention_desc* desc);

#endif
