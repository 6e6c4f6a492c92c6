/* Kernel sources (embedded or from a directory) and the per-context program cache:
 * each (source, build options) pair is built once per context, under a lock. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernel_sources.h"

typedef struct program_entry {
  char* source_name;
  char* options;
  cl_program program;
} program_entry;

struct clattn__program_cache {
  pthread_mutex_t lock;
  program_entry* entries;
  size_t count, capacity;
  size_t builds; /* programs built (successfully or not), for tests */
};

clattn_status clattn__program_cache_create(clattn__program_cache** out) {
  clattn__program_cache* cache = clattn__calloc(1, sizeof *cache);
  if (!cache) return clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  if (pthread_mutex_init(&cache->lock, NULL) != 0) {
    free(cache);
    return clattn__fail(NULL, CLATTN_ERROR_INTERNAL, "pthread_mutex_init failed");
  }
  *out = cache;
  return CLATTN_SUCCESS;
}

void clattn__program_cache_destroy(clattn__program_cache* cache) {
  if (!cache) return;
  for (size_t i = 0; i < cache->count; ++i) {
    clReleaseProgram(cache->entries[i].program);
    free(cache->entries[i].source_name);
    free(cache->entries[i].options);
  }
  free(cache->entries);
  pthread_mutex_destroy(&cache->lock);
  free(cache);
}

static const clattn__kernel_source* embedded_source(const char* name) {
  for (size_t i = 0; i < clattn__kernel_source_count; ++i) {
    if (strcmp(clattn__kernel_sources[i].name, name) == 0) return &clattn__kernel_sources[i];
  }
  return NULL;
}

/* Reads <dir>/<name>.cl into a malloc'd string. */
static clattn_status read_override(const clattn_context* ctx, const char* dir, const char* name,
                                   char** out) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s.cl", dir, name);
  char* text = NULL;
  FILE* f = NULL;
  clattn_status status =
      clattn__file_open_read(ctx, CLATTN_ERROR_KERNEL_SOURCE, "kernel source", path, &f, NULL);
  if (status != CLATTN_SUCCESS) return status;
  if (fseek(f, 0, SEEK_END) != 0) goto read_error;
  long size = ftell(f);
  if (size < 0 || fseek(f, 0, SEEK_SET) != 0) goto read_error;
  text = clattn__malloc((size_t)size + 1);
  if (!text) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  if (fread(text, 1, (size_t)size, f) != (size_t)size) goto read_error;
  text[size] = '\0';
  *out = text;
  text = NULL;
  goto cleanup;
read_error:
  status = clattn__fail(ctx, CLATTN_ERROR_KERNEL_SOURCE, "cannot read kernel source %s", path);
cleanup:
  free(text);
  fclose(f);
  return status;
}

clattn_status clattn__kernel_source_read(const clattn_context* ctx, const char* kernel_dir,
                                         const char* name, char** out) {
  if (kernel_dir && kernel_dir[0]) return read_override(ctx, kernel_dir, name, out);
  const clattn__kernel_source* src = embedded_source(name);
  if (!src) {
    return clattn__fail(ctx, CLATTN_ERROR_INTERNAL, "no embedded kernel source \"%s\"", name);
  }
  *out = clattn__strdup(src->text);
  if (!*out) return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  return CLATTN_SUCCESS;
}

/* The text of one kernel file, malloc'd. */
static clattn_status load_source(const clattn_context* ctx, const char* name, char** out) {
  return clattn__kernel_source_read(ctx, ctx->kernel_dir, name, out);
}

static clattn_status build_program(clattn_context* ctx, const char* source_name,
                                   const char* options, cl_program* out) {
  clattn_status status = CLATTN_SUCCESS;
  char* common = NULL;
  char* body = NULL;
  char* full_options = NULL;
  char* log = NULL;
  cl_program program = NULL;
  CLATTN__CHECK(load_source(ctx, "common", &common));
  CLATTN__CHECK(load_source(ctx, source_name, &body));

  /* common.cl is prepended, so kernels need no #include. */
  const char* parts[] = {common, "\n", body};
  cl_int err = CL_SUCCESS;
  program = clCreateProgramWithSource(ctx->cl_ctx, 3, parts, NULL, &err);
  CLATTN__CL_CHECK(ctx, err);

  size_t n = strlen(options) + 64;
  full_options = clattn__malloc(n);
  if (!full_options) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  snprintf(full_options, n, "-cl-std=CL1.2 %s", options);
  clattn__log("building %s.cl with \"%s\"", source_name, full_options);
  err = clBuildProgram(program, 1, &ctx->device, full_options, NULL, NULL);
  if (err != CL_SUCCESS) {
    size_t log_size = 0;
    clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &log_size);
    log = clattn__calloc(log_size + 1, 1);
    if (log) {
      clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, log_size, log, NULL);
      clattn__set_build_log(ctx, log);
    }
    status = clattn__fail(ctx, CLATTN_ERROR_BUILD_FAILED,
                          "building %s.cl with \"%s\" failed: %s (%d); build log:\n%.1200s",
                          source_name, full_options, clattn__cl_error_name(err), (int)err,
                          log ? log : "(unavailable)");
    goto cleanup;
  }
  *out = program;
  program = NULL;
cleanup:
  if (program) clReleaseProgram(program);
  free(common);
  free(body);
  free(full_options);
  free(log);
  return status;
}

clattn_status clattn__program_get(clattn_context* ctx, const char* source_name, const char* options,
                                  cl_program* program) {
  clattn__program_cache* cache = ctx->programs;
  clattn_status status = CLATTN_SUCCESS;
  pthread_mutex_lock(&cache->lock);
  for (size_t i = 0; i < cache->count; ++i) {
    if (strcmp(cache->entries[i].source_name, source_name) == 0 &&
        strcmp(cache->entries[i].options, options) == 0) {
      *program = cache->entries[i].program;
      goto cleanup;
    }
  }
  if (cache->count == cache->capacity) {
    size_t capacity = cache->capacity ? 2 * cache->capacity : 8;
    program_entry* entries = clattn__realloc(cache->entries, capacity * sizeof *entries);
    if (!entries) {
      status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
      goto cleanup;
    }
    cache->entries = entries;
    cache->capacity = capacity;
  }
  /* Building under the lock makes concurrent first uses wait for one build. */
  cl_program built = NULL;
  cache->builds++;
  CLATTN__CHECK(build_program(ctx, source_name, options, &built));
  program_entry* e = &cache->entries[cache->count];
  e->source_name = clattn__strdup(source_name);
  e->options = clattn__strdup(options);
  if (!e->source_name || !e->options) {
    free(e->source_name);
    free(e->options);
    clReleaseProgram(built);
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  e->program = built;
  cache->count++;
  *program = built;
cleanup:
  pthread_mutex_unlock(&cache->lock);
  return status;
}

clattn_status clattn__kernel_create(clattn_context* ctx, const char* source_name,
                                    const char* options, const char* kernel_name,
                                    cl_kernel* kernel) {
  cl_program program = NULL;
  clattn_status status = clattn__program_get(ctx, source_name, options, &program);
  if (status != CLATTN_SUCCESS) return status;
  cl_int err = CL_SUCCESS;
  *kernel = clCreateKernel(program, kernel_name, &err);
  if (err != CL_SUCCESS) {
    *kernel = NULL;
    return clattn__fail_cl(ctx, err, "clCreateKernel", __FILE__, __LINE__);
  }
  return CLATTN_SUCCESS;
}

size_t clattn__program_build_count(clattn_context* ctx) {
  clattn__program_cache* cache = ctx->programs;
  pthread_mutex_lock(&cache->lock);
  size_t n = cache->builds;
  pthread_mutex_unlock(&cache->lock);
  return n;
}
