/* clattn-tune: tunes the attention kernels and CLBlast's GEMM for the device in hand and
 * merges the winners into the tuning file that contexts read (a thin front end over
 * clattn_tune_attention and clattn_tune_gemm).
 *
 * Exit status: 0 done, 1 error, 2 bad command line, 130 interrupted (finished shapes kept). */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clattn/clattn_tuning.h"
#include "common/flags.h"
#include "common/json.h"

typedef struct options {
  const char* device;
  clattn_flag_size_list head_dims, seqs;
  int causal; /* index in kCausal: only non-causal, only causal, both */
  size_t batch, heads, seq_q;
  double budget;
  const char* output;
  int dry_run, json, gemm, attention;
  clattn_variant variant;
  unsigned seed;
  size_t max_candidates;
  clattn_dtype dtype;
} options;

typedef struct phase {
  char name[96];
  int gemm;
  size_t head_dim, seq;
  int causal;
  clattn_status status;
  clattn_tune_result result;
  int ran;
} phase;

/* The signal that interrupted the run (0: none). The library polls the progress callback
 * between device calls, so the run stops within one call; a second signal ends the process
 * at once (the tuning file is only ever replaced whole, so nothing is left half-written). */
static volatile sig_atomic_t g_interrupted = 0;
static void on_signal(int sig) {
  g_interrupted = sig;
  signal(sig, SIG_DFL);
}

static const char* const kCausal[] = {"0", "1", "both", NULL};

/* Parses the command line into o; returns the parser's result. */
static clattn_flags_result parse_args(int argc, char** argv, options* o) {
  memset(o, 0, sizeof *o);
  o->head_dims = (clattn_flag_size_list){.v = {64}, .n = 1};
  o->seqs = (clattn_flag_size_list){.v = {1024}, .n = 1};
  o->causal = 2;
  o->batch = 1;
  o->heads = 8;
  o->budget = 60;
  o->gemm = o->attention = 1;
  const clattn_flag flags[] = {
      CLATTN_FLAG_DEF_STRING("--device", &o->device, "SPEC",
                             "\"P:D\" or a name substring (default: CLATTN_DEVICE, else the\n"
                             "default rule)"),
      {.name = "--head-dim",
       .kind = CLATTN_FLAG_SIZE_LIST,
       .ptr = &o->head_dims,
       .arg = "LIST",
       .min = 1,
       .help = "head dims, comma-separated (64)"},
      {.name = "--seq",
       .kind = CLATTN_FLAG_SIZE_LIST,
       .ptr = &o->seqs,
       .arg = "LIST",
       .min = 1,
       .help = "sequence lengths (1024)"},
      {.name = "--seq-q",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->seq_q,
       .arg = "N",
       .help = "query length of the attention shapes (0: each --seq, prefill);\n"
               "1 to 15 tunes decode shapes (N queries over --seq keys)"},
      {.name = "--causal",
       .kind = CLATTN_FLAG_CHOICE,
       .ptr = &o->causal,
       .choices = kCausal,
       .implicit = "1",
       .help = "causal masks to tune (no flag: both; the flag alone: 1)"},
      {.name = "--batch",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->batch,
       .arg = "N",
       .min = 1,
       .help = "batch of the timed runs (1)"},
      {.name = "--heads",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->heads,
       .arg = "N",
       .min = 1,
       .help = "heads of the timed runs (8); GEMMs use E = heads*head_dim"},
      {.name = "--budget",
       .kind = CLATTN_FLAG_DOUBLE,
       .ptr = &o->budget,
       .arg = "SECONDS",
       .help = "time for the whole run, shared by the shapes (60)"},
      CLATTN_FLAG_DEF_STRING("--output", &o->output, "FILE",
                             "tuning file (default: CLATTN_TUNING_FILE, else\n"
                             "$XDG_CACHE_HOME/clattn/tuning.json, else\n"
                             "~/.cache/clattn/tuning.json)"),
      {.name = "--variant",
       .kind = CLATTN_FLAG_CUSTOM,
       .ptr = &o->variant,
       .parse = clattn_flag_parse_variant,
       .arg = "auto|tiled|regblock",
       .help = "attention variants to search (auto: every one; also\n"
               "splitkv)"},
      CLATTN_FLAG_DEF_DTYPE(&o->dtype),
      CLATTN_FLAG_DEF_CLEAR("--no-gemm", &o->gemm, "skip CLBlast's GEMM"),
      CLATTN_FLAG_DEF_CLEAR("--gemm-only", &o->attention, "only tune CLBlast's GEMM"),
      CLATTN_FLAG_DEF_SIZE("--max-candidates", &o->max_candidates,
                           "at most N candidates per shape (0: no limit)"),
      CLATTN_FLAG_DEF_UNSIGNED("--seed", &o->seed, "random search order"),
      CLATTN_FLAG_DEF_SET("--dry-run", &o->dry_run,
                          "print how many candidates each space holds, run nothing"),
      CLATTN_FLAG_DEF_SET("--json", &o->json, "print one JSON object at the end"),
      CLATTN_FLAG_DEF_END,
  };
  const clattn_flag_spec spec = {
      .tool = "clattn-tune",
      .usage =
          "usage: clattn-tune [options]\n"
          "\n"
          "Searches kernel configs for the attention core and CLBlast parameters for the\n"
          "projection GEMMs on one device, verifies every candidate against a double-precision\n"
          "reference, times the rest and merges the winners into the tuning file.\n"
          "\n",
      .notes = "\nExit status: 0 done, 1 error, 2 usage, 130 interrupted (finished shapes kept).\n",
      .flags = flags,
      .help_column = 23,
  };
  clattn_flags_result r = clattn_flags_parse(&spec, argc, argv);
  if (r == CLATTN_FLAGS_OK && !o->gemm && !o->attention) {
    fprintf(stderr, "clattn-tune: --no-gemm and --gemm-only leave nothing to tune\n");
    r = CLATTN_FLAGS_BAD;
  }
  if (r == CLATTN_FLAGS_BAD) clattn_flags_print_help(&spec, stderr);
  return r;
}

typedef struct progress_state {
  int tty;
  const char* phase_name;
} progress_state;

static int on_progress(const clattn_tune_progress* p, void* user) {
  progress_state* s = user;
  double left = p->budget_s - p->elapsed_s;
  if (left < 0) left = 0;
  if (strcmp(p->outcome, "running") == 0) {
    /* A poll between the calls of a candidate: only the status line shows it. */
    if (s->tty && !g_interrupted) {
      fprintf(stderr, "\r\033[K%s: %zu/%zu %s... %.0f s left", s->phase_name, p->done, p->total,
              p->candidate, left);
      fflush(stderr);
    }
    return g_interrupted != 0;
  }
  if (s->tty) {
    fprintf(stderr, "\r\033[K%s: %zu/%zu best %.3f ms (default %.3f) %.0f s left", s->phase_name,
            p->done, p->total, p->best_ms, p->default_ms, left);
  } else {
    fprintf(stderr, "%s: %zu/%zu %s: %s", s->phase_name, p->done, p->total, p->candidate,
            p->outcome);
    if (p->candidate_ms > 0) fprintf(stderr, " %.3f ms", p->candidate_ms);
    fprintf(stderr, " (best %.3f ms, %.0f s left)\n", p->best_ms, left);
  }
  fflush(stderr);
  return g_interrupted != 0;
}

static void describe_config(const clattn_attention_config* c, char* buf, size_t size) {
  if (clattn_attention_config_describe(c, buf, size, NULL) != CLATTN_SUCCESS) {
    snprintf(buf, size, "unknown variant %d", (int)c->variant);
  }
}

static void describe_winner(const phase* ph, char* buf, size_t size) {
  const clattn_tune_result* r = &ph->result;
  if (!ph->gemm) {
    describe_config(&r->entry.config, buf, size);
    return;
  }
  if (!r->written && r->entry.param_count == 0) {
    snprintf(buf, size, "GEMM defaults");
    return;
  }
  size_t v[4] = {0};
  const char* names[4] = {"MWG", "NWG", "KWG", "VWM"};
  for (int n = 0; n < 4; ++n) {
    for (size_t i = 0; i < r->entry.param_count; ++i) {
      if (strcmp(r->entry.param_names[i], names[n]) == 0) v[n] = r->entry.param_values[i];
    }
  }
  snprintf(buf, size, "Xgemm %zux%zux%zu vw%zu", v[0], v[1], v[2], v[3]);
}

static void print_table(const phase* phases, size_t n) {
  printf("\n%-36s %-24s %10s  %-24s %10s  %8s\n", "shape", "default", "ms", "tuned", "ms",
         "speed-up");
  for (size_t i = 0; i < n; ++i) {
    const phase* ph = &phases[i];
    if (!ph->ran) continue;
    const clattn_tune_result* r = &ph->result;
    char def[64], win[64];
    if (ph->gemm) {
      snprintf(def, sizeof def, "GEMM defaults");
    } else {
      describe_config(&r->default_config, def, sizeof def);
    }
    describe_winner(ph, win, sizeof win);
    if (r->interrupted || ph->status != CLATTN_SUCCESS || r->best_ms <= 0) {
      printf("%-36s %-24s %10.3f  %-24s %10s  %8s\n", ph->name, def, r->default_ms,
             r->interrupted ? "(interrupted)" : clattn_status_name(ph->status), "-", "-");
      continue;
    }
    printf("%-36s %-24s %10.3f  %-24s %10.3f  %7.2fx\n", ph->name, def, r->default_ms, win,
           r->best_ms, r->default_ms > 0 ? r->default_ms / r->best_ms : 0.0);
  }
}

static void print_json(const phase* phases, size_t n, const char* path, int dry_run) {
  printf("{\"tuning_file\":");
  clattn_tool_json_string(stdout, path);
  printf(",\"dry_run\":%s,\"results\":[", dry_run ? "true" : "false");
  for (size_t i = 0; i < n; ++i) {
    const phase* ph = &phases[i];
    const clattn_tune_result* r = &ph->result;
    char def[64], win[64];
    if (ph->gemm) {
      snprintf(def, sizeof def, "GEMM defaults");
    } else {
      describe_config(&r->default_config, def, sizeof def);
    }
    describe_winner(ph, win, sizeof win);
    printf("%s{\"shape\":", i ? "," : "");
    clattn_tool_json_string(stdout, ph->name);
    printf(",\"kind\":\"%s\",\"ran\":%s,\"status\":", ph->gemm ? "gemm" : "attention",
           ph->ran ? "true" : "false");
    clattn_tool_json_string(stdout, clattn_status_name(ph->status));
    /* Candidates per variant, by the variant's name, then the GEMM space. */
    printf(",\"space\":{");
    for (int v = 0; v < CLATTN_TUNE_MAX_VARIANTS; ++v) {
      const char* vname = clattn_variant_name((clattn_variant)v);
      if (vname && v != CLATTN_VARIANT_AUTO) printf("\"%s\":%zu,", vname, r->space_variants[v]);
    }
    printf("\"gemm\":%zu}", r->space_gemm);
    printf(
        ",\"tried\":%zu,\"failed_build\":%zu,\"failed_launch\":%zu,\"failed_verify\":%zu,"
        "\"slow\":%zu,\"interrupted\":%s,\"written\":%s",
        r->tried, r->failed_build, r->failed_launch, r->failed_verify, r->slow,
        r->interrupted ? "true" : "false", r->written ? "true" : "false");
    printf(",\"default\":");
    clattn_tool_json_string(stdout, def);
    printf(",\"tuned\":");
    clattn_tool_json_string(stdout, win);
    printf(",\"default_ms\":%.4f,\"tuned_ms\":%.4f,\"default_min_ms\":%.4f,\"tuned_min_ms\":%.4f}",
           r->default_ms, r->best_ms, r->default_min_ms, r->best_min_ms);
  }
  printf("]}\n");
}

int main(int argc, char** argv) {
  options o;
  const clattn_flags_result parsed = parse_args(argc, argv, &o);
  if (parsed != CLATTN_FLAGS_OK) return parsed == CLATTN_FLAGS_EXIT ? 0 : 2;
  /* The file this run writes: --output, else the default path. */
  char path[4096];
  if (o.output) {
    snprintf(path, sizeof path, "%s", o.output);
  } else if (clattn_tuning_file_path(path, sizeof path, NULL) != CLATTN_SUCCESS) {
    fprintf(stderr, "clattn-tune: no tuning file path (set CLATTN_TUNING_FILE or HOME)\n");
    return 1;
  }
  /* Before any tuning: an output the run could not write would cost the whole budget. */
  if (!o.dry_run && clattn_tuning_file_check(path) != CLATTN_SUCCESS) {
    char why[1024];
    clattn_context_get_last_error(NULL, why, sizeof why, NULL);
    fprintf(stderr, "clattn-tune: %s; nothing tuned\n", why);
    return 1;
  }
  /* The tuner's own context reads no tuning file, so "default" means the built-in
   * heuristics and the default GEMM parameters. */
  setenv("CLATTN_TUNING_FILE", "/dev/null", 1);

  clattn_context_options copts = CLATTN_CONTEXT_OPTIONS_INIT;
  copts.device = o.device;
  clattn_context* ctx = NULL;
  clattn_status st = clattn_context_create(&copts, &ctx);
  if (st != CLATTN_SUCCESS) {
    char msg[1024];
    clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
    fprintf(stderr, "clattn-tune: %s: %s\n", clattn_status_name(st), msg);
    return 1;
  }
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  clattn_context_get_device_info(ctx, &info);

  phase phases[CLATTN_FLAG_LIST_MAX * CLATTN_FLAG_LIST_MAX * 2 + 1];
  size_t nphases = 0;
  /* --causal 0, 1 or both (the default): the masks tuned, in that order. */
  const int masks[2] = {o.causal == 1, 1};
  const size_t mask_count = o.causal == 2 ? 2 : 1;
  if (o.attention) {
    for (size_t a = 0; a < o.head_dims.n; ++a) {
      for (size_t b = 0; b < o.seqs.n; ++b) {
        for (size_t c = 0; c < mask_count; ++c) {
          phase* ph = &phases[nphases++];
          memset(ph, 0, sizeof *ph);
          ph->head_dim = o.head_dims.v[a];
          ph->seq = o.seqs.v[b];
          ph->causal = masks[c];
          const char* dt = o.dtype == CLATTN_DTYPE_F32 ? "" : clattn_dtype_name(o.dtype);
          if (o.seq_q) {
            snprintf(ph->name, sizeof ph->name, "attention D=%zu Nq=%zu Nkv=%zu%s %s", ph->head_dim,
                     o.seq_q, ph->seq, ph->causal ? " causal" : "", dt);
          } else {
            snprintf(ph->name, sizeof ph->name, "attention D=%zu N=%zu%s %s", ph->head_dim, ph->seq,
                     ph->causal ? " causal" : "", dt);
          }
        }
      }
    }
  }
  if (o.gemm) {
    phase* ph = &phases[nphases++];
    memset(ph, 0, sizeof *ph);
    ph->gemm = 1;
    ph->head_dim = o.head_dims.v[0];
    ph->seq = o.seqs.v[0];
    snprintf(ph->name, sizeof ph->name, "gemm M=%zu E=%zu (4 x [M,E]·[E,E])", o.batch * ph->seq,
             o.heads * ph->head_dim);
  }

  if (!o.json) {
    printf("device       %s (%s, driver %s)\n", info.name, info.platform_name, info.driver_version);
    printf("tuning file  %s\n", path);
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  progress_state ps = {isatty(fileno(stderr)), NULL};
  double spent = 0;
  int failed = 0;
  for (size_t i = 0; i < nphases && !g_interrupted; ++i) {
    phase* ph = &phases[i];
    clattn_tune_options to = CLATTN_TUNE_OPTIONS_INIT;
    to.batch = o.batch;
    to.heads = o.heads;
    to.seq = ph->seq;
    to.seq_q = ph->gemm ? 0 : o.seq_q;
    to.head_dim = ph->head_dim;
    to.causal = ph->causal;
    double left = o.budget - spent;
    to.budget_seconds = left > 0 ? left / (double)(nphases - i) : 0.001;
    to.output = path;
    to.dry_run = o.dry_run;
    to.seed = o.seed;
    to.max_candidates = o.max_candidates;
    to.variant = o.variant;
    to.dtype = ph->gemm ? CLATTN_DTYPE_F32 : o.dtype;
    ph->result.struct_size = sizeof ph->result;
    ps.phase_name = ph->name;
    clattn_tune_result* r = &ph->result;
    clattn_tune_progress_fn cb = o.dry_run ? NULL : on_progress;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ph->status = ph->gemm ? clattn_tune_gemm(ctx, &to, cb, &ps, r)
                          : clattn_tune_attention(ctx, &to, cb, &ps, r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    spent += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    ph->ran = 1;
    if (ps.tty && !o.dry_run) fprintf(stderr, "\n");
    if (ph->status != CLATTN_SUCCESS) {
      char msg[1024];
      clattn_context_get_last_error(ctx, msg, sizeof msg, NULL);
      fprintf(stderr, "clattn-tune: %s: %s: %s\n", ph->name, clattn_status_name(ph->status), msg);
      failed = 1;
    } else if (o.dry_run && !o.json) {
      if (ph->gemm) {
        printf("%-36s gemm: %zu candidates\n", ph->name, r->space_gemm);
      } else {
        printf("%-36s", ph->name);
        const char* sep = " ";
        for (int v = 0; v < CLATTN_TUNE_MAX_VARIANTS; ++v) {
          const char* vname = clattn_variant_name((clattn_variant)v);
          if (!vname || v == CLATTN_VARIANT_AUTO) continue;
          printf("%s%s: %zu", sep, vname, r->space_variants[v]);
          sep = ", ";
        }
        printf(" candidates\n");
      }
    } else if (!o.json && !o.dry_run) {
      printf("%-36s %zu tried (%zu failed to build, %zu to launch, %zu wrong, %zu slow)%s\n",
             ph->name, r->tried, r->failed_build, r->failed_launch, r->failed_verify, r->slow,
             r->written ? ", written" : "");
    }
  }
  if (o.json) {
    print_json(phases, nphases, path, o.dry_run);
  } else if (!o.dry_run) {
    print_table(phases, nphases);
  }
  if (g_interrupted) {
    fprintf(stderr,
            "clattn-tune: interrupted by %s after %.1f s: the shape in progress was dropped, "
            "shapes finished before it are kept in %s\n",
            g_interrupted == SIGINT    ? "SIGINT"
            : g_interrupted == SIGTERM ? "SIGTERM"
                                       : "a signal",
            spent, o.dry_run ? "(dry run: nothing)" : path);
  }
  clattn_context_destroy(ctx);
  if (g_interrupted) return 130;
  return failed ? 1 : 0;
}
