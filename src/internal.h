/* What the library's source files share. Nothing here is public. */
#ifndef CLATTN_SRC_INTERNAL_H
#define CLATTN_SRC_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "clattn/clattn.h"
#include "clattn/clattn_tuning.h"

#define CLATTN__MAX_HEAD_DIM 256

/* ------------------------------------------------------------ errors and logging */

/* Records a formatted message as the context's last error (ctx may be NULL) and logs it when
 * CLATTN_LOG is set. Returns status, so callers can write `return clattn__fail(...)`. */
clattn_status clattn__fail(const clattn_context* ctx, clattn_status status, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Maps an OpenCL error code to a status and records "<call> failed: <code name> (<code>)
 * at file:line". */
clattn_status clattn__fail_cl(const clattn_context* ctx, cl_int err, const char* call,
                              const char* file, int line);

/* Copies a context's last error to the calling thread's context-less message, for a
 * context that is about to be destroyed because its creation failed. */
void clattn__error_to_thread(const clattn_context* ctx);

/* Logs when CLATTN_LOG is set (to stderr). */
void clattn__log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

/* Name of an OpenCL error code ("CL_OUT_OF_RESOURCES"). */
const char* clattn__cl_error_name(cl_int err);

/* Checks an OpenCL call; on failure records it, sets `status` and jumps to cleanup. */
#define CLATTN__CL_CHECK(ctx, call)                                            \
  do {                                                                         \
    cl_int clattn__err = (call);                                               \
    if (clattn__err != CL_SUCCESS) {                                           \
      status = clattn__fail_cl((ctx), clattn__err, #call, __FILE__, __LINE__); \
      goto cleanup;                                                            \
    }                                                                          \
  } while (0)

/* Sets status and jumps to cleanup when a clattn call fails. */
#define CLATTN__CHECK(call)         \
  do {                              \
    status = (call);                \
    if (status != CLATTN_SUCCESS) { \
      goto cleanup;                 \
    }                               \
  } while (0)

/* Copies a string into a caller's buffer with clattn's getter conventions. */
clattn_status clattn__copy_out(const char* text, char* buf, size_t buf_size, size_t* needed);

/* ------------------------------------------------------------ devices */

/* A parsed device selector (see clattn_context_options.device). */
typedef enum clattn__device_spec_kind {
  CLATTN__DEVICE_SPEC_DEFAULT = 0, /* NULL or "": the default rule */
  CLATTN__DEVICE_SPEC_INDEX = 1,   /* "P:D" */
  CLATTN__DEVICE_SPEC_TYPE = 2,    /* "gpu", "cpu", "accelerator" (any case) */
  CLATTN__DEVICE_SPEC_NAME = 3     /* any other text: a substring of a name or vendor */
} clattn__device_spec_kind;

typedef struct clattn__device_spec {
  clattn__device_spec_kind kind;
  cl_uint platform_index, device_index; /* INDEX */
  cl_device_type type;                  /* TYPE */
  const char* name;                     /* NAME: points into the parsed string */
} clattn__device_spec;

/* Parses a selector without enumerating platforms (pure: no OpenCL call, no allocation).
 * Returns CLATTN_ERROR_INVALID_ARGUMENT for a malformed "P:D" (an index that is not a
 * decimal number up to UINT32_MAX, text after D, more than one colon) or a NULL out. */
clattn_status clattn__device_spec_parse(const char* spec, clattn__device_spec* out);

/* Resolves a selector (see clattn_context_options.device) to a device. */
clattn_status clattn__device_select(const char* spec, cl_platform_id* platform,
                                    cl_device_id* device, cl_uint* platform_index,
                                    cl_uint* device_index);

/* ------------------------------------------------------------ programs */

typedef struct clattn__program_cache clattn__program_cache;
typedef struct clattn__plan_cache clattn__plan_cache;         /* src/plan.c */
typedef struct clattn__workspace_pool clattn__workspace_pool; /* src/workspace.c */

clattn_status clattn__program_cache_create(clattn__program_cache** out);
void clattn__program_cache_destroy(clattn__program_cache* cache);

/* Returns the program built from common.cl + <source_name>.cl with `options`, building it on
 * first use (once per context, under a lock). The program stays owned by the cache. */
clattn_status clattn__program_get(clattn_context* ctx, const char* source_name, const char* options,
                                  cl_program* program);

/* Test hook: how many program builds the context's cache has started (each (source, options)
 * pair once, unless its build failed). */
size_t clattn__program_build_count(clattn_context* ctx);

/* Creates a kernel from a cached program (the caller releases it). */
clattn_status clattn__kernel_create(clattn_context* ctx, const char* source_name,
                                    const char* options, const char* kernel_name,
                                    cl_kernel* kernel);

/* ------------------------------------------------------------ context */

struct clattn_context {
  cl_context cl_ctx;
  cl_device_id device;
  cl_command_queue queue;
  clattn_device_info info;
  char kernel_dir[4096]; /* empty: embedded sources */
  clattn__program_cache* programs;
  clattn__plan_cache* plans;
  clattn__workspace_pool* workspace;

  pthread_mutex_t error_lock; /* guards last_error and build_log */
  char last_error[2048];
  char* build_log; /* malloc'd, NULL when none */

  /* 1: the layer's GEMMs without transposes run clattn's own kernel (cl/gemm.cl), 0: all
   * GEMMs go to CLBlast (src/gemm.c, set at creation). */
  int gemm_own;

  /* Tuning (src/tuning/lookup.c): the file read at creation, never changed afterwards. */
  struct clattn_tuning_table* tuning;
  clattn_tuning_info tuning_info;
};

/* Records a build log in the context (copied). */
void clattn__set_build_log(const clattn_context* ctx, const char* log);

/* Checks that a queue is in-order and belongs to the context's cl_context and device. */
clattn_status clattn__queue_check(const clattn_context* ctx, cl_command_queue queue);

/* The queue a call enqueues on: *queue NULL (or the context's own) becomes the context's;
 * another is checked with clattn__queue_check. */
clattn_status clattn__call_queue(const clattn_context* ctx, cl_command_queue* queue);

/* Checks a call's wait list: INVALID_ARGUMENT for num_wait events and a NULL array. */
clattn_status clattn__wait_list_check(const clattn_context* ctx, cl_uint num_wait,
                                      const cl_event* wait);

/* ------------------------------------------------------------ storage types (src/dtype.c) */

/* Bytes of one element of a dtype; 0 for a value that names none. */
size_t clattn__dtype_size(clattn_dtype dtype);

/* Exact conversions, rounding to nearest even (see clattn_convert). */
uint16_t clattn__f32_to_f16(float f);
float clattn__f16_to_f32(uint16_t h);
uint16_t clattn__f32_to_bf16(float f);
float clattn__bf16_to_f32(uint16_t b);

/* Element i of an array of a dtype, as a float; and the reverse, rounded. */
float clattn__load_element(const void* p, clattn_dtype dtype, size_t i);
void clattn__store_element(void* p, clattn_dtype dtype, size_t i, float x);

/* ------------------------------------------------------------ descriptors (src/shape.c) */

/* Checks the struct_size of a caller's descriptor and copies it over a zero-filled `out` of
 * `current` bytes: any size from `published` (the struct's size in the first version that had
 * it) up to `current` (this version's sizeof) is accepted, and the fields an older caller
 * does not know stay 0 (their defaults). `in` must not be NULL. */
clattn_status clattn__struct_copy(const clattn_context* ctx, const char* type, const void* in,
                                  size_t published, size_t current, void* out);

/* A fully resolved attention descriptor: defaults applied, strides explicit. */
/* clattn__attention_shape.causal: 0 none; CLATTN__CAUSAL_BOTTOM_RIGHT (query i sees key
 * j <= i + seq_kv - seq_q, the public flag); CLATTN__CAUSAL_PER_LENGTH (j <= i + L - seq_q with
 * L the row's key length, kv_lengths[b]: a KV cache's sequences). Kernels get it as is. */
#define CLATTN__CAUSAL_BOTTOM_RIGHT 1
#define CLATTN__CAUSAL_PER_LENGTH 2

typedef struct clattn__attention_shape {
  clattn_dtype dtype;    /* storage of Q and O */
  clattn_dtype kv_dtype; /* storage of K and V: dtype, except over a KV cache of another */
  size_t batch, heads_q, heads_kv, seq_q, seq_kv, head_dim;
  float scale;
  int causal;
  int paged; /* K and V from a KV cache's pages (clattn__paged_kv) */
  clattn_strides q, k, v, o;
} clattn__attention_shape;

/* Validates a descriptor and fills the resolved shape. */
clattn_status clattn__attention_shape_resolve(const clattn_context* ctx,
                                              const clattn_attention_desc* desc,
                                              clattn__attention_shape* shape);

/* Copies a caller's buffers struct (any published size) into *out and checks its buffers
 * against the shape (src/attention.c): validity, context, size, outputs not aliasing inputs.
 * cached: a call over a KV cache, whose k, v and kv_lengths must be NULL. */
clattn_status clattn__attention_buffers_check(const clattn_context* ctx,
                                              const clattn__attention_shape* shape,
                                              const clattn_attention_buffers* in, int cached,
                                              clattn_attention_buffers* out);

/* Elements spanned by a tensor (max index + 1) of a resolved shape; which as in
 * clattn_attention_tensor_size. */
size_t clattn__tensor_span(const clattn__attention_shape* shape, char which);

/* The sequence-length class of a shape for plans and tuning entries: floor(log2(n)) of the
 * longer of seq_q and seq_kv. */
unsigned clattn__seq_bucket(size_t n);

/* ------------------------------------------------------------ kernel variants (src/variants/) */

#define CLATTN__VARIANT_MAX_KERNELS 4

typedef struct clattn__plan clattn__plan;

/* K and V read in place from a KV cache's pages (src/kv_cache.c), for a variant whose
 * reads_pages is set. Token j of head hk of the sequence of batch index b starts at element
 * block * block_stride + hk * k.head + (j % block_tokens) * k.seq of the pool, with block =
 * block_table[seq_ids[b] * table_stride + j / block_tokens] (the cache's layout is
 * head-major, [heads_kv][blocks][block_tokens][head_dim]: block_stride = block_tokens *
 * head_dim, k.head = blocks * block_stride). The shape of such a call has seq_kv = the
 * longest length in the batch, causal CLATTN__CAUSAL_PER_LENGTH, and its buffers' k and v are
 * the pools and kv_lengths the per-batch lengths (int32 [batch], offset 0). */
typedef struct clattn__paged_kv {
  cl_mem block_table; /* int32 [max_sequences * table_stride] */
  size_t table_stride;
  size_t block_tokens;
  size_t block_stride;
  cl_mem seq_ids; /* int32 [batch], offset 0 */
} clattn__paged_kv;

/* One call of a planned variant: what its enqueue needs. The plan's lock is held. */
typedef struct clattn__launch {
  clattn_context* ctx;
  const clattn__plan* plan;
  const clattn__attention_shape* shape; /* this call's exact shape */
  const clattn_attention_buffers* buffers;
  cl_mem workspace; /* workspace_bytes at workspace_offset (bytes); NULL when none is needed */
  size_t workspace_offset;
  cl_command_queue queue;
  cl_uint num_wait;
  const cl_event* wait;
  cl_event* event;               /* the last command's event (never NULL) */
  const clattn__paged_kv* paged; /* NULL: K and V as the buffers and shape give them */
} clattn__launch;

/* Everything about one kernel variant; each lives in its own file under src/variants/ and
 * src/variants/registry.c lists them. Nothing outside a variant's file switches on it. */
typedef struct clattn__variant {
  clattn_variant id;
  const char* name;       /* clattn_variant_name, the tuning file */
  const char* short_name; /* also accepted by clattn_variant_from_name */
  const char* source;     /* its kernel file, cl/<source>.cl */
  /* Kernel names, main kernel first, NULL-terminated; a plan creates each once. */
  const char* kernels[CLATTN__VARIANT_MAX_KERNELS + 1];
  /* 1 when its enqueue reads K and V from a KV cache's pages (clattn__launch.paged). */
  int reads_pages;
  /* How well it suits a device and shape when the caller leaves the choice to clattn:
   * 0 never, more is better. May read only what a plan key holds (see plan.c): seq_q and
   * seq_kv only through clattn__seq_bucket. */
  int (*preference)(const clattn_device_info* info, const clattn__attention_shape* shape);
  /* Fills the config fields left 0 with the default for the device and shape. */
  void (*defaults)(const clattn_device_info* info, const clattn__attention_shape* shape,
                   clattn_attention_config* c);
  /* Checks a complete config against the variant's rules and the device's limits; the
   * message goes to ctx (NULL: the calling thread). */
  clattn_status (*check)(const clattn_context* ctx, const clattn_device_info* info, size_t head_dim,
                         const clattn_attention_config* c);
  /* Steps a default config that did not fit down to a smaller one; 0 when there is none. */
  int (*shrink)(clattn_attention_config* c);
  /* The -D build options of a config (they may depend on head_dim only; plan.c appends the
   * storage types, QO_DTYPE and KV_DTYPE). */
  void (*build_options)(const clattn__attention_shape* shape, const clattn_attention_config* c,
                        char* options, size_t size);
  /* Work-items per work-group of the main kernel. */
  size_t (*group_size)(const clattn_attention_config* c);
  /* Scratch bytes a call of this shape needs (0: none); SIZE_MAX when it cannot be indexed. */
  size_t (*workspace_bytes)(const clattn__attention_shape* shape, const clattn_attention_config* c);
  /* Sets the kernels' arguments and enqueues them. */
  clattn_status (*enqueue)(const clattn__launch* launch);
  /* The tuner's candidates for a device and head dim: writes up to cap configs to list and
   * returns how many it wrote (configs that do not fit the device are left out). */
  size_t (*tuning_space)(const clattn_device_info* info, size_t head_dim,
                         clattn_attention_config* list, size_t cap);
  /* A short description of a config's tiles ("8x32"). */
  void (*describe)(const clattn_attention_config* c, char* buf, size_t size);
} clattn__variant;

/* The registry: every variant, in order of their clattn_variant values. */
size_t clattn__variant_count(void);
const clattn__variant* clattn__variant_at(size_t index);
/* The variant of an id; NULL for CLATTN_VARIANT_AUTO or an unknown value. */
const clattn__variant* clattn__variant_find(clattn_variant id);
/* The index of the variant clattn prefers for a shape on a device (the highest preference);
 * clattn__variant_count() when none suits it. */
size_t clattn__variant_preferred(const clattn_device_info* info,
                                 const clattn__attention_shape* shape);

/* Kernel argument setters for a variant's enqueue: each sets argument (*i)++ and ORs a failure
 * into *err (OpenCL's error codes are negative), so a run of them is checked once. uint
 * arguments are size_t values the shape checks have bounded to 32 bits. */
void clattn__arg_mem(cl_kernel k, cl_uint* i, cl_mem m, cl_int* err);
void clattn__arg_uint(cl_kernel k, cl_uint* i, size_t x, cl_int* err);

/* Sets the arguments every variant's main kernel takes first (CLATTN_ATTENTION_ARGS in
 * cl/common.cl); *next gets the index of the next argument. */
cl_int clattn__set_attention_args(cl_kernel kernel, const clattn__attention_shape* shape,
                                  const clattn_attention_buffers* buffers, cl_uint* next);

/* Local memory a config may use on a device, and the largest work-group (shared limits). */
size_t clattn__local_budget(const clattn_device_info* info);
size_t clattn__max_group(const clattn_device_info* info);

/* 1 when a complete config fits a device's limits for head_dim; a misfit is recorded as
 * the calling thread's last error, not a context's. */
int clattn__config_fits(const clattn_device_info* info, size_t head_dim,
                        const clattn_attention_config* config);

/* ------------------------------------------------------------ plans (src/plan.c) */

/* What a plan depends on: a call whose shape and requested config give the same key reuses
 * the plan. The variants' defaults and build options, and tuning entries, read only these. */
typedef struct clattn__plan_key {
  clattn_dtype dtype, kv_dtype;
  size_t head_dim;
  size_t group; /* heads_q / heads_kv */
  int causal;
  unsigned seq_bucket;
  unsigned seq_q_bucket;  /* clattn__seq_bucket(seq_q): decode and prefill plan apart */
  int paged;              /* K and V from a KV cache's pages */
  clattn_variant variant; /* requested */
  unsigned block_m, block_n, rows_per_item, threads_per_row; /* requested, 0: default */
  unsigned num_splits;                                       /* requested, 0: default */
} clattn__plan_key;

struct clattn__plan {
  clattn__plan_key key;
  const clattn__variant* variant;
  clattn_attention_config config; /* resolved, source included */
  cl_kernel kernels[CLATTN__VARIANT_MAX_KERNELS];
  size_t kernel_group_limit[CLATTN__VARIANT_MAX_KERNELS]; /* CL_KERNEL_WORK_GROUP_SIZE */
  /* Held from setting the kernels' arguments to the last enqueue of a call: clSetKernelArg
   * on one kernel object is not thread-safe. */
  pthread_mutex_t lock;
  clattn__plan* next;
};

clattn_status clattn__plan_cache_create(clattn__plan_cache** out);
void clattn__plan_cache_destroy(clattn__plan_cache* cache);

/* The plan for a shape and requested config (NULL: defaults), made on first use: the config
 * resolved (user, tuned, heuristic, fallback), its program built and its kernels created and
 * checked against CL_KERNEL_WORK_GROUP_SIZE. The plan stays owned by the context. */
clattn_status clattn__plan_get(clattn_context* ctx, const clattn__attention_shape* shape,
                               const clattn_attention_config* requested, clattn__plan** out);

/* Enqueues a planned call: the plan's kernels under its lock. workspace NULL: the variant's
 * scratch comes from the context's pool; else from the caller's buffer at the byte offset
 * (checked against the plan's size). *event (may be NULL) gets the last command's event. */
clattn_status clattn__plan_enqueue(clattn_context* ctx, clattn__plan* plan,
                                   const clattn__attention_shape* shape,
                                   const clattn_attention_buffers* buffers, cl_mem workspace,
                                   size_t workspace_offset, cl_command_queue queue,
                                   cl_uint num_wait, const cl_event* wait, cl_event* event,
                                   const clattn__paged_kv* paged);

/* Scratch bytes of a planned call (0 when its variant needs none); SIZE_MAX past indexing. */
size_t clattn__plan_workspace_bytes(const clattn__plan* plan, const clattn__attention_shape* shape);

/* A kernel of an operation outside the variants (the probabilities, src/probs.c): created
 * once per context and (source, build options, kernel name) and kept by the plan cache, with
 * its work-group limit and the lock its arguments are set and its launches enqueued under
 * (clSetKernelArg on one kernel object is not thread-safe), so that a steady-state call
 * creates and queries nothing. */
typedef struct clattn__op_kernel {
  cl_kernel kernel;
  size_t group_limit; /* CL_KERNEL_WORK_GROUP_SIZE */
  pthread_mutex_t lock;
} clattn__op_kernel;

/* The kernel `name` of cl/<source>.cl built with `options`, made on first use; source and name
 * must be static strings. The kernel stays owned by the context. */
clattn_status clattn__op_kernel_get(clattn_context* ctx, const char* source, const char* options,
                                    const char* name, clattn__op_kernel** out);

/* ------------------------------------------------------------ KV cache (src/kv_cache.c)
 * What the layer's cached forward (src/mha.c) uses of a cache. A step is one call's batch:
 * its sequence ids checked, the blocks for `tokens` new tokens per sequence taken from the
 * pool, and the per-batch int32 arrays on the device: ids, each sequence's length before the
 * append (rotary positions) and after it (what attention reads). Between step_begin and
 * step_end the cache's lock is held, so a step's host bookkeeping and its enqueues are one
 * unit; step_end with a failure status undoes the step's bookkeeping (nothing appended). */
typedef struct clattn__kv_step {
  size_t count;      /* sequences in the batch */
  size_t tokens;     /* new tokens per sequence (0: attention only) */
  size_t max_length; /* the longest sequence of the batch once the tokens are appended */
  cl_mem seq_ids;    /* int32 [count], offset 0 */
  cl_mem start;      /* int32 [count]: lengths before the append */
  cl_mem lengths;    /* int32 [count]: lengths after the append */
  cl_event ready;    /* the arrays' upload (wait for it), or NULL; owned by the cache */
  size_t slot;       /* the cache's step slot holding the arrays */
} clattn__kv_step;

/* Begins a step on `queue` (uploads the arrays non-blocking; a slot's previous upload is
 * waited for before its host copy is rewritten). Returns CLATTN_ERROR_CACHE_FULL with nothing
 * changed when the tokens do not fit; ids NULL: 0 .. count-1. A begin that fails has released
 * the lock and changed nothing; step_end on it returns its status and does nothing else. */
clattn_status clattn__kv_step_begin(clattn_kv_cache* cache, size_t count, const int32_t* ids,
                                    size_t tokens, cl_command_queue queue, clattn__kv_step* step);
/* Ends a step (releases the lock); a status other than CLATTN_SUCCESS rolls its appended
 * lengths and blocks back. Returns `status`. */
clattn_status clattn__kv_step_end(clattn_kv_cache* cache, clattn__kv_step* step,
                                  clattn_status status);
/* Enqueues the copy of the step's new K and V ([count] sequences of `tokens` rows, the
 * shape's strides: batch = the i-th sequence, head, seq) into their blocks, converting them
 * from src_dtype (the cache's own, or F32) to the cache's. */
clattn_status clattn__kv_step_append(clattn_kv_cache* cache, const clattn__kv_step* step,
                                     clattn_dtype src_dtype, cl_mem k, size_t k_offset,
                                     const clattn_strides* k_strides, cl_mem v, size_t v_offset,
                                     const clattn_strides* v_strides, cl_command_queue queue,
                                     cl_uint num_wait, const cl_event* wait, cl_event* event);
/* Enqueues attention of Q (the shape's q strides, seq_q rows per sequence) over the step's
 * sequences into O (and LSE): SPLIT_KV in place where the plan's variant reads pages, else a
 * gather into workspace first. shape: batch = count, heads, head_dim and q/o strides set;
 * seq_kv, k/v strides and causal mode are the cache's business (q_shape->causal nonzero: the
 * mask aligned to each sequence's length). workspace NULL: the context's pool. */
clattn_status clattn__kv_step_attend(clattn_kv_cache* cache, const clattn__kv_step* step,
                                     const clattn__attention_shape* q_shape,
                                     const clattn_attention_buffers* buffers,
                                     const clattn_attention_config* config, cl_command_queue queue,
                                     cl_uint num_wait, const cl_event* wait, cl_event* event);
/* The cache's heads_kv and head_dim, for the layer's checks. */
void clattn__kv_cache_dims(const clattn_kv_cache* cache, size_t* heads_kv, size_t* head_dim);

/* ------------------------------------------------------------ probabilities (src/probs.c) */

/* A block of the probability matrix with every count resolved (none 0 meaning "to the end"). */
typedef struct clattn__probs_region {
  size_t head_begin, heads, row_begin, rows, col_begin, cols;
} clattn__probs_region;

/* Resolves a caller's block (NULL: the whole matrix) against a shape of heads_q query heads,
 * seq_q rows and seq_kv columns; INVALID_ARGUMENT for a bad struct_size or a range beyond a
 * dimension. */
clattn_status clattn__probs_region_resolve(const clattn_context* ctx,
                                           const clattn_probs_block* block, size_t heads_q,
                                           size_t seq_q, size_t seq_kv,
                                           clattn__probs_region* region);

/* Enqueues the probabilities of a region (mean: their mean over its heads, [batch, rows, cols];
 * else [batch, heads, rows, cols]) into p from p_offset (floats), recomputed from the buffers'
 * q, k, lse and kv_lengths as the shape addresses them (paged: K from a KV cache's pools, as for
 * the variants). The caller has checked the buffers, p included; this checks that the output's
 * indices fit 32 bits. An empty region enqueues a marker. *event (may be NULL) gets the last
 * command's event. */
clattn_status clattn__probs_enqueue(clattn_context* ctx, const clattn__attention_shape* shape,
                                    const clattn_attention_buffers* buffers,
                                    const clattn__probs_region* region, int mean, cl_mem p,
                                    size_t p_offset, cl_command_queue queue, cl_uint num_wait,
                                    const cl_event* wait, cl_event* event,
                                    const clattn__paged_kv* paged);

/* The same over a KV cache step's sequences (their pages, lengths and causal alignment, as
 * clattn__kv_step_attend reads them; the step's upload is waited for): q_shape as there,
 * buffers' q and lse. */
clattn_status clattn__kv_step_probs(clattn_kv_cache* cache, const clattn__kv_step* step,
                                    const clattn__attention_shape* q_shape,
                                    const clattn_attention_buffers* buffers,
                                    const clattn__probs_region* region, int mean, cl_mem p,
                                    size_t p_offset, cl_command_queue queue, cl_uint num_wait,
                                    const cl_event* wait, cl_event* event);

/* ------------------------------------------------------------ workspace (src/workspace.c) */

/* The context's scratch buffers, shared by calls on any queue: a call takes a free slot for
 * its enqueue and leaves its last event there; the next call on that slot waits for it. A
 * slot grows only when a call needs more than it has. */

typedef struct clattn__workspace_lease {
  size_t slot;
  cl_mem mem;
  cl_event previous; /* the previous user's last command, still running; NULL when none */
} clattn__workspace_lease;

clattn_status clattn__workspace_pool_create(clattn__workspace_pool** out);
void clattn__workspace_pool_destroy(clattn__workspace_pool* pool);

/* Takes a slot of at least `bytes` for one call (allocating only to grow). */
clattn_status clattn__workspace_acquire(clattn_context* ctx, size_t bytes,
                                        clattn__workspace_lease* lease);
/* Gives the slot back with the call's last event (retained by the pool; NULL when nothing
 * was enqueued on it). */
void clattn__workspace_release(clattn_context* ctx, const clattn__workspace_lease* lease,
                               cl_event last);

/* ------------------------------------------------------------ GEMM (src/gemm.c) */

/* One row-major single-precision GEMM: C = alpha·op(A)·op(B) + bias + beta·C, with op(A)
 * m×k, op(B) k×n, C m×n and bias (may be NULL; then beta must be 0) a row of n floats added
 * to every row of C; offsets and leading dimensions in floats.
 *
 * Where the context runs clattn's own GEMM kernel (ctx->gemm_own: CPU devices), a GEMM with
 * no transposition, alpha 1 and beta 0 or 1 runs it on the buffers as they are, in one
 * launch, the bias added as C is stored. Any other goes to CLBlast (the bias first broadcast
 * into C by buffer copies, then beta 1), whose Xgemm kernel runs on the caller's buffers only
 * when A, B and C are at offset 0 with leading dimensions k, n and n, no transposition is
 * asked for (with clattn's kernel-1 parameters; kernel 0 transposes A and C) and m, n, k are
 * multiples of its tiles; otherwise it first copies them, padded, into a temporary buffer:
 * `temp` (at least clattn__gemm_temp_size bytes), or one CLBlast creates for the call when
 * temp is NULL. */
typedef struct clattn__gemm_args {
  int trans_a, trans_b;
  size_t m, n, k;
  float alpha, beta;
  cl_mem a, b, c;
  size_t a_offset, b_offset, c_offset;
  size_t lda, ldb, ldc;
  cl_mem bias; /* may be NULL */
  size_t bias_offset;
  cl_mem temp; /* may be NULL */
} clattn__gemm_args;

/* Enqueues one GEMM on `queue` (event may be NULL: else the GEMM's last command). Takes no
 * wait list (CLBlast takes none): enqueue a marker with the caller's wait list first on an
 * in-order queue. */
clattn_status clattn__gemm(clattn_context* ctx, cl_command_queue queue, const clattn__gemm_args* g,
                           cl_event* event);

/* The same GEMM always through CLBlast (the GEMM search times CLBlast's kernels). */
clattn_status clattn__gemm_clblast(clattn_context* ctx, cl_command_queue queue,
                                   const clattn__gemm_args* g, cl_event* event);

/* Bytes of temporary buffer a GEMM of these sizes, offsets and leading dimensions needs:
 * 0 where clattn's kernel runs it, else what CLBlast needs with the parameters now in force
 * for the context's device (0 where it runs on the buffers themselves, or takes its direct
 * kernel). g's buffers are not used. */
clattn_status clattn__gemm_temp_size(clattn_context* ctx, const clattn__gemm_args* g,
                                     size_t* bytes);

/* `batch` GEMMs whose A, B and C start `*_stride` floats apart. */
clattn_status clattn__gemm_strided_batched(clattn_context* ctx, cl_command_queue queue,
                                           const clattn__gemm_args* g, size_t batch,
                                           size_t a_stride, size_t b_stride, size_t c_stride,
                                           cl_event* event);

/* Overrides CLBlast's parameters of one kernel ("Xgemm", "XgemmDirect", "GemmRoutine", ...)
 * for the context's device, in single precision (CLBlastOverrideParameters). The override is
 * process-wide for that device. */
clattn_status clattn__gemm_override(clattn_context* ctx, const char* kernel_name, size_t count,
                                    const char** names, const size_t* values);

/* The parameters of CLBlast's "Xgemm" kernel, in clattn__xgemm_param_names' order (which is
 * alphabetical, as CLBlast lists them). */
typedef enum clattn__xgemm_param {
  CLATTN__XGEMM_GEMMK,
  CLATTN__XGEMM_KREG,
  CLATTN__XGEMM_KWG,
  CLATTN__XGEMM_KWI,
  CLATTN__XGEMM_MDIMA,
  CLATTN__XGEMM_MDIMC,
  CLATTN__XGEMM_MWG,
  CLATTN__XGEMM_NDIMB,
  CLATTN__XGEMM_NDIMC,
  CLATTN__XGEMM_NWG,
  CLATTN__XGEMM_SA,
  CLATTN__XGEMM_SB,
  CLATTN__XGEMM_STRM,
  CLATTN__XGEMM_STRN,
  CLATTN__XGEMM_VWM,
  CLATTN__XGEMM_VWN,
  CLATTN__XGEMM_PARAM_COUNT
} clattn__xgemm_param;

/* Their names ("GEMMK", "KREG", ...): every one must be given to override "Xgemm". */
extern const char* const clattn__xgemm_param_names[CLATTN__XGEMM_PARAM_COUNT];

/* The index of an Xgemm parameter's name, or -1 for another name. */
int clattn__xgemm_param_index(const char* name);

/* 1 when a complete Xgemm parameter set (p indexed by clattn__xgemm_param) meets CLBlast
 * 1.5's constraints for either kernel (GEMMK 0 or 1) and the device's work-group and local
 * memory limits, so that CLBlast builds it and computes correct results; otherwise 0, with
 * the first rule it breaks written to why (why may be NULL). */
int clattn__xgemm_params_valid(const size_t* p, const clattn_device_info* info, char* why,
                               size_t why_size);

/* CLBlast's "GemmRoutine" parameter: GEMMs with m·n·k below its cube take the direct kernel
 * (XgemmDirect*), the others Xgemm with its copies where needed; clattn's value where it sets
 * its defaults. */
#define CLATTN__GEMM_MIN_INDIRECT_NAME "XGEMM_MIN_INDIRECT_SIZE"
#define CLATTN__GEMM_MIN_INDIRECT 32

/* Chooses the context's GEMM kernel when it is created: ctx->gemm_own is 1 (clattn's own
 * for the GEMMs it runs) on CPU devices, 0 (CLBlast for all) elsewhere; CLATTN_GEMM=clattn
 * or =clblast in the environment chooses instead, and any other value fails with
 * INVALID_ARGUMENT. */
clattn_status clattn__gemm_choose(clattn_context* ctx);

/* Sets clattn's own default CLBlast parameters where CLBlast has none worth using (PoCL's
 * CPU devices); called when a context is created, before the tuning file's entries. Returns
 * 1 when it set them, 0 where CLBlast's own stay (or CLBlast refused). */
int clattn__gemm_device_defaults(clattn_context* ctx);

/* Drops CLBlast's cached programs (CLBlastClearCache). They retain their cl_context, so a
 * context destroyed without this would stay alive until exit, and be released after the
 * OpenCL runtime itself on some (Oclgrind). CLBlast has no per-context clear: other
 * contexts rebuild their GEMM kernels on next use. */
void clattn__gemm_release_programs(void);

/* ------------------------------------------------------------ files (src/io.c) */

/* Opens a file the library was pointed at for reading: regular files only, never blocking
 * (a FIFO, device or directory gives `error` with a message naming `what` and the path).
 * missing (may be NULL): set to 1, with SUCCESS and *out NULL, when the file does not exist;
 * without it a missing file is an error too. */
clattn_status clattn__file_open_read(const clattn_context* ctx, clattn_status error,
                                     const char* what, const char* path, FILE** out, int* missing);

/* Checks that `path` may be replaced by a new regular file: it does not exist or is a
 * regular file (not a symbolic link, device, FIFO or directory), and the directory it is
 * (or would be) in, or the nearest existing one above, is writable; an empty path is
 * INVALID_ARGUMENT, the rest CLATTN_ERROR_TUNING_FILE, recorded for the calling thread. */
clattn_status clattn__file_check_writable(const char* what, const char* path);

/* ------------------------------------------------------------ memory (src/memory.c) */

/* Checks that `mem` is a buffer holding `offset + elements` items of `item` bytes, with
 * offset + elements at most max_elements (what the kernels can index): INVALID_ARGUMENT for
 * an invalid cl_mem, BUFFER_TOO_SMALL otherwise, with a message naming `name`. */
clattn_status clattn__buffer_check(const clattn_context* ctx, cl_mem mem, const char* name,
                                   size_t offset, size_t elements, size_t item,
                                   size_t max_elements);

/* Creates a device buffer (copied from `host` when not NULL); records the error on failure.
 * All of the library's device buffers go through here, so tests can inject failures. */
clattn_status clattn__buffer_create(clattn_context* ctx, cl_mem_flags flags, size_t bytes,
                                    const void* host, cl_mem* out);

/* malloc and calloc that honour the fault-injection hook. */
void* clattn__malloc(size_t bytes);
void* clattn__calloc(size_t count, size_t size);
void* clattn__realloc(void* p, size_t bytes);
char* clattn__strdup(const char* s);

/* Test hook (not exported from the shared library; tests link the static one): the nth
 * allocation from now through the functions above fails; 0 turns injection off. */
void clattn__test_fail_allocation(int nth);

/* ------------------------------------------------------------ tuning (src/tuning/)
 * What the rest of the library calls; what the files of src/tuning/ share among themselves is
 * in src/tuning/tuning.h. */

/* Reads the tuning file at context creation, keeps the attention entries that can serve the
 * device and applies CLBlast parameters found for it (src/tuning/lookup.c). Never fails the
 * creation: problems are recorded in ctx->tuning_info and logged. */
void clattn__tuning_context_init(clattn_context* ctx);
void clattn__tuning_context_release(clattn_context* ctx);

/* The tuned attention config for a shape: fills *config and *source (TUNED or
 * TUNED_OTHER_DRIVER) and returns 1, or returns 0 when no usable entry exists. */
int clattn__tuning_lookup(clattn_context* ctx, const clattn__attention_shape* shape,
                          clattn_attention_config* config, clattn_config_source* source);

/* Kernel source text as a context would build it (src/program.c): embedded, or
 * <kernel_dir>/<name>.cl when kernel_dir is not empty. malloc'd; ctx may be NULL. */
clattn_status clattn__kernel_source_read(const clattn_context* ctx, const char* kernel_dir,
                                         const char* name, char** out);

#endif
