/* Fuzz target for the tools' shared flag parser (tools/common/flags.c, clattn_flags_parse):
 * the input, split at NUL bytes, is an argument list for a table holding every kind of flag.
 * The parse must end in one of its three results, and what it accepts must agree with the
 * table: numbers within their limits, doubles finite, choices and lists in range, strings
 * pointing into the arguments. A disagreement traps; the sanitizers of the libFuzzer build
 * catch reads and writes out of bounds. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/flags.h"

#define CHECK(cond)                                           \
  do {                                                        \
    if (!(cond)) {                                            \
      fprintf(stderr, "fuzz_tool_flags: %s failed\n", #cond); \
      abort();                                                \
    }                                                         \
  } while (0)

#define MAX_ARGS 24

static const char* const kChoices[] = {"0", "1", "both", NULL};
static const char* const kSet[] = {"fused", "naive", "reference", NULL};

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  /* argv[0], then the input's NUL-separated pieces (the last one NUL-terminated here). */
  char* text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  char* argv[MAX_ARGS + 2];
  int argc = 0;
  argv[argc++] = "fuzz";
  for (size_t at = 0; at <= size && argc <= MAX_ARGS; at += strlen(text + at) + 1) {
    argv[argc++] = text + at;
  }
  argv[argc] = NULL;

  int set = 0, clear = 1, given_seq = 0, causal = -1, i = 3;
  size_t sz = 5;
  unsigned u = 9, bits = 0;
  uint64_t u64 = 11;
  double d = 2.5;
  const char* s = NULL;
  int variant = -1;
  clattn_flag_size_list list = {.v = {64}, .n = 1};
  const clattn_flag flags[] = {
      CLATTN_FLAG_DEF_SET("--set", &set, "a switch"),
      CLATTN_FLAG_DEF_CLEAR("--no-clear", &clear, "a --no- switch"),
      {.name = "--seq",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &sz,
       .arg = "N",
       .min = 1,
       .max = 1000,
       .given = &given_seq,
       .help = "a size in [1, 1000]"},
      CLATTN_FLAG_DEF_UNSIGNED("--seed", &u, "an unsigned"),
      CLATTN_FLAG_DEF_UINT64("--seed64", &u64, "a uint64"),
      {.name = "--reps",
       .kind = CLATTN_FLAG_INT,
       .ptr = &i,
       .arg = "N",
       .imin = -5,
       .imax = 50,
       .help = "an int in [-5, 50]"},
      {.name = "--budget",
       .kind = CLATTN_FLAG_DOUBLE,
       .ptr = &d,
       .arg = "S",
       .dmin = 0,
       .dmax = 100,
       .help = "a double in (0, 100]"},
      CLATTN_FLAG_DEF_STRING("--device", &s, "SPEC", "a string"),
      {.name = "--causal",
       .kind = CLATTN_FLAG_CHOICE,
       .ptr = &causal,
       .choices = kChoices,
       .implicit = "1",
       .help = "a choice"},
      {.name = "--impl",
       .kind = CLATTN_FLAG_CHOICE_SET,
       .ptr = &bits,
       .choices = kSet,
       .arg = "LIST",
       .help = "a set"},
      {.name = "--head-dim",
       .kind = CLATTN_FLAG_SIZE_LIST,
       .ptr = &list,
       .arg = "LIST",
       .min = 1,
       .max = 256,
       .help = "a list in [1, 256]"},
      {.name = "--variant",
       .kind = CLATTN_FLAG_CUSTOM,
       .ptr = &variant,
       .parse = clattn_flag_parse_variant,
       .arg = "auto|tiled|regblock",
       .help = "a custom value"},
      {.name = "--hidden", .kind = CLATTN_FLAG_SET, .ptr = &set},
      CLATTN_FLAG_DEF_END,
  };
  FILE* sink = fopen("/dev/null", "w");
  const clattn_flag_spec spec = {.tool = "fuzz",
                                 .usage = "usage: fuzz [options]\n",
                                 .flags = flags,
                                 .unknown_hint = "(a hint)",
                                 .messages = sink};
  const clattn_flags_result r = clattn_flags_parse(&spec, argc, argv);
  CHECK(r == CLATTN_FLAGS_OK || r == CLATTN_FLAGS_EXIT || r == CLATTN_FLAGS_BAD);
  if (r == CLATTN_FLAGS_OK) {
    CHECK(set == 0 || set == 1);
    CHECK(clear == 0 || clear == 1);
    CHECK(sz >= 1 && sz <= 1000);
    CHECK(given_seq || sz == 5);
    CHECK(i >= -5 && i <= 50);
    CHECK(isfinite(d) && d > 0 && d <= 100);
    CHECK(causal >= -1 && causal <= 2);
    CHECK(bits < 8);
    CHECK(list.n >= 1 && list.n <= CLATTN_FLAG_LIST_MAX);
    for (size_t k = 0; k < list.n; ++k) CHECK(list.v[k] >= 1 && list.v[k] <= 256);
    if (s) {
      int found = 0;
      for (int k = 1; k < argc; ++k) found |= s >= argv[k] && s <= argv[k] + strlen(argv[k]);
      CHECK(found);
    }
  }
  if (sink) fclose(sink);
  free(text);
  return 0;
}
