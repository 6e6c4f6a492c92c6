/* The context's workspace: scratch buffers that calls borrow for their enqueue and keep in
 * order through events, so that a steady-state call allocates nothing, whatever queue or
 * thread it comes from. */
#include <stdlib.h>

#include "internal.h"

typedef struct slot {
  cl_mem mem;
  size_t bytes;
  cl_event last; /* the last command of the call that used it last; NULL when none */
  int busy;      /* a call is enqueuing on it */
} slot;

struct clattn__workspace_pool {
  pthread_mutex_t lock;
  slot* slots;
  size_t count, capacity;
};

clattn_status clattn__workspace_pool_create(clattn__workspace_pool** out) {
  clattn__workspace_pool* pool = clattn__calloc(1, sizeof *pool);
  if (!pool) return clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  if (pthread_mutex_init(&pool->lock, NULL) != 0) {
    free(pool);
    return clattn__fail(NULL, CLATTN_ERROR_INTERNAL, "pthread_mutex_init failed");
  }
  *out = pool;
  return CLATTN_SUCCESS;
}

void clattn__workspace_pool_destroy(clattn__workspace_pool* pool) {
  if (!pool) return;
  for (size_t i = 0; i < pool->count; ++i) {
    if (pool->slots[i].mem) clReleaseMemObject(pool->slots[i].mem);
    if (pool->slots[i].last) clReleaseEvent(pool->slots[i].last);
  }
  free(pool->slots);
  pthread_mutex_destroy(&pool->lock);
  free(pool);
}

/* 1 when an event's command has finished (or failed: nothing of it runs any more). */
static int finished(cl_event e) {
  cl_int state = CL_QUEUED;
  if (clGetEventInfo(e, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof state, &state, NULL) !=
      CL_SUCCESS) {
    return 0;
  }
  return state <= CL_COMPLETE;
}

/* A free slot for `bytes`: the smallest that is large enough, else the largest (to grow),
 * else a new one. Returns its index, or (size_t)-1 when out of host memory. Locked. */
static size_t pick(clattn__workspace_pool* pool, size_t bytes) {
  size_t fit = (size_t)-1, largest = (size_t)-1;
  for (size_t i = 0; i < pool->count; ++i) {
    const slot* s = &pool->slots[i];
    if (s->busy) continue;
    if (s->bytes >= bytes && (fit == (size_t)-1 || s->bytes < pool->slots[fit].bytes)) fit = i;
    if (largest == (size_t)-1 || s->bytes > pool->slots[largest].bytes) largest = i;
  }
  if (fit != (size_t)-1) return fit;
  if (largest != (size_t)-1) return largest;
  if (pool->count == pool->capacity) {
    size_t cap = pool->capacity ? 2 * pool->capacity : 4;
    slot* grown = clattn__realloc(pool->slots, cap * sizeof *grown);
    if (!grown) return (size_t)-1;
    pool->slots = grown;
    pool->capacity = cap;
  }
  pool->slots[pool->count] = (slot){.mem = NULL};
  return pool->count++;
}

clattn_status clattn__workspace_acquire(clattn_context* ctx, size_t bytes,
                                        clattn__workspace_lease* lease) {
  clattn__workspace_pool* pool = ctx->workspace;
  clattn_status status = CLATTN_SUCCESS;
  pthread_mutex_lock(&pool->lock);
  const size_t i = pick(pool, bytes);
  if (i == (size_t)-1) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  slot* s = &pool->slots[i];
  if (s->bytes < bytes) {
    /* Growing: the old buffer is freed once the commands that use it complete. */
    cl_mem grown = NULL;
    CLATTN__CHECK(clattn__buffer_create(ctx, CL_MEM_READ_WRITE, bytes, NULL, &grown));
    if (s->mem) clReleaseMemObject(s->mem);
    if (s->last) clReleaseEvent(s->last); /* it ordered the old buffer only */
    s->mem = grown;
    s->bytes = bytes;
    s->last = NULL;
  }
  if (s->last && finished(s->last)) {
    clReleaseEvent(s->last);
    s->last = NULL;
  }
  s->busy = 1;
  lease->slot = i;
  lease->mem = s->mem;
  lease->previous = s->last;
cleanup:
  pthread_mutex_unlock(&pool->lock);
  return status;
}

void clattn__workspace_release(clattn_context* ctx, const clattn__workspace_lease* lease,
                               cl_event last) {
  clattn__workspace_pool* pool = ctx->workspace;
  pthread_mutex_lock(&pool->lock);
  slot* s = &pool->slots[lease->slot];
  if (last) {
    clRetainEvent(last);
    if (s->last) clReleaseEvent(s->last);
    s->last = last;
  }
  s->busy = 0;
  pthread_mutex_unlock(&pool->lock);
}

clattn_status clattn_attention_workspace_size(clattn_context* ctx,
                                              const clattn_attention_desc* desc,
                                              const clattn_attention_config* config,
                                              size_t* bytes) {
  if (!ctx) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (!bytes) return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "bytes is NULL");
  *bytes = 0;
  clattn__attention_shape sh;
  clattn__plan* plan = NULL;
  clattn_status status = clattn__attention_shape_resolve(ctx, desc, &sh);
  if (status != CLATTN_SUCCESS) return status;
  status = clattn__plan_get(ctx, &sh, config, &plan);
  if (status != CLATTN_SUCCESS) return status;
  *bytes = clattn__plan_workspace_bytes(plan, &sh);
  return CLATTN_SUCCESS;
}
