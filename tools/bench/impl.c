/* What the implementations share: their names, error messages, and the dispatch from an
 * implementation to its core or layer functions. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

const char* const bench_impl_names[IMPL_COUNT + 1] = {"fused",     "unfused_clblast", "naive",
                                                      "reference", "cached",          NULL};

const char* bench_config_origin(clattn_config_source s) {
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

void bench_set_error(impl* m, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m->error, sizeof m->error, fmt, ap);
  va_end(ap);
}

void bench_clattn_error(const bench* B, impl* m, const char* what, clattn_status st) {
  char detail[700] = "";
  clattn_context_get_last_error(B->ctx, detail, sizeof detail, NULL);
  bench_set_error(m, "%s failed: %s: %s", what, clattn_status_name(st), detail);
}

double bench_work_macs(const clattn_attention_desc* d) {
  return (double)d->batch * (double)d->heads_q * (double)d->seq_q * (double)d->seq_kv *
         (double)d->head_dim;
}

size_t bench_heads_kv(const clattn_attention_desc* d) {
  return d->heads_kv ? d->heads_kv : d->heads_q;
}

typedef int (*impl_fn)(bench*, impl*);
static const impl_fn setup_fns[IMPL_COUNT] = {bench_fused_setup, bench_unfused_setup,
                                              bench_naive_setup, bench_reference_setup,
                                              bench_cached_setup};
static const impl_fn run_fns[IMPL_COUNT] = {bench_fused_run, bench_unfused_run, bench_naive_run,
                                            bench_reference_run, bench_cached_run};
static const impl_fn layer_setup_fns[IMPL_COUNT] = {
    bench_layer_fused_setup, bench_layer_unfused_setup, bench_layer_naive_setup,
    bench_layer_reference_setup, bench_layer_cached_setup};
static const impl_fn layer_run_fns[IMPL_COUNT] = {bench_layer_fused_run, bench_layer_unfused_run,
                                                  NULL, bench_layer_reference_run, NULL};

size_t bench_item(const bench* B) {
  size_t item = sizeof(float);
  clattn_dtype_size(B->desc.dtype, &item);
  return item;
}

int bench_impl_setup(bench* B, impl* m) {
  if (B->desc.dtype != CLATTN_DTYPE_F32 && (m->id == IMPL_UNFUSED || m->id == IMPL_NAIVE)) {
    m->skipped = 1;
    snprintf(m->skip_reason, sizeof m->skip_reason, "runs in f32 storage only");
    return 0;
  }
  return (B->layer ? layer_setup_fns : setup_fns)[m->id](B, m);
}

void bench_impl_release(impl* m) {
  if (m->kernel) clReleaseKernel(m->kernel);
  if (m->program) clReleaseProgram(m->program);
  cl_mem mems[4] = {m->scratch, m->qkv, m->concat, m->ones};
  for (int t = 0; t < 4; ++t) {
    if (mems[t]) clReleaseMemObject(mems[t]);
  }
  clattn_kv_cache_destroy(m->cache);
  free(m->ref_out);
  free(m->times);
  for (int t = 0; t < MAX_STAGES; ++t) free(m->stage_times[t]);
}

int bench_impl_run(bench* B, impl* m) { return (B->layer ? layer_run_fns : run_fns)[m->id](B, m); }
