/* GEMM entries of the tuning file: CLBlast's Xgemm parameter names, whether an entry's
 * parameters fit a device, and applying them through src/gemm.c. Used by the context's side
 * (lookup.c, at creation) and by the GEMM search (gemm_space.c). */
#include <string.h>

#include "tuning.h"

/* CLBlast's Xgemm parameter names: to come from src/gemm.c */
const char* const clattn__xgemm_names[CLATTN__XGEMM_COUNT] = {
    [CLATTN__XGEMM_GEMMK] = "GEMMK", [CLATTN__XGEMM_KREG] = "KREG",
    [CLATTN__XGEMM_KWG] = "KWG",     [CLATTN__XGEMM_KWI] = "KWI",
    [CLATTN__XGEMM_MDIMA] = "MDIMA", [CLATTN__XGEMM_MDIMC] = "MDIMC",
    [CLATTN__XGEMM_MWG] = "MWG",     [CLATTN__XGEMM_NDIMB] = "NDIMB",
    [CLATTN__XGEMM_NDIMC] = "NDIMC", [CLATTN__XGEMM_NWG] = "NWG",
    [CLATTN__XGEMM_SA] = "SA",       [CLATTN__XGEMM_SB] = "SB",
    [CLATTN__XGEMM_STRM] = "STRM",   [CLATTN__XGEMM_STRN] = "STRN",
    [CLATTN__XGEMM_VWM] = "VWM",     [CLATTN__XGEMM_VWN] = "VWN",
};

int clattn__gemm_entry_fits(const clattn_device_info* info, const clattn_tuning_entry* e) {
  enum { MDIMC, NDIMC, KWG, MWG, NWG, SA, SB, GEMMK, NEEDED };
  static const int index[NEEDED] = {CLATTN__XGEMM_MDIMC, CLATTN__XGEMM_NDIMC, CLATTN__XGEMM_KWG,
                                    CLATTN__XGEMM_MWG,   CLATTN__XGEMM_NWG,   CLATTN__XGEMM_SA,
                                    CLATTN__XGEMM_SB,    CLATTN__XGEMM_GEMMK};
  size_t v[NEEDED] = {0};
  for (int n = 0; n < NEEDED; ++n) {
    int seen = 0;
    for (size_t i = 0; i < e->param_count; ++i) {
      if (strcmp(e->param_names[i], clattn__xgemm_names[index[n]]) == 0) {
        v[n] = e->param_values[i];
        seen = 1;
      }
    }
    if (!seen) return 0;
  }
  size_t group = v[MDIMC] * v[NDIMC];
  size_t local = (v[SA] * v[KWG] * v[MWG] + v[SB] * v[KWG] * v[NWG]) * sizeof(float);
  return group >= 1 && group <= info->max_work_group_size && local <= info->local_mem_size;
}

clattn_status clattn__gemm_entry_apply(clattn_context* ctx, const clattn_tuning_entry* e) {
  const char* names[CLATTN_TUNING_MAX_PARAMS];
  size_t values[CLATTN_TUNING_MAX_PARAMS];
  size_t n = 0;
  size_t min_indirect = 0;
  for (size_t i = 0; i < e->param_count && i < CLATTN_TUNING_MAX_PARAMS; ++i) {
    if (strcmp(e->param_names[i], CLATTN__XGEMM_MIN_INDIRECT) == 0) {
      min_indirect = e->param_values[i];
    } else {
      names[n] = e->param_names[i];
      values[n++] = e->param_values[i];
    }
  }
  clattn_status status = clattn__gemm_override(ctx, e->kernel, n, names, values);
  if (status == CLATTN_SUCCESS && min_indirect) {
    const char* rn[1] = {CLATTN__XGEMM_MIN_INDIRECT};
    status = clattn__gemm_override(ctx, "GemmRoutine", 1, rn, &min_indirect);
  }
  return status;
}
