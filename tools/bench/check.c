/* Errors of an implementation's output against the double-precision reference. */
#include <math.h>
#include <stdlib.h>

#include "bench.h"

/* Compares the output of the last call (O on the device, or the reference's own array) with
 * the sampled reference. */
int bench_check_output(bench* B, impl* m) {
  const clattn_attention_desc* d = &B->desc;
  const clattn_dtype dtype = d->dtype;
  if (m->id != IMPL_REFERENCE) {
    /* The output in its dtype, widened into B->out. */
    void* bits = malloc(B->out_elems * bench_item(B) + 1);
    cl_int e = bits ? clEnqueueReadBuffer(B->queue, B->out_mem, CL_TRUE, 0,
                                          B->out_elems * bench_item(B), bits, 0, NULL, NULL)
                    : CL_OUT_OF_HOST_MEMORY;
    if (e == CL_SUCCESS) clattn_convert(bits, dtype, B->out, CLATTN_DTYPE_F32, B->out_elems);
    free(bits);
    if (e != CL_SUCCESS) {
      bench_set_error(m, "reading the output back failed: %d", (int)e);
      return -1;
    }
  }
  /* A 16-bit output is the float32 result rounded once more (not the reference's own). */
  const clattn_dtype rounded = m->ref_out ? CLATTN_DTYPE_F32 : dtype;
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
      const double tol =
          B->tol_y[i] + (rounded == CLATTN_DTYPE_F32
                             ? 0.0
                             : clattn_ref_dtype_rounding(rounded, fabs(B->ref_y[i]) + B->tol_y[i]));
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
        const double tol32 = clattn_ref_row_tolerance(d, B->q, B->k, B->v, NULL, b, h, i);
        for (size_t c = 0; c < d->head_dim; ++c) {
          const double x = m->ref_out ? m->ref_out[base + c] : (double)B->out[base + c];
          double err = fabs(x - B->ref[base + c]);
          const double tol =
              tol32 + (rounded == CLATTN_DTYPE_F32
                           ? 0.0
                           : clattn_ref_dtype_rounding(rounded, fabs(B->ref[base + c]) + tol32));
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
