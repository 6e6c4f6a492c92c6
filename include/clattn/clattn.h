/*
 * clattn: fused multi-head attention on any OpenCL device.
 *
 * The stable public API: status, context, attention core, layer. The tuning tables and the
 * tuner are in clattn/clattn_tuning.h, which may change between minor versions.
 * Conventions:
 *   - every function returns a clattn_status (except the two string getters);
 *   - handles are opaque; clattn_X_destroy(NULL) is a no-op; destroying a handle twice,
 *     or passing it to any call after its destroy (a layer or cache after its context's
 *     destroy included), is undefined, as for free(): clattn cannot detect it (the memory
 *     may already hold another handle), so set your pointer to NULL after destroy;
 *   - a handle may be destroyed only when no other thread is using it or anything made
 *     from it;
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
  X(CLATTN_ERROR_INTERNAL, -13, "internal error")                                                  \
  X(CLATTN_ERROR_TUNING_FILE, -14, "the tuning file could not be read, parsed, locked or written") \
  X(CLATTN_ERROR_CACHE_FULL, -15,                                                                  \
    "the KV cache has no room for the tokens (its block pool or a sequence's length limit)")

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
 * finish the queue first if commands are still in flight on buffers you are about to free.
 * Destroy its layers and caches first; destroying it twice is undefined, as for every
 * handle. */
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

/* Storage type of tensors (since 0.4 also 16-bit). Arithmetic is always float32: 16-bit
 * elements are widened when read, and results are rounded to the storage type once, when
 * written (round to nearest even; a value beyond the type's range becomes ±Inf; NaN stays
 * NaN). The LSE and every accumulation are float32. */
typedef enum clattn_dtype {
  CLATTN_DTYPE_F32 = 0, /* IEEE binary32 */
  CLATTN_DTYPE_F16 = 1, /* IEEE binary16 (PyTorch's float16), stored as uint16_t bits */
  CLATTN_DTYPE_BF16 = 2 /* bfloat16 (the upper 16 bits of a float32), stored as uint16_t */
} clattn_dtype;

/* Bytes of one element of a dtype (4 or 2). Returns CLATTN_ERROR_INVALID_ARGUMENT for an
 * unknown dtype or a NULL bytes. (Since 0.4.) */
CLATTN_API clattn_status clattn_dtype_size(clattn_dtype dtype, size_t* bytes);

/* The dtype's name: "f32", "f16" or "bf16"; NULL for an unknown value. (Since 0.4.) */
CLATTN_API const char* clattn_dtype_name(clattn_dtype dtype);

/* Parses a dtype name: one clattn_dtype_name returns, or "fp32", "float32", "fp16",
 * "float16", "half", "bfloat16", in any case. Returns CLATTN_ERROR_INVALID_ARGUMENT, with
 * *dtype unchanged, for any other text. (Since 0.4.) */
CLATTN_API clattn_status clattn_dtype_from_name(const char* name, clattn_dtype* dtype);

/* Converts `count` elements from src (of src_dtype) to dst (of dst_dtype), on the host,
 * rounding as PyTorch's Tensor.to does: to nearest even, overflow to ±Inf, f16 subnormals
 * kept; 16-bit to float32 is exact. A NaN stays NaN (float32 to bf16 gives 0x7fc0, PyTorch's
 * scalar conversion; f16 NaNs keep their sign and become quiet). src and dst may be the same
 * array when the element sizes are equal, and must not otherwise overlap. Returns
 * CLATTN_ERROR_INVALID_ARGUMENT for an unknown dtype or a NULL pointer with count > 0.
 * (Since 0.4.) */
CLATTN_API clattn_status clattn_convert(const void* src, clattn_dtype src_dtype, void* dst,
                                        clattn_dtype dst_dtype, size_t count);

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
  clattn_dtype dtype; /* storage of Q, K, V and O (over a KV cache: of Q and O) */
  size_t batch;       /* >= 1 */
  size_t heads_q;     /* >= 1 */
  size_t heads_kv;    /* >= 1, divides heads_q; 0 means heads_q */
  size_t seq_q;       /* >= 1 */
  size_t seq_kv;      /* >= 1 */
  size_t head_dim;    /* 1 .. 256 */
  float scale;        /* 0: 1/sqrt(head_dim) */
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
  /* Optional, NULL for none: scratch memory for the call, at least
   * clattn_attention_workspace_size bytes from workspace_offset (bytes, a multiple of 16).
   * NULL: the context's own workspace, which it keeps and reuses. A caller's workspace may be
   * shared by calls that run one after another (one in-order queue, or ordered by events);
   * two calls that may run at the same time need two workspaces. (Since 0.2.) */
  cl_mem workspace;
  size_t workspace_offset;
} clattn_attention_buffers;

#define CLATTN_ATTENTION_BUFFERS_INIT \
  { .struct_size = sizeof(clattn_attention_buffers) }

typedef enum clattn_variant {
  /* From the shape and device type: decode-style where each key/value head has few query
   * rows (up to 32 for the seq_q class), else GPU-style on GPUs, CPU-style otherwise. */
  CLATTN_VARIANT_AUTO = 0,
  /* GPU-style: a work-group owns block_m query rows, threads_per_row work-items per row
   * (each with a slice of the head dim), and stages block_n keys and values at a time in
   * local memory. */
  CLATTN_VARIANT_TILED_LOCAL = 1,
  /* CPU-style: K is first staged transposed (keys contiguous), then each work-item keeps
   * rows_per_item query rows in registers and walks keys block_n at a time in float
   * vectors, with no barrier. */
  CLATTN_VARIANT_REGISTER_BLOCKED = 2,
  /* Decode-style ("flash-decoding", since 0.3): for few query rows per key/value head, each
   * (batch, kv head)'s keys are split across num_splits work-groups; each reads its K and V
   * rows where they are (no staging), keeps the group's query rows in registers, and writes a
   * partial output and LSE that a merge kernel combines exactly. It also reads K and V
   * directly from a KV cache's pages. Config: rows_per_item (= block_m, 1..64) query rows per
   * work-item (more rows take more work-items, each reading the keys again), block_n keys per
   * softmax step (1..128), num_splits (0..1024). Any shape runs; AUTO picks it for few rows. */
  CLATTN_VARIANT_SPLIT_KV = 3
} clattn_variant;

/* The variant's name: "tiled_local", "register_blocked", "split_kv", or "auto" for
 * CLATTN_VARIANT_AUTO;
 * NULL for a value that names no variant. The string is static. */
CLATTN_API const char* clattn_variant_name(clattn_variant variant);

/* Parses a variant name: one that clattn_variant_name returns, or a short form ("tiled",
 * "regblock", "splitkv"), in any case. Returns CLATTN_ERROR_INVALID_ARGUMENT, with *variant
 * unchanged, for any other text or a NULL argument. */
CLATTN_API clattn_status clattn_variant_from_name(const char* name, clattn_variant* variant);

/* Where a resolved config came from. */
typedef enum clattn_config_source {
  CLATTN_CONFIG_SOURCE_USER = 0,      /* given in the call, all fields set or defaulted */
  CLATTN_CONFIG_SOURCE_HEURISTIC = 1, /* the built-in default for the device */
  CLATTN_CONFIG_SOURCE_FALLBACK = 2,  /* the default did not fit; a smaller one was used */
  /* From the tuning file (see clattn/clattn_tuning.h): an entry for this device and driver, */
  CLATTN_CONFIG_SOURCE_TUNED = 3,
  /* or, failing that, for this device under another driver version. */
  CLATTN_CONFIG_SOURCE_TUNED_OTHER_DRIVER = 4
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
  /* SPLIT_KV: work-groups the keys of one (batch, kv head) are split across; 0: a default
   * chosen per call from the batch, heads, seq_kv and the compute units (enough work-groups to
   * fill the compute units 8 times, at least 256 keys and at most 64 splits each; the resolved
   * config keeps 0). Other variants: 0. (Since 0.3.) */
  unsigned num_splits;
} clattn_attention_config;

#define CLATTN_ATTENTION_CONFIG_INIT \
  { .struct_size = sizeof(clattn_attention_config) }

/* Describes a config's variant and tiles as text, e.g. "register_blocked rows=8 block_n=32"
 * (what the tools print). Copies as clattn_context_get_last_error does: *needed (may be NULL)
 * gets the length + 1. Returns CLATTN_ERROR_INVALID_ARGUMENT for a NULL config or an unknown
 * variant; an AUTO config is described as "auto". */
CLATTN_API clattn_status clattn_attention_config_describe(const clattn_attention_config* config,
                                                          char* buf, size_t buf_size,
                                                          size_t* needed);

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
 * CL_MEM_SIZE, and must be buffers of the context's cl_context; O and the LSE must not share
 * elements with Q, K or V (CLATTN_ERROR_INVALID_ARGUMENT when they do in one cl_mem; aliasing
 * through sub-buffers is not detected). Does not wait for completion. Thread-safe on a shared
 * context when each thread uses its own queue (any in-order queue of the context's cl_context and
 * device). */
CLATTN_API clattn_status clattn_attention(clattn_context* ctx, const clattn_attention_desc* desc,
                                          const clattn_attention_buffers* buffers,
                                          const clattn_attention_config* config,
                                          cl_command_queue queue, cl_uint num_wait_events,
                                          const cl_event* wait_events, cl_event* event);

/* Blocking host-pointer form: copies q, k, v (and kv_lengths) to the device, runs, and reads
 * o (and lse) back. Each array holds the elements the descriptor's shape and strides address,
 * from index 0, of the descriptor's dtype (float, or uint16_t bits for F16 and BF16; since
 * 0.4 the pointers are void*); lse is batch*heads_q*seq_q floats. lse and kv_lengths may be
 * NULL. */
CLATTN_API clattn_status clattn_attention_host(clattn_context* ctx,
                                               const clattn_attention_desc* desc, const void* q,
                                               const void* k, const void* v, void* o, float* lse,
                                               const int32_t* kv_lengths,
                                               const clattn_attention_config* config);

/* Number of elements a tensor of the descriptor spans (max index + 1), for sizing buffers.
 * which: 'q', 'k', 'v', 'o' or 'l' (the LSE). */
CLATTN_API clattn_status clattn_attention_tensor_size(const clattn_attention_desc* desc, char which,
                                                      size_t* elements);

/* ---------------------------------------------------------------- KV cache (since 0.3) */

/* Keys and values of up to max_sequences sequences, kept on the device between calls for
 * token-by-token generation. Storage is paged: a pool of blocks of block_tokens tokens, each
 * sequence holding a list of blocks, so sequences grow, shrink and are freed without moving
 * any other sequence's data (as PagedAttention does). The layout inside a block is private
 * to clattn (the one its kernels read fastest); clattn_kv_cache_read copies a sequence out.
 *
 * Ordering: the cache's bookkeeping (lengths, block lists) changes on the host when a call
 * is made, and its device work is enqueued on the call's queue. Calls on one cache must
 * therefore run in the order they are made: use one in-order queue for a cache (or order
 * calls on several queues with events). A cache may be used from several threads; calls
 * serialize on its lock. Every call returns before its device work is done, except the
 * *_host forms and clattn_kv_cache_read. */
typedef struct clattn_kv_cache clattn_kv_cache;

typedef struct clattn_kv_cache_desc {
  size_t struct_size;   /* sizeof(clattn_kv_cache_desc) */
  clattn_dtype dtype;   /* storage type of K and V (any clattn_dtype since 0.4) */
  size_t max_sequences; /* sequence ids are 0 .. max_sequences - 1; >= 1 */
  size_t heads_kv;      /* >= 1 */
  size_t head_dim;      /* 1 .. 256 */
  size_t capacity;      /* tokens over all sequences; rounded up to whole blocks; >= 1 */
  size_t block_tokens;  /* tokens per block; 0: 16 */
  size_t max_seq_len;   /* the longest one sequence may grow; 0: capacity (rounded up) */
} clattn_kv_cache_desc;

#define CLATTN_KV_CACHE_DESC_INIT \
  { .struct_size = sizeof(clattn_kv_cache_desc) }

/* Creates an empty cache on ctx (which must outlive it), allocating its whole pool now.
 * Returns CLATTN_ERROR_INVALID_SHAPE for a zero or oversized dimension, CLATTN_ERROR_OUT_OF_MEMORY
 * when the pool cannot be allocated. *out is NULL on failure. */
CLATTN_API clattn_status clattn_kv_cache_create(clattn_context* ctx,
                                                const clattn_kv_cache_desc* desc,
                                                clattn_kv_cache** out);

/* Releases the cache's buffers. NULL is a no-op. Waits for nothing: finish the queues of calls
 * still in flight on it first. Destroying it twice is undefined, as for every handle. */
CLATTN_API clattn_status clattn_kv_cache_destroy(clattn_kv_cache* cache);

/* One append: `tokens` new tokens for each of `count` sequences. */
typedef struct clattn_kv_append_desc {
  size_t struct_size;     /* sizeof(clattn_kv_append_desc) */
  size_t count;           /* sequences appended to, >= 1 */
  const int32_t* seq_ids; /* host array of count distinct ids; NULL: 0 .. count - 1 */
  size_t tokens;          /* new tokens per sequence, >= 1 */
  /* K and V of the new tokens, [count, heads_kv, tokens, head_dim] (BHND) or
   * [count, tokens, heads_kv, head_dim] (BNHD) when the strides are all 0, else strides as in
   * the attention core (batch = the i-th sequence of seq_ids); elements of the cache's
   * dtype. */
  clattn_layout layout;
  clattn_strides k_strides, v_strides;
} clattn_kv_append_desc;

#define CLATTN_KV_APPEND_DESC_INIT \
  { .struct_size = sizeof(clattn_kv_append_desc) }

/* Appends the new tokens' K and V (elements from k_offset and v_offset) at the end of each
 * sequence, after the wait list; *event (may be NULL) gets the last command's event.
 * Returns CLATTN_ERROR_CACHE_FULL, appending nothing to any sequence, when the pool has too
 * few free blocks or a sequence would exceed max_seq_len; CLATTN_ERROR_INVALID_ARGUMENT for an
 * id out of range or repeated; CLATTN_ERROR_BUFFER_TOO_SMALL as the core does. */
CLATTN_API clattn_status clattn_kv_cache_append(clattn_kv_cache* cache,
                                                const clattn_kv_append_desc* desc, cl_mem k,
                                                size_t k_offset, cl_mem v, size_t v_offset,
                                                cl_command_queue queue, cl_uint num_wait_events,
                                                const cl_event* wait_events, cl_event* event);

/* Blocking host form on the context's queue (k and v as the descriptor addresses them, of the
 * cache's dtype). */
CLATTN_API clattn_status clattn_kv_cache_append_host(clattn_kv_cache* cache,
                                                     const clattn_kv_append_desc* desc,
                                                     const void* k, const void* v);

/* The number of tokens a sequence holds. */
CLATTN_API clattn_status clattn_kv_cache_seq_length(const clattn_kv_cache* cache, int32_t seq_id,
                                                    size_t* length);

/* Keeps a sequence's first `length` tokens (length <= its current length) and returns the
 * blocks past them to the pool. */
CLATTN_API clattn_status clattn_kv_cache_truncate(clattn_kv_cache* cache, int32_t seq_id,
                                                  size_t length);

/* Empties a sequence and returns its blocks to the pool (truncate to 0). */
CLATTN_API clattn_status clattn_kv_cache_free_sequence(clattn_kv_cache* cache, int32_t seq_id);

/* Empties every sequence. */
CLATTN_API clattn_status clattn_kv_cache_reset(clattn_kv_cache* cache);

typedef struct clattn_kv_cache_usage {
  size_t struct_size;  /* sizeof(clattn_kv_cache_usage), set by the caller */
  size_t block_tokens; /* tokens per block */
  size_t blocks_total, blocks_used;
  size_t tokens_used;             /* the sequences' lengths summed */
  size_t bytes_total, bytes_used; /* device memory of the pool, and of its used blocks */
} clattn_kv_cache_usage;

#define CLATTN_KV_CACHE_USAGE_INIT \
  { .struct_size = sizeof(clattn_kv_cache_usage) }

/* Fills *usage: the memory the cache holds and uses. */
CLATTN_API clattn_status clattn_kv_cache_get_usage(const clattn_kv_cache* cache,
                                                   clattn_kv_cache_usage* usage);

/* Copies a sequence's K and V out (blocking, after the context's queue has finished):
 * k and v get [heads_kv, length, head_dim] elements of the cache's dtype each, length its
 * current length. */
CLATTN_API clattn_status clattn_kv_cache_read(clattn_kv_cache* cache, int32_t seq_id, void* k,
                                              void* v);

/* The attention core over a cache: O = softmax(Q·Kᵀ·scale + mask)·V where K and V are the
 * cached tokens of each sequence. desc gives Q and O as for clattn_attention (desc->dtype is
 * their storage; the cache's dtype may differ, e.g. float32 queries over an f16 cache): batch is
 * the number of sequences (the i-th reads sequence seq_ids[i]; seq_ids NULL: 0 .. batch - 1),
 * heads_kv and head_dim must equal the cache's, seq_kv must be 0 (each sequence's length
 * comes from the cache) and k/v strides are ignored. Causal masks are aligned to each
 * sequence's own length: with L tokens cached, query i sees key j when j <= i + L - seq_q
 * (the seq_q queries are the last seq_q tokens appended). A sequence with no token gives
 * zero rows and LSE -INFINITY. buffers: q, o, lse, workspace as for clattn_attention; k, v
 * and kv_lengths must be NULL. Few query rows read the cache's pages in place (SPLIT_KV);
 * longer prompts may first gather the keys into the workspace. */
CLATTN_API clattn_status clattn_attention_cached(
    clattn_kv_cache* cache, const clattn_attention_desc* desc, const int32_t* seq_ids,
    const clattn_attention_buffers* buffers, const clattn_attention_config* config,
    cl_command_queue queue, cl_uint num_wait_events, const cl_event* wait_events, cl_event* event);

/* Blocking host form: q as the descriptor addresses it, o likewise (desc->dtype), lse
 * [batch, heads_q, seq_q] floats or NULL. */
CLATTN_API clattn_status clattn_attention_cached_host(clattn_kv_cache* cache,
                                                      const clattn_attention_desc* desc,
                                                      const int32_t* seq_ids, const void* q,
                                                      void* o, float* lse,
                                                      const clattn_attention_config* config);

/* ---------------------------------------------------------------- attention maps (since 0.4) */

/* The probabilities of a fused call, P[b, h, i, j] = exp(score_ij - lse_i): the softmax after
 * masking, so that each row that sees a key sums to 1 and a masked entry (causal, key length)
 * is exactly 0. They are recomputed for a block of query heads, query rows and key columns
 * from Q, K and the LSE a fused call with the same descriptor and inputs wrote, tile by tile:
 * no buffer beyond the caller's block, and work in proportion to it (heads · rows · cols ·
 * head_dim multiply-adds). Every mask, layout, stride and head grouping of the core applies, as
 * does a KV cache (clattn_attention_probs_cached). Only keys a row sees are read (a NaN or Inf
 * stored under a mask changes nothing). A row that sees no key (LSE -INFINITY) is all 0; a NaN
 * LSE (a NaN in the row's Q or a visible K) makes the row's visible entries NaN.
 * Accuracy: each entry carries the rounding of its score (a head_dim-term float dot product)
 * and of the LSE it is divided by, relative to itself, so a row that sees n keys sums to 1
 * within about n·2^-24 (the LSE's float sum) plus its scores' rounding (tests/test_probs.c
 * derives the bound). */

/* The block: counts 0 mean "to the end of the dimension". A range must lie inside its
 * dimension (begin + count at most the dimension, begin below it). */
typedef struct clattn_probs_block {
  size_t struct_size;       /* sizeof(clattn_probs_block) */
  size_t head_begin, heads; /* query heads [head_begin, head_begin + heads); heads 0: to heads_q */
  size_t row_begin, rows;   /* query rows; rows 0: to seq_q */
  size_t col_begin, cols;   /* key columns; cols 0: to seq_kv (over a cache: to the longest
                               sequence of the call) */
} clattn_probs_block;

#define CLATTN_PROBS_BLOCK_INIT \
  { .struct_size = sizeof(clattn_probs_block) }

/* Enqueues P of the block for every batch index, as float32 [batch, heads, rows, cols]
 * contiguous from element p_offset of p, on `queue` (NULL: the context's queue) after the wait
 * list; *event (may be NULL) gets the event of its last command, released by the caller. Does
 * not wait for completion. desc as for clattn_attention (the same as the fused call's).
 * buffers: q, k and lse required (lse: the LSE a fused clattn_attention call with this desc
 * and these inputs wrote), kv_lengths optional (the fused call's); v, o and workspace are not
 * read and may be NULL. block NULL: the whole matrix. Thread-safe as clattn_attention.
 * Returns CLATTN_ERROR_INVALID_ARGUMENT for a NULL q, k, lse or p, a block beyond the shape
 * (or a bad struct_size), p sharing elements with q, k, lse or kv_lengths in one cl_mem, a
 * buffer of another context, an input created CL_MEM_WRITE_ONLY (an LSE buffer made for the
 * fused call alone, say) or a p created CL_MEM_READ_ONLY; CLATTN_ERROR_BUFFER_TOO_SMALL for a p
 * (from p_offset) smaller than the block or any input smaller than the shape;
 * CLATTN_ERROR_UNSUPPORTED for an output beyond 32-bit indexing (p_offset plus its elements above
 * 2^32); the shape's statuses as clattn_attention. */
CLATTN_API clattn_status clattn_attention_probs(
    clattn_context* ctx, const clattn_attention_desc* desc, const clattn_attention_buffers* buffers,
    const clattn_probs_block* block, cl_mem p, size_t p_offset, cl_command_queue queue,
    cl_uint num_wait_events, const cl_event* wait_events, cl_event* event);

/* Blocking host form on the context's queue: q and k as the descriptor addresses them (from
 * index 0, in the storage of desc->dtype), lse float [batch, heads_q, seq_q], kv_lengths int32
 * [batch] or NULL, p as above (batch · heads · rows · cols floats). */
CLATTN_API clattn_status clattn_attention_probs_host(clattn_context* ctx,
                                                     const clattn_attention_desc* desc,
                                                     const void* q, const void* k, const float* lse,
                                                     const int32_t* kv_lengths,
                                                     const clattn_probs_block* block, float* p);

/* Over a KV cache, as clattn_attention_cached reads it: desc with seq_kv 0 (batch sequences,
 * the i-th being seq_ids[i]; seq_ids NULL: 0 .. batch - 1), causal aligned to each sequence's
 * length, K from the cache as it is when the call is made (make it right after the fused
 * clattn_attention_cached call whose LSE it takes, before the next append). buffers: q and lse
 * (k, v and kv_lengths must be NULL; o and workspace are not read). The block's columns run
 * up to the longest sequence of the call (cols 0: to it); a sequence's columns past its own
 * length are 0. Other statuses as clattn_attention_probs and clattn_attention_cached. */
CLATTN_API clattn_status clattn_attention_probs_cached(
    clattn_kv_cache* cache, const clattn_attention_desc* desc, const int32_t* seq_ids,
    const clattn_attention_buffers* buffers, const clattn_probs_block* block, cl_mem p,
    size_t p_offset, cl_command_queue queue, cl_uint num_wait_events, const cl_event* wait_events,
    cl_event* event);

/* ---------------------------------------------------------------- layer: multi-head attention */

/* A multi-head attention layer, PyTorch nn.MultiheadAttention's computation (batch_first):
 *
 *   Q = x·Wqᵀ + bq,  K = key·Wkᵀ + bk,  V = value·Wvᵀ + bv      (key = value = x: self)
 *   O_h = softmax(Q_h·K_gᵀ·scale + mask)·V_g   for each head h, g = h / (heads / heads_kv)
 *   y = concat(O_0 .. O_{heads-1})·Woᵀ + bo
 *
 * Shapes (E = d_model, H = heads, Hkv = heads_kv, D = head_dim, all row-major, elements of
 * the layer's dtype):
 *   x, y            [batch, seq, E]
 *   key, value      [batch, seq_kv, k_dim] and [batch, seq_kv, v_dim] (cross-attention)
 *   Wq [H·D, E]     Wk [Hkv·D, k_dim]     Wv [Hkv·D, v_dim]     Wo [E, H·D]
 *   bq [H·D]        bk [Hkv·D]            bv [Hkv·D]            bo [E]
 * Weights are [out, in], as in PyTorch (y = x·Wᵀ + b). With H = Hkv, D = E/H and
 * k_dim = v_dim = E these are exactly nn.MultiheadAttention's q/k/v_proj_weight (or the
 * thirds of in_proj_weight), in_proj_bias and out_proj.
 *
 * Data path of one forward call, all on one in-order queue: three GEMMs project x (or key
 * and value) into Q [batch·seq, H·D], K and V [batch·seq_kv, Hkv·D] in the layer's
 * workspace, with their biases; with rope set, one kernel rotates Q and K; the attention
 * core reads the heads through strides and writes [batch, seq, H·D], which is the heads'
 * concatenation; one more GEMM projects it into y, with bo. Memory is O(batch·seq·E); no
 * seq × seq buffer is ever made.
 *
 * The GEMMs (since 0.5): on CPU devices clattn's own kernel (cl/gemm.cl: register blocks of
 * float vectors, the bias added as it stores), which reads the caller's x and writes y where
 * they are, at any shape and offset, and launches nothing else; on other devices CLBlast's
 * SGEMM, the biases broadcast into C by buffer copies first. The environment variable
 * CLATTN_GEMM=clattn or =clblast, read when a context is created, chooses for every device
 * (any other value fails the creation with CLATTN_ERROR_INVALID_ARGUMENT).
 *
 * A layer of dtype F16 or BF16 (since 0.4) keeps its weights and computes in float32: they
 * are widened once at creation, a conversion kernel widens x (key, value) into the
 * workspace before the GEMMs and rounds y to the dtype after them, and Q, K, V and the
 * heads' output stay float32 in between. The result is float32's, rounded once: more
 * accurate than a computation in the 16-bit type (CLBlast's HGEMM accumulates in half
 * precision). clattn_mha_get_info reports the path.
 *
 * The attention weights (PyTorch's need_weights, since 0.4) are returned on request, per head
 * and averaged over heads (clattn_mha_buffers.attn_weights, attn_weights_mean): the core then
 * also writes its rows' LSE into the layer's workspace, and the probabilities kernel of
 * clattn_attention_probs recomputes them from Q, K and that LSE into the caller's buffers.
 *
 * Not supported (PyTorch options): add_bias_kv, add_zero_attn, dropout, arbitrary float
 * attn_mask. Masks are the causal flag and per-sequence key
 * lengths (PyTorch's key_padding_mask with the padding at the end of each sequence).
 *
 * Thread safety: a layer may be used from several threads and on several queues (of its
 * context's cl_context and device). Its workspace is shared, so each forward call waits for
 * the previous one to finish on the device (calls serialize through an event). */
typedef struct clattn_mha clattn_mha;

typedef enum clattn_rope_style {
  CLATTN_ROPE_NONE = 0,
  CLATTN_ROPE_NEOX = 1, /* half split: (x[i], x[i + rope_dims/2]) */
  CLATTN_ROPE_GPTJ = 2  /* interleaved: (x[2i], x[2i + 1]) */
} clattn_rope_style;

/* The layer's dimensions. 0 in any optional field takes its default. */
typedef struct clattn_mha_desc {
  size_t struct_size; /* sizeof(clattn_mha_desc) */
  size_t d_model;     /* E, width of x and y; >= 1 */
  size_t heads;       /* H, query heads; >= 1 */
  size_t heads_kv;    /* Hkv, key/value heads; divides heads (GQA, MQA); 0: heads */
  size_t head_dim;    /* D, 1 .. 256; 0: d_model / heads (which must then divide exactly) */
  size_t k_dim;       /* width of the key input (PyTorch kdim); 0: d_model */
  size_t v_dim;       /* width of the value input (PyTorch vdim); 0: k_dim */
  float scale;        /* 0: 1/sqrt(head_dim), as PyTorch */
  /* Rotary position embeddings on Q and K after their projection (since 0.3): position p of
   * a sequence (0 for its first token; in a cached forward, its cached length before the
   * call plus the row) rotates each pair of the first rope_dims dims of every head by
   * p·theta^(-2i/rope_dims), pair i. NEOX pairs dim i with i + rope_dims/2 (GPT-NeoX, Llama's
   * Hugging Face form); GPTJ pairs 2i with 2i + 1 (GPT-J, the original Llama form).
   * Angles are reduced by whole turns in extended precision before cos and sin, so for any
   * position below 2^24 each rotated element is within about 17·2^-24·(|a| + |b|) of the
   * exact rotation of its pair (a, b) (a float32 product position·frequency, as PyTorch's
   * float32 RoPE forms it, would be off by up to 6e-3 rad at position 1e5). */
  clattn_rope_style rope;
  size_t rope_dims; /* even, <= head_dim; 0: head_dim */
  float rope_theta; /* 0: 10000 */
  /* Storage of x, key, value, y and of the weights and biases given (since 0.4; 0: F32). */
  clattn_dtype dtype;
} clattn_mha_desc;

#define CLATTN_MHA_DESC_INIT \
  { .struct_size = sizeof(clattn_mha_desc) }

/* One weight or bias: a host array, or a device buffer of the layer's cl_context (elements
 * from `offset`), of the layer's dtype (float, or uint16_t bits; void* since 0.4). Both NULL:
 * absent (a bias of zeros; an error for a weight). */
typedef struct clattn_mha_tensor {
  const void* host;
  cl_mem mem;
  size_t offset; /* elements, for mem only */
} clattn_mha_tensor;

/* The layer's weights, copied into buffers the layer owns at creation: the caller may free
 * or change its arrays and buffers once clattn_mha_create returns. Give either the packed
 * in_proj_weight or all three of q/k/v_proj_weight, not both. */
typedef struct clattn_mha_weights {
  size_t struct_size; /* sizeof(clattn_mha_weights) */
  /* Packed [Wq; Wk; Wv], [(H + 2·Hkv)·D, E] (PyTorch's in_proj_weight [3E, E] when
   * Hkv = H and D = E/H); only when k_dim = v_dim = d_model. */
  clattn_mha_tensor in_proj_weight;
  /* Packed [bq; bk; bv], [(H + 2·Hkv)·D] (PyTorch's in_proj_bias [3E]); optional. Use either
   * it or q/k/v_proj_bias, not both. */
  clattn_mha_tensor in_proj_bias;
  clattn_mha_tensor q_proj_weight, k_proj_weight, v_proj_weight; /* separate Wq, Wk, Wv */
  clattn_mha_tensor q_proj_bias, k_proj_bias, v_proj_bias;       /* optional bq, bk, bv */
  clattn_mha_tensor out_proj_weight;                             /* Wo [E, H·D], required */
  clattn_mha_tensor out_proj_bias;                               /* bo [E], optional */
} clattn_mha_weights;

#define CLATTN_MHA_WEIGHTS_INIT \
  { .struct_size = sizeof(clattn_mha_weights) }

/* Creates a layer on ctx (which must outlive it): validates desc, uploads the weights (device
 * copies complete before it returns). *out is NULL on failure. desc is checked before
 * weights is looked at (so weights NULL tells whether desc would be accepted: the call then
 * fails with INVALID_ARGUMENT for a good desc, or with desc's status).
 * Returns CLATTN_ERROR_INVALID_SHAPE for a zero dimension, d_model not divisible by heads
 * with head_dim 0, heads not a multiple of heads_kv, head_dim > 256, or rope_dims odd or
 * above head_dim; CLATTN_ERROR_INVALID_ARGUMENT for an unknown rope style, a rope_theta that
 * is negative or not finite, a missing weight, both packed and separate weights, a
 * packed weight where k_dim or v_dim differs from d_model, or a cl_mem of another context;
 * CLATTN_ERROR_BUFFER_TOO_SMALL for a weight buffer smaller than its shape. */
CLATTN_API clattn_status clattn_mha_create(clattn_context* ctx, const clattn_mha_desc* desc,
                                           const clattn_mha_weights* weights, clattn_mha** out);

/* Releases the layer's buffers. NULL is a no-op. Waits for nothing: finish the queues of
 * forward calls still in flight first. Destroying it twice is undefined, as for every
 * handle. */
CLATTN_API clattn_status clattn_mha_destroy(clattn_mha* mha);

/* The sizes of one forward call. */
typedef struct clattn_mha_forward_desc {
  size_t struct_size; /* sizeof(clattn_mha_forward_desc) */
  size_t batch;       /* >= 1 */
  size_t seq;         /* rows of x (and y) per sequence; >= 1 */
  size_t seq_kv;      /* rows of key/value per sequence (cross-attention); 0: seq. Self-
                         attention requires 0 or seq */
  /* Nonzero: query i sees key j only when j <= i + (seq_kv - seq) (bottom-right aligned; for
   * self-attention the usual j <= i, PyTorch's is_causal / upper-triangular attn_mask). */
  int causal;
} clattn_mha_forward_desc;

#define CLATTN_MHA_FORWARD_DESC_INIT \
  { .struct_size = sizeof(clattn_mha_forward_desc) }

/* Buffers of one forward call, borrowed for the call; offsets in elements. */
typedef struct clattn_mha_buffers {
  size_t struct_size; /* sizeof(clattn_mha_buffers) */
  cl_mem x;           /* [batch, seq, d_model] */
  size_t x_offset;
  cl_mem key; /* [batch, seq_kv, k_dim]; NULL: self-attention (key = value = x), which
                needs k_dim = v_dim = d_model */
  size_t key_offset;
  cl_mem value; /* [batch, seq_kv, v_dim]; NULL: the key buffer and offset (then k_dim
                  must equal v_dim) */
  size_t value_offset;
  cl_mem y; /* [batch, seq, d_model]; may be x itself (x is read before y is written) */
  size_t y_offset;
  /* Optional, NULL for none: int32 [batch]; keys j >= kv_lengths[b] of sequence b are masked
   * (PyTorch's key_padding_mask with padding at the end). On the device the lengths cannot be
   * checked without waiting, so they are clamped to [0, seq_kv]; the host form checks them.
   * A row that sees no key (length 0, or causal rows before the first key) has a zero
   * attention output, so its y is bo (PyTorch gives NaN there). */
  cl_mem kv_lengths;
  /* Since 0.4 (an older struct_size leaves them NULL). Optional, NULL for none: the attention
   * weights, written beside y by the same call, as PyTorch's nn.MultiheadAttention returns them
   * with need_weights=True: float32 [batch, heads, seq, seq_kv] (average_attn_weights=False),
   * the softmax after masking of each head (each row sums to 1, masked keys exactly 0), and
   * float32 [batch, seq, seq_kv] (average_attn_weights=True), their mean over heads. Offsets in
   * elements. A row that sees no key has weights 0 (PyTorch gives NaN). They must not share
   * elements with x, key, value, y, kv_lengths or each other in one cl_mem. A call returning
   * weights uses batch * heads * seq floats more of the layer's workspace (the rows' LSE).
   * Over a KV cache (clattn_mha_forward_cached), seq_kv is the longest sequence of the call
   * after its append, and a sequence's columns past its own length are 0. */
  cl_mem attn_weights;
  size_t attn_weights_offset;
  cl_mem attn_weights_mean;
  size_t attn_weights_mean_offset;
} clattn_mha_buffers;

#define CLATTN_MHA_BUFFERS_INIT \
  { .struct_size = sizeof(clattn_mha_buffers) }

/* Enqueues one forward pass on `queue` (NULL: the context's queue) after the wait list;
 * *event (may be NULL) gets the event of the last command, released by the caller. Does not
 * wait for completion. The layer's workspace grows to the largest call and is reused.
 * Returns CLATTN_ERROR_INVALID_SHAPE for a zero batch or seq, or self-attention with seq_kv
 * other than seq; CLATTN_ERROR_BUFFER_TOO_SMALL for a buffer smaller than the shape;
 * CLATTN_ERROR_INVALID_QUEUE as clattn_attention does. */
CLATTN_API clattn_status clattn_mha_forward(clattn_mha* mha, const clattn_mha_forward_desc* fwd,
                                            const clattn_mha_buffers* buffers,
                                            cl_command_queue queue, cl_uint num_wait_events,
                                            const cl_event* wait_events, cl_event* event);

/* Blocking host-pointer form on the context's queue: x [batch, seq, d_model], key and value
 * as in clattn_mha_buffers (key NULL: self-attention; value NULL: key), y [batch, seq,
 * d_model], kv_lengths int32 [batch] or NULL. Returns CLATTN_ERROR_INVALID_ARGUMENT for a
 * key length below 0 or above seq_kv. */
CLATTN_API clattn_status clattn_mha_forward_host(clattn_mha* mha,
                                                 const clattn_mha_forward_desc* fwd, const void* x,
                                                 const void* key, const void* value, void* y,
                                                 const int32_t* kv_lengths);

/* Blocking host form with attention weights (since 0.4): as clattn_mha_forward_host, and
 * attn_weights [batch, heads, seq, seq_kv] and attn_weights_mean [batch, seq, seq_kv] (floats;
 * either may be NULL) as clattn_mha_buffers describes them. x, key, value and y hold float32
 * (as in clattn_mha_forward_host). */
CLATTN_API clattn_status clattn_mha_forward_weights_host(
    clattn_mha* mha, const clattn_mha_forward_desc* fwd, const void* x, const void* key,
    const void* value, void* y, const int32_t* kv_lengths, float* attn_weights,
    float* attn_weights_mean);

/* Bytes of device workspace a forward call of these sizes needs (self-attention when
 * cross is 0), for planning memory: the projected Q, K, V, the heads' output, the attention
 * core's scratch and CLBlast's temporary copies (none with clattn's GEMM kernel), for inputs
 * and outputs at offset 0 (with CLBlast, an x, key, value or y at another offset may add its
 * padded copy of that matrix). The layer
 * owns its workspace: it grows to the largest call and is reused, so forwards after the
 * first of a shape allocate nothing. A call that returns attention weights needs
 * 4 * batch * heads * seq bytes more (the rows' LSE). May build the core's kernels (its plan). */
CLATTN_API clattn_status clattn_mha_workspace_size(const clattn_mha* mha,
                                                   const clattn_mha_forward_desc* fwd, int cross,
                                                   size_t* bytes);

/* A forward pass over a KV cache (since 0.3), for generation: x holds `seq` new tokens of each
 * of fwd->batch sequences (the i-th is cache sequence seq_ids[i]; NULL: 0 .. batch - 1). Q, K
 * and V of the new tokens are projected (and rotated, with the layer's rope), K and V are
 * appended to the cache, the queries attend over each sequence's whole cached K and V, and
 * y gets the output projection. The cache's heads_kv and head_dim must be the layer's.
 * fwd->causal is aligned to each sequence's length (a prompt's rows see the tokens before
 * them); fwd->seq_kv must be 0 and buffers key, value and kv_lengths NULL (self-attention
 * only). Returns CLATTN_ERROR_CACHE_FULL, changing nothing, when the tokens do not fit;
 * CLATTN_ERROR_INVALID_SHAPE for a seq_kv other than 0 or a cache whose heads_kv or head_dim
 * differ from the layer's; CLATTN_ERROR_INVALID_ARGUMENT for key, value or kv_lengths set,
 * more sequences than the cache holds, or an id out of range or repeated. Any failure leaves
 * the cache as it was. A decode step (seq 1) after the first of its batch size allocates
 * nothing in the layer. Attention weights (buffers attn_weights, attn_weights_mean) span the
 * longest sequence of the call after the append, L: [batch, heads, seq, L] and [batch, seq, L]
 * (CLATTN_ERROR_BUFFER_TOO_SMALL, changing nothing, for smaller buffers). */
CLATTN_API clattn_status clattn_mha_forward_cached(clattn_mha* mha, clattn_kv_cache* cache,
                                                   const clattn_mha_forward_desc* fwd,
                                                   const int32_t* seq_ids,
                                                   const clattn_mha_buffers* buffers,
                                                   cl_command_queue queue, cl_uint num_wait_events,
                                                   const cl_event* wait_events, cl_event* event);

/* Blocking host form: x and y [batch, seq, d_model] of the layer's dtype. */
CLATTN_API clattn_status clattn_mha_forward_cached_host(clattn_mha* mha, clattn_kv_cache* cache,
                                                        const clattn_mha_forward_desc* fwd,
                                                        const int32_t* seq_ids, const void* x,
                                                        void* y);

/* How a layer runs its projections (since 0.4). */
typedef enum clattn_mha_gemm_path {
  /* float32 storage: the GEMMs read x and write y where they are. */
  CLATTN_MHA_GEMM_F32 = 0,
  /* 16-bit storage: weights widened to float32 at creation; x (key, value) widened into the
   * workspace and y rounded from it by a conversion kernel around the float32 GEMMs. */
  CLATTN_MHA_GEMM_F32_CONVERTED = 1
} clattn_mha_gemm_path;

/* The kernel a layer's GEMMs run (since 0.5; see the layer's data path above). */
typedef enum clattn_gemm_kernel {
  CLATTN_GEMM_CLBLAST = 0, /* CLBlast's SGEMM */
  CLATTN_GEMM_CLATTN = 1   /* clattn's own (cl/gemm.cl), the default on CPU devices */
} clattn_gemm_kernel;

typedef struct clattn_mha_info {
  size_t struct_size; /* sizeof(clattn_mha_info), set by the caller; 0.4's size (without
                         gemm_kernel) is accepted, and only that much is written */
  clattn_dtype dtype; /* the layer's storage type */
  clattn_mha_gemm_path gemm_path;
  size_t weight_bytes;            /* device memory the layer's weights and biases take */
  clattn_gemm_kernel gemm_kernel; /* since 0.5 */
} clattn_mha_info;

#define CLATTN_MHA_INFO_INIT \
  { .struct_size = sizeof(clattn_mha_info) }

/* Fills *info: the layer's dtype and how it computes (since 0.4; gemm_kernel since 0.5). */
CLATTN_API clattn_status clattn_mha_get_info(const clattn_mha* mha, clattn_mha_info* info);

/* ---------------------------------------------------------------- workspace */

/* Scratch memory, in bytes, that one clattn_attention call with this descriptor and config
 * (NULL: defaults) needs beside the caller's buffers (REGISTER_BLOCKED: the staged Kᵀ,
 * batch * heads_kv * head_dim * seq_kv rounded up to block_n floats, twice that where K and V
 * are 16-bit (V staged as float too); TILED_LOCAL: 0;
 * SPLIT_KV: batch * heads_q * seq_q * splits * (head_dim + 2) floats, splits being num_splits
 * or, for 0, the default's bound min(64, seq_kv / 256); 0 with one split). It
 * comes from clattn_attention_buffers.workspace when the caller gives one, else from the
 * context's workspace, which grows to the largest call's size and is kept until the context
 * is destroyed (a steady-state call allocates nothing). Resolves the config as
 * clattn_attention_get_config does (building the kernel if needed). */
CLATTN_API clattn_status clattn_attention_workspace_size(clattn_context* ctx,
                                                         const clattn_attention_desc* desc,
                                                         const clattn_attention_config* config,
                                                         size_t* bytes);

#ifdef __cplusplus
}
#endif

#endif /* CLATTN_CLATTN_H */
