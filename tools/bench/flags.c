/* clattn-bench's command line. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static void print_usage(FILE* f) {
  fprintf(f,
          "usage: clattn-bench [options]\n"
          "\n"
          "Times clattn's fused attention beside an unfused CLBlast path, a naive kernel and\n"
          "the CPU reference on the same random inputs, and the device's FMA peak, in one run.\n"
          "\n"
          "  --device SPEC          \"P:D\" or a name substring (default: CLATTN_DEVICE, else\n"
          "                         first GPU, accelerator, CPU)\n"
          "  --batch N              batch size (1)\n"
          "  --heads N              query heads (8)\n"
          "  --kv-heads N           key/value heads, divides --heads (= heads)\n"
          "  --seq N                query length (1024)\n"
          "  --seq-kv N             key/value length (= seq)\n"
          "  --head-dim N           head dimension, 1..256 (64)\n"
          "  --causal               causal mask, bottom-right aligned\n"
          "  --mha --d-model N      time the whole layer instead (self-attention: Q/K/V\n"
          "                         projections, attention, output projection, biases);\n"
          "                         --head-dim defaults to d_model / heads there\n"
          "  --impl LIST            comma-separated: fused,unfused_clblast,naive,reference\n"
          "                         (default: all)\n"
          "  --variant auto|tiled|regblock, --block-m N, --block-n N, --rows-per-item N,\n"
          "  --threads-per-row N    fused config (default: clattn's default for the device)\n"
          "  --reps N               timed calls per implementation (10)\n"
          "  --warmup N             untimed calls first, the first one builds (2, at least 1)\n"
          "  --max-seconds S        stop timing an implementation once its calls took S\n"
          "                         seconds (30; at least one timed call)\n"
          "  --reference-limit X    time the CPU reference only up to X multiply-adds\n"
          "                         B*H*Nq*Nkv*D (1e9)\n"
          "  --no-peak              skip the peak measurement\n"
          "  --seed N               input generator seed (1)\n"
          "  --startup              measure context creation + first call in fresh processes,\n"
          "                         with an empty and then a warm PoCL kernel cache\n"
          "  --json                 print one JSON object\n"
          "  --help                 print this help\n");
}

static int parse_size(const char* flag, const char* text, size_t* out) {
  char* end = NULL;
  errno = 0;
  if (!text || text[0] == '-' || text[0] == '\0') goto bad;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || *end != '\0' || v > SIZE_MAX) goto bad;
  *out = (size_t)v;
  return 0;
bad:
  fprintf(stderr, "clattn-bench: %s needs a non-negative integer, got '%s'\n", flag,
          text ? text : "");
  return -1;
}

static int parse_double(const char* flag, const char* text, double* out) {
  char* end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || *end != '\0' || !(v > 0) || !isfinite(v)) {
    fprintf(stderr, "clattn-bench: %s needs a positive number, got '%s'\n", flag, text);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_impls(const char* text, int* want) {
  for (int i = 0; i < IMPL_COUNT; ++i) want[i] = 0;
  const char* p = text;
  while (*p) {
    const char* comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    int found = 0;
    for (int i = 0; i < IMPL_COUNT; ++i) {
      if (strlen(bench_impl_names[i]) == len && strncmp(bench_impl_names[i], p, len) == 0) {
        want[i] = found = 1;
      }
    }
    if (!found) {
      fprintf(stderr, "clattn-bench: unknown implementation '%.*s' in --impl\n", (int)len, p);
      return -1;
    }
    p += len + (comma ? 1 : 0);
  }
  return 0;
}

int bench_parse_options(int argc, char** argv, bench_options* o) {
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    const char* val = i + 1 < argc ? argv[i + 1] : NULL;
    size_t n = 0;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      print_usage(stdout);
      exit(0);
    } else if (strcmp(a, "--causal") == 0) {
      o->causal = 1;
    } else if (strcmp(a, "--json") == 0) {
      o->json = 1;
    } else if (strcmp(a, "--mha") == 0) {
      o->mha = 1;
    } else if (strcmp(a, "--no-peak") == 0) {
      o->no_peak = 1;
    } else if (strcmp(a, "--startup") == 0) {
      o->startup = 1;
    } else if (strcmp(a, "--startup-child") == 0) {
      o->startup_child = 1; /* internal: one measured start-up, see bench_run_startup */
    } else if (!val) {
      fprintf(stderr, "clattn-bench: unknown argument or missing value: '%s'\n", a);
      return -1;
    } else {
      ++i;
      if (strcmp(a, "--device") == 0) {
        o->device = val;
      } else if (strcmp(a, "--impl") == 0) {
        if (parse_impls(val, o->want) != 0) return -1;
      } else if (strcmp(a, "--max-seconds") == 0) {
        if (parse_double(a, val, &o->max_seconds) != 0) return -1;
      } else if (strcmp(a, "--reference-limit") == 0) {
        if (parse_double(a, val, &o->reference_limit) != 0) return -1;
      } else if (strcmp(a, "--variant") == 0) {
        if (strcmp(val, "auto") == 0) {
          o->variant = CLATTN_VARIANT_AUTO;
        } else if (strcmp(val, "tiled") == 0) {
          o->variant = CLATTN_VARIANT_TILED_LOCAL;
        } else if (strcmp(val, "regblock") == 0) {
          o->variant = CLATTN_VARIANT_REGISTER_BLOCKED;
        } else {
          fprintf(stderr, "clattn-bench: --variant takes auto, tiled or regblock\n");
          return -1;
        }
      } else if (parse_size(a, val, &n) != 0) {
        return -1;
      } else if (strcmp(a, "--batch") == 0) {
        o->batch = n;
      } else if (strcmp(a, "--heads") == 0) {
        o->heads = n;
      } else if (strcmp(a, "--kv-heads") == 0) {
        o->kv_heads = n;
      } else if (strcmp(a, "--seq") == 0) {
        o->seq = n;
      } else if (strcmp(a, "--seq-kv") == 0) {
        o->seq_kv = n;
      } else if (strcmp(a, "--head-dim") == 0) {
        o->head_dim = n;
        o->head_dim_given = 1;
      } else if (strcmp(a, "--d-model") == 0) {
        o->d_model = n;
      } else if (strcmp(a, "--block-m") == 0) {
        o->block_m = (unsigned)n;
      } else if (strcmp(a, "--block-n") == 0) {
        o->block_n = (unsigned)n;
      } else if (strcmp(a, "--rows-per-item") == 0) {
        o->rows_per_item = (unsigned)n;
      } else if (strcmp(a, "--threads-per-row") == 0) {
        o->threads_per_row = (unsigned)n;
      } else if (strcmp(a, "--reps") == 0) {
        o->reps = (long)n;
      } else if (strcmp(a, "--warmup") == 0) {
        o->warmup = (long)n;
      } else if (strcmp(a, "--seed") == 0) {
        o->seed = (uint64_t)n;
      } else {
        fprintf(stderr, "clattn-bench: unknown argument '%s'\n", a);
        return -1;
      }
    }
  }
  if (o->reps < 1) o->reps = 1;
  if (o->warmup < 1) o->warmup = 1;
  return 0;
}
