/* The registry of kernel variants, and what the variants share: the common kernel
 * arguments and the device limits every config is checked against. Adding a variant is one
 * file beside this one, one kernel file in cl/ and one line in kVariants. */
#include <stddef.h>
#include <stdio.h>
#include <strings.h>

#include "internal.h"

extern const clattn__variant clattn__variant_tiled_local;
extern const clattn__variant clattn__variant_register_blocked;
extern const clattn__variant clattn__variant_split_kv;

static const clattn__variant* const kVariants[] = {
    &clattn__variant_tiled_local,
    &clattn__variant_register_blocked,
    &clattn__variant_split_kv,
};

#define VARIANT_COUNT (sizeof kVariants / sizeof kVariants[0])

/* Local memory left for the tiles: some compilers reserve a little for themselves. */
#define LOCAL_MEM_RESERVE 1024

size_t clattn__variant_count(void) { return VARIANT_COUNT; }

const clattn__variant* clattn__variant_at(size_t index) {
  return index < VARIANT_COUNT ? kVariants[index] : NULL;
}

const clattn__variant* clattn__variant_find(clattn_variant id) {
  for (size_t i = 0; i < VARIANT_COUNT; ++i) {
    if (kVariants[i]->id == id) return kVariants[i];
  }
  return NULL;
}

size_t clattn__variant_preferred(const clattn_device_info* info,
                                 const clattn__attention_shape* shape) {
  size_t best = VARIANT_COUNT;
  int best_score = 0;
  for (size_t i = 0; i < VARIANT_COUNT; ++i) {
    if (shape->paged && !kVariants[i]->reads_pages) continue;
    const int score = kVariants[i]->preference(info, shape);
    if (score > best_score) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

const char* clattn_variant_name(clattn_variant variant) {
  if (variant == CLATTN_VARIANT_AUTO) return "auto";
  const clattn__variant* v = clattn__variant_find(variant);
  return v ? v->name : NULL;
}

clattn_status clattn_variant_from_name(const char* name, clattn_variant* variant) {
  if (!name || !variant) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (strcasecmp(name, "auto") == 0) {
    *variant = CLATTN_VARIANT_AUTO;
    return CLATTN_SUCCESS;
  }
  for (size_t i = 0; i < VARIANT_COUNT; ++i) {
    if (strcasecmp(name, kVariants[i]->name) == 0 ||
        strcasecmp(name, kVariants[i]->short_name) == 0) {
      *variant = kVariants[i]->id;
      return CLATTN_SUCCESS;
    }
  }
  return CLATTN_ERROR_INVALID_ARGUMENT;
}

clattn_status clattn_attention_config_describe(const clattn_attention_config* config, char* buf,
                                               size_t buf_size, size_t* needed) {
  if (!config || (!buf && buf_size > 0)) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (config->variant == CLATTN_VARIANT_AUTO)
    return clattn__copy_out("auto", buf, buf_size, needed);
  const clattn__variant* v = clattn__variant_find(config->variant);
  if (!v) return CLATTN_ERROR_INVALID_ARGUMENT;
  char tiles[128], text[160];
  v->describe(config, tiles, sizeof tiles);
  snprintf(text, sizeof text, "%s %s", v->name, tiles);
  return clattn__copy_out(text, buf, buf_size, needed);
}

size_t clattn__local_budget(const clattn_device_info* info) {
  cl_ulong lm = info->local_mem_size;
  return lm > LOCAL_MEM_RESERVE ? (size_t)(lm - LOCAL_MEM_RESERVE) : 0;
}

size_t clattn__max_group(const clattn_device_info* info) {
  size_t n = info->max_work_group_size;
  if (info->max_work_item_sizes[0] && info->max_work_item_sizes[0] < n) {
    n = info->max_work_item_sizes[0];
  }
  return n;
}

int clattn__config_fits(const clattn_device_info* info, size_t head_dim,
                        const clattn_attention_config* config) {
  const clattn__variant* v = clattn__variant_find(config->variant);
  return v && v->check(NULL, info, head_dim, config) == CLATTN_SUCCESS;
}

/* Kernel argument setters that accumulate errors (CL error codes are negative). */
void clattn__arg_mem(cl_kernel k, cl_uint* i, cl_mem m, cl_int* err) {
  *err |= clSetKernelArg(k, (*i)++, sizeof m, &m);
}
void clattn__arg_uint(cl_kernel k, cl_uint* i, size_t x, cl_int* err) {
  cl_uint u = (cl_uint)x;
  *err |= clSetKernelArg(k, (*i)++, sizeof u, &u);
}
static void arg_int(cl_kernel k, cl_uint* i, int x, cl_int* err) {
  cl_int v = x;
  *err |= clSetKernelArg(k, (*i)++, sizeof v, &v);
}
static void arg_float(cl_kernel k, cl_uint* i, float x, cl_int* err) {
  cl_float v = x;
  *err |= clSetKernelArg(k, (*i)++, sizeof v, &v);
}

cl_int clattn__set_attention_args(cl_kernel kernel, const clattn__attention_shape* sh,
                                  const clattn_attention_buffers* b, cl_uint* next) {
  cl_int err = CL_SUCCESS;
  cl_uint i = 0;
  const cl_mem mems[4] = {b->q, b->k, b->v, b->o};
  const size_t offsets[4] = {b->q_offset, b->k_offset, b->v_offset, b->o_offset};
  const clattn_strides* strides[4] = {&sh->q, &sh->k, &sh->v, &sh->o};
  for (int t = 0; t < 4; ++t) {
    clattn__arg_mem(kernel, &i, mems[t], &err);
    clattn__arg_uint(kernel, &i, offsets[t], &err);
    clattn__arg_uint(kernel, &i, strides[t]->batch, &err);
    clattn__arg_uint(kernel, &i, strides[t]->head, &err);
    clattn__arg_uint(kernel, &i, strides[t]->seq, &err);
  }
  clattn__arg_mem(kernel, &i, b->lse, &err); /* NULL is allowed for a __global pointer */
  clattn__arg_uint(kernel, &i, b->lse_offset, &err);
  arg_int(kernel, &i, b->lse != NULL, &err);
  clattn__arg_mem(kernel, &i, b->kv_lengths, &err);
  arg_int(kernel, &i, b->kv_lengths != NULL, &err);
  clattn__arg_uint(kernel, &i, sh->heads_q, &err);
  clattn__arg_uint(kernel, &i, sh->heads_q / sh->heads_kv, &err);
  clattn__arg_uint(kernel, &i, sh->seq_q, &err);
  clattn__arg_uint(kernel, &i, sh->seq_kv, &err);
  arg_float(kernel, &i, (float)(sh->scale * 1.4426950408889634), &err); /* log2 units */
  arg_int(kernel, &i, sh->causal, &err);
  *next = i;
  return err;
}
