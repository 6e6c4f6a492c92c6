/*
 * clattn: fused multi-head attention on any OpenCL device.
 *
 * The whole public API. Conventions:
 *   - every function returns a clattn_status (except the two string getters);
 *   - handles are opaque; clattn_X_destroy(NULL) is a no-op;
 *   - descriptor structs start with `struct_size` and have an _INIT macro;
 *     a field left 0 takes its documented default;
 *   - cl_mem objects and queues passed to a call are borrowed for that call;
 *     objects a context keeps are retained by it and released on destroy;
 *   - nothing is printed unless the environment variable CLATTN_LOG is set.
 */
#ifndef CLATTN_CLATTN_H
#define CLATTN_CLATTN_H

#include <stddef.h>
#include <stdint.h>

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include "clattn/clattn_export.h"
#include "clattn/clattn_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

/* X(name, value, message): one list makes the enum and its strings. Values are pinned. */
#define CLATTN_STATUS_MAP(X)                                                                       \
  X(CLATTN_SUCCESS, 0, "success")                                                                  \
  X(CLATTN_ERROR_INVALID_ARGUMENT, -1, "invalid argument (NULL pointer or bad enum value)")        \
  X(CLATTN_ERROR_INVALID_SHAPE, -2,                                                                \
    "invalid shape (zero dimension, head_dim > 256, "                                              \
    "heads_q not a multiple of heads_kv, bad stride)")                                             \
  X(CLATTN_ERROR_BUFFER_TOO_SMALL, -3, "a buffer is smaller than the shape and strides need")      \
  X(CLATTN_ERROR_INVALID_QUEUE, -4,                                                                \
    "the command queue is out-of-order or belongs to another context or device")                   \
  X(CLATTN_ERROR_NO_DEVICE, -5, "no OpenCL device found")                                          \
  X(CLATTN_ERROR_DEVICE_NOT_FOUND, -6, "no OpenCL device matches the device selector")             \
  X(CLATTN_ERROR_OUT_OF_MEMORY, -7, "out of host or device memory")                                \
  X(CLATTN_ERROR_BUILD_FAILED, -8, "an OpenCL kernel failed to build (see the build log)")         \
  X(CLATTN_ERROR_KERNEL_SOURCE, -9, "a kernel source could not be read from the kernel directory") \
  X(CLATTN_ERROR_INVALID_CONFIG, -10, "the kernel config does not fit this device or shape")       \
  X(CLATTN_ERROR_UNSUPPORTED, -11, "not supported on this device or by this version")              \
  X(CLATTN_ERROR_OPENCL, -12, "an OpenCL call failed (see the last error message)")                \
  X(CLATTN_ERROR_INTERNAL, -13, "internal error")

typedef enum clattn_status {
#define CLATTN__STATUS_ENUM(name, value, message) name = value,
  CLATTN_STATUS_MAP(CLATTN__STATUS_ENUM)
#undef CLATTN__STATUS_ENUM
} clattn_status;

/* Name of a status ("CLATTN_ERROR_INVALID_SHAPE"); "CLATTN_UNKNOWN_STATUS" for others.
 * Never NULL, static storage. */
CLATTN_API const char* clattn_status_name(clattn_status status);

/* One-line description of a status; never NULL, static storage. */
CLATTN_API const char* clattn_status_string(clattn_status status);

/* The library's version, as numbers (any pointer may be NULL). Returns CLATTN_SUCCESS. */
CLATTN_API clattn_status clattn_version(int* major, int* minor, int* patch);

/* ---------------------------------------------------------------- context */

typedef struct clattn_context clattn_context;

typedef struct clattn_context_options {
  size_t struct_size; /* sizeof(clattn_context_options) */
  /* Device selector, used by clattn_context_create only. NULL: the environment variable
   * CLATTN_DEVICE, and if that is unset the default (first GPU, else first accelerator,
   * else first CPU, platforms in ICD order). Forms: "P:D" (platform and device indices,
   * as clattn-info lists them); "gpu", "cpu" or "accelerator" (the first device of that
   * type); or a case-insensitive substring of the device name or vendor, or of the
   * platform name or vendor (the first device that matches). A selector that starts with a
   * digit and contains a colon must be exactly "P:D" (decimal, each up to 4294967295); any
   * other such text is CLATTN_ERROR_INVALID_ARGUMENT. */
  const char* device;
  /* Directory whose <name>.cl files replace the embedded kernel sources. NULL: the
   * environment variable CLATTN_KERNEL_DIR, and if that is unset the embedded sources. */
  const char* kernel_dir;
} clattn_context_options;

#define CLATTN_CONTEXT_OPTIONS_INIT \
  { .struct_size = sizeof(clattn_context_options) }

/* Creates a context, its OpenCL context and an in-order profiling queue on the selected
 * device. options may be NULL. *out is set to NULL on failure.
 * Returns CLATTN_ERROR_NO_DEVICE when there is no OpenCL device at all,
 * CLATTN_ERROR_DEVICE_NOT_FOUND when the selector matches none. */
CLATTN_API clattn_status clattn_context_create(const clattn_context_options* options,
                                               clattn_context** out);

/* Creates a context on the caller's OpenCL objects. The context retains cl_context, device
 * and queue, and releases them on destroy; the caller keeps its own references. The queue
 * must be in-order and belong to cl_context and device (else CLATTN_ERROR_INVALID_QUEUE).
 * options may be NULL; its `device` field is ignored here. */
CLATTN_API clattn_status clattn_context_create_from_cl(cl_context cl_ctx, cl_device_id device,
                                                       cl_command_queue queue,
                                                       const clattn_context_options* options,
                                                       clattn_context** out);

/* Releases everything the context made or retained. NULL is a no-op. Waits for nothing:
 * finish the queue first if commands are still in flight on buffers you are about to free. */
CLATTN_API clattn_status clattn_context_destroy(clattn_context* ctx);

/* The context's OpenCL objects, borrowed (valid until destroy). Any out pointer may be NULL. */
CLATTN_API clattn_status clattn_context_get_cl(const clattn_context* ctx, cl_context* cl_ctx,
                                               cl_device_id* device, cl_command_queue* queue);

typedef enum clattn_device_type {
  CLATTN_DEVICE_TYPE_OTHER = 0,
  CLATTN_DEVICE_TYPE_CPU = 1,
  CLATTN_DEVICE_TYPE_GPU = 2,
  CLATTN_DEVICE_TYPE_ACCELERATOR = 3
} clattn_device_type;

/* Device capabilities as recorded at context creation. String fields are NUL-terminated
 * (truncated if longer than their array). */
typedef struct clattn_device_info {
  size_t struct_size; /* sizeof(clattn_device_info), set by the caller */
  clattn_device_type type;
  char name[256];
  char vendor[256];
  char platform_name[256];
  char driver_version[128];
  char device_version[128];   /* "OpenCL 3.0 ..." */
  char opencl_c_version[128]; /* "OpenCL C 1.2 ..." */
  char extensions[8192];
  cl_uint compute_units;
  cl_uint max_clock_mhz;
  cl_ulong global_mem_size;
  cl_ulong max_mem_alloc_size;
  cl_ulong local_mem_size;
  int local_mem_is_global; /* 1 where "local" memory is emulated in global memory (CPUs) */
  size_t max_work_group_size;
  size_t max_work_item_sizes[3];
  int has_fp16; /* cl_khr_fp16 */
  int has_fp64; /* cl_khr_fp64 */
} clattn_device_info;

#define CLATTN_DEVICE_INFO_INIT \
  { .struct_size = sizeof(clattn_device_info) }

/* Fills *info with the capabilities of the context's device. */
CLATTN_API clattn_status clattn_context_get_device_info(const clattn_context* ctx,
                                                        clattn_device_info* info);

/* Fills *info for any device (used by clattn-info to list every device). */
CLATTN_API clattn_status clattn_device_query(cl_device_id device, clattn_device_info* info);

/* Resolves a device selector as clattn_context_create would (spec NULL: CLATTN_DEVICE, else
 * the default rule). Sets *platform_index and *device_index (either may be NULL) to the
 * indices clattn-info prints. Returns CLATTN_ERROR_NO_DEVICE or
 * CLATTN_ERROR_DEVICE_NOT_FOUND as clattn_context_create does, CLATTN_ERROR_INVALID_ARGUMENT
 * for a malformed "P:D" selector. */
CLATTN_API clattn_status clattn_device_select(const char* spec, cl_uint* platform_index,
                                              cl_uint* device_index);

/* Copies the context's last error message (which names the OpenCL call, its error code and
 * where it failed) into buf, NUL-terminated and truncated to buf_size. *needed (may be NULL)
 * gets the full length plus one. buf may be NULL when buf_size is 0. An empty string when
 * no error has happened. The message is per context, shared by the threads using it.
 * ctx NULL: the calling thread's last message from a call that had no context to record it
 * in (clattn_context_create and clattn_context_create_from_cl failing, clattn_device_select,
 * clattn_attention_tensor_size). */
CLATTN_API clattn_status clattn_context_get_last_error(const clattn_context* ctx, char* buf,
                                                       size_t buf_size, size_t* needed);

/* Copies the build log of the last kernel build that failed in this context (same
 * conventions as clattn_context_get_last_error). Empty if no build failed. */
CLATTN_API clattn_status clattn_context_get_build_log(const clattn_context* ctx, char* buf,
                                                      size_t buf_size, size_t* needed);

/* ---------------------------------------------------------------- attention core */

typedef enum clattn_dtype {
  CLATTN_DTYPE_F32 = 0 /* the only dtype in this version */
} clattn_dtype;

/* Memory layout used when all strides of a tensor are 0. */
typedef enum clattn_layout {
  CLATTN_LAYOUT_BHND = 0, /* [batch, heads, seq, head_dim], the default */
  CLATTN_LAYOUT_BNHD = 1  /* [batch, seq, heads, head_dim] (what projections produce) */
} clattn_layout;

/* Strides in elements of one tensor along batch, head and sequence; head_dim is contiguous.
 * All three 0: derived from the descriptor's layout and shape. */
typedef struct clattn_strides {
  size_t batch, head, seq;
} clattn_strides;

/* O = softmax(Q·Kᵀ·scale + mask)·V for every (batch, query head).
 * Keys a row cannot see (causal mask, kv_lengths) never reach it, so NaN or Inf stored
 * there (padding, say) changes nothing; a NaN or Inf in an element a row does read makes
 * that row's output non-finite, as follows. A NaN in the row's Q or in a visible key's K, or
 * a score of +Inf (an Inf in Q or K meeting a nonzero element), makes every element of the
 * row's O and its LSE NaN. A score of -Inf gives that key weight 0, as if masked (a row whose
 * visible scores are all -Inf outputs 0 and LSE -INFINITY, like a row that sees no key). A
 * NaN or Inf in element d of a visible key's V makes element d of the row's O non-finite and
 * leaves the other elements and the LSE as they are. Finite inputs give finite outputs for
 * scores up to ±1e30 (the softmax subtracts the running maximum, so large logits neither
 * overflow nor underflow to 0/0) and values up to 1e30 (the accumulator holds
 * sum p_j·v_j with p_j <= 1, below FLT_MAX for up to 3·10^8 keys).
 * Q is [batch, heads_q, seq_q, head_dim], K and V [batch, heads_kv, seq_kv, head_dim],
 * O like Q. Query head h reads key/value head h / (heads_q / heads_kv) (MHA, GQA, MQA). */
typedef struct clattn_attention_desc {
  size_t struct_size; /* sizeof(clattn_attention_desc) */
  clattn_dtype dtype;
  size_t batch;    /* >= 1 */
  size_t heads_q;  /* >= 1 */
  size_t heads_kv; /* >= 1, divides heads_q; 0 means heads_q */
  size_t seq_q;    /* >= 1 */
  size_t seq_kv;   /* >= 1 */
  size_t head_dim; /* 1 .. 256 */
  float scale;     /* 0: 1/sqrt(head_dim) */
  /* Nonzero: query i sees key j only when j <= i + (seq_kv - seq_q) (bottom-right aligned,
   * as in FlashAttention-2). With seq_q > seq_kv the first rows see no key. */
  int causal;
  clattn_layout layout; /* for tensors whose strides are all 0 */
  clattn_strides q_strides, k_strides, v_strides, o_strides;
} clattn_attention_desc;

#define CLATTN_ATTENTION_DESC_INIT \
  { .struct_size = sizeof(clattn_attention_desc) }

/* Buffers of one call. Offsets are in elements. */
typedef struct clattn_attention_buffers {
  size_t struct_size; /* sizeof(clattn_attention_buffers) */
  cl_mem q, k, v, o;
  size_t q_offset, k_offset, v_offset, o_offset;
  /* Optional, NULL for none: float [batch, heads_q, seq_q], contiguous, gets the natural log
   * of each row's softmax denominator, log(sum_j exp(score_j)). A row with no visible key
   * gets -INFINITY (the log of an empty sum). */
  cl_mem lse;
  size_t lse_offset;
  /* Optional, NULL for none: int32 [batch] key lengths; keys j >= kv_lengths[b] are masked
   * (lengths are clamped to [0, seq_kv]). Causal alignment still uses seq_kv. */
  cl_mem kv_lengths;
} clattn_attention_buffers;

#define CLATTN_ATTENTION_BUFFERS_INIT \
  { .struct_size = sizeof(clattn_attention_buffers) }

typedef enum clattn_variant {
  CLATTN_VARIANT_AUTO = 0, /* from the device type: GPU-style on GPUs, CPU-style otherwise */
  /* GPU-style: a work-group owns block_m query rows, threads_per_row work-items per row
   * (each with a slice of the head dim), and stages block_n keys and values at a time in
   * local memory. */
  CLATTN_VARIANT_TILED_LOCAL = 1,
  /* CPU-style: K is first staged transposed (keys contiguous), then each work-item keeps
   * rows_per_item query rows in registers and walks keys block_n at a time in float
   * vectors, with no barrier. */
  CLATTN_VARIANT_REGISTER_BLOCKED = 2
} clattn_variant;

/* Where a resolved config came from. */
typedef enum clattn_config_source {
  CLATTN_CONFIG_SOURCE_USER = 0,      /* given in the call, all fields set or defaulted */
  CLATTN_CONFIG_SOURCE_HEURISTIC = 1, /* the built-in default for the device */
  CLATTN_CONFIG_SOURCE_FALLBACK = 2   /* the default did not fit; a smaller one was used */
} clattn_config_source;

/* Kernel config. 0 in any field: the default for the device and shape. A config whose
 * block fields are all 0 may be shrunk to fit the device (source FALLBACK); one with any
 * block field set is used as given or rejected with CLATTN_ERROR_INVALID_CONFIG. */
typedef struct clattn_attention_config {
  size_t struct_size; /* sizeof(clattn_attention_config) */
  clattn_variant variant;
  /* Query rows per work-group. REGISTER_BLOCKED: equal to rows_per_item. */
  unsigned block_m;
  /* Keys per tile. TILED_LOCAL: a power of two up to 256; REGISTER_BLOCKED: a multiple of
   * 16 up to 256. */
  unsigned block_n;
  unsigned rows_per_item;      /* query rows per work-item: REGISTER_BLOCKED 1..16, else 1 */
  unsigned threads_per_row;    /* work-items per query row: TILED_LOCAL 1..32 (power of two),
                                  else 1 */
  clattn_config_source source; /* output only */
} clattn_attention_config;

#define CLATTN_ATTENTION_CONFIG_INIT \
  { .struct_size = sizeof(clattn_attention_config) }

/* Resolves the config a clattn_attention call with this descriptor and requested config
 * (NULL: all defaults) would use, building the kernel if needed to check it against
 * CL_KERNEL_WORK_GROUP_SIZE. Fills *used (all fields set, including source).
 * Returns CLATTN_ERROR_INVALID_CONFIG when a requested config cannot run here. */
CLATTN_API clattn_status clattn_attention_get_config(clattn_context* ctx,
                                                     const clattn_attention_desc* desc,
                                                     const clattn_attention_config* requested,
                                                     clattn_attention_config* used);

/* Enqueues the fused attention on `queue` (NULL: the context's queue), after the wait list;
 * *event (may be NULL) gets an event for the last command, to be released by the caller.
 * config may be NULL (defaults). Buffers are checked against the shape and strides with
 * CL_MEM_SIZE. Does not wait for completion. Thread-safe on a shared context when each
 * thread uses its own queue (any in-order queue of the context's cl_context and device). */
CLATTN_API clattn_status clattn_attention(clattn_context* ctx, const clattn_attention_desc* desc,
                                          const clattn_attention_buffers* buffers,
                                          const clattn_attention_config* config,
                                          cl_command_queue queue, cl_uint num_wait_events,
                                          const cl_event* wait_events, cl_event* event);

/* Blocking host-pointer form: copies q, k, v (and kv_lengths) to the device, runs, and reads
 * o (and lse) back. Each array holds the elements the descriptor's shape and strides address,
 * from index 0 (lse: batch*heads_q*seq_q floats). lse and kv_lengths may be NULL. */
CLATTN_API clattn_status clattn_attention_host(clattn_context* ctx,
                                               const clattn_attention_desc* desc, const float* q,
                                               const float* k, const float* v, float* o, float* lse,
                                               const int32_t* kv_lengths,
                                               const clattn_attention_config* config);

/* Number of elements a tensor of the descriptor spans (max index + 1), for sizing buffers.
 * which: 'q', 'k', 'v', 'o' or 'l' (the LSE). */
CLATTN_API clattn_status clattn_attention_tensor_size(const clattn_attention_desc* desc, char which,
                                                      size_t* elements);

#ifdef __cplusplus
}
#endif

#endif /* CLATTN_CLATTN_H */
