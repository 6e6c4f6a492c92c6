/* GEMM entries of the tuning file: whether an entry's parameters fit a device (by
 * src/gemm.c's table of CLBlast's names and rules), and applying them through src/gemm.c. Used by
 * the context's side (lookup.c, at creation) and by the GEMM search (gemm_space.c). */
#include <string.h>

#include "tuning.h"

int clattn__gemm_entry_fits(const clattn_device_info* info, const clattn_tuning_entry* e) {
  size_t p[CLATTN__XGEMM_PARAM_COUNT];
  int seen[CLATTN__XGEMM_PARAM_COUNT] = {0};
  for (size_t i = 0; i < e->param_count && i < CLATTN_TUNING_MAX_PARAMS; ++i) {
    const int k = clattn__xgemm_param_index(e->param_names[i]);
    if (k >= 0) {
      p[k] = e->param_values[i];
      seen[k] = 1;
    }
  }
  for (int k = 0; k < CLATTN__XGEMM_PARAM_COUNT; ++k) {
    if (!seen[k]) return 0;
  }
  char why[160];
  if (!clattn__xgemm_params_valid(p, info, why, sizeof why)) {
    clattn__log("tuning file: a GEMM entry breaks CLBlast's rules (%s); ignored", why);
    return 0;
  }
  return 1;
}

clattn_status clattn__gemm_entry_apply(clattn_context* ctx, const clattn_tuning_entry* e) {
  const char* names[CLATTN_TUNING_MAX_PARAMS];
  size_t values[CLATTN_TUNING_MAX_PARAMS];
  size_t n = 0;
  size_t min_indirect = 0;
  for (size_t i = 0; i < e->param_count && i < CLATTN_TUNING_MAX_PARAMS; ++i) {
    if (strcmp(e->param_names[i], CLATTN__GEMM_MIN_INDIRECT_NAME) == 0) {
      min_indirect = e->param_values[i];
    } else {
      names[n] = e->param_names[i];
      values[n++] = e->param_values[i];
    }
  }
  clattn_status status = clattn__gemm_override(ctx, e->kernel, n, names, values);
  if (status == CLATTN_SUCCESS && min_indirect) {
    const char* rn[1] = {CLATTN__GEMM_MIN_INDIRECT_NAME};
    status = clattn__gemm_override(ctx, "GemmRoutine", 1, rn, &min_indirect);
  }
  return status;
}
