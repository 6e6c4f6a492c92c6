/* Workspace queries: the scratch memory a call allocates for itself. */
#include "internal.h"

clattn_status clattn_attention_workspace_size(clattn_context* ctx,
                                              const clattn_attention_desc* desc,
                                              const clattn_attention_config* config,
                                              size_t* bytes) {
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (!bytes) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "bytes is NULL");
  *bytes = 0;
  clattn__attention_shape sh;
  clattn_attention_config used;
  clattn_status status = clattn__attention_shape_resolve(ctx, desc, &sh);
  if (status != CLATTN_SUCCESS) return status;
  status = clattn__config_resolve(ctx, &sh, config, &used, NULL);
  if (status != CLATTN_SUCCESS) return status;
  if (used.variant == CLATTN_VARIANT_REGISTER_BLOCKED) {
    /* As enqueue_regblock in attention.c sizes it. */
    *bytes = sh.batch * sh.heads_kv * sh.head_dim * clattn__kt_stride(&sh, &used) * sizeof(float);
  }
  return CLATTN_SUCCESS;
}
