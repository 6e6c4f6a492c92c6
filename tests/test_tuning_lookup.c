/* The tuning lookup from inside (the static library, src/tuning/tuning.h): an entry serves
 * only shapes of its dtype, and a file that spells the variants the older way (or by their
 * short names) still serves a new context, and decode and prefill entries serve only their own
 * query-length class. The entries are made for the device in hand,
 * with the kernels' current source hashes, so no tuning run is needed. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clattn/clattn_tuning.h"
#include "test_util.h"
#include "tuning/tuning.h"

/* A tuning file path in a fresh directory; *dir gets the directory. */
static void temp_path(char* dir, size_t dir_size, char* path, size_t path_size) {
  snprintf(dir, dir_size, "%s/clattn-lookup-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
  snprintf(path, path_size, "%s/tuning.json", dir);
}

static void remove_dir(const char* dir, const char* path) {
  unlink(path);
  rmdir(dir);
}

/* A context reading a file that does not exist (it keeps an empty table). */
static clattn_context* context_without_file(char* dir, size_t dir_size, char* path,
                                            size_t path_size) {
  temp_path(dir, dir_size, path, path_size);
  setenv("CLATTN_TUNING_FILE", path, 1);
  clattn_context* ctx = test_context(NULL);
  cr_assert_not_null(ctx->tuning);
  return ctx;
}

/* An attention entry for the context's device and a variant's default config for the shape,
 * which the lookup may serve: the kernel's current hash, a config that fits. */
static clattn_tuning_entry usable_entry(clattn_context* ctx, const clattn__variant* v,
                                        const clattn__attention_shape* shape) {
  clattn_tuning_entry e = CLATTN_TUNING_ENTRY_INIT;
  e.kind = CLATTN_TUNING_ATTENTION;
  clattn__tuning_device_key(&ctx->info, &e);
  snprintf(e.kernel, sizeof e.kernel, "%s", v->source);
  cr_assert_eq(clattn__tuning_source_hash(ctx, ctx->kernel_dir, v->source, e.source_hash,
                                          sizeof e.source_hash),
               CLATTN_SUCCESS);
  e.dtype = shape->dtype;
  e.head_dim = shape->head_dim;
  e.causal = shape->causal;
  e.seq_bucket = clattn__seq_bucket(shape->seq_q > shape->seq_kv ? shape->seq_q : shape->seq_kv);
  e.seq_q_bucket = clattn__seq_bucket(shape->seq_q);
  e.config.struct_size = sizeof e.config;
  e.config.variant = v->id;
  v->defaults(&ctx->info, shape, &e.config);
  cr_assert_eq(v->check(ctx, &ctx->info, shape->head_dim, &e.config), CLATTN_SUCCESS, "%s: %s",
               v->name, test_last_error(ctx));
  e.time_ms = 1.0;
  e.default_time_ms = 2.0;
  return e;
}

Test(lookup, an_entry_of_another_dtype_does_not_serve_an_f32_shape) {
  char dir[256], path[300];
  clattn_context* ctx = context_without_file(dir, sizeof dir, path, sizeof path);
  clattn_attention_desc desc = test_desc(1, 2, 0, 200, 200, 32, 1);
  clattn__attention_shape shape;
  cr_assert_eq(clattn__attention_shape_resolve(ctx, &desc, &shape), CLATTN_SUCCESS);
  cr_assert_eq(shape.dtype, CLATTN_DTYPE_F32);
  const clattn__variant* v = clattn__variant_at(0);
  clattn_tuning_entry e = usable_entry(ctx, v, &shape);
  e.dtype = CLATTN_DTYPE_F16;
  cr_assert_eq(clattn__tuning_table_append(ctx->tuning, &e), CLATTN_SUCCESS);

  clattn_attention_config config;
  clattn_config_source source;
  cr_assert_eq(clattn__tuning_lookup(ctx, &shape, &config, &source), 0,
               "an entry of another dtype served an f32 shape");
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_HEURISTIC);

  /* The entry is otherwise usable: it serves a shape of its own dtype, and a shape whose K
   * and V are stored in it (float32 queries over an f16 KV cache). */
  clattn__attention_shape other = shape;
  other.dtype = e.dtype;
  other.kv_dtype = e.dtype;
  cr_assert_eq(clattn__tuning_lookup(ctx, &other, &config, &source), 1);
  other.dtype = CLATTN_DTYPE_F32;
  cr_assert_eq(clattn__tuning_lookup(ctx, &other, &config, &source), 1);
  cr_assert_eq(config.variant, v->id);
  cr_assert_eq(source, CLATTN_CONFIG_SOURCE_TUNED);

  /* And its f32 twin serves the f32 shape. */
  e.dtype = CLATTN_DTYPE_F32;
  cr_assert_eq(clattn__tuning_table_append(ctx->tuning, &e), CLATTN_SUCCESS);
  cr_assert_eq(clattn__tuning_lookup(ctx, &shape, &config, &source), 1);
  cr_assert_eq(source, CLATTN_CONFIG_SOURCE_TUNED);
  cr_assert_eq(config.block_m, e.config.block_m);
  cr_assert_eq(config.block_n, e.config.block_n);
  clattn_context_destroy(ctx);
  remove_dir(dir, path);
}

/* Replaces every occurrence of `from` in a malloc'd string by `to` (not longer than from). */
static void replace_all(char* text, const char* from, const char* to) {
  const size_t nf = strlen(from), nt = strlen(to);
  cr_assert_leq(nt, nf);
  for (char* p = strstr(text, from); p; p = strstr(p + nt, from)) {
    memcpy(p, to, nt);
    memmove(p + nt, p + nf, strlen(p + nf) + 1);
  }
}

/* One entry per variant, each for its own head dim, written with the variants' short names
 * ("tiled", the spelling files had before the registry's names, and "regblock"): a new
 * context keeps them all and each serves its shape class. */
Test(lookup, short_variant_names_in_a_file_serve_a_new_context) {
  char dir[256], path[300];
  clattn_context* ctx = context_without_file(dir, sizeof dir, path, sizeof path);
  const size_t nv = clattn__variant_count();
  clattn__tuning_table* table = clattn__tuning_table_create();
  cr_assert_not_null(table);
  for (size_t i = 0; i < nv; ++i) {
    clattn_attention_desc desc = test_desc(1, 2, 0, 200, 200, 16 * (i + 1), 1);
    clattn__attention_shape shape;
    cr_assert_eq(clattn__attention_shape_resolve(ctx, &desc, &shape), CLATTN_SUCCESS);
    clattn_tuning_entry e = usable_entry(ctx, clattn__variant_at(i), &shape);
    cr_assert_eq(clattn__tuning_table_put(table, &e), CLATTN_SUCCESS);
  }
  clattn_context_destroy(ctx);
  char* text = NULL;
  cr_assert_eq(clattn__tuning_serialize(table, &text), CLATTN_SUCCESS);
  clattn__tuning_table_destroy(table);
  for (size_t i = 0; i < nv; ++i) {
    const clattn__variant* v = clattn__variant_at(i);
    char from[64], to[64];
    snprintf(from, sizeof from, "\"%s\"", v->name);
    snprintf(to, sizeof to, "\"%s\"", v->short_name);
    cr_assert(strstr(text, from) != NULL, "no %s in\n%s", from, text);
    replace_all(text, from, to);
  }
  FILE* f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
  fclose(f);
  free(text);

  ctx = test_context(NULL);
  clattn_tuning_info info = CLATTN_TUNING_INFO_INIT;
  cr_assert_eq(clattn_context_get_tuning_info(ctx, &info), CLATTN_SUCCESS);
  cr_assert_eq(info.status, CLATTN_SUCCESS, "%s", info.message);
  cr_assert_eq(info.entries, nv);
  cr_assert_eq(info.device_entries, nv);
  for (size_t i = 0; i < nv; ++i) {
    const clattn__variant* v = clattn__variant_at(i);
    clattn_attention_desc desc = test_desc(1, 2, 0, 177, 177, 16 * (i + 1), 1);
    clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
    cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS, "%s",
                 test_last_error(ctx));
    cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_TUNED, "%s: source %d", v->name,
                 (int)used.source);
    cr_assert_eq(used.variant, v->id, "%s", v->name);
    test_run_host(ctx, &desc, CLATTN_VARIANT_AUTO, NULL, 5);
  }
  clattn_context_destroy(ctx);
  remove_dir(dir, path);
}

/* A decode entry (Nq=1 over 4096 keys) serves decode shapes and never a prefill shape of the
 * same key length, and a prefill entry never a decode shape; an entry read from a file
 * without "seq_q_bucket" (before 0.3) is a prefill entry (seq_q = seq_kv). */
Test(lookup, decode_and_prefill_entries_stay_apart) {
  char dir[256], path[300];
  clattn_context* ctx = context_without_file(dir, sizeof dir, path, sizeof path);
  clattn_attention_desc decode = test_desc(1, 8, 2, 1, 4096, 64, 0);
  clattn_attention_desc prefill = test_desc(1, 8, 2, 4096, 4096, 64, 0);
  clattn__attention_shape ds, ps;
  cr_assert_eq(clattn__attention_shape_resolve(ctx, &decode, &ds), CLATTN_SUCCESS);
  cr_assert_eq(clattn__attention_shape_resolve(ctx, &prefill, &ps), CLATTN_SUCCESS);
  const clattn__variant* split = clattn__variant_find(CLATTN_VARIANT_SPLIT_KV);
  cr_assert_not_null(split);
  clattn_tuning_entry e = usable_entry(ctx, split, &ds);
  e.config.num_splits = 5;
  cr_assert_eq(e.seq_q_bucket, 0u);
  cr_assert_eq(clattn__tuning_table_append(ctx->tuning, &e), CLATTN_SUCCESS);
  clattn_attention_config config;
  clattn_config_source source;
  cr_assert_eq(clattn__tuning_lookup(ctx, &ds, &config, &source), 1);
  cr_assert_eq(config.variant, CLATTN_VARIANT_SPLIT_KV);
  cr_assert_eq(config.num_splits, 5u);
  cr_assert_eq(clattn__tuning_lookup(ctx, &ps, &config, &source), 0,
               "a decode entry served a prefill shape");
  clattn__attention_shape ds3 = ds; /* Nq=3: still decode */
  ds3.seq_q = 3;
  cr_assert_eq(clattn__tuning_lookup(ctx, &ds3, &config, &source), 1);

  /* Written and read back: seq_q_bucket and num_splits survive; the same entry without them
   * (an older file) is a prefill entry of the default split count. */
  clattn__tuning_table* table = clattn__tuning_table_create();
  cr_assert_not_null(table);
  const clattn__variant* pv = clattn__variant_at(clattn__variant_preferred(&ctx->info, &ps));
  clattn_tuning_entry pe = usable_entry(ctx, pv, &ps);
  cr_assert_eq(clattn__tuning_table_put(table, &e), CLATTN_SUCCESS);
  cr_assert_eq(clattn__tuning_table_put(table, &pe), CLATTN_SUCCESS);
  char* text = NULL;
  cr_assert_eq(clattn__tuning_serialize(table, &text), CLATTN_SUCCESS);
  clattn__tuning_table_destroy(table);
  cr_assert(strstr(text, "\"seq_q_bucket\"") != NULL, "%s", text);
  cr_assert(strstr(text, "\"num_splits\"") != NULL, "%s", text);
  FILE* f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
  fclose(f);
  clattn_context_destroy(ctx);
  ctx = test_context(NULL);
  cr_assert_eq(ctx->tuning_info.device_entries, 2u, "%s", ctx->tuning_info.message);
  cr_assert_eq(clattn__tuning_lookup(ctx, &ds, &config, &source), 1);
  cr_assert_eq(config.variant, CLATTN_VARIANT_SPLIT_KV);
  cr_assert_eq(config.num_splits, 5u);
  cr_assert_eq(clattn__tuning_lookup(ctx, &ps, &config, &source), 1);
  cr_assert_eq(config.variant, pv->id, "the prefill shape got %d", (int)config.variant);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  cr_assert_eq(clattn_attention_get_config(ctx, &decode, NULL, &used), CLATTN_SUCCESS);
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_TUNED);
  cr_assert_eq(used.num_splits, 5u);
  clattn_context_destroy(ctx);

  /* Old spelling: the fields removed. The decode entry becomes a prefill one. */
  replace_all(text, "\"seq_q_bucket\":\t0,", "");
  replace_all(text, "\"seq_q_bucket\":\t12,", "");
  cr_assert(strstr(text, "seq_q_bucket") == NULL, "%s", text);
  f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
  fclose(f);
  free(text);
  ctx = test_context(NULL);
  cr_assert_eq(ctx->tuning_info.status, CLATTN_SUCCESS, "%s", ctx->tuning_info.message);
  cr_assert_eq(clattn__tuning_lookup(ctx, &ds, &config, &source), 0,
               "an old (prefill) entry served a decode shape");
  cr_assert_eq(clattn__tuning_lookup(ctx, &ps, &config, &source), 1);
  clattn_context_destroy(ctx);
  remove_dir(dir, path);
}
