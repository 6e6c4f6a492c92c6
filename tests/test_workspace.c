/* clattn_attention_workspace_size: the scratch memory a call allocates for itself. */
#include <criterion/criterion.h>

#include "clattn/clattn.h"
#include "test_util.h"

/* REGISTER_BLOCKED stages Kᵀ: batch * heads_kv * head_dim floats per key, keys rounded up to
 * block_n (tails included, GQA counted per kv head). */
Test(workspace, register_blocked_is_the_staged_kt) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = test_desc(2, 4, 2, 37, 100, 24, 1);
  clattn_attention_config config = test_config(CLATTN_VARIANT_REGISTER_BLOCKED);
  config.block_n = 32;
  size_t bytes = 1;
  clattn_status st = clattn_attention_workspace_size(ctx, &desc, &config, &bytes);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s", clattn_status_name(st), test_last_error(ctx));
  cr_expect_eq(bytes, (size_t)2 * 2 * 24 * 128 * sizeof(float), "got %zu bytes", bytes);

  config.block_n = 48;
  st = clattn_attention_workspace_size(ctx, &desc, &config, &bytes);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s", clattn_status_name(st), test_last_error(ctx));
  cr_expect_eq(bytes, (size_t)2 * 2 * 24 * 144 * sizeof(float), "got %zu bytes", bytes);
  clattn_context_destroy(ctx);
}

/* Linear in seq_kv: what lets a caller size long sequences. */
Test(workspace, grows_linearly_with_seq_kv) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_config config = test_config(CLATTN_VARIANT_REGISTER_BLOCKED);
  config.block_n = 32;
  size_t small = 0, large = 0;
  clattn_attention_desc desc = test_desc(1, 8, 0, 1024, 1024, 64, 0);
  cr_assert_eq(clattn_attention_workspace_size(ctx, &desc, &config, &small), CLATTN_SUCCESS);
  desc.seq_q = desc.seq_kv = 4096;
  cr_assert_eq(clattn_attention_workspace_size(ctx, &desc, &config, &large), CLATTN_SUCCESS);
  cr_expect_eq(large, 4 * small, "%zu bytes at 4096 keys, %zu at 1024", large, small);
  clattn_context_destroy(ctx);
}

Test(workspace, tiled_needs_none) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = test_desc(1, 2, 0, 40, 40, 16, 0);
  clattn_attention_config config = test_config(CLATTN_VARIANT_TILED_LOCAL);
  config.block_m = 8;
  config.block_n = 8;
  size_t bytes = 1;
  clattn_status st = clattn_attention_workspace_size(ctx, &desc, &config, &bytes);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s", clattn_status_name(st), test_last_error(ctx));
  cr_expect_eq(bytes, 0, "got %zu bytes", bytes);
  clattn_context_destroy(ctx);
}

Test(workspace, bad_arguments) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = test_desc(1, 2, 0, 40, 40, 16, 0);
  size_t bytes = 7;
  cr_expect_eq(clattn_attention_workspace_size(NULL, &desc, NULL, &bytes),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_attention_workspace_size(ctx, &desc, NULL, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_eq(clattn_attention_workspace_size(ctx, NULL, NULL, &bytes),
               CLATTN_ERROR_INVALID_ARGUMENT);
  desc.head_dim = 0;
  cr_expect_eq(clattn_attention_workspace_size(ctx, &desc, NULL, &bytes),
               CLATTN_ERROR_INVALID_SHAPE);
  desc.head_dim = 16;
  clattn_attention_config config = test_config(CLATTN_VARIANT_REGISTER_BLOCKED);
  config.block_n = 20; /* not a multiple of 16 */
  cr_expect_eq(clattn_attention_workspace_size(ctx, &desc, &config, &bytes),
               CLATTN_ERROR_INVALID_CONFIG);
  clattn_context_destroy(ctx);
}
