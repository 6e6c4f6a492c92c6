/* What the files of src/tuning/ share. Nothing here is public; what the rest of the library
 * calls (context.c: reading the file at creation; plan.c: the lookup) is in src/internal.h.
 *
 * Who calls whom, with no cycle:
 *   attention_space.c -> search.c, lookup.c (source hash), file.c (device key), the registry,
 *                        the public attention calls
 *   gemm_space.c      -> search.c, gemm_entry.c, file.c (device key), gemm.c
 *   search.c          -> file.c (clattn_tuning_file_store), the registry
 *   lookup.c          -> file.c, gemm_entry.c, the registry, program.c (kernel sources)
 *   gemm_entry.c      -> gemm.c
 *   file.c            -> the registry (variant names)
 * Only clattn_tune_attention and clattn_tune_gemm reach search.c and the two spaces; a
 * context's reading of the file goes no further than lookup.c, file.c and gemm_entry.c. */
#ifndef CLATTN_SRC_TUNING_TUNING_H
#define CLATTN_SRC_TUNING_TUNING_H

#include <stddef.h>
#include <stdint.h>

#include "clattn/clattn_tuning.h"
#include "internal.h"

/* ------------------------------------------------------------ the file (file.c) */

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

/* An empty table (NULL when out of memory); destroy accepts NULL. */
clattn__tuning_table* clattn__tuning_table_create(void);
void clattn__tuning_table_destroy(clattn__tuning_table* table);

/* Appends an entry (a copy). */
clattn_status clattn__tuning_table_append(clattn__tuning_table* table,
                                          const clattn_tuning_entry* entry);

/* Appends an entry, or replaces the one with the same device (driver included) and
 * shape class. */
clattn_status clattn__tuning_table_put(clattn__tuning_table* table,
                                       const clattn_tuning_entry* entry);

/* Serialises a table as the file's JSON text (malloc'd, NUL-terminated). */
clattn_status clattn__tuning_serialize(const clattn__tuning_table* table, char** text);

/* The path the library reads and writes (see clattn_tuning_file_path); the message goes to
 * the calling thread. */
clattn_status clattn__tuning_default_path(char* buf, size_t size);

/* Loads a file into a table: missing -> empty; unreadable or invalid -> empty and the
 * error status (message recorded for the calling thread). *found is set when the file
 * exists. *out is NULL only when out of memory. */
clattn_status clattn__tuning_file_load(const char* path, clattn__tuning_table** out, int* found);

/* Fills the device-key fields of an entry from device info. */
void clattn__tuning_device_key(const clattn_device_info* info, clattn_tuning_entry* entry);

/* How an entry's device key relates to another's: 2 same device and driver, 1 same device
 * under another driver, 0 another device. */
int clattn__tuning_device_level(const clattn_tuning_entry* key, const clattn_tuning_entry* entry);

/* ------------------------------------------------------------ what a context keeps (lookup.c) */

/* The hash ("fnv1a64:<16 hex digits>") of common.cl + <kernel>.cl as the context would
 * build it (kernel_dir: ctx's, or NULL for CLATTN_KERNEL_DIR / embedded). */
clattn_status clattn__tuning_source_hash(const clattn_context* ctx, const char* kernel_dir,
                                         const char* kernel, char* hash, size_t hash_size);

/* ------------------------------------------------------------ GEMM entries (gemm_entry.c) */

/* 1 when a GEMM entry names every Xgemm parameter (src/gemm.c's table) with values that
 * meet CLBlast's rules and the device's limits (clattn__xgemm_params_valid). */
int clattn__gemm_entry_fits(const clattn_device_info* info, const clattn_tuning_entry* entry);

/* Applies a GEMM entry's CLBlast parameters for the context's device (process-wide). */
clattn_status clattn__gemm_entry_apply(clattn_context* ctx, const clattn_tuning_entry* entry);

/* ------------------------------------------------------------ the search (search.c) */

typedef struct clattn__tune_rng {
  uint64_t s;
} clattn__tune_rng;

uint32_t clattn__tune_rand(clattn__tune_rng* r);
/* Uniform in [-1, 1). */
float clattn__tune_unit(clattn__tune_rng* r);

/* One tuning run: its options with defaults applied, the caller's callback and result, the
 * clock and budget, and the best and default medians so far. */
typedef struct clattn__tune_run {
  clattn_context* ctx;
  clattn_tune_options o;
  clattn_tune_progress_fn progress;
  void* user;
  clattn_tune_result* res;
  double start, budget;
  clattn__tune_rng r;
  size_t total; /* candidates the run may try */
  double best_ms, default_ms;
  /* What is running now, for the callback's polls (clattn__tune_poll). */
  const char *phase, *name;
} clattn__tune_run;

/* Checks the arguments of clattn_tune_*, applies the options' defaults and clears the
 * result. */
clattn_status clattn__tune_run_init(clattn__tune_run* t, clattn_context* ctx,
                                    const clattn_tune_options* options,
                                    clattn_tune_progress_fn progress, void* user,
                                    clattn_tune_result* result);

/* 1 while the budget lasts. */
int clattn__tune_time_left(const clattn__tune_run* t);

/* Between the device calls of a candidate (and of the winner's checks): asks the callback
 * whether to stop, with outcome "running" and t->phase and t->name, counting nothing, so a
 * run stops within one call of being asked to. Returns 1 when the run must stop
 * (result->interrupted is then set). */
int clattn__tune_poll(clattn__tune_run* t);

/* Counts one candidate and reports it to the callback; returns 1 when the caller asked to
 * stop (result->interrupted is then set). */
int clattn__tune_report(clattn__tune_run* t, const char* phase, const char* name,
                        const char* outcome, double ms);

/* Shuffles elements [from, count) of an array of `size`-byte elements with the run's
 * random numbers. */
void clattn__tune_shuffle(clattn__tune_run* t, void* base, size_t count, size_t size, size_t from);

/* qsort comparison of doubles. */
int clattn__tune_cmp_double(const void* a, const void* b);

/* The current UTC time, ISO 8601. */
void clattn__tune_utc_now(char* buf, size_t size);

/* One timed run of a candidate (device milliseconds). */
typedef clattn_status (*clattn__tune_once_fn)(clattn__tune_run* t, void* arg, double* ms);

/* Warm-up runs, a judged run, then timed runs: median and minimum. Sets *slow (and stops
 * there) when the judged run shows the candidate cannot compete with the best so far. The
 * timed runs stop when the budget runs out (the judged run then counts as the only one), and
 * every run waits for a poll (clattn__tune_poll): when the callback stops the run it returns
 * CLATTN_SUCCESS with result->interrupted set and the figures 0. */
clattn_status clattn__tune_time(clattn__tune_run* t, clattn__tune_once_fn once, void* arg,
                                double* median, double* minimum, int* slow);

/* One candidate of a space: how to make it current (build or apply; NULL: nothing to do),
 * how to check it against the reference, how to time it once. */
typedef struct clattn__tune_candidate {
  const char* phase; /* "attention", "gemm" */
  const char* name;  /* in words, for the callback */
  clattn_status (*prepare)(clattn__tune_run* t, void* arg);
  /* CLATTN_ERROR_INVALID_CONFIG for a wrong result, CLATTN_ERROR_BUILD_FAILED for a kernel
   * that does not build; anything else counts as a failed launch. */
  clattn_status (*verify)(clattn__tune_run* t, void* arg);
  clattn__tune_once_fn once;
  void* arg;
} clattn__tune_candidate;

/* Prepares, verifies and times a candidate, counts the outcome in the result and reports
 * it. *ok is set when it passed and was timed (then t->best_ms includes it). Returns 1 when
 * the run must stop. */
int clattn__tune_try(clattn__tune_run* t, const clattn__tune_candidate* c, double* median,
                     double* minimum, int* ok);

/* One measurement of the default (winner 0) or the winner (1) while confirming: a median and
 * a minimum. CLATTN_ERROR_UNSUPPORTED from the default's: it cannot be set again. */
typedef clattn_status (*clattn__tune_measure_fn)(clattn__tune_run* t, void* arg, int winner,
                                                 double* median, double* minimum);

#define CLATTN__TUNE_MAX_PAIRS 7

/* The figures of a confirmation: medians of the medians and minima of the minima. */
typedef struct clattn__tune_confirmation {
  int confirmed;    /* 0 when the default could not be measured again */
  int winner_holds; /* the winner beat the default by the margin */
  double default_ms, default_min_ms, winner_ms, winner_min_ms;
} clattn__tune_confirmation;

/* How many pairs fit the time cap for candidates of these medians (at most
 * CLATTN__TUNE_MAX_PAIRS). */
int clattn__tune_confirm_pairs(double default_ms, double winner_ms);

/* Noise on a busy machine can crown a candidate that is not faster: the default and the
 * winner are measured again, alternately (so both see the same conditions), `pairs` times
 * each (fewer when the budget has run out, at least one); the winner holds when its median
 * beats the default's by the margin. Each pair waits for a poll: when the callback stops the
 * run it returns CLATTN_SUCCESS with result->interrupted set and out->confirmed 0. */
clattn_status clattn__tune_confirm(clattn__tune_run* t, int pairs, clattn__tune_measure_fn measure,
                                   void* arg, clattn__tune_confirmation* out);

/* Merges the winner into the file (unless no_write) and sets result->written; a failure is
 * recorded in the context. */
clattn_status clattn__tune_store(clattn__tune_run* t, const clattn_tuning_entry* entry);

#endif
