/* Contexts: on a device clattn picks, or on the caller's own OpenCL objects. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Checks the options' struct_size; *copy gets them with the fields an older caller does not
 * know left 0. */
static clattn_status options_check(const clattn_context_options* options,
                                   clattn_context_options* copy) {
  memset(copy, 0, sizeof *copy);
  copy->struct_size = sizeof *copy;
  if (!options) return CLATTN_SUCCESS;
  return clattn__struct_copy(NULL, "clattn_context_options", options,
                             sizeof(clattn_context_options), sizeof(clattn_context_options), copy);
}

/* Allocates a context with its lock, program cache and kernel directory, holding no
 * OpenCL object yet. */
static clattn_status context_alloc(const clattn_context_options* options, clattn_context** out) {
  clattn_context* ctx = clattn__calloc(1, sizeof *ctx);
  if (!ctx) return clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  if (pthread_mutex_init(&ctx->error_lock, NULL) != 0) {
    free(ctx);
    return clattn__fail(NULL, CLATTN_ERROR_INTERNAL, "pthread_mutex_init failed");
  }
  clattn_status status = clattn__program_cache_create(&ctx->programs);
  if (status == CLATTN_SUCCESS) status = clattn__plan_cache_create(&ctx->plans);
  if (status == CLATTN_SUCCESS) status = clattn__workspace_pool_create(&ctx->workspace);
  if (status != CLATTN_SUCCESS) {
    clattn_context_destroy(ctx);
    return status;
  }
  const char* dir = options->kernel_dir ? options->kernel_dir : getenv("CLATTN_KERNEL_DIR");
  if (dir && *dir) {
    if (strlen(dir) >= sizeof ctx->kernel_dir) {
      clattn_context_destroy(ctx);
      return clattn__fail(NULL, CLATTN_ERROR_INVALID_ARGUMENT, "kernel directory path too long");
    }
    strcpy(ctx->kernel_dir, dir);
  }
  *out = ctx;
  return CLATTN_SUCCESS;
}

/* Records the device's capabilities; the OpenCL objects are set. */
static clattn_status context_finish(clattn_context* ctx) {
  ctx->info.struct_size = sizeof ctx->info;
  clattn_status status = clattn_device_query(ctx->device, &ctx->info);
  if (status != CLATTN_SUCCESS) {
    return clattn__fail(ctx, status, "could not query the device's capabilities");
  }
  clattn__log("context on \"%s\" (%s, driver %s)", ctx->info.name, ctx->info.platform_name,
              ctx->info.driver_version);
  status = clattn__gemm_choose(ctx);
  if (status != CLATTN_SUCCESS) return status;
  clattn__gemm_device_defaults(ctx); /* before the tuning file, whose entries win */
  clattn__tuning_context_init(ctx);  /* never fails: a bad tuning file means defaults */
  return CLATTN_SUCCESS;
}

clattn_status clattn_context_create(const clattn_context_options* given, clattn_context** out) {
  if (!out) return CLATTN_ERROR_INVALID_ARGUMENT;
  *out = NULL;
  clattn_context_options copy;
  clattn_status status = options_check(given, &copy);
  if (status != CLATTN_SUCCESS) return status;
  const clattn_context_options* options = &copy;

  cl_platform_id platform = NULL;
  cl_device_id device = NULL;
  status = clattn__device_select(options->device, &platform, &device, NULL, NULL);
  if (status != CLATTN_SUCCESS) return status;

  clattn_context* ctx = NULL;
  status = context_alloc(options, &ctx);
  if (status != CLATTN_SUCCESS) return status;

  cl_int err = CL_SUCCESS;
  cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)platform, 0};
  ctx->cl_ctx = clCreateContext(props, 1, &device, NULL, NULL, &err);
  CLATTN__CL_CHECK(ctx, err);
  CLATTN__CL_CHECK(ctx, clRetainDevice(device));
  ctx->device = device;
  ctx->queue = clCreateCommandQueue(ctx->cl_ctx, device, CL_QUEUE_PROFILING_ENABLE, &err);
  CLATTN__CL_CHECK(ctx, err);
  CLATTN__CHECK(context_finish(ctx));
  *out = ctx;
  ctx = NULL;
cleanup:
  if (ctx) clattn__error_to_thread(ctx);
  clattn_context_destroy(ctx);
  return status;
}

/* 1 when dev is one of the devices of some platform (compared as handles, never
 * dereferenced: a queue's "device" read from another kind of object is any pointer). */
static int known_device(cl_device_id dev) {
  cl_platform_id platforms[16];
  cl_uint np = 0;
  if (clGetPlatformIDs(16, platforms, &np) != CL_SUCCESS) return 0;
  if (np > 16) np = 16;
  for (cl_uint p = 0; p < np; ++p) {
    cl_device_id devices[64];
    cl_uint nd = 0;
    if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 64, devices, &nd) != CL_SUCCESS) continue;
    if (nd > 64) nd = 64;
    for (cl_uint d = 0; d < nd; ++d) {
      if (devices[d] == dev) return 1;
    }
  }
  return 0;
}

clattn_status clattn__queue_check(const clattn_context* ctx, cl_command_queue queue) {
  cl_context qctx = NULL;
  cl_device_id qdev = NULL;
  cl_command_queue_properties props = 0;
  cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
  if (err == CL_SUCCESS) {
    err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
  }
  if (err == CL_SUCCESS) {
    err = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
  }
  if (err != CL_SUCCESS) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_QUEUE,
                        "the queue is not a valid command queue (%s)", clattn__cl_error_name(err));
  }
  /* Who the queue belongs to before what it is: drivers need not validate the object's kind
   * (PoCL reads a cl_mem's fields as a queue's, whose flags then look like properties;
   * Oclgrind gives a NULL context): a NULL context, or a device that is no platform's
   * device, shows another kind of object. */
  if (qctx != ctx->cl_ctx || qdev != ctx->device) {
    if (!qctx || !qdev || (qdev != ctx->device && !known_device(qdev))) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_QUEUE,
                          "the queue is not a valid command queue (its context or device is "
                          "not one: another kind of OpenCL object?)");
    }
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_QUEUE,
                        "the command queue belongs to another cl_context or device");
  }
  if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_QUEUE,
                        "the command queue is out-of-order; clattn needs an in-order queue");
  }
  return CLATTN_SUCCESS;
}

clattn_status clattn__call_queue(const clattn_context* ctx, cl_command_queue* queue) {
  if (!*queue || *queue == ctx->queue) {
    *queue = ctx->queue;
    return CLATTN_SUCCESS;
  }
  return clattn__queue_check(ctx, *queue);
}

clattn_status clattn__wait_list_check(const clattn_context* ctx, cl_uint num_wait,
                                      const cl_event* wait) {
  if (num_wait && !wait) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "num_wait_events is %u but wait_events is NULL", num_wait);
  }
  return CLATTN_SUCCESS;
}

clattn_status clattn_context_create_from_cl(cl_context cl_ctx, cl_device_id device,
                                            cl_command_queue queue,
                                            const clattn_context_options* given,
                                            clattn_context** out) {
  if (!out) return CLATTN_ERROR_INVALID_ARGUMENT;
  *out = NULL;
  if (!cl_ctx || !device || !queue) {
    return clattn__fail(NULL, CLATTN_ERROR_INVALID_ARGUMENT,
                        "cl_context, device and queue must not be NULL");
  }
  clattn_context_options copy;
  clattn_status status = options_check(given, &copy);
  if (status != CLATTN_SUCCESS) return status;

  clattn_context* ctx = NULL;
  status = context_alloc(&copy, &ctx);
  if (status != CLATTN_SUCCESS) return status;
  /* Validate before retaining, so a failed call leaves the caller's counts untouched. */
  ctx->cl_ctx = cl_ctx;
  ctx->device = device;
  status = clattn__queue_check(ctx, queue);
  ctx->cl_ctx = NULL;
  ctx->device = NULL;
  if (status != CLATTN_SUCCESS) goto cleanup;
  CLATTN__CL_CHECK(ctx, clRetainContext(cl_ctx));
  ctx->cl_ctx = cl_ctx;
  CLATTN__CL_CHECK(ctx, clRetainDevice(device));
  ctx->device = device;
  CLATTN__CL_CHECK(ctx, clRetainCommandQueue(queue));
  ctx->queue = queue;
  CLATTN__CHECK(context_finish(ctx));
  *out = ctx;
  ctx = NULL;
cleanup:
  if (ctx) clattn__error_to_thread(ctx);
  clattn_context_destroy(ctx);
  return status;
}

clattn_status clattn_context_destroy(clattn_context* ctx) {
  if (!ctx) return CLATTN_SUCCESS;
  clattn__tuning_context_release(ctx);
  clattn__plan_cache_destroy(ctx->plans); /* its kernels before their programs */
  clattn__workspace_pool_destroy(ctx->workspace);
  clattn__program_cache_destroy(ctx->programs);
  clattn__gemm_release_programs(); /* CLBlast's programs retain the cl_context */
  if (ctx->queue) clReleaseCommandQueue(ctx->queue);
  if (ctx->device) clReleaseDevice(ctx->device);
  if (ctx->cl_ctx) clReleaseContext(ctx->cl_ctx);
  free(ctx->build_log);
  pthread_mutex_destroy(&ctx->error_lock);
  free(ctx);
  return CLATTN_SUCCESS;
}

clattn_status clattn_context_get_cl(const clattn_context* ctx, cl_context* cl_ctx,
                                    cl_device_id* device, cl_command_queue* queue) {
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (cl_ctx) *cl_ctx = ctx->cl_ctx;
  if (device) *device = ctx->device;
  if (queue) *queue = ctx->queue;
  return CLATTN_SUCCESS;
}

clattn_status clattn_context_get_device_info(const clattn_context* ctx, clattn_device_info* info) {
  if (!ctx || !info || info->struct_size != sizeof(clattn_device_info)) {
    return CLATTN_ERROR_INVALID_ARGUMENT;
  }
  *info = ctx->info;
  return CLATTN_SUCCESS;
}
