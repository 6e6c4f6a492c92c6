/* reference: the double-precision CPU reference (reference/reference.c), timed only where
 * the shape is small enough (--reference-limit). */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

/* The CPU reference, timed only up to --reference-limit multiply-adds; its output (elems
 * doubles) goes to m->ref_out. */
int bench_reference_prepare(bench* B, impl* m, double work, size_t elems, const char* errors) {
  if (work > B->o->reference_limit) {
    snprintf(m->skip_reason, sizeof m->skip_reason,
             "%.3g multiply-adds exceed --reference-limit %.3g (errors still use %s)", work,
             B->o->reference_limit, errors);
    m->skipped = 1;
    return 0;
  }
  m->ref_out = malloc(elems * sizeof *m->ref_out);
  if (!m->ref_out) {
    bench_set_error(m, "out of host memory for the reference output");
    return -1;
  }
  snprintf(m->config_json, sizeof m->config_json,
           "{\"host\":\"CPU\",\"precision\":\"double\",\"threads\":1}");
  snprintf(m->config_text, sizeof m->config_text, "CPU double, 1 thread");
  m->bytes_known = 0; /* host memory only */
  return 0;
}

int bench_reference_setup(bench* B, impl* m) {
  return bench_reference_prepare(B, m, bench_work_macs(&B->desc), B->no, "a sampled reference");
}

int bench_reference_run(bench* B, impl* m) {
  if (clattn_ref_attention(&B->desc, B->q, B->k, B->v, NULL, m->ref_out, NULL, 1) != 0) {
    bench_set_error(m, "clattn_ref_attention rejected the shape");
    return -1;
  }
  return 0;
}
