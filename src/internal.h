/* What the library's source files share. Nothing here is public. */
#ifndef CLATTN_SRC_INTERNAL_H
#define CLATTN_SRC_INTERNAL_H

#include <pthread.h>
#include <stddef.h>

#include "clattn/clattn.h"

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

  pthread_mutex_t error_lock; /* guards last_error and build_log */
  char last_error[2048];
  char* build_log; /* malloc'd, NULL when none */

  /* Tuning (src/tuning_cache.c): the file read at creation, never changed afterwards. */
  struct clattn_tuning_table* tuning;
  clattn_tuning_info tuning_info;
};

/* Records a build log in the context (copied). */
void clattn__set_build_log(const clattn_context* ctx, const char* log);

/* Checks that a queue is in-order and belongs to the context's cl_context and device. */
clattn_status clattn__queue_check(const clattn_context* ctx, cl_command_queue queue);

/* ------------------------------------------------------------ attention */

/* A fully resolved attention descriptor: defaults applied, strides explicit. */
typedef struct clattn__attention_shape {
  size_t batch, heads_q, heads_kv, seq_q, seq_kv, head_dim;
  float scale;
  int causal;
  clattn_strides q, k, v, o;
} clattn__attention_shape;

/* Validates a descriptor and fills the resolved shape. */
clattn_status clattn__attention_shape_resolve(const clattn_context* ctx,
                                              const clattn_attention_desc* desc,
                                              clattn__attention_shape* shape);

/* Elements spanned by a tensor (max index + 1) of a resolved shape; which as in
 * clattn_attention_tensor_size. */
size_t clattn__tensor_span(const clattn__attention_shape* shape, char which);

/* Resolves a config: defaults for the fields left 0, checks against the device's limits,
 * builds the program and checks the kernel's work-group size, falling back to smaller
 * defaults where a default does not fit. Fills *used, and *kernel (may be NULL) with a new
 * main kernel the caller releases. */
clattn_status clattn__config_resolve(clattn_context* ctx, const clattn__attention_shape* shape,
                                     const clattn_attention_config* requested,
                                     clattn_attention_config* used, cl_kernel* kernel);

/* The kernel file and build options of a resolved config. */
const char* clattn__config_source_name(const clattn_attention_config* config);
void clattn__config_options(const clattn__attention_shape* shape,
                            const clattn_attention_config* config, char* options,
                            size_t options_size);

/* Work-items per work-group of a resolved config's main kernel. */
size_t clattn__config_group_size(const clattn_attention_config* config);

/* The pitch, in floats, of one head-dim row of the transposed K that the register-blocked
 * variant stages: seq_kv rounded up to block_n. */
size_t clattn__kt_stride(const clattn__attention_shape* shape,
                         const clattn_attention_config* config);

/* ------------------------------------------------------------ GEMM (src/gemm.c, CLBlast) */

/* One row-major single-precision GEMM: C = alpha·op(A)·op(B) + beta·C, with op(A) m×k,
 * op(B) k×n and C m×n; offsets and leading dimensions in floats. CLBlast's Xgemm kernel
 * runs on the caller's buffers only when A, B and C are at offset 0 with leading dimensions
 * k, n and n, no transposition is asked for (with clattn's kernel-1 parameters; kernel 0
 * transposes A and C) and m, n, k are multiples of its tiles; otherwise it first copies
 * them, padded, into a temporary buffer: `temp` (at least clattn__gemm_temp_size bytes), or
 * one CLBlast creates for the call when temp is NULL. */
typedef struct clattn__gemm_args {
  int trans_a, trans_b;
  size_t m, n, k;
  float alpha, beta;
  cl_mem a, b, c;
  size_t a_offset, b_offset, c_offset;
  size_t lda, ldb, ldc;
  cl_mem temp; /* may be NULL */
} clattn__gemm_args;

/* Enqueues one GEMM on `queue` (event may be NULL). CLBlast takes no wait list: enqueue a
 * marker with the caller's wait list first on an in-order queue. */
clattn_status clattn__gemm(clattn_context* ctx, cl_command_queue queue, const clattn__gemm_args* g,
                           cl_event* event);

/* Bytes of temporary buffer CLBlast needs for a GEMM of these sizes, offsets and leading
 * dimensions with the parameters now in force for the context's device (0 where it runs
 * on the buffers themselves, or takes its direct kernel). g's buffers are not used. */
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

/* Sets clattn's own default GEMM parameters where CLBlast has none worth using (PoCL's CPU
 * devices); called when a context is created, before the tuning file's entries. Returns 1
 * when it set them, 0 where CLBlast's own stay (or CLBlast refused). */
int clattn__gemm_device_defaults(clattn_context* ctx);

/* Drops CLBlast's cached programs (CLBlastClearCache). They retain their cl_context, so a
 * context destroyed without this would stay alive until exit, and be released after the
 * OpenCL runtime itself on some (Oclgrind). CLBlast has no per-context clear: other
 * contexts rebuild their GEMM kernels on next use. */
void clattn__gemm_release_programs(void);

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

/* ------------------------------------------------------------ tuning (src/tuning_cache.c,
 * src/tuner.c) */

#define CLATTN__TUNING_FORMAT "clattn-tuning"
#define CLATTN__TUNING_VERSION 1
/* Files larger than this are not read (a tuning file holds a few kB per device). */
#define CLATTN__TUNING_MAX_BYTES ((size_t)16 << 20)

typedef struct clattn_tuning_table clattn__tuning_table;

struct clattn_tuning_table {
  clattn_tuning_entry* entries;
  size_t count, capacity;
};

/* Parses the text of a tuning file (a pure function: no I/O, no global state; text need
 * not be NUL-terminated). On success *table holds the valid entries (entries with bad
 * fields are dropped). Returns CLATTN_ERROR_TUNING_FILE, with *table NULL and a message
 * recorded for the calling thread, for text that is not JSON, not a tuning file, or of
 * another format version; CLATTN_ERROR_OUT_OF_MEMORY when out of memory. */
clattn_status clattn__tuning_parse(const char* text, size_t size, clattn__tuning_table** table);
void clattn__tuning_table_destroy(clattn__tuning_table* table);

/* Appends an entry, or replaces the one with the same device (driver included) and
 * shape class. */
clattn_status clattn__tuning_table_put(clattn__tuning_table* table,
                                       const clattn_tuning_entry* entry);

/* Serialises a table as the file's JSON text (malloc'd, NUL-terminated). */
clattn_status clattn__tuning_serialize(const clattn__tuning_table* table, char** text);

/* Fills the device-key fields of an entry from device info. */
void clattn__tuning_device_key(const clattn_device_info* info, clattn_tuning_entry* entry);

/* The hash ("fnv1a64:<16 hex digits>") of common.cl + <kernel>.cl as the context would
 * build it (kernel_dir: ctx's, or NULL for CLATTN_KERNEL_DIR / embedded). */
clattn_status clattn__tuning_source_hash(const clattn_context* ctx, const char* kernel_dir,
                                         const char* kernel, char* hash, size_t hash_size);

/* Reads the tuning file at context creation and applies CLBlast parameters found for the
 * device. Never fails the creation: problems are recorded in ctx->tuning_info and logged. */
void clattn__tuning_context_init(clattn_context* ctx);
void clattn__tuning_context_release(clattn_context* ctx);

/* The tuned attention config for a shape: fills *config and *source (TUNED or
 * TUNED_OTHER_DRIVER) and returns 1, or returns 0 when no usable entry exists. */
int clattn__tuning_lookup(clattn_context* ctx, const clattn__attention_shape* shape,
                          clattn_attention_config* config, clattn_config_source* source);

/* Applies a GEMM entry's CLBlast parameters for the context's device (src/tuner.c). */
clattn_status clattn__tuning_apply_gemm(clattn_context* ctx, const clattn_tuning_entry* entry);

/* 1 when a complete config fits a device's limits for head_dim (src/config.c); a misfit
 * is recorded as the calling thread's last error, not a context's. */
int clattn__config_fits(const clattn_device_info* info, size_t head_dim,
                        const clattn_attention_config* config);

/* Kernel source text as a context would build it (src/program.c): embedded, or
 * <kernel_dir>/<name>.cl when kernel_dir is not empty. malloc'd; ctx may be NULL. */
clattn_status clattn__kernel_source_read(const clattn_context* ctx, const char* kernel_dir,
                                         const char* name, char** out);

#endif
