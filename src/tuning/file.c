/* The tuning file: parsing (a pure function, fuzzed), serialising, the device key, the table
 * API and the locked atomic store. Nothing here reads a device or builds a kernel; what a
 * context does with the file is in lookup.c. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "tuning.h"

/* How long a writer waits for the lock before giving up. */
#define LOCK_TIMEOUT_S 60

/* The file's dtype names: clattn_dtype_name's ("f32", "f16", "bf16"), spelled exactly. */
static const char* dtype_name(clattn_dtype dtype) { return clattn_dtype_name(dtype); }

static int dtype_from_name(const char* name, clattn_dtype* dtype) {
  const clattn_dtype all[] = {CLATTN_DTYPE_F32, CLATTN_DTYPE_F16, CLATTN_DTYPE_BF16};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) {
    if (strcmp(clattn_dtype_name(all[i]), name) == 0) {
      *dtype = all[i];
      return 1;
    }
  }
  return 0;
}

/* A config's variant as the file spells it: the registry's name ("tiled_local",
 * "register_blocked"); NULL for a value that names no variant. */
static const char* variant_name(clattn_variant id) {
  const clattn__variant* v = clattn__variant_find(id);
  return v ? v->name : NULL;
}

/* Reading accepts what clattn_variant_from_name does, but "auto": the registry's names and
 * short names, so files that spelt tiled_local "tiled" still load. */
static int variant_from_name(const char* name, clattn_variant* id) {
  clattn_variant v;
  if (clattn_variant_from_name(name, &v) != CLATTN_SUCCESS || v == CLATTN_VARIANT_AUTO) return 0;
  *id = v;
  return 1;
}

/* Whether an entry can be written: an attention entry's variant and dtype must have names. */
static clattn_status entry_writable(const clattn_tuning_entry* e, size_t index) {
  if (e->kind != CLATTN_TUNING_ATTENTION) return CLATTN_SUCCESS;
  if (!variant_name(e->config.variant) || !dtype_name(e->dtype)) {
    return clattn__fail(NULL, CLATTN_ERROR_INVALID_ARGUMENT,
                        "tuning entry %zu: variant %d or dtype %d is not one this library knows",
                        index, (int)e->config.variant, (int)e->dtype);
  }
  return CLATTN_SUCCESS;
}

/* ------------------------------------------------------------ paths */

clattn_status clattn__tuning_default_path(char* buf, size_t size) {
  const char* env = getenv("CLATTN_TUNING_FILE");
  int n;
  if (env && *env) {
    n = snprintf(buf, size, "%s", env);
  } else if ((env = getenv("XDG_CACHE_HOME")) && *env) {
    n = snprintf(buf, size, "%s/clattn/tuning.json", env);
  } else if ((env = getenv("HOME")) && *env) {
    n = snprintf(buf, size, "%s/.cache/clattn/tuning.json", env);
  } else {
    return clattn__fail(
        NULL, CLATTN_ERROR_TUNING_FILE,
        "no tuning file path: CLATTN_TUNING_FILE, XDG_CACHE_HOME and HOME are unset");
  }
  if (n < 0 || (size_t)n >= size) {
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "tuning file path too long");
  }
  return CLATTN_SUCCESS;
}

clattn_status clattn_tuning_file_path(char* buf, size_t buf_size, size_t* needed) {
  if (!buf && buf_size) return CLATTN_ERROR_INVALID_ARGUMENT;
  char path[4096];
  clattn_status status = clattn__tuning_default_path(path, sizeof path);
  if (status != CLATTN_SUCCESS) return status;
  return clattn__copy_out(path, buf, buf_size, needed);
}

/* ------------------------------------------------------------ device key */

/* Copies src into dst (size bytes), truncating. */
static void copy_str(char* dst, size_t size, const char* src) {
  size_t n = 0;
  for (; src && src[n] && n + 1 < size; ++n) dst[n] = src[n];
  dst[n] = '\0';
}

/* Lower case, whitespace runs to one space, trimmed; known vendors to one word. */
static void normalise_vendor(const char* in, char* out, size_t size) {
  char tmp[256];
  size_t n = 0;
  int space = 1;
  for (const char* p = in; *p && n + 1 < sizeof tmp; ++p) {
    unsigned char ch = (unsigned char)*p;
    if (isspace(ch)) {
      if (!space) tmp[n++] = ' ';
      space = 1;
    } else {
      tmp[n++] = (char)tolower(ch);
      space = 0;
    }
  }
  while (n && tmp[n - 1] == ' ') --n;
  tmp[n] = '\0';
  static const struct {
    const char* needle;
    const char* name;
  } kKnown[] = {{"nvidia", "nvidia"},
                {"advanced micro devices", "amd"},
                {"amd", "amd"},
                {"intel", "intel"},
                {"apple", "apple"},
                {"arm", "arm"},
                {"qualcomm", "qualcomm"},
                {"imagination", "imagination"},
                {"portable computing language", "pocl"},
                {"pocl", "pocl"},
                {"oclgrind", "oclgrind"}};
  for (size_t i = 0; i < sizeof kKnown / sizeof kKnown[0]; ++i) {
    if (strstr(tmp, kKnown[i].needle)) {
      copy_str(out, size, kKnown[i].name);
      return;
    }
  }
  copy_str(out, size, tmp);
}

void clattn__tuning_device_key(const clattn_device_info* info, clattn_tuning_entry* e) {
  normalise_vendor(info->vendor, e->vendor, sizeof e->vendor);
  copy_str(e->device, sizeof e->device, info->name);
  copy_str(e->driver, sizeof e->driver, info->driver_version);
  e->compute_units = info->compute_units;
  e->local_mem_size = info->local_mem_size;
}

int clattn__tuning_device_level(const clattn_tuning_entry* key, const clattn_tuning_entry* e) {
  if (strcmp(key->vendor, e->vendor) != 0 || strcmp(key->device, e->device) != 0 ||
      key->compute_units != e->compute_units || key->local_mem_size != e->local_mem_size) {
    return 0;
  }
  return strcmp(key->driver, e->driver) == 0 ? 2 : 1;
}

/* ------------------------------------------------------------ table */

clattn__tuning_table* clattn__tuning_table_create(void) {
  return clattn__calloc(1, sizeof(clattn__tuning_table));
}

void clattn__tuning_table_destroy(clattn__tuning_table* table) {
  if (!table) return;
  free(table->entries);
  free(table);
}

/* 1 when two entries fill the same slot: same device (driver included) and shape class. */
static int same_slot(const clattn_tuning_entry* a, const clattn_tuning_entry* b) {
  if (a->kind != b->kind || clattn__tuning_device_level(a, b) != 2) return 0;
  if (a->kind == CLATTN_TUNING_GEMM) return strcmp(a->kernel, b->kernel) == 0;
  return a->dtype == b->dtype && a->head_dim == b->head_dim && a->causal == b->causal &&
         a->seq_bucket == b->seq_bucket && a->seq_q_bucket == b->seq_q_bucket;
}

clattn_status clattn__tuning_table_append(clattn__tuning_table* t, const clattn_tuning_entry* e) {
  if (t->count == t->capacity) {
    size_t cap = t->capacity ? 2 * t->capacity : 16;
    clattn_tuning_entry* p = clattn__realloc(t->entries, cap * sizeof *p);
    if (!p) return clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    t->entries = p;
    t->capacity = cap;
  }
  t->entries[t->count++] = *e;
  return CLATTN_SUCCESS;
}

static int cmp_num(unsigned long long a, unsigned long long b) { return (a > b) - (a < b); }

/* A total order on entries of one array (pointers into it): by slot, equal exactly where
 * same_slot holds, then by position. */
static int slot_cmp(const void* pa, const void* pb) {
  const clattn_tuning_entry *a = *(const clattn_tuning_entry*const*)pa,
                            *b = *(const clattn_tuning_entry*const*)pb;
  int c = cmp_num((unsigned)a->kind, (unsigned)b->kind);
  if (!c) c = strcmp(a->vendor, b->vendor);
  if (!c) c = strcmp(a->device, b->device);
  if (!c) c = cmp_num(a->compute_units, b->compute_units);
  if (!c) c = cmp_num(a->local_mem_size, b->local_mem_size);
  if (!c) c = strcmp(a->driver, b->driver);
  if (!c && a->kind == CLATTN_TUNING_GEMM) c = strcmp(a->kernel, b->kernel);
  if (!c && a->kind != CLATTN_TUNING_GEMM) {
    c = cmp_num((unsigned)a->dtype, (unsigned)b->dtype);
    if (!c) c = cmp_num(a->head_dim, b->head_dim);
    if (!c) c = cmp_num((unsigned)a->causal, (unsigned)b->causal);
    if (!c) c = cmp_num(a->seq_bucket, b->seq_bucket);
    if (!c) c = cmp_num(a->seq_q_bucket, b->seq_q_bucket);
  }
  return c ? c : (a > b) - (a < b);
}

/* Leaves one entry per slot, as putting them one by one would (the last value, at the first
 * one's position), in O(n log n), so that a file of many entries reads quickly. */
static clattn_status table_dedupe(clattn__tuning_table* t) {
  if (t->count < 2) return CLATTN_SUCCESS;
  clattn_tuning_entry** order = clattn__malloc(t->count * sizeof *order);
  unsigned char* keep = clattn__calloc(t->count, 1);
  if (!order || !keep) {
    free(order);
    free(keep);
    return clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  }
  for (size_t i = 0; i < t->count; ++i) order[i] = &t->entries[i];
  qsort(order, t->count, sizeof *order, slot_cmp);
  for (size_t g = 0; g < t->count;) {
    size_t end = g + 1;
    while (end < t->count && same_slot(order[g], order[end])) ++end;
    /* order[g] is the group's first position, order[end - 1] its last value. */
    if (end - 1 != g) *order[g] = *order[end - 1];
    keep[order[g] - t->entries] = 1;
    g = end;
  }
  size_t n = 0;
  for (size_t i = 0; i < t->count; ++i) {
    if (keep[i]) t->entries[n++] = t->entries[i];
  }
  t->count = n;
  free(order);
  free(keep);
  return CLATTN_SUCCESS;
}

clattn_status clattn__tuning_table_put(clattn__tuning_table* t, const clattn_tuning_entry* e) {
  for (size_t i = 0; i < t->count; ++i) {
    if (same_slot(&t->entries[i], e)) {
      t->entries[i] = *e;
      return CLATTN_SUCCESS;
    }
  }
  return clattn__tuning_table_append(t, e);
}

/* ------------------------------------------------------------ parsing */

/* A string member that fits `size` with its NUL; missing is an error unless optional. */
static int get_string(const cJSON* obj, const char* name, char* out, size_t size, int optional) {
  const cJSON* item = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (!item) {
    if (optional) out[0] = '\0';
    return optional;
  }
  if (!cJSON_IsString(item) || !item->valuestring || strlen(item->valuestring) >= size) return 0;
  copy_str(out, size, item->valuestring);
  return 1;
}

/* An integral number member in [lo, hi]. */
static int get_uint(const cJSON* obj, const char* name, double lo, double hi, double* out) {
  const cJSON* item = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (!cJSON_IsNumber(item)) return 0;
  double v = item->valuedouble;
  if (!isfinite(v) || v != floor(v) || v < lo || v > hi) return 0;
  *out = v;
  return 1;
}

/* A finite, non-negative time; missing is 0. */
static int get_time(const cJSON* obj, const char* name, double* out) {
  const cJSON* item = cJSON_GetObjectItemCaseSensitive(obj, name);
  *out = 0;
  if (!item) return 1;
  if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) || item->valuedouble < 0) return 0;
  *out = item->valuedouble;
  return 1;
}

static int parse_device(const cJSON* dev, clattn_tuning_entry* e) {
  double cu, lm;
  if (!cJSON_IsObject(dev) || !get_string(dev, "vendor", e->vendor, sizeof e->vendor, 0) ||
      !get_string(dev, "name", e->device, sizeof e->device, 0) ||
      !get_string(dev, "driver", e->driver, sizeof e->driver, 0) ||
      !get_uint(dev, "compute_units", 0, 4294967295.0, &cu) ||
      !get_uint(dev, "local_mem_size", 0, 1125899906842624.0, &lm)) {
    return 0;
  }
  e->compute_units = (cl_uint)cu;
  e->local_mem_size = (cl_ulong)lm;
  return 1;
}

static int parse_config(const cJSON* cfg, clattn_attention_config* c) {
  char variant[32];
  double bm, bn, rows, tpr;
  if (!cJSON_IsObject(cfg) || !get_string(cfg, "variant", variant, sizeof variant, 0) ||
      !get_uint(cfg, "block_m", 1, 1024, &bm) || !get_uint(cfg, "block_n", 1, 1024, &bn) ||
      !get_uint(cfg, "rows_per_item", 1, 64, &rows) ||
      !get_uint(cfg, "threads_per_row", 1, 64, &tpr)) {
    return 0;
  }
  memset(c, 0, sizeof *c);
  c->struct_size = sizeof *c;
  if (!variant_from_name(variant, &c->variant)) return 0;
  c->block_m = (unsigned)bm;
  c->block_n = (unsigned)bn;
  c->rows_per_item = (unsigned)rows;
  c->threads_per_row = (unsigned)tpr;
  /* Optional (since 0.3; 0: the variant's default). */
  if (cJSON_GetObjectItemCaseSensitive(cfg, "num_splits")) {
    double splits;
    if (!get_uint(cfg, "num_splits", 0, 65536, &splits)) return 0;
    c->num_splits = (unsigned)splits;
  }
  return 1;
}

static int parse_params(const cJSON* params, clattn_tuning_entry* e) {
  if (!cJSON_IsObject(params)) return 0;
  e->param_count = 0;
  const cJSON* item = NULL;
  cJSON_ArrayForEach(item, params) {
    if (e->param_count == CLATTN_TUNING_MAX_PARAMS || !item->string ||
        strlen(item->string) >= sizeof e->param_names[0] || !cJSON_IsNumber(item)) {
      return 0;
    }
    double v = item->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < 0 || v > 65536) return 0;
    copy_str(e->param_names[e->param_count], sizeof e->param_names[0], item->string);
    e->param_values[e->param_count] = (size_t)v;
    e->param_count++;
  }
  return e->param_count > 0;
}

static int parse_entry(const cJSON* obj, clattn_tuning_entry* e) {
  char kind[16], dtype[8];
  double v;
  memset(e, 0, sizeof *e);
  e->struct_size = sizeof *e;
  if (!cJSON_IsObject(obj) || !get_string(obj, "kind", kind, sizeof kind, 0) ||
      !parse_device(cJSON_GetObjectItemCaseSensitive(obj, "device"), e) ||
      !get_string(obj, "kernel", e->kernel, sizeof e->kernel, 0) ||
      !get_string(obj, "source_hash", e->source_hash, sizeof e->source_hash, 1) ||
      !get_string(obj, "tuned_at", e->tuned_at, sizeof e->tuned_at, 1) ||
      !get_time(obj, "time_ms", &e->time_ms) ||
      !get_time(obj, "default_time_ms", &e->default_time_ms)) {
    return 0;
  }
  if (strcmp(kind, "attention") == 0) {
    e->kind = CLATTN_TUNING_ATTENTION;
    const cJSON* causal = cJSON_GetObjectItemCaseSensitive(obj, "causal");
    if (!get_string(obj, "dtype", dtype, sizeof dtype, 0) || !dtype_from_name(dtype, &e->dtype) ||
        !cJSON_IsBool(causal) || !get_uint(obj, "head_dim", 1, CLATTN__MAX_HEAD_DIM, &v)) {
      return 0;
    }
    e->causal = cJSON_IsTrue(causal);
    e->head_dim = (size_t)v;
    if (!get_uint(obj, "seq_bucket", 0, 40, &v)) return 0;
    e->seq_bucket = (unsigned)v;
    /* Optional: files before 0.3 tuned seq_q = seq_kv. */
    e->seq_q_bucket = e->seq_bucket;
    if (cJSON_GetObjectItemCaseSensitive(obj, "seq_q_bucket")) {
      if (!get_uint(obj, "seq_q_bucket", 0, 40, &v)) return 0;
      e->seq_q_bucket = (unsigned)v;
    }
    return parse_config(cJSON_GetObjectItemCaseSensitive(obj, "config"), &e->config);
  }
  if (strcmp(kind, "gemm") == 0) {
    e->kind = CLATTN_TUNING_GEMM;
    if (!get_uint(obj, "m", 1, 2147483647.0, &v)) return 0;
    e->gemm_m = (size_t)v;
    if (!get_uint(obj, "k", 1, 2147483647.0, &v)) return 0;
    e->gemm_k = (size_t)v;
    return parse_params(cJSON_GetObjectItemCaseSensitive(obj, "parameters"), e);
  }
  return 0;
}

/* clattn__tuning_parse, also telling the file's format version where it is a clattn tuning
 * file (version may be NULL; 0 when the text names none), also for a version it does not
 * read, so that a writer can leave a newer file alone. */
static clattn_status parse_versioned(const char* text, size_t size, clattn__tuning_table** out,
                                     unsigned* file_version) {
  clattn_status status = CLATTN_SUCCESS;
  cJSON* root = NULL;
  clattn__tuning_table* table = NULL;
  if (file_version) *file_version = 0;
  if (!out) return CLATTN_ERROR_INVALID_ARGUMENT;
  *out = NULL;
  if (!text || size == 0) {
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "the tuning file is empty");
  }
  if (size > CLATTN__TUNING_MAX_BYTES) {
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                        "the tuning file has %zu bytes, more than the %zu a tuning file may have",
                        size, CLATTN__TUNING_MAX_BYTES);
  }
  root = cJSON_ParseWithLength(text, size);
  if (!root) {
    status = clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                          "the tuning file is not valid JSON (truncated or corrupt)");
    goto cleanup;
  }
  char format[32];
  double version;
  if (!cJSON_IsObject(root) || !get_string(root, "format", format, sizeof format, 0) ||
      strcmp(format, CLATTN__TUNING_FORMAT) != 0) {
    status = clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                          "the file is not a clattn tuning file (no \"format\": \"%s\")",
                          CLATTN__TUNING_FORMAT);
    goto cleanup;
  }
  const int has_version = get_uint(root, "version", 0, 1e9, &version);
  if (has_version && file_version) *file_version = (unsigned)version;
  if (!has_version || version != CLATTN__TUNING_VERSION) {
    status = clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                          "the tuning file has another format version (this library reads "
                          "version %d)",
                          CLATTN__TUNING_VERSION);
    goto cleanup;
  }
  const cJSON* entries = cJSON_GetObjectItemCaseSensitive(root, "entries");
  if (!cJSON_IsArray(entries)) {
    status = clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "the tuning file has no entries array");
    goto cleanup;
  }
  table = clattn__tuning_table_create();
  if (!table) {
    status = clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  size_t dropped = 0;
  const cJSON* item = NULL;
  cJSON_ArrayForEach(item, entries) {
    clattn_tuning_entry e;
    if (!parse_entry(item, &e)) {
      ++dropped;
      continue;
    }
    CLATTN__CHECK(clattn__tuning_table_append(table, &e));
  }
  /* A later entry for the same slot wins, as a merge would leave it. */
  CLATTN__CHECK(table_dedupe(table));
  if (dropped) clattn__log("tuning file: %zu malformed entries ignored", dropped);
  *out = table;
  table = NULL;
cleanup:
  clattn__tuning_table_destroy(table);
  cJSON_Delete(root);
  return status;
}

clattn_status clattn__tuning_parse(const char* text, size_t size, clattn__tuning_table** out) {
  return parse_versioned(text, size, out, NULL);
}

/* ------------------------------------------------------------ serialising */

static cJSON* entry_json(const clattn_tuning_entry* e) {
  cJSON* o = cJSON_CreateObject();
  cJSON* dev = cJSON_CreateObject();
  if (!o || !dev) {
    cJSON_Delete(o);
    cJSON_Delete(dev);
    return NULL;
  }
  int ok = cJSON_AddStringToObject(o, "kind",
                                   e->kind == CLATTN_TUNING_GEMM ? "gemm" : "attention") != NULL;
  cJSON_AddItemToObject(o, "device", dev);
  ok &= cJSON_AddStringToObject(dev, "vendor", e->vendor) != NULL;
  ok &= cJSON_AddStringToObject(dev, "name", e->device) != NULL;
  ok &= cJSON_AddStringToObject(dev, "driver", e->driver) != NULL;
  ok &= cJSON_AddNumberToObject(dev, "compute_units", (double)e->compute_units) != NULL;
  ok &= cJSON_AddNumberToObject(dev, "local_mem_size", (double)e->local_mem_size) != NULL;
  ok &= cJSON_AddStringToObject(o, "kernel", e->kernel) != NULL;
  ok &= cJSON_AddStringToObject(o, "source_hash", e->source_hash) != NULL;
  if (e->kind == CLATTN_TUNING_ATTENTION) {
    ok &= cJSON_AddStringToObject(o, "dtype", dtype_name(e->dtype)) != NULL;
    ok &= cJSON_AddNumberToObject(o, "head_dim", (double)e->head_dim) != NULL;
    ok &= cJSON_AddBoolToObject(o, "causal", e->causal) != NULL;
    ok &= cJSON_AddNumberToObject(o, "seq_bucket", e->seq_bucket) != NULL;
    ok &= cJSON_AddNumberToObject(o, "seq_q_bucket", e->seq_q_bucket) != NULL;
    cJSON* cfg = cJSON_AddObjectToObject(o, "config");
    ok &= cfg != NULL;
    if (cfg) {
      const clattn_attention_config* c = &e->config;
      ok &= cJSON_AddStringToObject(cfg, "variant", variant_name(c->variant)) != NULL;
      ok &= cJSON_AddNumberToObject(cfg, "block_m", c->block_m) != NULL;
      ok &= cJSON_AddNumberToObject(cfg, "block_n", c->block_n) != NULL;
      ok &= cJSON_AddNumberToObject(cfg, "rows_per_item", c->rows_per_item) != NULL;
      ok &= cJSON_AddNumberToObject(cfg, "threads_per_row", c->threads_per_row) != NULL;
      ok &= cJSON_AddNumberToObject(cfg, "num_splits", c->num_splits) != NULL;
    }
  } else {
    ok &= cJSON_AddNumberToObject(o, "m", (double)e->gemm_m) != NULL;
    ok &= cJSON_AddNumberToObject(o, "k", (double)e->gemm_k) != NULL;
    cJSON* params = cJSON_AddObjectToObject(o, "parameters");
    ok &= params != NULL;
    for (size_t i = 0; params && i < e->param_count && i < CLATTN_TUNING_MAX_PARAMS; ++i) {
      ok &= cJSON_AddNumberToObject(params, e->param_names[i], (double)e->param_values[i]) != NULL;
    }
  }
  ok &= cJSON_AddNumberToObject(o, "time_ms", e->time_ms) != NULL;
  ok &= cJSON_AddNumberToObject(o, "default_time_ms", e->default_time_ms) != NULL;
  ok &= cJSON_AddStringToObject(o, "tuned_at", e->tuned_at) != NULL;
  if (!ok) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

clattn_status clattn__tuning_serialize(const clattn__tuning_table* t, char** text) {
  for (size_t i = 0; i < t->count; ++i) {
    clattn_status st = entry_writable(&t->entries[i], i);
    if (st != CLATTN_SUCCESS) return st;
  }
  clattn_status status = CLATTN_SUCCESS;
  cJSON* root = cJSON_CreateObject();
  cJSON* entries = NULL;
  if (!root || !cJSON_AddStringToObject(root, "format", CLATTN__TUNING_FORMAT) ||
      !cJSON_AddNumberToObject(root, "version", CLATTN__TUNING_VERSION) ||
      !(entries = cJSON_AddArrayToObject(root, "entries"))) {
    goto oom;
  }
  for (size_t i = 0; i < t->count; ++i) {
    cJSON* e = entry_json(&t->entries[i]);
    if (!e) goto oom;
    cJSON_AddItemToArray(entries, e);
  }
  *text = cJSON_Print(root);
  if (!*text) goto oom;
  goto cleanup;
oom:
  status = clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
cleanup:
  cJSON_Delete(root);
  return status;
}

/* ------------------------------------------------------------ files */

/* Reads a whole file (at most CLATTN__TUNING_MAX_BYTES + 1 bytes). *missing is set when it
 * does not exist. */
static clattn_status read_file(const char* path, char** text, size_t* size, int* missing) {
  *text = NULL;
  *size = 0;
  FILE* f = NULL;
  clattn_status status =
      clattn__file_open_read(NULL, CLATTN_ERROR_TUNING_FILE, "the tuning file", path, &f, missing);
  if (status != CLATTN_SUCCESS || *missing) return status;
  size_t cap = 4096, n = 0;
  char* buf = clattn__malloc(cap);
  while (buf) {
    if (n == cap) {
      if (cap > CLATTN__TUNING_MAX_BYTES) break; /* too large: the parser says so */
      char* p = clattn__realloc(buf, 2 * cap);
      if (!p) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = p;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  if (!buf) {
    status = clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  } else if (ferror(f)) {
    status = clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot read the tuning file %s", path);
    free(buf);
  } else {
    *text = buf;
    *size = n;
  }
  fclose(f);
  return status;
}

/* clattn__tuning_file_load, also telling the file's format version (see parse_versioned). */
static clattn_status load_versioned(const char* path, clattn__tuning_table** out, int* found,
                                    unsigned* file_version) {
  char* text = NULL;
  size_t size = 0;
  int missing = 0;
  *out = NULL;
  *found = 0;
  if (file_version) *file_version = 0;
  clattn_status status = read_file(path, &text, &size, &missing);
  if (status == CLATTN_SUCCESS && !missing) {
    *found = 1;
    status = parse_versioned(text, size, out, file_version);
    if (status != CLATTN_SUCCESS) {
      char msg[1024];
      clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
      clattn__fail(NULL, status, "%s: %s; ignored", path, msg);
    }
  }
  free(text);
  if (!*out) {
    *out = clattn__tuning_table_create();
    if (!*out) return clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  }
  return status;
}

clattn_status clattn__tuning_file_load(const char* path, clattn__tuning_table** out, int* found) {
  return load_versioned(path, out, found, NULL);
}

/* mkdir -p of the directory part of path. */
static clattn_status make_parent_dirs(const char* path) {
  char dir[4096];
  if (strlen(path) >= sizeof dir) {
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "tuning file path too long");
  }
  strcpy(dir, path);
  char* slash = strrchr(dir, '/');
  if (!slash || slash == dir) return CLATTN_SUCCESS;
  *slash = '\0';
  for (char* p = dir + 1; *p; ++p) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
      return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot create directory %s: %s", dir,
                          strerror(errno));
    }
    *p = '/';
  }
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot create directory %s: %s", dir,
                        strerror(errno));
  }
  return CLATTN_SUCCESS;
}

/* Threads of one process exclude each other here; processes through the lock file
 * <path>.lock (POSIX record locks are per process and released when it dies, so a killed
 * writer leaves no stale lock). The holder removes the lock file before releasing it, so none
 * is left behind; a writer that was waiting on the removed file then holds a lock on a file
 * no longer linked at <path>.lock, which it sees (the path names no file, or another one) and
 * tries again, so only the holder of the lock on the file at <path>.lock is ever in. */
static pthread_mutex_t g_store_lock = PTHREAD_MUTEX_INITIALIZER;

static clattn_status lock_file(const char* path, int* fd_out) {
  char lock_path[4200];
  snprintf(lock_path, sizeof lock_path, "%s.lock", path);
  for (int waited_ms = 0;;) {
    int fd = open(lock_path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
      return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot create the lock file %s: %s",
                          lock_path, strerror(errno));
    }
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    while (fcntl(fd, F_SETLK, &fl) != 0) {
      if ((errno != EACCES && errno != EAGAIN) || waited_ms >= LOCK_TIMEOUT_S * 1000) {
        int e = errno;
        close(fd);
        return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot lock %s: %s", lock_path,
                            waited_ms >= LOCK_TIMEOUT_S * 1000 ? "timed out" : strerror(e));
      }
      struct timespec ts = {0, 20 * 1000 * 1000};
      nanosleep(&ts, NULL);
      waited_ms += 20;
    }
    struct stat held, linked;
    if (fstat(fd, &held) == 0 && stat(lock_path, &linked) == 0 && held.st_dev == linked.st_dev &&
        held.st_ino == linked.st_ino) {
      *fd_out = fd;
      return CLATTN_SUCCESS;
    }
    close(fd); /* the previous holder removed it: lock the one at the path now */
  }
}

/* Removes the lock file (the caller holds the lock) and releases the lock. */
static void unlock_file(const char* path, int fd) {
  char lock_path[4200];
  snprintf(lock_path, sizeof lock_path, "%s.lock", path);
  unlink(lock_path);
  close(fd);
}

/* Under the lock: removes the temporary files <path>.tmp.* that writers killed before their
 * rename left. Temporary files are made only under the lock, so every one found there is a
 * dead writer's; one whose name carries the pid of a live process of this host is left alone
 * all the same (a lock a network file system did not honour). */
static void remove_stale_temps(const char* path) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char* slash = strrchr(dir, '/');
  const char* base = path;
  if (slash) {
    base = path + (slash - dir) + 1;
    *(slash == dir ? slash + 1 : slash) = '\0';
  } else {
    strcpy(dir, ".");
  }
  char prefix[4200];
  snprintf(prefix, sizeof prefix, "%s.tmp.", base);
  const size_t plen = strlen(prefix);
  DIR* d = opendir(dir);
  if (!d) return;
  for (struct dirent* ent; (ent = readdir(d)) != NULL;) {
    if (strncmp(ent->d_name, prefix, plen) != 0) continue;
    char* end = NULL;
    errno = 0;
    long pid = strtol(ent->d_name + plen, &end, 10);
    if (errno == 0 && end != ent->d_name + plen && *end == '.' && pid > 0 &&
        (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
      continue; /* a live process of this host */
    }
    char full[8400];
    snprintf(full, sizeof full, "%s/%s", dir, ent->d_name);
    struct stat st;
    if (lstat(full, &st) == 0 && S_ISREG(st.st_mode) && unlink(full) == 0) {
      clattn__log("tuning file %s: removed %s, left by a writer that was killed", path, full);
    }
  }
  closedir(d);
}

/* Writes text to a temporary file beside path, fsyncs it, renames it over path and fsyncs
 * the directory. Readers see the old file or the new one, never a part. */
static clattn_status write_atomic(const char* path, const char* text) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld.XXXXXX", path, (long)getpid());
  int fd = mkstemp(tmp);
  if (fd < 0) {
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                        "cannot create a temporary file beside %s: %s", path, strerror(errno));
  }
  clattn_status status = CLATTN_SUCCESS;
  size_t len = strlen(text), done = 0;
  while (done < len) {
    ssize_t w = write(fd, text + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      status =
          clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot write %s: %s", tmp, strerror(errno));
      break;
    }
    done += (size_t)w;
  }
  if (status == CLATTN_SUCCESS && (fchmod(fd, 0644) != 0 || fsync(fd) != 0)) {
    status =
        clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot sync %s: %s", tmp, strerror(errno));
  }
  if (close(fd) != 0 && status == CLATTN_SUCCESS) {
    status =
        clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot close %s: %s", tmp, strerror(errno));
  }
  if (status == CLATTN_SUCCESS && rename(tmp, path) != 0) {
    status = clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot rename %s to %s: %s", tmp, path,
                          strerror(errno));
  }
  if (status != CLATTN_SUCCESS) {
    unlink(tmp);
    return status;
  }
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char* slash = strrchr(dir, '/');
  if (slash) {
    *(slash == dir ? slash + 1 : slash) = '\0';
  } else {
    strcpy(dir, ".");
  }
  int dfd = open(dir, O_RDONLY);
  if (dfd >= 0) {
    fsync(dfd); /* best effort: some file systems refuse fsync on directories */
    close(dfd);
  }
  return CLATTN_SUCCESS;
}

/* 1 when an entry survives a write and a read: the parser drops entries with fields out of
 * range (a NaN time, a head dim beyond 256, ...), and such an entry, stored, would vanish
 * on the next read together with the valid entry it replaced. */
static int entry_round_trips(const clattn_tuning_entry* e) {
  clattn__tuning_table* one = clattn__tuning_table_create();
  clattn__tuning_table* back = NULL;
  char* text = NULL;
  int ok = one && clattn__tuning_table_put(one, e) == CLATTN_SUCCESS &&
           clattn__tuning_serialize(one, &text) == CLATTN_SUCCESS &&
           clattn__tuning_parse(text, strlen(text), &back) == CLATTN_SUCCESS && back->count == 1;
  free(text);
  clattn__tuning_table_destroy(back);
  clattn__tuning_table_destroy(one);
  return ok;
}

clattn_status clattn_tuning_file_store(const char* path, const clattn_tuning_entry* entries,
                                       size_t count) {
  if (count && !entries) return CLATTN_ERROR_INVALID_ARGUMENT;
  for (size_t i = 0; i < count; ++i) {
    if (entries[i].struct_size != sizeof(clattn_tuning_entry)) {
      return clattn__fail(NULL, CLATTN_ERROR_INVALID_ARGUMENT,
                          "clattn_tuning_entry.struct_size is %zu, expected %zu",
                          entries[i].struct_size, sizeof(clattn_tuning_entry));
    }
    clattn_status st = entry_writable(&entries[i], i);
    if (st != CLATTN_SUCCESS) return st;
    if (!entry_round_trips(&entries[i])) {
      return clattn__fail(NULL, CLATTN_ERROR_INVALID_ARGUMENT,
                          "tuning entry %zu has a field out of range (a time that is not finite "
                          "and positive, a head dim beyond 256, ...): nothing written",
                          i);
    }
  }
  char def[4096];
  if (!path) {
    clattn_status st = clattn__tuning_default_path(def, sizeof def);
    if (st != CLATTN_SUCCESS) return st;
    path = def;
  }
  clattn_status status = CLATTN_SUCCESS;
  clattn__tuning_table* table = NULL;
  char* text = NULL;
  int fd = -1, found = 0;
  /* Only a regular file is replaced: a symbolic link, a device (/dev/null), a FIFO or a
   * directory at the path is refused before anything, its lock file included, is made. */
  status = clattn__file_check_writable("the tuning file", path);
  if (status != CLATTN_SUCCESS) return status;
  pthread_mutex_lock(&g_store_lock);
  CLATTN__CHECK(make_parent_dirs(path));
  CLATTN__CHECK(lock_file(path, &fd));
  /* Under the lock: the file may have become something else meanwhile. */
  CLATTN__CHECK(clattn__file_check_writable("the tuning file", path));
  remove_stale_temps(path);
  /* Under the lock: re-read what other writers stored, then merge ours over it. */
  unsigned version = 0;
  status = load_versioned(path, &table, &found, &version);
  if (status == CLATTN_ERROR_OUT_OF_MEMORY) goto cleanup;
  if (version > CLATTN__TUNING_VERSION) {
    status = clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                          "the tuning file %s has format version %u, newer than this library's "
                          "(%d); it is left as it is",
                          path, version, CLATTN__TUNING_VERSION);
    goto cleanup;
  }
  if (status != CLATTN_SUCCESS) clattn__log("replacing the unreadable tuning file %s", path);
  status = CLATTN_SUCCESS;
  for (size_t i = 0; i < count; ++i) CLATTN__CHECK(clattn__tuning_table_append(table, &entries[i]));
  CLATTN__CHECK(table_dedupe(table)); /* ours replace the file's in their slots */
  CLATTN__CHECK(clattn__tuning_serialize(table, &text));
  if (strlen(text) > CLATTN__TUNING_MAX_BYTES) {
    /* Readers ignore a file that large: writing it would lose every entry. */
    status = clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                          "the tuning file would have %zu bytes, more than the %zu a tuning file "
                          "may have; nothing written",
                          strlen(text), (size_t)CLATTN__TUNING_MAX_BYTES);
    goto cleanup;
  }
  CLATTN__CHECK(write_atomic(path, text));
  clattn__log("tuning file %s: %zu entries written (%zu new or replaced)", path, table->count,
              count);
cleanup:
  if (fd >= 0) unlock_file(path, fd);
  pthread_mutex_unlock(&g_store_lock);
  free(text);
  clattn__tuning_table_destroy(table);
  return status;
}

clattn_status clattn_tuning_file_check(const char* path) {
  char def[4096];
  if (!path) {
    clattn_status st = clattn__tuning_default_path(def, sizeof def);
    if (st != CLATTN_SUCCESS) return st;
    path = def;
  }
  return clattn__file_check_writable("the tuning file", path);
}

/* ------------------------------------------------------------ public table API */

clattn_status clattn_tuning_table_load(const char* path, clattn_tuning_table** out) {
  if (!out) return CLATTN_ERROR_INVALID_ARGUMENT;
  *out = NULL;
  char def[4096];
  if (!path) {
    clattn_status st = clattn__tuning_default_path(def, sizeof def);
    if (st != CLATTN_SUCCESS) {
      *out = clattn__tuning_table_create();
      return *out ? st : CLATTN_ERROR_OUT_OF_MEMORY;
    }
    path = def;
  }
  int found = 0;
  return clattn__tuning_file_load(path, out, &found);
}

clattn_status clattn_tuning_table_destroy(clattn_tuning_table* table) {
  clattn__tuning_table_destroy(table);
  return CLATTN_SUCCESS;
}

clattn_status clattn_tuning_table_count(const clattn_tuning_table* table, size_t* count) {
  if (!table || !count) return CLATTN_ERROR_INVALID_ARGUMENT;
  *count = table->count;
  return CLATTN_SUCCESS;
}

clattn_status clattn_tuning_table_get(const clattn_tuning_table* table, size_t index,
                                      clattn_tuning_entry* entry) {
  if (!table || !entry || entry->struct_size != sizeof(clattn_tuning_entry) ||
      index >= table->count) {
    return CLATTN_ERROR_INVALID_ARGUMENT;
  }
  *entry = table->entries[index];
  return CLATTN_SUCCESS;
}
