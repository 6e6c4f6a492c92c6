/* What a context keeps of the tuning file: read once at creation, the attention entries that
 * can serve its device (kernel unchanged, config within the device's limits) kept, the best
 * GEMM entry applied; then the lookup that plans make. Never calls into the tuner. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tuning.h"

/* Seq buckets farther than this from a tuned one (a factor of 4 in length) take the
 * heuristics instead. */
#define MAX_BUCKET_DISTANCE 2

#define HASH_SIZE 32

static clattn_config_source level_source(int level) {
  return level == 2 ? CLATTN_CONFIG_SOURCE_TUNED : CLATTN_CONFIG_SOURCE_TUNED_OTHER_DRIVER;
}

clattn_status clattn__tuning_source_hash(const clattn_context* ctx, const char* kernel_dir,
                                         const char* kernel, char* hash, size_t hash_size) {
  char* common = NULL;
  char* body = NULL;
  clattn_status status = clattn__kernel_source_read(ctx, kernel_dir, "common", &common);
  if (status == CLATTN_SUCCESS) status = clattn__kernel_source_read(ctx, kernel_dir, kernel, &body);
  if (status == CLATTN_SUCCESS) {
    /* FNV-1a over the text the program is built from: common.cl, "\n", the kernel file. */
    uint64_t h = 1469598103934665603ull;
    const char* parts[3] = {common, "\n", body};
    for (int i = 0; i < 3; ++i) {
      for (const unsigned char* p = (const unsigned char*)parts[i]; *p; ++p) {
        h = (h ^ *p) * 1099511628211ull;
      }
    }
    snprintf(hash, hash_size, "fnv1a64:%016llx", (unsigned long long)h);
  }
  free(common);
  free(body);
  return status;
}

/* The variant an attention entry's config is for, when its kernel is that variant's kernel
 * file; NULL otherwise. */
static const clattn__variant* entry_variant(const clattn_tuning_entry* e) {
  const clattn__variant* v = clattn__variant_find(e->config.variant);
  return v && strcmp(e->kernel, v->source) == 0 ? v : NULL;
}

/* 1 when an entry can serve a device: kernel unchanged and limits respected. */
static int entry_current(const clattn_context* ctx, const char* kernel_dir,
                         const clattn_device_info* info, const clattn_tuning_entry* e) {
  if (e->kind == CLATTN_TUNING_GEMM) return clattn__gemm_entry_fits(info, e);
  if (!entry_variant(e)) return 0;
  char hash[HASH_SIZE];
  if (clattn__tuning_source_hash(ctx, kernel_dir, e->kernel, hash, sizeof hash) != CLATTN_SUCCESS ||
      strcmp(hash, e->source_hash) != 0) {
    return 0;
  }
  return clattn__config_fits(info, e->head_dim, &e->config);
}

clattn_status clattn_tuning_entry_match(const clattn_tuning_entry* entry, cl_device_id device,
                                        int* level, int* current) {
  if (!entry || !device || entry->struct_size != sizeof(clattn_tuning_entry)) {
    return CLATTN_ERROR_INVALID_ARGUMENT;
  }
  clattn_device_info* info = clattn__malloc(sizeof *info);
  if (!info) return CLATTN_ERROR_OUT_OF_MEMORY;
  info->struct_size = sizeof *info;
  clattn_status status = clattn_device_query(device, info);
  if (status == CLATTN_SUCCESS) {
    clattn_tuning_entry key;
    clattn__tuning_device_key(info, &key);
    int lv = clattn__tuning_device_level(&key, entry);
    if (level) *level = lv ? (int)level_source(lv) : 0;
    if (current) *current = entry_current(NULL, getenv("CLATTN_KERNEL_DIR"), info, entry);
  }
  free(info);
  return status;
}

/* ------------------------------------------------------------ context */

static void info_message(clattn_context* ctx, clattn_status status) {
  ctx->tuning_info.status = status;
  clattn_context_get_last_error(NULL, ctx->tuning_info.message, sizeof ctx->tuning_info.message,
                                NULL);
}

/* Applies the best GEMM entry for the device (this driver first). */
static void apply_gemm(clattn_context* ctx, const clattn__tuning_table* file,
                       const clattn_tuning_entry* key) {
  const clattn_tuning_entry* best = NULL;
  int best_level = 0;
  for (size_t i = 0; i < file->count; ++i) {
    const clattn_tuning_entry* e = &file->entries[i];
    if (e->kind != CLATTN_TUNING_GEMM || strcmp(e->kernel, "Xgemm") != 0) continue;
    int lv = clattn__tuning_device_level(key, e);
    if (lv > best_level && clattn__gemm_entry_fits(&ctx->info, e)) {
      best = e;
      best_level = lv;
    }
  }
  if (!best) return;
  if (clattn__gemm_entry_apply(ctx, best) == CLATTN_SUCCESS) {
    ctx->tuning_info.gemm_source = level_source(best_level);
    clattn__log("CLBlast %s parameters from the tuning file applied", best->kernel);
  } else {
    clattn__log("CLBlast rejected the tuned %s parameters; keeping its defaults", best->kernel);
  }
}

/* Keeps the file's attention entries that can serve the context's device: those for its
 * device (any driver) whose kernel file is the one their variant builds, unchanged since
 * (source hash), and whose config fits. Each kernel file is hashed once. */
static void keep_attention_entries(clattn_context* ctx, const clattn__tuning_table* file,
                                   const clattn_tuning_entry* key) {
  const size_t nv = clattn__variant_count();
  char(*hash)[HASH_SIZE] = clattn__calloc(nv ? nv : 1, sizeof *hash);
  if (!hash) {
    clattn__log("tuning file: out of host memory; its attention entries are not used");
    return;
  }
  for (size_t k = 0; k < nv; ++k) {
    if (clattn__tuning_source_hash(ctx, ctx->kernel_dir, clattn__variant_at(k)->source, hash[k],
                                   sizeof hash[k]) != CLATTN_SUCCESS) {
      hash[k][0] = '\0';
    }
  }
  size_t stale = 0, misfit = 0;
  for (size_t i = 0; i < file->count; ++i) {
    const clattn_tuning_entry* e = &file->entries[i];
    if (e->kind != CLATTN_TUNING_ATTENTION || !clattn__tuning_device_level(key, e)) continue;
    const clattn__variant* v = entry_variant(e);
    size_t k = 0;
    while (v && k < nv && clattn__variant_at(k) != v) ++k;
    if (!v || k == nv || !hash[k][0] || strcmp(e->source_hash, hash[k]) != 0) {
      ++stale;
    } else if (!clattn__config_fits(&ctx->info, e->head_dim, &e->config)) {
      ++misfit;
    } else if (clattn__tuning_table_append(ctx->tuning, e) != CLATTN_SUCCESS) {
      break;
    }
  }
  free(hash);
  if (stale || misfit) {
    clattn__log(
        "tuning file: %zu entries for this device skipped (%zu for changed kernels, %zu "
        "beyond the device's limits)",
        stale + misfit, stale, misfit);
  }
}

void clattn__tuning_context_init(clattn_context* ctx) {
  clattn_tuning_info* ti = &ctx->tuning_info;
  memset(ti, 0, sizeof *ti);
  ti->struct_size = sizeof *ti;
  ti->status = CLATTN_SUCCESS;
  clattn__tuning_table* file = NULL;
  clattn_status status = clattn__tuning_default_path(ti->path, sizeof ti->path);
  if (status != CLATTN_SUCCESS) {
    ti->path[0] = '\0';
    info_message(ctx, status);
    return;
  }
  status = clattn__tuning_file_load(ti->path, &file, &ti->found);
  if (status != CLATTN_SUCCESS) {
    info_message(ctx, status);
    clattn__log("tuning file ignored, using the built-in defaults: %s", ti->message);
  }
  if (!file) return;
  ti->entries = file->count;
  ctx->tuning = clattn__tuning_table_create();
  if (!ctx->tuning) {
    clattn__tuning_table_destroy(file);
    return;
  }
  clattn_tuning_entry key;
  clattn__tuning_device_key(&ctx->info, &key);
  keep_attention_entries(ctx, file, &key);
  ti->device_entries = ctx->tuning->count;
  apply_gemm(ctx, file, &key);
  clattn__log("tuning file %s: %zu entries, %zu usable here", ti->path, ti->entries,
              ti->device_entries);
  clattn__tuning_table_destroy(file);
}

void clattn__tuning_context_release(clattn_context* ctx) {
  clattn__tuning_table_destroy(ctx->tuning);
  ctx->tuning = NULL;
}

int clattn__tuning_lookup(clattn_context* ctx, const clattn__attention_shape* shape,
                          clattn_attention_config* config, clattn_config_source* source) {
  if (!ctx->tuning || !ctx->tuning->count) return 0;
  clattn_tuning_entry key;
  clattn__tuning_device_key(&ctx->info, &key);
  const unsigned bucket =
      clattn__seq_bucket(shape->seq_q > shape->seq_kv ? shape->seq_q : shape->seq_kv);
  const unsigned q_bucket = clattn__seq_bucket(shape->seq_q);
  const int decode = q_bucket < CLATTN_TUNING_DECODE_BUCKETS;
  const clattn_tuning_entry* best = NULL;
  int best_level = 0;
  unsigned best_dist = 0;
  for (size_t i = 0; i < ctx->tuning->count; ++i) {
    const clattn_tuning_entry* e = &ctx->tuning->entries[i];
    if (e->dtype != shape->kv_dtype || e->head_dim != shape->head_dim ||
        e->causal != shape->causal) {
      continue;
    }
    /* Decode entries serve decode shapes only, prefill entries prefill shapes only. */
    if ((e->seq_q_bucket < CLATTN_TUNING_DECODE_BUCKETS) != decode) continue;
    unsigned dist = e->seq_bucket > bucket ? e->seq_bucket - bucket : bucket - e->seq_bucket;
    if (dist > MAX_BUCKET_DISTANCE) continue;
    /* Within a class, the nearest query length weighs as much as the nearest key length. */
    dist += e->seq_q_bucket > q_bucket ? e->seq_q_bucket - q_bucket : q_bucket - e->seq_q_bucket;
    int level = clattn__tuning_device_level(&key, e);
    /* This driver before another; then the nearest bucket, the longer one on a tie. */
    if (!best || level > best_level ||
        (level == best_level &&
         (dist < best_dist || (dist == best_dist && e->seq_bucket > best->seq_bucket)))) {
      best = e;
      best_level = level;
      best_dist = dist;
    }
  }
  if (!best) return 0;
  *config = best->config;
  config->struct_size = sizeof *config;
  *source = level_source(best_level);
  return 1;
}

clattn_status clattn_context_get_tuning_info(const clattn_context* ctx, clattn_tuning_info* info) {
  if (!ctx || !info || info->struct_size != sizeof(clattn_tuning_info)) {
    return CLATTN_ERROR_INVALID_ARGUMENT;
  }
  *info = ctx->tuning_info;
  return CLATTN_SUCCESS;
}
