/* The tools' command lines: one table per tool of {name, kind, destination, limits, help},
 * read by one parser, which also writes the tool's --help from the same table (so the two
 * cannot drift apart) and answers --version.
 *
 * Accepted forms: `--name value` and `--name=value` for flags with a value, `--name` for
 * those without. Numbers are plain decimal digits (a leading '-' only for CLATTN_FLAG_INT):
 * no sign, blanks, hex or exponent, and a value that does not fit the destination or its
 * limits is refused, never wrapped or clamped. Every message names the flag and the text
 * it got, and starts with the tool's name. */
#ifndef CLATTN_TOOLS_COMMON_FLAGS_H
#define CLATTN_TOOLS_COMMON_FLAGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum clattn_flag_kind {
  CLATTN_FLAG_SET,        /* no value; int* = 1 */
  CLATTN_FLAG_CLEAR,      /* no value; int* = 0 (a --no-... flag) */
  CLATTN_FLAG_SIZE,       /* size_t*, in [min, max] */
  CLATTN_FLAG_UNSIGNED,   /* unsigned*, in [min, max] */
  CLATTN_FLAG_UINT64,     /* uint64_t*, in [min, max] */
  CLATTN_FLAG_INT,        /* int*, in [imin, imax] */
  CLATTN_FLAG_DOUBLE,     /* double*, finite, > dmin (exclusive) and <= dmax when dmax > 0 */
  CLATTN_FLAG_STRING,     /* const char**: the argument itself (not copied) */
  CLATTN_FLAG_CHOICE,     /* int*: index of the value in choices */
  CLATTN_FLAG_CHOICE_SET, /* unsigned*: bit i for each choices[i] in a comma-separated list */
  CLATTN_FLAG_SIZE_LIST,  /* clattn_flag_size_list*: comma-separated sizes in [min, max] */
  CLATTN_FLAG_CUSTOM      /* parse(text, ptr) decides; arg says what it takes */
} clattn_flag_kind;

/* Longest list a CLATTN_FLAG_SIZE_LIST takes. */
#define CLATTN_FLAG_LIST_MAX 16

typedef struct clattn_flag_size_list {
  size_t v[CLATTN_FLAG_LIST_MAX];
  size_t n;
} clattn_flag_size_list;

typedef struct clattn_flag {
  const char* name; /* "--seq"; NULL ends the table */
  clattn_flag_kind kind;
  void* ptr; /* destination, of the kind's type; left as it is unless the flag is given */
  /* In --help: the value's name ("N", "SPEC"; NULL for CHOICE: the choices joined by '|')
   * and what the flag does, with its default; lines after the first are indented to the
   * help column. A NULL help hides the flag (internal flags). */
  const char* arg;
  const char* help;
  /* Limits, inclusive. Unsigned kinds and lists: [min, max], max 0 meaning the type's
   * largest value; CLATTN_FLAG_INT: [imin, imax], both 0 meaning [0, INT_MAX]. */
  unsigned long long min, max;
  long long imin, imax;
  double dmin, dmax;
  /* CHOICE and CHOICE_SET: the accepted words, NULL-terminated. */
  const char* const* choices;
  /* CHOICE only: the value taken when the flag is given alone. Then the next argument is
   * read as the value only when it is one of the choices (`--causal` or `--causal both`);
   * NULL: the flag always takes a value. */
  const char* implicit;
  /* CUSTOM: returns 0 and writes *ptr when text is valid, anything else when not. */
  int (*parse)(const char* text, void* ptr);
  int* given; /* when not NULL: set to 1 once the flag is seen */
} clattn_flag;

/* Shorthands for the most common entries (the others are written out). */
#define CLATTN_FLAG_DEF_SET(n, p, h) \
  { .name = (n), .kind = CLATTN_FLAG_SET, .ptr = (p), .help = (h) }
#define CLATTN_FLAG_DEF_CLEAR(n, p, h) \
  { .name = (n), .kind = CLATTN_FLAG_CLEAR, .ptr = (p), .help = (h) }
#define CLATTN_FLAG_DEF_SIZE(n, p, h) \
  { .name = (n), .kind = CLATTN_FLAG_SIZE, .ptr = (p), .arg = "N", .help = (h) }
#define CLATTN_FLAG_DEF_UNSIGNED(n, p, h) \
  { .name = (n), .kind = CLATTN_FLAG_UNSIGNED, .ptr = (p), .arg = "N", .help = (h) }
/* An int from 0 to max (a repetition count). */
#define CLATTN_FLAG_DEF_INT(n, p, max, h) \
  { .name = (n), .kind = CLATTN_FLAG_INT, .ptr = (p), .arg = "N", .imax = (max), .help = (h) }
#define CLATTN_FLAG_DEF_UINT64(n, p, h) \
  { .name = (n), .kind = CLATTN_FLAG_UINT64, .ptr = (p), .arg = "N", .help = (h) }
#define CLATTN_FLAG_DEF_STRING(n, p, a, h) \
  { .name = (n), .kind = CLATTN_FLAG_STRING, .ptr = (p), .arg = (a), .help = (h) }
#define CLATTN_FLAG_DEF_END \
  { .name = NULL }

/* A tool's command line: the table and what --help prints around it. */
typedef struct clattn_flag_spec {
  const char* tool;  /* "clattn-run": starts every message and the --version line */
  const char* usage; /* --help text before the flag list (usage line, description) */
  const char* notes; /* --help text after the list (exit status, ...), or NULL */
  const clattn_flag* flags;
  /* Appended to the message for an unknown flag (a hint where to find it), or NULL. */
  const char* unknown_hint;
  int help_column; /* where help texts start in --help; 0: 24 */
  FILE* messages;  /* where the parser's complaints go; NULL: stderr */
} clattn_flag_spec;

typedef enum clattn_flags_result {
  CLATTN_FLAGS_OK = 0,   /* every argument parsed */
  CLATTN_FLAGS_EXIT = 1, /* --help or --version printed on stdout: exit with status 0 */
  CLATTN_FLAGS_BAD = 2   /* a message on stderr: exit with status 2 */
} clattn_flags_result;

/* Parses argv[1..argc-1] against spec's table. -h, --help and --version are built in and
 * answered at once, as the parser meets them (arguments before them are checked first).
 * Refused: unknown flags, a flag given twice, a missing or malformed value, a value on a
 * flag that takes none, and arguments that are not flags. */
clattn_flags_result clattn_flags_parse(const clattn_flag_spec* spec, int argc, char** argv);

/* Writes spec's --help text (usage, the flags with their help, notes) to f. */
void clattn_flags_print_help(const clattn_flag_spec* spec, FILE* f);

/* Writes "<tool> <major>.<minor>.<patch>" from clattn_version() to f. */
void clattn_flags_print_version(const char* tool, FILE* f);

/* CUSTOM parser for a clattn_variant* (clattn_variant_from_name: "auto", "tiled_local" or
 * "tiled", "register_blocked" or "regblock"). */
int clattn_flag_parse_variant(const char* text, void* ptr);

/* CUSTOM parser for a clattn_dtype* (clattn_dtype_from_name: "f32", "f16", "bf16", ...). */
int clattn_flag_parse_dtype(const char* text, void* ptr);

/* The --dtype flag every tool that has one spells alike. */
#define CLATTN_FLAG_DEF_DTYPE(ptr_)                                    \
  {                                                                    \
    .name = "--dtype", .kind = CLATTN_FLAG_CUSTOM, .ptr = (ptr_),      \
    .parse = clattn_flag_parse_dtype, .arg = "f32|f16|bf16",           \
    .help = "storage type of the tensors (f32); arithmetic is float32" \
  }

#endif
