/* The tuner's search machinery, shared by the attention and GEMM searches: the run's state
 * and budget, the callback, the pipeline each candidate goes through (make it current,
 * verify it against the reference, time it), the timing rules, the confirmation of a winner
 * against the default by alternating runs, and storing the winner. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tuning.h"

#define DEFAULT_BUDGET_S 60.0
#define DEFAULT_REPS 5
#define MIN_REPS 3
#define MAX_REPS 64
/* Timed runs of one candidate stop adding reps past this much device time. */
#define REP_TIME_CAP_MS 2000.0
/* A candidate whose judged run is this much slower than the best median is not timed. */
#define SLOW_FACTOR 3.0
/* The winner must beat the default by 3% in the paired timing (see clattn__tune_confirm). */
#define CONFIRM_MARGIN 0.97

uint32_t clattn__tune_rand(clattn__tune_rng* r) {
  r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(r->s >> 33);
}

float clattn__tune_unit(clattn__tune_rng* r) {
  return (float)clattn__tune_rand(r) / 2147483648.0f - 1.0f;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int clattn__tune_cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

void clattn__tune_utc_now(char* buf, size_t size) {
  time_t t = time(NULL);
  struct tm tm;
  if (gmtime_r(&t, &tm)) {
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
  } else {
    snprintf(buf, size, "unknown");
  }
}

/* ------------------------------------------------------------ run state */

clattn_status clattn__tune_run_init(clattn__tune_run* t, clattn_context* ctx,
                                    const clattn_tune_options* options,
                                    clattn_tune_progress_fn progress, void* user,
                                    clattn_tune_result* result) {
  if (!ctx || !result || result->struct_size != sizeof(clattn_tune_result)) {
    return CLATTN_ERROR_INVALID_ARGUMENT;
  }
  if (options && options->struct_size != sizeof(clattn_tune_options)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "clattn_tune_options.struct_size is %zu, expected %zu",
                        options->struct_size, sizeof(clattn_tune_options));
  }
  memset(t, 0, sizeof *t);
  t->o.struct_size = sizeof t->o;
  if (options) t->o = *options;
  if (!t->o.batch) t->o.batch = 1;
  if (!t->o.heads) t->o.heads = 8;
  if (!t->o.seq) t->o.seq = 1024;
  if (!t->o.seq_q) t->o.seq_q = t->o.seq;
  if (!t->o.head_dim) t->o.head_dim = 64;
  t->o.causal = t->o.causal != 0;
  if (!(t->o.budget_seconds > 0)) t->o.budget_seconds = DEFAULT_BUDGET_S;
  if (t->o.warmup <= 0) t->o.warmup = 1;
  if (t->o.reps <= 0) t->o.reps = DEFAULT_REPS;
  if (t->o.head_dim > CLATTN__MAX_HEAD_DIM ||
      (t->o.variant != CLATTN_VARIANT_AUTO && !clattn__variant_find(t->o.variant)) ||
      !clattn__dtype_size(t->o.dtype)) {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "tuning options: head_dim %zu, variant %d or dtype %d out of range",
                        t->o.head_dim, (int)t->o.variant, (int)t->o.dtype);
  }
  t->ctx = ctx;
  t->progress = progress;
  t->user = user;
  t->res = result;
  t->budget = t->o.budget_seconds;
  t->r.s = t->o.seed ? t->o.seed : 0x5eed;
  memset(result, 0, sizeof *result);
  result->struct_size = sizeof *result;
  result->entry.struct_size = sizeof result->entry;
  t->start = now_s();
  return CLATTN_SUCCESS;
}

static double elapsed(const clattn__tune_run* t) { return now_s() - t->start; }

int clattn__tune_time_left(const clattn__tune_run* t) { return elapsed(t) < t->budget; }

/* Calls the callback; 1 when it asks the run to stop. */
static int ask(clattn__tune_run* t, const char* phase, const char* name, const char* outcome,
               double ms) {
  if (t->res->interrupted) return 1;
  if (!t->progress) return 0;
  clattn_tune_progress p;
  memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  p.phase = phase;
  p.candidate = name;
  p.outcome = outcome;
  p.done = t->res->tried;
  p.total = t->total;
  p.candidate_ms = ms;
  p.best_ms = t->best_ms;
  p.default_ms = t->default_ms;
  p.elapsed_s = elapsed(t);
  p.budget_s = t->budget;
  if (t->progress(&p, t->user)) {
    t->res->interrupted = 1;
    return 1;
  }
  return 0;
}

int clattn__tune_report(clattn__tune_run* t, const char* phase, const char* name,
                        const char* outcome, double ms) {
  t->res->tried++;
  return ask(t, phase, name, outcome, ms);
}

int clattn__tune_poll(clattn__tune_run* t) {
  return ask(t, t->phase ? t->phase : "attention", t->name ? t->name : "", "running", 0);
}

void clattn__tune_shuffle(clattn__tune_run* t, void* base, size_t count, size_t size, size_t from) {
  unsigned char* a = base;
  for (size_t i = count; i > from + 1; --i) {
    size_t j = from + clattn__tune_rand(&t->r) % (i - from);
    unsigned char* x = a + (i - 1) * size;
    unsigned char* y = a + j * size;
    for (size_t b = 0; b < size; ++b) {
      unsigned char c = x[b];
      x[b] = y[b];
      y[b] = c;
    }
  }
}

/* ------------------------------------------------------------ timing */

/* Timed runs for a candidate whose judged run took warm ms: the requested reps (at most
 * MAX_REPS), fewer when they would take longer than REP_TIME_CAP_MS, but at least MIN_REPS. */
static int timed_reps(const clattn__tune_run* t, double warm) {
  int reps = t->o.reps > MAX_REPS ? MAX_REPS : t->o.reps;
  if (warm > 0 && warm * reps > REP_TIME_CAP_MS) {
    reps = (int)(REP_TIME_CAP_MS / warm);
    if (reps < MIN_REPS) reps = MIN_REPS;
  }
  return reps;
}

clattn_status clattn__tune_time(clattn__tune_run* t, clattn__tune_once_fn once, void* arg,
                                double* median, double* minimum, int* slow) {
  clattn_status status = CLATTN_SUCCESS;
  double warm = 0, times[MAX_REPS];
  *slow = 0;
  *median = *minimum = 0;
  /* Warm-up runs are not judged (PoCL compiles for the launch shape on first use, CLBlast
   * builds its kernel); the run after them decides whether the candidate is worth the rest. */
  for (int i = 0; i <= t->o.warmup; ++i) {
    if (clattn__tune_poll(t)) return CLATTN_SUCCESS;
    CLATTN__CHECK(once(t, arg, &warm));
  }
  if (t->best_ms > 0 && warm > SLOW_FACTOR * t->best_ms) {
    *slow = 1;
    *median = *minimum = warm;
    return CLATTN_SUCCESS;
  }
  int reps = 0;
  for (const int want = timed_reps(t, warm); reps < want && clattn__tune_time_left(t); ++reps) {
    if (clattn__tune_poll(t)) return CLATTN_SUCCESS;
    CLATTN__CHECK(once(t, arg, &times[reps]));
  }
  if (reps == 0) times[reps++] = warm; /* out of time: the judged run alone */
  qsort(times, (size_t)reps, sizeof times[0], clattn__tune_cmp_double);
  *minimum = times[0];
  *median = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
cleanup:
  return status;
}

/* ------------------------------------------------------------ one candidate */

int clattn__tune_try(clattn__tune_run* t, const clattn__tune_candidate* c, double* median,
                     double* minimum, int* ok) {
  const char* outcome = "ok";
  int slow = 0;
  *ok = 0;
  *median = *minimum = 0;
  t->phase = c->phase;
  t->name = c->name;
  clattn_status st = c->prepare ? c->prepare(t, c->arg) : CLATTN_SUCCESS;
  if (t->res->interrupted || (st == CLATTN_SUCCESS && clattn__tune_poll(t))) {
    outcome = "interrupted";
  } else if (st != CLATTN_SUCCESS) {
    t->res->failed_build++;
    outcome = "build failed";
  } else if ((st = c->verify(t, c->arg)) != CLATTN_SUCCESS) {
    if (st == CLATTN_ERROR_INVALID_CONFIG) {
      t->res->failed_verify++;
      outcome = "wrong result";
    } else if (st == CLATTN_ERROR_BUILD_FAILED) {
      t->res->failed_build++;
      outcome = "build failed";
    } else {
      t->res->failed_launch++;
      outcome = "launch failed";
    }
  } else if (t->res->interrupted) {
    outcome = "interrupted";
  } else if (clattn__tune_time(t, c->once, c->arg, median, minimum, &slow) != CLATTN_SUCCESS) {
    t->res->failed_launch++;
    outcome = "launch failed";
  } else if (t->res->interrupted) {
    outcome = "interrupted";
  } else if (slow) {
    t->res->slow++;
    outcome = "slow";
  } else {
    *ok = 1;
    if (t->best_ms == 0 || *median < t->best_ms) t->best_ms = *median;
  }
  if (!*ok) clattn__log("tune: %s: %s", c->name, outcome);
  if (t->res->interrupted) {
    /* Counted, but not reported: the callback has already asked to stop. */
    t->res->tried++;
    *median = *minimum = 0;
    return 1;
  }
  return clattn__tune_report(t, c->phase, c->name, outcome, *ok ? *median : 0);
}

/* ------------------------------------------------------------ confirmation */

int clattn__tune_confirm_pairs(double default_ms, double winner_ms) {
  int pairs = CLATTN__TUNE_MAX_PAIRS;
  const double pair = default_ms + winner_ms;
  if (pair > 0 && pair * pairs > 2 * REP_TIME_CAP_MS) {
    pairs = (int)(2 * REP_TIME_CAP_MS / pair);
    if (pairs < MIN_REPS) pairs = MIN_REPS;
  }
  return pairs;
}

clattn_status clattn__tune_confirm(clattn__tune_run* t, int pairs, clattn__tune_measure_fn measure,
                                   void* arg, clattn__tune_confirmation* out) {
  clattn_status status = CLATTN_SUCCESS;
  double a[CLATTN__TUNE_MAX_PAIRS], amin[CLATTN__TUNE_MAX_PAIRS];
  double b[CLATTN__TUNE_MAX_PAIRS], bmin[CLATTN__TUNE_MAX_PAIRS];
  const double best = t->best_ms;
  memset(out, 0, sizeof *out);
  if (pairs < 1) pairs = 1;
  if (pairs > CLATTN__TUNE_MAX_PAIRS) pairs = CLATTN__TUNE_MAX_PAIRS;
  t->best_ms = 0; /* no "slow" shortcut while confirming */
  t->name = "confirming the winner against the default";
  for (int r = 0; r < pairs; ++r) {
    if (r > 0 && !clattn__tune_time_left(t)) {
      pairs = r; /* out of time: the pairs measured so far */
      break;
    }
    if (clattn__tune_poll(t)) goto cleanup;
    status = measure(t, arg, 0, &a[r], &amin[r]);
    if (status == CLATTN_ERROR_UNSUPPORTED) {
      status = CLATTN_SUCCESS;
      goto cleanup;
    }
    if (status != CLATTN_SUCCESS) goto cleanup;
    CLATTN__CHECK(measure(t, arg, 1, &b[r], &bmin[r]));
    if (t->res->interrupted) goto cleanup;
  }
  qsort(a, (size_t)pairs, sizeof a[0], clattn__tune_cmp_double);
  qsort(b, (size_t)pairs, sizeof b[0], clattn__tune_cmp_double);
  qsort(amin, (size_t)pairs, sizeof amin[0], clattn__tune_cmp_double);
  qsort(bmin, (size_t)pairs, sizeof bmin[0], clattn__tune_cmp_double);
  out->default_ms = a[pairs / 2];
  out->winner_ms = b[pairs / 2];
  out->default_min_ms = amin[0];
  out->winner_min_ms = bmin[0];
  out->confirmed = 1;
  out->winner_holds = out->winner_ms < CONFIRM_MARGIN * out->default_ms;
cleanup:
  t->best_ms = best;
  return status;
}

/* ------------------------------------------------------------ the winner */

clattn_status clattn__tune_store(clattn__tune_run* t, const clattn_tuning_entry* entry) {
  if (t->o.no_write) return CLATTN_SUCCESS;
  clattn_status status = clattn_tuning_file_store(t->o.output, entry, 1);
  if (status != CLATTN_SUCCESS) {
    char msg[1024];
    clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
    return clattn__fail(t->ctx, status, "%s", msg);
  }
  t->res->written = 1;
  return CLATTN_SUCCESS;
}
