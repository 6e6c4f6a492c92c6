/* The context's last error message, build log, and optional logging (CLATTN_LOG). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int log_enabled(void) {
  const char* v = getenv("CLATTN_LOG");
  return v && *v && strcmp(v, "0") != 0;
}

void clattn__log(const char* fmt, ...) {
  if (!log_enabled()) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("clattn: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* The context is logically const for callers; its error record is mutable state. */
static clattn_context* mutable_ctx(const clattn_context* ctx) { return (clattn_context*)ctx; }

/* Messages of calls that have no context to keep them in (context creation, device
 * selection), per thread. */
static _Thread_local char thread_last_error[sizeof(((clattn_context*)0)->last_error)];

static clattn_status record(const clattn_context* cctx, clattn_status status, const char* fmt,
                            va_list ap) {
  char msg[sizeof(((clattn_context*)0)->last_error)];
  vsnprintf(msg, sizeof msg, fmt, ap);
  clattn__log("%s: %s", clattn_status_name(status), msg);
  if (cctx) {
    clattn_context* ctx = mutable_ctx(cctx);
    pthread_mutex_lock(&ctx->error_lock);
    memcpy(ctx->last_error, msg, sizeof msg);
    pthread_mutex_unlock(&ctx->error_lock);
  } else {
    memcpy(thread_last_error, msg, sizeof msg);
  }
  return status;
}

clattn_status clattn__fail(const clattn_context* ctx, clattn_status status, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  record(ctx, status, fmt, ap);
  va_end(ap);
  return status;
}

clattn_status clattn__fail_cl(const clattn_context* ctx, cl_int err, const char* call,
                              const char* file, int line) {
  clattn_status status;
  switch (err) {
    case CL_OUT_OF_HOST_MEMORY:
    case CL_OUT_OF_RESOURCES:
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
    case CL_INVALID_BUFFER_SIZE:
      status = CLATTN_ERROR_OUT_OF_MEMORY;
      break;
    case CL_BUILD_PROGRAM_FAILURE:
      status = CLATTN_ERROR_BUILD_FAILED;
      break;
    case CL_DEVICE_NOT_FOUND:
      status = CLATTN_ERROR_NO_DEVICE;
      break;
    default:
      status = CLATTN_ERROR_OPENCL;
  }
  /* Keep only the function name of the call expression. */
  char fn[64];
  size_t n = strcspn(call, "(");
  if (n >= sizeof fn) n = sizeof fn - 1;
  memcpy(fn, call, n);
  fn[n] = '\0';
  const char* base = strrchr(file, '/');
  return clattn__fail(ctx, status, "%s failed: %s (%d) at %s:%d", fn, clattn__cl_error_name(err),
                      (int)err, base ? base + 1 : file, line);
}

void clattn__error_to_thread(const clattn_context* cctx) {
  clattn_context* ctx = mutable_ctx(cctx);
  pthread_mutex_lock(&ctx->error_lock);
  memcpy(thread_last_error, ctx->last_error, sizeof thread_last_error);
  pthread_mutex_unlock(&ctx->error_lock);
}

void clattn__set_build_log(const clattn_context* cctx, const char* log) {
  clattn_context* ctx = mutable_ctx(cctx);
  char* copy = log ? clattn__strdup(log) : NULL;
  pthread_mutex_lock(&ctx->error_lock);
  free(ctx->build_log);
  ctx->build_log = copy;
  pthread_mutex_unlock(&ctx->error_lock);
}

clattn_status clattn__copy_out(const char* text, char* buf, size_t buf_size, size_t* needed) {
  size_t len = strlen(text);
  if (needed) *needed = len + 1;
  if (buf && buf_size > 0) {
    size_t n = len < buf_size - 1 ? len : buf_size - 1;
    memcpy(buf, text, n);
    buf[n] = '\0';
  }
  return CLATTN_SUCCESS;
}

clattn_status clattn_context_get_last_error(const clattn_context* ctx, char* buf, size_t buf_size,
                                            size_t* needed) {
  if (!buf && buf_size > 0) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (!ctx) return clattn__copy_out(thread_last_error, buf, buf_size, needed);
  clattn_context* m = mutable_ctx(ctx);
  pthread_mutex_lock(&m->error_lock);
  clattn_status status = clattn__copy_out(m->last_error, buf, buf_size, needed);
  pthread_mutex_unlock(&m->error_lock);
  return status;
}

clattn_status clattn_context_get_build_log(const clattn_context* ctx, char* buf, size_t buf_size,
                                           size_t* needed) {
  if (!ctx || (!buf && buf_size > 0)) return CLATTN_ERROR_INVALID_ARGUMENT;
  clattn_context* m = mutable_ctx(ctx);
  pthread_mutex_lock(&m->error_lock);
  clattn_status status = clattn__copy_out(m->build_log ? m->build_log : "", buf, buf_size, needed);
  pthread_mutex_unlock(&m->error_lock);
  return status;
}

const char* clattn__cl_error_name(cl_int err) {
  switch (err) {
#define CASE(x) \
  case x:       \
    return #x;
    CASE(CL_SUCCESS)
    CASE(CL_DEVICE_NOT_FOUND)
    CASE(CL_DEVICE_NOT_AVAILABLE)
    CASE(CL_COMPILER_NOT_AVAILABLE)
    CASE(CL_MEM_OBJECT_ALLOCATION_FAILURE)
    CASE(CL_OUT_OF_RESOURCES)
    CASE(CL_OUT_OF_HOST_MEMORY)
    CASE(CL_PROFILING_INFO_NOT_AVAILABLE)
    CASE(CL_MEM_COPY_OVERLAP)
    CASE(CL_IMAGE_FORMAT_MISMATCH)
    CASE(CL_IMAGE_FORMAT_NOT_SUPPORTED)
    CASE(CL_BUILD_PROGRAM_FAILURE)
    CASE(CL_MAP_FAILURE)
    CASE(CL_MISALIGNED_SUB_BUFFER_OFFSET)
    CASE(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    CASE(CL_COMPILE_PROGRAM_FAILURE)
    CASE(CL_LINKER_NOT_AVAILABLE)
    CASE(CL_LINK_PROGRAM_FAILURE)
    CASE(CL_DEVICE_PARTITION_FAILED)
    CASE(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    CASE(CL_INVALID_VALUE)
    CASE(CL_INVALID_DEVICE_TYPE)
    CASE(CL_INVALID_PLATFORM)
    CASE(CL_INVALID_DEVICE)
    CASE(CL_INVALID_CONTEXT)
    CASE(CL_INVALID_QUEUE_PROPERTIES)
    CASE(CL_INVALID_COMMAND_QUEUE)
    CASE(CL_INVALID_HOST_PTR)
    CASE(CL_INVALID_MEM_OBJECT)
    CASE(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
    CASE(CL_INVALID_IMAGE_SIZE)
    CASE(CL_INVALID_SAMPLER)
    CASE(CL_INVALID_BINARY)
    CASE(CL_INVALID_BUILD_OPTIONS)
    CASE(CL_INVALID_PROGRAM)
    CASE(CL_INVALID_PROGRAM_EXECUTABLE)
    CASE(CL_INVALID_KERNEL_NAME)
    CASE(CL_INVALID_KERNEL_DEFINITION)
    CASE(CL_INVALID_KERNEL)
    CASE(CL_INVALID_ARG_INDEX)
    CASE(CL_INVALID_ARG_VALUE)
    CASE(CL_INVALID_ARG_SIZE)
    CASE(CL_INVALID_KERNEL_ARGS)
    CASE(CL_INVALID_WORK_DIMENSION)
    CASE(CL_INVALID_WORK_GROUP_SIZE)
    CASE(CL_INVALID_WORK_ITEM_SIZE)
    CASE(CL_INVALID_GLOBAL_OFFSET)
    CASE(CL_INVALID_EVENT_WAIT_LIST)
    CASE(CL_INVALID_EVENT)
    CASE(CL_INVALID_OPERATION)
    CASE(CL_INVALID_GL_OBJECT)
    CASE(CL_INVALID_BUFFER_SIZE)
    CASE(CL_INVALID_MIP_LEVEL)
    CASE(CL_INVALID_GLOBAL_WORK_SIZE)
    CASE(CL_INVALID_PROPERTY)
#undef CASE
    default:
      return "CL_UNKNOWN_ERROR";
  }
}
