/* Plans: a shape class's variant, config and kernel objects, resolved once and kept by the
 * context, so that a call checks its buffers and enqueues, nothing else.
 *
 * Config resolution, over the registry: a config given field by field is the caller's
 * (USER); one left to clattn takes the tuning file's entry for the shape class if it fits
 * (TUNED), else the preferred variant's default for the device (HEURISTIC), shrunk step by
 * step where it does not fit (FALLBACK). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A kernel of an operation outside the variants, with what identifies it. */
typedef struct op_entry {
  clattn__op_kernel op;
  const char* source; /* static strings */
  const char* name;
  char* options;
  struct op_entry* next;
} op_entry;

struct clattn__plan_cache {
  pthread_mutex_t lock;
  clattn__plan* head;
  op_entry* ops;
};

clattn_status clattn__plan_cache_create(clattn__plan_cache** out) {
  clattn__plan_cache* cache = clattn__calloc(1, sizeof *cache);
  if (!cache) return clattn__fail(NULL, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  if (pthread_mutex_init(&cache->lock, NULL) != 0) {
    free(cache);
    return clattn__fail(NULL, CLATTN_ERROR_INTERNAL, "pthread_mutex_init failed");
  }
  *out = cache;
  return CLATTN_SUCCESS;
}

static void plan_destroy(clattn__plan* p) {
  if (!p) return;
  for (int i = 0; i < CLATTN__VARIANT_MAX_KERNELS; ++i) {
    if (p->kernels[i]) clReleaseKernel(p->kernels[i]);
  }
  pthread_mutex_destroy(&p->lock);
  free(p);
}

static void op_destroy(op_entry* e) {
  if (!e) return;
  if (e->op.kernel) clReleaseKernel(e->op.kernel);
  pthread_mutex_destroy(&e->op.lock);
  free(e->options);
  free(e);
}

void clattn__plan_cache_destroy(clattn__plan_cache* cache) {
  if (!cache) return;
  while (cache->head) {
    clattn__plan* next = cache->head->next;
    plan_destroy(cache->head);
    cache->head = next;
  }
  while (cache->ops) {
    op_entry* next = cache->ops->next;
    op_destroy(cache->ops);
    cache->ops = next;
  }
  pthread_mutex_destroy(&cache->lock);
  free(cache);
}

static clattn__plan_key make_key(const clattn__attention_shape* sh,
                                 const clattn_attention_config* requested) {
  clattn__plan_key k;
  memset(&k, 0, sizeof k); /* compared with memcmp: no stray padding */
  k.dtype = sh->dtype;
  k.head_dim = sh->head_dim;
  k.group = sh->heads_q / sh->heads_kv;
  k.causal = sh->causal;
  k.seq_bucket = clattn__seq_bucket(sh->seq_q > sh->seq_kv ? sh->seq_q : sh->seq_kv);
  k.seq_q_bucket = clattn__seq_bucket(sh->seq_q);
  k.paged = sh->paged;
  if (requested) {
    k.variant = requested->variant;
    k.block_m = requested->block_m;
    k.block_n = requested->block_n;
    k.rows_per_item = requested->rows_per_item;
    k.threads_per_row = requested->threads_per_row;
    k.num_splits = requested->num_splits;
  }
  return k;
}

/* Creates the variant's kernels for a complete config and checks the main one against what
 * the build reports. On failure nothing is left in p->kernels. */
static clattn_status kernels_create(clattn_context* ctx, const clattn__attention_shape* sh,
                                    const clattn__variant* v, const clattn_attention_config* c,
                                    clattn__plan* p) {
  char options[256];
  v->build_options(sh, c, options, sizeof options);
  clattn_status status = CLATTN_SUCCESS;
  for (int i = 0; i < CLATTN__VARIANT_MAX_KERNELS && v->kernels[i]; ++i) {
    CLATTN__CHECK(clattn__kernel_create(ctx, v->source, options, v->kernels[i], &p->kernels[i]));
    CLATTN__CL_CHECK(ctx, clGetKernelWorkGroupInfo(
                              p->kernels[i], ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                              sizeof p->kernel_group_limit[i], &p->kernel_group_limit[i], NULL));
  }
  const size_t wg = p->kernel_group_limit[0];
  cl_ulong local = 0;
  CLATTN__CL_CHECK(ctx,
                   clGetKernelWorkGroupInfo(p->kernels[0], ctx->device, CL_KERNEL_LOCAL_MEM_SIZE,
                                            sizeof local, &local, NULL));
  const size_t group = v->group_size(c);
  if (wg < group || local > ctx->info.local_mem_size) {
    status = clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "kernel %s (%s) allows %zu work-items per group and needs %llu bytes "
                          "of local memory; the config needs %zu work-items and the device has "
                          "%llu bytes",
                          v->kernels[0], options, wg, (unsigned long long)local, group,
                          (unsigned long long)ctx->info.local_mem_size);
  }
cleanup:
  if (status != CLATTN_SUCCESS) {
    for (int i = 0; i < CLATTN__VARIANT_MAX_KERNELS; ++i) {
      if (p->kernels[i]) clReleaseKernel(p->kernels[i]);
      p->kernels[i] = NULL;
    }
  }
  return status;
}

/* Resolves the config of a new plan and creates its kernels. */
static clattn_status plan_resolve(clattn_context* ctx, const clattn__attention_shape* sh,
                                  const clattn_attention_config* requested, clattn__plan* p) {
  clattn_attention_config c;
  memset(&c, 0, sizeof c);
  if (requested) c = *requested;
  c.struct_size = sizeof c;
  /* A config given field by field is the caller's to keep; only an all-default one may
   * be shrunk to fit. */
  const int user = c.block_m || c.block_n || c.rows_per_item || c.threads_per_row || c.num_splits;
  c.source = user || c.variant != CLATTN_VARIANT_AUTO ? CLATTN_CONFIG_SOURCE_USER
                                                      : CLATTN_CONFIG_SOURCE_HEURISTIC;
  /* A config left to the library takes the tuned entry for the shape, if one fits. */
  if (!user && c.variant == CLATTN_VARIANT_AUTO) {
    clattn_attention_config tuned;
    clattn_config_source level;
    if (clattn__tuning_lookup(ctx, sh, &tuned, &level)) {
      const clattn__variant* v = clattn__variant_find(tuned.variant);
      if (v && (!sh->paged || v->reads_pages) &&
          v->check(ctx, &ctx->info, sh->head_dim, &tuned) == CLATTN_SUCCESS &&
          kernels_create(ctx, sh, v, &tuned, p) == CLATTN_SUCCESS) {
        tuned.source = level;
        p->variant = v;
        p->config = tuned;
        return CLATTN_SUCCESS;
      }
      clattn__log("the tuned config does not fit here; using the built-in default");
    }
  }
  const clattn__variant* v = c.variant == CLATTN_VARIANT_AUTO
                                 ? clattn__variant_at(clattn__variant_preferred(&ctx->info, sh))
                                 : clattn__variant_find(c.variant);
  if (!v) return clattn__fail(ctx, CLATTN_ERROR_INTERNAL, "no kernel variant suits this shape");
  if (sh->paged && !v->reads_pages) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                        "the %s variant cannot read a KV cache's pages", v->name);
  }
  c.variant = v->id;
  v->defaults(&ctx->info, sh, &c);
  clattn_status status;
  for (;;) {
    status = v->check(ctx, &ctx->info, sh->head_dim, &c);
    if (status == CLATTN_SUCCESS) status = kernels_create(ctx, sh, v, &c, p);
    if (status != CLATTN_ERROR_INVALID_CONFIG || user || !v->shrink(&c)) break;
    clattn__log("config did not fit; falling back to block_m %u block_n %u rows %u", c.block_m,
                c.block_n, c.rows_per_item);
    c.source = CLATTN_CONFIG_SOURCE_FALLBACK;
  }
  if (status == CLATTN_SUCCESS) {
    p->variant = v;
    p->config = c;
  }
  return status;
}

static clattn__plan* cache_find(clattn__plan_cache* cache, const clattn__plan_key* key) {
  for (clattn__plan* p = cache->head; p; p = p->next) {
    if (memcmp(&p->key, key, sizeof *key) == 0) return p;
  }
  return NULL;
}

clattn_status clattn__plan_get(clattn_context* ctx, const clattn__attention_shape* sh,
                               const clattn_attention_config* requested, clattn__plan** out) {
  clattn_attention_config req;
  if (requested) {
    clattn_status status =
        clattn__struct_copy(ctx, "clattn_attention_config", requested,
                            sizeof(clattn_attention_config), sizeof(clattn_attention_config), &req);
    if (status != CLATTN_SUCCESS) return status;
    if (req.variant != CLATTN_VARIANT_AUTO && !clattn__variant_find(req.variant)) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "unknown kernel variant %d",
                          (int)req.variant);
    }
    requested = &req;
  }
  const clattn__plan_key key = make_key(sh, requested);
  clattn__plan_cache* cache = ctx->plans;
  pthread_mutex_lock(&cache->lock);
  clattn__plan* found = cache_find(cache, &key);
  pthread_mutex_unlock(&cache->lock);
  if (found) {
    *out = found;
    return CLATTN_SUCCESS;
  }

  /* Made outside the lock (builds take long); a plan another thread made meanwhile wins. */
  clattn__plan* p = clattn__calloc(1, sizeof *p);
  if (!p) return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  if (pthread_mutex_init(&p->lock, NULL) != 0) {
    free(p);
    return clattn__fail(ctx, CLATTN_ERROR_INTERNAL, "pthread_mutex_init failed");
  }
  p->key = key;
  clattn_status status = plan_resolve(ctx, sh, requested, p);
  if (status != CLATTN_SUCCESS) {
    plan_destroy(p);
    return status;
  }
  pthread_mutex_lock(&cache->lock);
  found = cache_find(cache, &key);
  if (!found) {
    p->next = cache->head;
    cache->head = p;
    found = p;
    p = NULL;
  }
  pthread_mutex_unlock(&cache->lock);
  plan_destroy(p);
  *out = found;
  return CLATTN_SUCCESS;
}

size_t clattn__plan_workspace_bytes(const clattn__plan* plan,
                                    const clattn__attention_shape* shape) {
  return plan->variant->workspace_bytes(shape, &plan->config);
}

/* Alignment of a caller's workspace offset: enough for any vector load of the kernels. */
#define WORKSPACE_ALIGN 16
/* Wait lists up to this long are built on the stack. */
#define STACK_WAITS 16

clattn_status clattn__plan_enqueue(clattn_context* ctx, clattn__plan* plan,
                                   const clattn__attention_shape* sh,
                                   const clattn_attention_buffers* buffers, cl_mem workspace,
                                   size_t workspace_offset, cl_command_queue queue,
                                   cl_uint num_wait, const cl_event* wait, cl_event* event,
                                   const clattn__paged_kv* paged) {
  const size_t bytes = clattn__plan_workspace_bytes(plan, sh);
  if (bytes == SIZE_MAX || bytes > ctx->info.max_mem_alloc_size) {
    return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY,
                        "the %s variant's workspace for this shape (%zu bytes) exceeds the "
                        "device's allocation limit (%llu bytes)",
                        plan->variant->name, bytes,
                        (unsigned long long)ctx->info.max_mem_alloc_size);
  }
  clattn__launch l = {.ctx = ctx,
                      .plan = plan,
                      .shape = sh,
                      .buffers = buffers,
                      .queue = queue,
                      .num_wait = num_wait,
                      .wait = wait,
                      .event = event,
                      .paged = paged};
  if (!bytes) {
    /* No scratch: nothing to order against other calls. */
    pthread_mutex_lock(&plan->lock);
    clattn_status status = plan->variant->enqueue(&l);
    pthread_mutex_unlock(&plan->lock);
    return status;
  }

  clattn_status status = CLATTN_SUCCESS;
  clattn__workspace_lease lease = {.mem = NULL};
  int leased = 0;
  cl_event stack_waits[STACK_WAITS];
  cl_event* waits = NULL;
  cl_event last = NULL;
  if (workspace) {
    if (workspace_offset % WORKSPACE_ALIGN) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                          "workspace_offset %zu is not a multiple of %d bytes", workspace_offset,
                          WORKSPACE_ALIGN);
    }
    /* The kernels index the workspace in floats with 32-bit integers. */
    CLATTN__CHECK(clattn__buffer_check(ctx, workspace, "workspace", workspace_offset, bytes, 1,
                                       (size_t)UINT32_MAX * sizeof(float)));
    l.workspace = workspace;
    l.workspace_offset = workspace_offset;
  } else {
    CLATTN__CHECK(clattn__workspace_acquire(ctx, bytes, &lease));
    leased = 1;
    l.workspace = lease.mem;
    if (lease.previous) {
      /* The slot's previous call may still be running, on another queue. */
      const cl_uint n = num_wait + 1;
      waits = n <= STACK_WAITS ? stack_waits : clattn__malloc(n * sizeof *waits);
      if (!waits) {
        status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
        goto cleanup;
      }
      if (num_wait) memcpy(waits, wait, num_wait * sizeof *waits);
      waits[num_wait] = lease.previous;
      l.num_wait = n;
      l.wait = waits;
    }
  }
  l.event = &last;
  pthread_mutex_lock(&plan->lock);
  status = plan->variant->enqueue(&l);
  pthread_mutex_unlock(&plan->lock);
  if (status != CLATTN_SUCCESS && leased && !last) {
    /* Some commands may be in flight on the slot: the next user must still wait for them. */
    clEnqueueMarkerWithWaitList(queue, l.num_wait, l.num_wait ? l.wait : NULL, &last);
  }
cleanup:
  if (leased) clattn__workspace_release(ctx, &lease, last);
  if (waits && waits != stack_waits) free(waits);
  if (event && status == CLATTN_SUCCESS) {
    *event = last;
  } else if (last) {
    clReleaseEvent(last);
  }
  return status;
}

/* ------------------------------------------------------------ kernels of other operations */

static op_entry* op_find(clattn__plan_cache* cache, const char* source, const char* options,
                         const char* name) {
  for (op_entry* e = cache->ops; e; e = e->next) {
    if (strcmp(e->source, source) == 0 && strcmp(e->name, name) == 0 &&
        strcmp(e->options, options) == 0) {
      return e;
    }
  }
  return NULL;
}

clattn_status clattn__op_kernel_get(clattn_context* ctx, const char* source, const char* options,
                                    const char* name, clattn__op_kernel** out) {
  clattn__plan_cache* cache = ctx->plans;
  pthread_mutex_lock(&cache->lock);
  op_entry* found = op_find(cache, source, options, name);
  pthread_mutex_unlock(&cache->lock);
  if (found) {
    *out = &found->op;
    return CLATTN_SUCCESS;
  }

  /* Made outside the lock, as plans are; an entry another thread made meanwhile wins. */
  clattn_status status = CLATTN_SUCCESS;
  op_entry* e = clattn__calloc(1, sizeof *e);
  if (!e) return clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  if (pthread_mutex_init(&e->op.lock, NULL) != 0) {
    free(e);
    return clattn__fail(ctx, CLATTN_ERROR_INTERNAL, "pthread_mutex_init failed");
  }
  e->source = source;
  e->name = name;
  e->options = clattn__strdup(options);
  if (!e->options) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  CLATTN__CHECK(clattn__kernel_create(ctx, source, options, name, &e->op.kernel));
  CLATTN__CL_CHECK(ctx,
                   clGetKernelWorkGroupInfo(e->op.kernel, ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                                            sizeof e->op.group_limit, &e->op.group_limit, NULL));
  pthread_mutex_lock(&cache->lock);
  found = op_find(cache, source, options, name);
  if (!found) {
    e->next = cache->ops;
    cache->ops = e;
    found = e;
    e = NULL;
  }
  pthread_mutex_unlock(&cache->lock);
  *out = &found->op;
cleanup:
  op_destroy(e);
  return status;
}
