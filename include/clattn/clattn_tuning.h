/*
 * clattn tuning: the tuning file's tables and the tuner.
 *
 * This part of clattn's API may change between minor versions (the tuning file's fields
 * grow with the kernels they describe); clattn/clattn.h is the stable part. It includes
 * clattn/clattn.h. The CLATTN_ERROR_TUNING_FILE status and the CLATTN_CONFIG_SOURCE_TUNED*
 * config sources stay in clattn.h with the rest of their enums.
 */
#ifndef CLATTN_CLATTN_TUNING_H
#define CLATTN_CLATTN_TUNING_H

#include <stddef.h>

#include "clattn/clattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* clattn_tune_attention and clattn_tune_gemm search kernel configs (and CLBlast's GEMM
 * parameters) on the context's device, verify every candidate against a double-precision
 * CPU reference, time the survivors and merge the winners into a JSON tuning file:
 * CLATTN_TUNING_FILE, else $XDG_CACHE_HOME/clattn/tuning.json, else
 * ~/.cache/clattn/tuning.json. A context reads that file when it is created (never
 * locking it); a missing, unreadable, corrupt, truncated or foreign-version file is ignored
 * (logged with CLATTN_LOG) and the built-in heuristics are used. A call whose config is
 * NULL, or has variant AUTO and every block field 0, then uses the entry for the device,
 * dtype, head_dim, causal flag and sequence-length bucket: first one for this device and
 * driver (source CLATTN_CONFIG_SOURCE_TUNED), else one for this device under another driver
 * (CLATTN_CONFIG_SOURCE_TUNED_OTHER_DRIVER), else the heuristics. Entries are checked
 * against the device's limits again, and an entry whose kernel source has changed since it
 * was tuned is ignored. clattn_attention_get_config says which config and level served a
 * shape. CLBlast parameters found for the device are applied (process-wide, for that
 * device) when a context is created. */

/* What an entry holds. */
typedef enum clattn_tuning_kind {
  CLATTN_TUNING_ATTENTION = 0, /* a kernel config of the attention core */
  CLATTN_TUNING_GEMM = 1       /* CLBlast "Xgemm" parameters for the projection GEMMs */
} clattn_tuning_kind;

#define CLATTN_TUNING_MAX_PARAMS 24

/* One entry of a tuning file. Strings are NUL-terminated. */
typedef struct clattn_tuning_entry {
  size_t struct_size; /* sizeof(clattn_tuning_entry) */
  clattn_tuning_kind kind;
  /* The device key: normalised vendor ("nvidia", "amd", "intel", "pocl", ... or the
   * lower-cased vendor string), device name, driver version, compute units, local memory. */
  char vendor[64];
  char device[256];
  char driver[128];
  cl_uint compute_units;
  cl_ulong local_mem_size;
  /* Kernel file the config is for ("attention_regblock", "attention_tiled"; "Xgemm" for
   * GEMM entries) and a hash of its source with common.cl ("" for GEMM entries). */
  char kernel[64];
  char source_hash[32];
  /* Attention entries: the shape class they serve (only shapes of their dtype). A shape
   * falls in bucket b when max(seq_q, seq_kv) is in [2^b, 2^(b+1)); lookup takes the nearest
   * tuned bucket. */
  clattn_dtype dtype;
  size_t head_dim;
  int causal;
  unsigned seq_bucket;
  /* Attention entries; source is not stored. The file names the variant as
   * clattn_variant_name does, and reading accepts the short names too ("tiled", which older
   * files wrote, and "regblock"). */
  clattn_attention_config config;
  /* GEMM entries: the projection shapes tuned, [m, 3k] x [k] and [m, k] x [k], and the
   * CLBlast parameters of kernel `kernel`. */
  size_t gemm_m, gemm_k;
  size_t param_count;
  char param_names[CLATTN_TUNING_MAX_PARAMS][32];
  size_t param_values[CLATTN_TUNING_MAX_PARAMS];
  /* Median times measured by the tuner for the winner and for the built-in default. */
  double time_ms, default_time_ms;
  char tuned_at[32]; /* UTC, ISO 8601 */
  /* Attention entries (since 0.3): the query-length class, clattn__seq_bucket(seq_q) as for
   * seq_bucket. Lookup uses an entry only for shapes of its class, decode (bucket below
   * CLATTN_TUNING_DECODE_BUCKETS: fewer than 16 query rows) or prefill, and within it the
   * nearest bucket. Files without it (older ones tuned seq_q = seq_kv) read it as seq_bucket. */
  unsigned seq_q_bucket;
} clattn_tuning_entry;

/* Query-length buckets 0 .. CLATTN_TUNING_DECODE_BUCKETS - 1 are decode shapes (seq_q < 16). */
#define CLATTN_TUNING_DECODE_BUCKETS 4

#define CLATTN_TUNING_ENTRY_INIT \
  { .struct_size = sizeof(clattn_tuning_entry) }

/* The path of the tuning file the library reads and writes (see above), copied with the
 * conventions of clattn_context_get_last_error. Returns CLATTN_ERROR_TUNING_FILE when none
 * can be determined (no CLATTN_TUNING_FILE, XDG_CACHE_HOME or HOME). */
CLATTN_API clattn_status clattn_tuning_file_path(char* buf, size_t buf_size, size_t* needed);

/* What a context read from its tuning file at creation. */
typedef struct clattn_tuning_info {
  size_t struct_size; /* sizeof(clattn_tuning_info), set by the caller */
  char path[4096];    /* the file ("" when no path could be determined) */
  int found;          /* 1 when the file existed */
  /* CLATTN_SUCCESS when the file was read or does not exist; otherwise why it was
   * ignored (CLATTN_ERROR_TUNING_FILE), with message saying what was wrong. */
  clattn_status status;
  char message[512];
  size_t entries;        /* entries in the file */
  size_t device_entries; /* attention entries for this device, any driver, current kernels */
  /* CLBlast parameters applied at creation from the file: 0 none (clattn's built-in GEMM
   * parameters on PoCL's CPU devices, CLBlast's own elsewhere), or the level they came from
   * (CLATTN_CONFIG_SOURCE_TUNED or CLATTN_CONFIG_SOURCE_TUNED_OTHER_DRIVER). */
  int gemm_source;
} clattn_tuning_info;

#define CLATTN_TUNING_INFO_INIT \
  { .struct_size = sizeof(clattn_tuning_info) }

/* Fills *info for the context. */
CLATTN_API clattn_status clattn_context_get_tuning_info(const clattn_context* ctx,
                                                        clattn_tuning_info* info);

/* A tuning file read into memory (opaque). */
typedef struct clattn_tuning_table clattn_tuning_table;

/* Reads a tuning file (path NULL: the default path). A file that does not exist gives an
 * empty table and CLATTN_SUCCESS. A file that cannot be read or is not a valid tuning
 * file of this format version also gives an empty table (so *out is always usable after
 * the call, and must be destroyed), but returns CLATTN_ERROR_TUNING_FILE with the reason
 * in clattn_context_get_last_error(NULL, ...). Returns CLATTN_ERROR_INVALID_ARGUMENT for a
 * NULL out, CLATTN_ERROR_OUT_OF_MEMORY (with *out NULL) when out of memory. */
CLATTN_API clattn_status clattn_tuning_table_load(const char* path, clattn_tuning_table** out);

/* Frees a table; NULL is a no-op. */
CLATTN_API clattn_status clattn_tuning_table_destroy(clattn_tuning_table* table);

/* Number of entries. */
CLATTN_API clattn_status clattn_tuning_table_count(const clattn_tuning_table* table, size_t* count);

/* Copies entry `index` into *entry (entry->struct_size set by the caller).
 * CLATTN_ERROR_INVALID_ARGUMENT when index is out of range. */
CLATTN_API clattn_status clattn_tuning_table_get(const clattn_tuning_table* table, size_t index,
                                                 clattn_tuning_entry* entry);

/* How an entry relates to a device: *level (may be NULL) gets CLATTN_CONFIG_SOURCE_TUNED
 * for this device and driver, CLATTN_CONFIG_SOURCE_TUNED_OTHER_DRIVER for this device under
 * another driver, and 0 for another device; *current (may be NULL) gets 1 when the entry's
 * kernel source hash matches the library's kernel (embedded, or from CLATTN_KERNEL_DIR)
 * and, for attention entries, its config fits the device's limits. */
CLATTN_API clattn_status clattn_tuning_entry_match(const clattn_tuning_entry* entry,
                                                   cl_device_id device, int* level, int* current);

/* Merges entries into a tuning file (path NULL: the default path), as the tuner does: takes
 * the lock file <path>.lock (removed again when done), removes the temporary files
 * <path>.tmp.* of writers killed before their rename, re-reads the file, replaces entries with the
 * same device (driver included) and shape class, appends the others, writes a temporary file in the
 * same directory, fsyncs it and renames it over the file. A corrupt existing file is
 * replaced. Creates the directory if needed. Returns CLATTN_ERROR_TUNING_FILE (with the
 * reason in the thread's last error) when the directory or file cannot be written, and
 * CLATTN_ERROR_INVALID_ARGUMENT, writing nothing, for an entry of another struct_size or an
 * attention entry whose variant or dtype this version cannot name. */
CLATTN_API clattn_status clattn_tuning_file_store(const char* path,
                                                  const clattn_tuning_entry* entries, size_t count);

/* Checks, writing nothing, that clattn_tuning_file_store could write `path` (NULL: the
 * default path): it is missing, with a writable directory as its nearest existing ancestor
 * (the store creates the ones between), or a writable regular file. Returns
 * CLATTN_ERROR_TUNING_FILE, with the reason in the thread's last error, for a symbolic link,
 * device, FIFO or directory, or where nothing may be written; INVALID_ARGUMENT for "".
 * (Access is judged as the process would be; root passes most permission checks.) */
CLATTN_API clattn_status clattn_tuning_file_check(const char* path);

/* Options of one tuning run. */
typedef struct clattn_tune_options {
  size_t struct_size; /* sizeof(clattn_tune_options) */
  /* The shape tuned: batch (0: 1), heads (0: 8), seq (0: 1024, used for seq_q and seq_kv),
   * head_dim (0: 64), causal. The GEMMs are [batch*seq, E] x [E, 3E] and [E, E] with
   * E = heads * head_dim. */
  size_t batch, heads, seq, head_dim;
  int causal;
  /* 0: 60. Candidates start only while time is left; a candidate's timed runs, and the
   * winner's confirmation, stop when it runs out. A call at the tuned shape that would take
   * longer than 250 ms is timed on a slice of it instead (its last query rows over fewer
   * heads, the keys at full length), so a run ends within a few calls of its budget; the
   * times reported and written are then the slice's. */
  double budget_seconds;
  const char* output;    /* tuning file; NULL: the default path */
  int dry_run;           /* nonzero: only count the candidates (result.space_*), run nothing */
  int no_write;          /* nonzero: measure and report, but leave the file alone */
  unsigned seed;         /* random search order; 0: a fixed seed */
  size_t max_candidates; /* 0: no limit besides the budget */
  /* Attention: which variant to search (CLATTN_VARIANT_AUTO: every variant). A named one is
   * the only one tried (its heuristic default the one to beat), so the entry written is of
   * that variant; CLATTN_ERROR_UNSUPPORTED when it does not serve the shape. */
  clattn_variant variant;
  int warmup; /* warm-up runs per candidate (0: 1) */
  int reps;   /* timed runs per candidate (0: 5, fewer for slow candidates, at least 3) */
  /* The query length tuned (since 0.3); 0: seq. Below seq it tunes a decode-like shape
   * (seq_q queries over seq keys, so the entry's seq_bucket is seq's). */
  size_t seq_q;
  /* The storage type tuned (since 0.4; 0: F32); the entry serves shapes whose K and V are
   * stored in it. Candidates are verified in float32 and in this type. */
  clattn_dtype dtype;
} clattn_tune_options;

#define CLATTN_TUNE_OPTIONS_INIT \
  { .struct_size = sizeof(clattn_tune_options) }

/* Progress of a run, passed to the callback after each candidate, and between the device
 * calls of a candidate (and of the winner's checks) with outcome "running", candidate naming
 * what runs and done not advanced: returning nonzero from either stops the run within one
 * call. */
typedef struct clattn_tune_progress {
  size_t struct_size;
  const char* phase;     /* "attention" or "gemm" */
  const char* candidate; /* the candidate just tried, in words */
  /* "ok", "build failed", "launch failed", "wrong result", "slow"; "running" while one runs */
  const char* outcome;
  size_t done, total;  /* candidates tried, and how many the space has */
  double candidate_ms; /* its median time (0 when it failed) */
  double best_ms;      /* best median so far (0 before the first) */
  double default_ms;   /* the default's median */
  double elapsed_s, budget_s;
} clattn_tune_progress;

/* Called after each candidate and between its calls (see clattn_tune_progress); a nonzero
 * return stops the run, which then keeps (and writes) nothing for the shape in progress. */
typedef int (*clattn_tune_progress_fn)(const clattn_tune_progress* progress, void* user);

/* Room for the variants' counts in clattn_tune_result (clattn_variant values below it). */
#define CLATTN_TUNE_MAX_VARIANTS 8

/* The outcome of one run. */
typedef struct clattn_tune_result {
  size_t struct_size; /* sizeof(clattn_tune_result), set by the caller */
  size_t space_gemm;  /* candidates in the GEMM space after pruning */
  size_t tried, failed_build, failed_launch, failed_verify, slow;
  int interrupted;                        /* the callback stopped the run */
  int written;                            /* an entry was merged into the file */
  clattn_tuning_entry entry;              /* the winner (kind, config or parameters, times) */
  clattn_attention_config default_config; /* attention: the heuristic config timed */
  double best_ms, default_ms;             /* medians */
  double best_min_ms, default_min_ms;     /* minima */
  /* Candidates in each attention variant's space after pruning, indexed by clattn_variant
   * (element CLATTN_VARIANT_AUTO stays 0). */
  size_t space_variants[CLATTN_TUNE_MAX_VARIANTS];
} clattn_tune_result;

#define CLATTN_TUNE_RESULT_INIT \
  { .struct_size = sizeof(clattn_tune_result) }

/* Tunes the attention core for one shape on the context's device: the heuristic default
 * and a core set of configs first, then random picks from the rest of the space while the
 * budget lasts. Every candidate is checked against a double-precision CPU reference on
 * shapes whose lengths are not multiples of its tiles (with the causal flag tuned), then
 * timed with profiling events (warm-up, then median and minimum); candidates that fail to
 * build, launch or verify are counted and skipped. The winner is checked again on a wider
 * set of shapes and on sampled rows of the tuned shape, then merged into the file (unless
 * dry_run or no_write). Returns CLATTN_SUCCESS when the run completed or was interrupted
 * (see result->interrupted); CLATTN_ERROR_TUNING_FILE when the file could not be written
 * (the result is still filled); CLATTN_ERROR_INTERNAL when no candidate, not even the
 * default, passed. */
CLATTN_API clattn_status clattn_tune_attention(clattn_context* ctx,
                                               const clattn_tune_options* options,
                                               clattn_tune_progress_fn progress, void* user,
                                               clattn_tune_result* result);

/* Tunes CLBlast's Xgemm parameters for the projection GEMMs of the shape in options
 * (Y = X·Wᵀ with X [batch*seq, E] and W [3E, E] and [E, E]), in the same way. The
 * parameters in force are timed first (clattn's built-in ones on PoCL's CPU devices,
 * CLBlast's own elsewhere, unless this process applied others, for instance from a tuning
 * file when a context was created); where the built-in ones can be set again, the winner
 * and they are timed again alternately, and the winner must beat them by 3%. An entry is
 * written only when the winner beats them. The parameters are a process-wide setting of
 * CLBlast for the device: after the run the winner (or the defaults, when they were kept
 * and can be set again; else the last candidate) stays in force in this process. */
CLATTN_API clattn_status clattn_tune_gemm(clattn_context* ctx, const clattn_tune_options* options,
                                          clattn_tune_progress_fn progress, void* user,
                                          clattn_tune_result* result);

#ifdef __cplusplus
}
#endif

#endif /* CLATTN_CLATTN_TUNING_H */
