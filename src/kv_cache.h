/* What src/kv_cache.c (storage, bookkeeping, steps, append) and src/attention_cached.c (the
 * attention core over a cache) share. The rest of the library sees only src/internal.h's
 * step interface. */
#ifndef CLATTN_SRC_KV_CACHE_H
#define CLATTN_SRC_KV_CACHE_H

#include "internal.h"

/* Steps whose device arrays may be in flight at once: a slot's host copies are rewritten
 * only after its previous upload has completed. */
#define CLATTN__KV_STEP_SLOTS 4

/* One step slot: device arrays of max_sequences int32 and the host copies they upload. */
typedef struct clattn__kv_slot {
  cl_mem ids, start, lengths;
  int32_t *host_ids, *host_start, *host_lengths;
  cl_event ready; /* the last of its uploads; NULL when none is pending */
  size_t taken;   /* blocks the step in this slot took from the pool (for a rollback) */
} clattn__kv_slot;

struct clattn_kv_cache {
  clattn_context* ctx;
  size_t max_sequences, heads_kv, head_dim, block_tokens, max_seq_len;
  size_t num_blocks, table_stride;
  size_t block_stride;   /* elements of one block over all heads (the pool is head-major) */
  cl_mem k_pool, v_pool; /* num_blocks * block_stride floats each */
  cl_mem table;          /* int32 [max_sequences * table_stride] */
  cl_kernel append, gather;
  size_t copy_group; /* work-items per group of both kernels (dimension 0) */

  /* Held for every call, and from step_begin to step_end. */
  pthread_mutex_t lock;
  size_t* lengths;      /* [max_sequences] tokens held */
  int32_t* host_table;  /* [max_sequences * table_stride]: block lists, and the upload source */
  cl_event table_ready; /* the last upload from host_table; NULL when none is pending */
  int32_t* free_blocks; /* LIFO stack of free block ids */
  size_t free_count;
  size_t tokens_used;
  clattn__kv_slot slots[CLATTN__KV_STEP_SLOTS];
  size_t next_slot;
};

/* Global and local sizes of a copy kernel over rows (token, head) pairs of `batch` sequences. */
void clattn__kv_copy_range(const clattn_kv_cache* cache, size_t rows, size_t batch,
                           size_t global[3], size_t local[3]);

/* A wait list of the caller's events and up to two more (NULL ones left out) in *list: the
 * stack array when it is long enough, else malloc'd (the caller frees it when it is not
 * `stack`; *list NULL: out of memory). Returns its length. */
cl_uint clattn__kv_waits(cl_uint num_wait, const cl_event* wait, cl_event extra0, cl_event extra1,
                         cl_event* stack, size_t stack_size, cl_event** list);

/* The shape of a call over the cache (src/attention_cached.c): desc as for clattn_attention with
 * seq_kv 0, checked against the cache and resolved with seq_kv 1 (the lengths come from the
 * cache at the call). */
clattn_status clattn__kv_cached_shape(clattn_kv_cache* cache, const clattn_attention_desc* desc,
                                      clattn__attention_shape* sh);

#endif
