/* Device and host allocations, with a fault-injection hook for tests. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Allocations left before an injected failure: 0 means no injection. */
static atomic_int fault_countdown;

void clattn__test_fail_allocation(int nth) { atomic_store(&fault_countdown, nth); }

/* True when this allocation is the one a test asked to fail. */
static int fault_injected(void) {
  int left = atomic_load(&fault_countdown);
  while (left > 0) {
    if (atomic_compare_exchange_weak(&fault_countdown, &left, left - 1)) return left == 1;
  }
  return 0;
}

void* clattn__malloc(size_t bytes) { return fault_injected() ? NULL : malloc(bytes); }

void* clattn__calloc(size_t count, size_t size) {
  return fault_injected() ? NULL : calloc(count, size);
}

void* clattn__realloc(void* p, size_t bytes) { return fault_injected() ? NULL : realloc(p, bytes); }

char* clattn__strdup(const char* s) {
  size_t n = strlen(s) + 1;
  char* copy = clattn__malloc(n);
  if (copy) memcpy(copy, s, n);
  return copy;
}

clattn_status clattn__buffer_create(clattn_context* ctx, cl_mem_flags flags, size_t bytes,
                                    const void* host, cl_mem* out) {
  *out = NULL;
  if (fault_injected()) {
    return clattn__fail_cl(ctx, CL_MEM_OBJECT_ALLOCATION_FAILURE, "clCreateBuffer (injected)",
                           __FILE__, __LINE__);
  }
  cl_int err = CL_SUCCESS;
  if (host) flags |= CL_MEM_COPY_HOST_PTR;
  cl_mem mem = clCreateBuffer(ctx->cl_ctx, flags, bytes, (void*)host, &err);
  if (err != CL_SUCCESS) return clattn__fail_cl(ctx, err, "clCreateBuffer", __FILE__, __LINE__);
  *out = mem;
  return CLATTN_SUCCESS;
}

clattn_status clattn__buffer_check(const clattn_context* ctx, cl_mem mem, const char* name,
                                   size_t offset, size_t elements, size_t item,
                                   size_t max_elements) {
  size_t bytes = 0;
  cl_mem_object_type type = 0;
  cl_context owner = NULL;
  cl_int err = clGetMemObjectInfo(mem, CL_MEM_TYPE, sizeof type, &type, NULL);
  if (err == CL_SUCCESS) err = clGetMemObjectInfo(mem, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
  if (err == CL_SUCCESS) err = clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof bytes, &bytes, NULL);
  if (err != CL_SUCCESS) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "%s is not a valid cl_mem (%s)", name,
                        clattn__cl_error_name(err));
  }
  /* Drivers need not validate the object's kind (PoCL reads any handle's fields as a
   * cl_mem's), so a queue or context passed as a buffer shows as a type no memory object
   * has (CL_MEM_OBJECT_BUFFER 0x10F0 .. CL_MEM_OBJECT_PIPE 0x10F7). */
  if (type < CL_MEM_OBJECT_BUFFER || type > CL_MEM_OBJECT_BUFFER + 7) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "%s is not a valid cl_mem (its CL_MEM_TYPE 0x%x is no memory object "
                        "type: another kind of OpenCL object?)",
                        name, (unsigned)type);
  }
  if (type != CL_MEM_OBJECT_BUFFER) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "%s is an image or pipe (cl_mem type 0x%x), not a buffer", name,
                        (unsigned)type);
  }
  if (ctx && owner != ctx->cl_ctx) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "%s belongs to another cl_context than the context's", name);
  }
  const size_t need = offset > SIZE_MAX - elements ? SIZE_MAX : offset + elements;
  if (need == SIZE_MAX || need > max_elements || need > bytes / item) {
    return clattn__fail(ctx, CLATTN_ERROR_BUFFER_TOO_SMALL,
                        "%s holds %zu bytes; offset %zu + %zu elements need %zu bytes", name, bytes,
                        offset, elements, need > SIZE_MAX / item ? SIZE_MAX : need * item);
  }
  return CLATTN_SUCCESS;
}
