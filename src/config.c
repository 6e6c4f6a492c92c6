/* Kernel configs: defaults from the device, checks against its limits, fallbacks. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Local memory left for the tiles: some compilers reserve a little for themselves. */
#define LOCAL_MEM_RESERVE 1024
/* Tiled defaults, from sweeps on an H100 and an H200 (tools/gpu-check.sh, N = 4096): the
 * head dim is shared by 2 work-items from head_dim 33 on and by 4 from 192 on (fewer
 * registers each), work-groups have 256 work-items (at most 128 rows), and tiles have 32
 * keys with one work-item per row, else 16 (or fewer where local memory is short). */
#define TILED_GROUP_ITEMS 256
#define TILED_MAX_BLOCK_M 128
#define REGBLOCK_ROWS 8
#define REGBLOCK_BLOCK_N 32

static int is_pow2(unsigned x) { return x && !(x & (x - 1)); }

size_t clattn__config_group_size(const clattn_attention_config* c) {
  return c->variant == CLATTN_VARIANT_TILED_LOCAL ? (size_t)c->block_m * c->threads_per_row : 1;
}

/* Local memory of the tiled kernel: K and V tiles with rows padded to a multiple of
 * 4 * threads_per_row, and the partial dot products when rows are shared (cl/attention_tiled.cl).
 */
static size_t tiled_local_bytes(size_t head_dim, const clattn_attention_config* c) {
  size_t chunk = 4 * (size_t)c->threads_per_row; /* float4 chunks per row, one each */
  size_t tpr = c->threads_per_row;
  size_t dpad = (head_dim + chunk - 1) / chunk * chunk;
  size_t bytes = 2 * (size_t)c->block_n * dpad;
  if (tpr > 1) bytes += (size_t)c->block_m * (c->block_n + 1) * tpr;
  return bytes * sizeof(float);
}

static size_t local_budget_info(const clattn_device_info* info) {
  cl_ulong lm = info->local_mem_size;
  return lm > LOCAL_MEM_RESERVE ? (size_t)(lm - LOCAL_MEM_RESERVE) : 0;
}

static size_t max_group_info(const clattn_device_info* info) {
  size_t n = info->max_work_group_size;
  if (info->max_work_item_sizes[0] && info->max_work_item_sizes[0] < n) {
    n = info->max_work_item_sizes[0];
  }
  return n;
}

static size_t local_budget(const clattn_context* ctx) { return local_budget_info(&ctx->info); }
static size_t max_group(const clattn_context* ctx) { return max_group_info(&ctx->info); }

/* The built-in default for the fields left 0. */
static void fill_defaults(const clattn_context* ctx, const clattn__attention_shape* shape,
                          clattn_attention_config* c) {
  if (c->variant == CLATTN_VARIANT_AUTO) {
    c->variant =
        ctx->info.type == CLATTN_DEVICE_TYPE_CPU || ctx->info.type == CLATTN_DEVICE_TYPE_OTHER
            ? CLATTN_VARIANT_REGISTER_BLOCKED
            : CLATTN_VARIANT_TILED_LOCAL;
  }
  if (c->variant == CLATTN_VARIANT_TILED_LOCAL) {
    /* Several work-items per row keep the registers per work-item bounded for large head
     * dims and give the device more work-items. */
    if (!c->threads_per_row) {
      c->threads_per_row = shape->head_dim >= 192 ? 4 : shape->head_dim > 32 ? 2 : 1;
    }
    const int default_m = !c->block_m;
    if (default_m) {
      unsigned m = TILED_GROUP_ITEMS / c->threads_per_row; /* >= 8: threads_per_row <= 32 */
      if (m > TILED_MAX_BLOCK_M) m = TILED_MAX_BLOCK_M;
      while (m > 1 && (size_t)m * c->threads_per_row > max_group(ctx)) m /= 2;
      c->block_m = m;
    }
    if (!c->block_n) {
      c->block_n = c->threads_per_row == 1 ? 32 : 16;
      while (c->block_n > 1 && tiled_local_bytes(shape->head_dim, c) > local_budget(ctx)) {
        c->block_n /= 2;
      }
    } else if (default_m) {
      /* A given block_n: fewer rows per group where the tiles do not fit beside them. */
      while (c->block_m > 1 && tiled_local_bytes(shape->head_dim, c) > local_budget(ctx)) {
        c->block_m /= 2;
      }
    }
    c->rows_per_item = 1;
  } else {
    if (!c->rows_per_item) c->rows_per_item = c->block_m ? c->block_m : REGBLOCK_ROWS;
    if (!c->block_m) c->block_m = c->rows_per_item;
    if (!c->block_n) c->block_n = REGBLOCK_BLOCK_N;
    if (!c->threads_per_row) c->threads_per_row = 1;
  }
}

/* Checks a complete config against the shape-independent rules and a device's limits;
 * errors go to ctx (may be NULL). */
static clattn_status check_limits_info(const clattn_context* ctx, const clattn_device_info* info,
                                       size_t head_dim, const clattn_attention_config* c) {
  if (c->variant == CLATTN_VARIANT_TILED_LOCAL) {
    if (!is_pow2(c->threads_per_row) || c->threads_per_row > 32) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "threads_per_row %u must be a power of two up to 32", c->threads_per_row);
    }
    if (c->block_m < 1 || clattn__config_group_size(c) > max_group_info(info)) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "block_m %u x threads_per_row %u is outside 1..%zu (the device's "
                          "work-group limit)",
                          c->block_m, c->threads_per_row, max_group_info(info));
    }
    if (!is_pow2(c->block_n) || c->block_n > 256) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "block_n %u must be a power of two up to 256", c->block_n);
    }
    if (c->rows_per_item != 1) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "rows_per_item must be 1 for the tiled variant");
    }
    size_t need = tiled_local_bytes(head_dim, c);
    if (need > local_budget_info(info)) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "block_n %u with head_dim %zu needs %zu bytes of local memory; the "
                          "device has %llu",
                          c->block_n, head_dim, need, (unsigned long long)info->local_mem_size);
    }
  } else if (c->variant == CLATTN_VARIANT_REGISTER_BLOCKED) {
    if (c->rows_per_item < 1 || c->rows_per_item > 16 || c->block_m != c->rows_per_item) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "rows_per_item %u must be 1..16 and block_m equal to it (got %u)",
                          c->rows_per_item, c->block_m);
    }
    if (c->threads_per_row != 1) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "threads_per_row must be 1 for the register-blocked variant");
    }
    if (c->block_n < 16 || c->block_n > 256 || c->block_n % 16) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "block_n %u must be a multiple of 16 from 16 to 256", c->block_n);
    }
  } else {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "unknown kernel variant %d",
                        (int)c->variant);
  }
  return CLATTN_SUCCESS;
}

static clattn_status check_limits(const clattn_context* ctx, const clattn__attention_shape* shape,
                                  const clattn_attention_config* c) {
  return check_limits_info(ctx, &ctx->info, shape->head_dim, c);
}

int clattn__config_fits(const clattn_device_info* info, size_t head_dim,
                        const clattn_attention_config* config) {
  return check_limits_info(NULL, info, head_dim, config) == CLATTN_SUCCESS;
}

const char* clattn__config_source_name(const clattn_attention_config* config) {
  return config->variant == CLATTN_VARIANT_TILED_LOCAL ? "attention_tiled" : "attention_regblock";
}

static const char* kernel_name(const clattn_attention_config* config) {
  return config->variant == CLATTN_VARIANT_TILED_LOCAL ? "clattn_attention_tiled"
                                                       : "clattn_attention_regblock";
}

static unsigned pv_vec(size_t head_dim) {
  for (unsigned w = 16; w > 1; w /= 2) {
    if (head_dim % w == 0) return w;
  }
  return 1;
}

void clattn__config_options(const clattn__attention_shape* shape, const clattn_attention_config* c,
                            char* options, size_t size) {
  if (c->variant == CLATTN_VARIANT_TILED_LOCAL) {
    snprintf(options, size, "-DHEAD_DIM=%zu -DBLOCK_M=%u -DBLOCK_N=%u -DTPR=%u", shape->head_dim,
             c->block_m, c->block_n, c->threads_per_row);
  } else {
    snprintf(options, size, "-DHEAD_DIM=%zu -DROWS=%u -DBLOCK_N=%u -DPV_VEC=%u", shape->head_dim,
             c->rows_per_item, c->block_n, pv_vec(shape->head_dim));
  }
}

size_t clattn__kt_stride(const clattn__attention_shape* shape,
                         const clattn_attention_config* config) {
  size_t n = config->block_n;
  return (shape->seq_kv + n - 1) / n * n;
}

/* Builds the config's kernel and checks it against what the build reports. */
static clattn_status build_and_check(clattn_context* ctx, const clattn__attention_shape* shape,
                                     const clattn_attention_config* c, cl_kernel* out) {
  char options[256];
  clattn__config_options(shape, c, options, sizeof options);
  cl_kernel kernel = NULL;
  clattn_status status =
      clattn__kernel_create(ctx, clattn__config_source_name(c), options, kernel_name(c), &kernel);
  if (status != CLATTN_SUCCESS) return status;
  size_t wg = 0;
  cl_ulong local = 0;
  CLATTN__CL_CHECK(ctx, clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                                                 sizeof wg, &wg, NULL));
  CLATTN__CL_CHECK(ctx, clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_LOCAL_MEM_SIZE,
                                                 sizeof local, &local, NULL));
  size_t group = clattn__config_group_size(c);
  if (wg < group || local > ctx->info.local_mem_size) {
    status = clattn__fail(ctx, CLATTN_ERROR_INVALID_CONFIG,
                          "kernel %s (%s) allows %zu work-items per group and needs %llu bytes "
                          "of local memory; the config needs %zu work-items and the device has "
                          "%llu bytes",
                          kernel_name(c), options, wg, (unsigned long long)local, group,
                          (unsigned long long)ctx->info.local_mem_size);
    goto cleanup;
  }
  if (out) {
    *out = kernel;
    kernel = NULL;
  }
cleanup:
  if (kernel) clReleaseKernel(kernel);
  return status;
}

/* A smaller default after `c` did not fit; 0 when there is none. */
static int shrink(clattn_attention_config* c) {
  if (c->variant == CLATTN_VARIANT_TILED_LOCAL) {
    if (c->block_m > 1) {
      c->block_m /= 2;
      return 1;
    }
    if (c->threads_per_row > 1) {
      c->threads_per_row /= 2;
      return 1;
    }
    if (c->block_n > 1) {
      c->block_n /= 2;
      return 1;
    }
  } else if (c->rows_per_item > 1) {
    c->rows_per_item /= 2;
    c->block_m = c->rows_per_item;
    return 1;
  }
  return 0;
}

clattn_status clattn__config_resolve(clattn_context* ctx, const clattn__attention_shape* shape,
                                     const clattn_attention_config* requested,
                                     clattn_attention_config* used, cl_kernel* kernel) {
  clattn_attention_config c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  if (requested) {
    if (requested->struct_size != sizeof(clattn_attention_config)) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                          "clattn_attention_config.struct_size is %zu, expected %zu",
                          requested->struct_size, sizeof(clattn_attention_config));
    }
    if ((unsigned)requested->variant > CLATTN_VARIANT_REGISTER_BLOCKED) {
      return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT, "unknown kernel variant %d",
                          (int)requested->variant);
    }
    c.variant = requested->variant;
    c.block_m = requested->block_m;
    c.block_n = requested->block_n;
    c.rows_per_item = requested->rows_per_item;
    c.threads_per_row = requested->threads_per_row;
  }
  /* A config given field by field is the caller's to keep; only an all-default one may
   * be shrunk to fit. */
  int user = requested && (c.block_m || c.block_n || c.rows_per_item || c.threads_per_row);
  c.source = user || c.variant != CLATTN_VARIANT_AUTO ? CLATTN_CONFIG_SOURCE_USER
                                                      : CLATTN_CONFIG_SOURCE_HEURISTIC;
  /* A config left to the library takes the tuned entry for the shape, if one fits. */
  if (!user && c.variant == CLATTN_VARIANT_AUTO) {
    clattn_attention_config tuned;
    clattn_config_source level;
    if (clattn__tuning_lookup(ctx, shape, &tuned, &level)) {
      if (check_limits(ctx, shape, &tuned) == CLATTN_SUCCESS &&
          build_and_check(ctx, shape, &tuned, kernel) == CLATTN_SUCCESS) {
        tuned.source = level;
        *used = tuned;
        return CLATTN_SUCCESS;
      }
      clattn__log("the tuned config does not fit here; using the built-in default");
    }
  }
  fill_defaults(ctx, shape, &c);

  clattn_status status;
  for (;;) {
    status = check_limits(ctx, shape, &c);
    if (status == CLATTN_SUCCESS) status = build_and_check(ctx, shape, &c, kernel);
    if (status != CLATTN_ERROR_INVALID_CONFIG || user || !shrink(&c)) break;
    clattn__log("config did not fit; falling back to block_m %u block_n %u rows %u", c.block_m,
                c.block_n, c.rows_per_item);
    c.source = CLATTN_CONFIG_SOURCE_FALLBACK;
  }
  if (status == CLATTN_SUCCESS) *used = c;
  return status;
}
