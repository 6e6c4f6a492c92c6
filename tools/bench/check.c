/* Errors of an implementation's output against the double-precision reference. */
#include <math.h>

#include "bench.h"

/* Compares the output of the last call (O on the device, or the reference's own array) with
 * the sampled reference. */
int bench_check_output(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  if (m->id != IMPL_REFERENCE) {
    cl_int e = clEnqueueReadBuffer(B->queue, B->out_mem, CL_TRUE, 0, B->out_elems * sizeof(float),
                                   B->out, 0, NULL, NULL);
    if (e != CL_SUCCESS) {
      bench_set_error(m, "reading the output back failed: %d", (int)e);
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
