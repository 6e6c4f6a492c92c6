/* The tools' table-driven command-line parser (see flags.h). */
#include "common/flags.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"

#define DEFAULT_HELP_COLUMN 24

/* ---------------------------------------------------------------- numbers */

typedef enum number_status { NUMBER_OK, NUMBER_MALFORMED, NUMBER_TOO_LARGE } number_status;

/* Plain decimal digits only: strtoull would also take blanks, a sign (and wrap "-1" to the
 * largest value), "0x" and out-of-range text clamped to ULLONG_MAX. */
static number_status parse_digits(const char* text, unsigned long long* out) {
  if (!text || !*text) return NUMBER_MALFORMED;
  unsigned long long v = 0;
  int too_large = 0;
  for (const char* p = text; *p; ++p) {
    if (*p < '0' || *p > '9') return NUMBER_MALFORMED;
    const unsigned d = (unsigned)(*p - '0');
    if (v > (ULLONG_MAX - d) / 10) too_large = 1;
    if (!too_large) v = v * 10 + d;
  }
  if (too_large) return NUMBER_TOO_LARGE;
  *out = v;
  return NUMBER_OK;
}

static unsigned long long kind_max(clattn_flag_kind kind) {
  switch (kind) {
    case CLATTN_FLAG_UNSIGNED:
      return UINT_MAX;
    case CLATTN_FLAG_UINT64:
      return UINT64_MAX;
    default:
      return SIZE_MAX;
  }
}

/* Both of an entry's limits, the type's own where the table leaves max at 0. */
static void unsigned_limits(const clattn_flag* f, unsigned long long* lo, unsigned long long* hi) {
  const unsigned long long type_max = kind_max(f->kind);
  *hi = f->max && f->max < type_max ? f->max : type_max;
  *lo = f->min;
}

/* ---------------------------------------------------------------- messages */

#if defined(__GNUC__)
static void complain(const clattn_flag_spec* spec, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
#endif

static void complain(const clattn_flag_spec* spec, const char* fmt, ...) {
  FILE* out = spec->messages ? spec->messages : stderr;
  va_list ap;
  va_start(ap, fmt);
  fprintf(out, "%s: ", spec->tool);
  vfprintf(out, fmt, ap);
  fputc('\n', out);
  va_end(ap);
}

/* The choices joined by sep into buf ("bhnd|bnhd"). */
static const char* join_choices(const char* const* choices, const char* sep, char* buf,
                                size_t size) {
  size_t len = 0;
  buf[0] = '\0';
  for (size_t i = 0; choices && choices[i]; ++i) {
    int n = snprintf(buf + len, size - len, "%s%s", i ? sep : "", choices[i]);
    if (n < 0 || (size_t)n >= size - len) break;
    len += (size_t)n;
  }
  return buf;
}

static int choice_index(const char* const* choices, const char* text, size_t len) {
  for (int i = 0; choices && choices[i]; ++i) {
    if (strlen(choices[i]) == len && strncmp(choices[i], text, len) == 0) return i;
  }
  return -1;
}

/* ---------------------------------------------------------------- values */

/* Stores text into f's destination; 0, or -1 with a message. */
static int store_value(const clattn_flag_spec* spec, const clattn_flag* f, const char* text) {
  char choices[512];
  switch (f->kind) {
    case CLATTN_FLAG_SIZE:
    case CLATTN_FLAG_UNSIGNED:
    case CLATTN_FLAG_UINT64: {
      unsigned long long v = 0, lo = 0, hi = 0;
      unsigned_limits(f, &lo, &hi);
      const number_status st = parse_digits(text, &v);
      if (st == NUMBER_MALFORMED) {
        complain(spec, "%s needs a non-negative integer, got '%s'", f->name, text);
        return -1;
      }
      if (st == NUMBER_TOO_LARGE || v < lo || v > hi) {
        complain(spec, "%s takes %llu..%llu, got '%s'", f->name, lo, hi, text);
        return -1;
      }
      if (f->kind == CLATTN_FLAG_SIZE) {
        *(size_t*)f->ptr = (size_t)v;
      } else if (f->kind == CLATTN_FLAG_UNSIGNED) {
        *(unsigned*)f->ptr = (unsigned)v;
      } else {
        *(uint64_t*)f->ptr = (uint64_t)v;
      }
      return 0;
    }
    case CLATTN_FLAG_INT: {
      long long lo = f->imin, hi = f->imax;
      if (lo == 0 && hi == 0) hi = INT_MAX;
      if (lo < INT_MIN) lo = INT_MIN;
      if (hi > INT_MAX) hi = INT_MAX;
      const int negative = text[0] == '-';
      unsigned long long mag = 0;
      const number_status st = parse_digits(text + negative, &mag);
      if (st == NUMBER_MALFORMED) {
        complain(spec, "%s needs an integer, got '%s'", f->name, text);
        return -1;
      }
      /* |INT_MIN| fits an unsigned long long, so anything larger is out of range anyway. */
      const int fits = st == NUMBER_OK && mag <= (unsigned long long)INT_MAX + 1;
      const long long v = negative ? -(long long)mag : (long long)mag;
      if (!fits || v < lo || v > hi) {
        complain(spec, "%s takes %lld..%lld, got '%s'", f->name, lo, hi, text);
        return -1;
      }
      *(int*)f->ptr = (int)v;
      return 0;
    }
    case CLATTN_FLAG_DOUBLE: {
      /* strtod would also take blanks, "inf", "nan" and hex floats. */
      int ok = text[0] != '\0' && strspn(text, "0123456789.eE+-") == strlen(text);
      double v = 0.0;
      if (ok) {
        char* end = NULL;
        errno = 0;
        v = strtod(text, &end);
        ok = *end == '\0' && errno != ERANGE && isfinite(v) && v > f->dmin &&
             (f->dmax <= 0 || v <= f->dmax);
      }
      if (!ok) {
        if (f->dmax > 0) {
          complain(spec, "%s needs a number above %g and up to %g, got '%s'", f->name, f->dmin,
                   f->dmax, text);
        } else if (f->dmin == 0) {
          complain(spec, "%s needs a positive finite number, got '%s'", f->name, text);
        } else {
          complain(spec, "%s needs a finite number above %g, got '%s'", f->name, f->dmin, text);
        }
        return -1;
      }
      *(double*)f->ptr = v;
      return 0;
    }
    case CLATTN_FLAG_STRING:
      *(const char**)f->ptr = text;
      return 0;
    case CLATTN_FLAG_CHOICE: {
      const int i = choice_index(f->choices, text, strlen(text));
      if (i < 0) {
        complain(spec, "%s takes %s, got '%s'", f->name,
                 join_choices(f->choices, "|", choices, sizeof choices), text);
        return -1;
      }
      *(int*)f->ptr = i;
      return 0;
    }
    case CLATTN_FLAG_CHOICE_SET: {
      unsigned set = 0;
      const char* p = text;
      for (;;) {
        const char* comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const int i = choice_index(f->choices, p, len);
        if (i < 0 || i >= (int)(sizeof set * CHAR_BIT)) {
          complain(spec, "%s: '%.*s' is not one of %s (in '%s')", f->name, (int)len, p,
                   join_choices(f->choices, ", ", choices, sizeof choices), text);
          return -1;
        }
        set |= 1u << i;
        if (!comma) break;
        p = comma + 1;
      }
      *(unsigned*)f->ptr = set;
      return 0;
    }
    case CLATTN_FLAG_SIZE_LIST: {
      clattn_flag_size_list list = {.n = 0};
      unsigned long long lo = 0, hi = 0;
      unsigned_limits(f, &lo, &hi);
      const char* p = text;
      for (;;) {
        const char* comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[32];
        unsigned long long v = 0;
        int ok = len > 0 && len < sizeof item;
        if (ok) {
          memcpy(item, p, len);
          item[len] = '\0';
          ok = parse_digits(item, &v) == NUMBER_OK && v >= lo && v <= hi;
        }
        if (!ok) {
          complain(spec, "%s takes comma-separated integers %llu..%llu, got '%.*s' in '%s'",
                   f->name, lo, hi, (int)len, p, text);
          return -1;
        }
        if (list.n == CLATTN_FLAG_LIST_MAX) {
          complain(spec, "%s takes at most %d values, got '%s'", f->name, CLATTN_FLAG_LIST_MAX,
                   text);
          return -1;
        }
        list.v[list.n++] = (size_t)v;
        if (!comma) break;
        p = comma + 1;
      }
      *(clattn_flag_size_list*)f->ptr = list;
      return 0;
    }
    case CLATTN_FLAG_CUSTOM:
      if (!f->parse || f->parse(text, f->ptr) != 0) {
        complain(spec, "%s takes %s, got '%s'", f->name, f->arg ? f->arg : "another value", text);
        return -1;
      }
      return 0;
    case CLATTN_FLAG_SET:
    case CLATTN_FLAG_CLEAR:
      break;
  }
  return -1;
}

static int takes_value(clattn_flag_kind kind) {
  return kind != CLATTN_FLAG_SET && kind != CLATTN_FLAG_CLEAR;
}

/* ---------------------------------------------------------------- parser */

clattn_flags_result clattn_flags_parse(const clattn_flag_spec* spec, int argc, char** argv) {
  size_t count = 0;
  while (spec->flags[count].name) ++count;
  /* One byte per entry: a flag given twice is refused rather than the last one winning, so
   * that a script that appends a flag to a command line notices the one already there. */
  unsigned char* seen = calloc(count ? count : 1, 1);
  if (!seen) {
    complain(spec, "out of memory parsing the command line");
    return CLATTN_FLAGS_BAD;
  }
  clattn_flags_result result = CLATTN_FLAGS_OK;
  for (int i = 1; i < argc && result == CLATTN_FLAGS_OK; ++i) {
    const char* a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      clattn_flags_print_help(spec, stdout);
      result = CLATTN_FLAGS_EXIT;
      break;
    }
    if (strcmp(a, "--version") == 0) {
      clattn_flags_print_version(spec->tool, stdout);
      result = CLATTN_FLAGS_EXIT;
      break;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      complain(spec, "unexpected argument '%s' (flags start with --)", a);
      result = CLATTN_FLAGS_BAD;
      break;
    }
    const char* eq = strchr(a, '=');
    const size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
    size_t k = 0;
    while (k < count && !(strlen(spec->flags[k].name) == name_len &&
                          strncmp(spec->flags[k].name, a, name_len) == 0)) {
      ++k;
    }
    if (k == count) {
      complain(spec, "unknown flag '%.*s'%s", (int)name_len, a,
               spec->unknown_hint ? spec->unknown_hint : "");
      result = CLATTN_FLAGS_BAD;
      break;
    }
    const clattn_flag* f = &spec->flags[k];
    if (seen[k]) {
      complain(spec, "%s is given more than once", f->name);
      result = CLATTN_FLAGS_BAD;
      break;
    }
    seen[k] = 1;
    if (!takes_value(f->kind)) {
      if (eq) {
        complain(spec, "%s takes no value, got '%s'", f->name, eq + 1);
        result = CLATTN_FLAGS_BAD;
        break;
      }
      *(int*)f->ptr = f->kind == CLATTN_FLAG_SET;
    } else {
      const char* value = NULL;
      if (eq) {
        value = eq + 1;
      } else if (f->kind == CLATTN_FLAG_CHOICE && f->implicit) {
        /* An optional value: the next argument only when it is one of the choices. */
        const char* next = i + 1 < argc ? argv[i + 1] : NULL;
        if (next && choice_index(f->choices, next, strlen(next)) >= 0) {
          value = argv[++i];
        } else {
          value = f->implicit;
        }
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        complain(spec, "%s needs a value (%s)", f->name, f->arg ? f->arg : "see --help");
        result = CLATTN_FLAGS_BAD;
        break;
      }
      if (store_value(spec, f, value) != 0) {
        result = CLATTN_FLAGS_BAD;
        break;
      }
    }
    if (f->given) *f->given = 1;
  }
  free(seen);
  return result;
}

/* ---------------------------------------------------------------- --help and --version */

/* One entry of the list: "  --name ARG", padded to the column, then the help's lines. */
static void print_entry(FILE* out, int column, const char* left, const char* help) {
  int n = fprintf(out, "  %s", left);
  if (n < 0) return;
  if (n + 1 <= column) {
    fprintf(out, "%*s", column - n, "");
  } else {
    fputs("  ", out);
  }
  for (const char* p = help; *p;) {
    const char* nl = strchr(p, '\n');
    const size_t len = nl ? (size_t)(nl - p) : strlen(p);
    fprintf(out, "%.*s\n", (int)len, p);
    if (!nl) break;
    p = nl + 1;
    fprintf(out, "%*s", column, "");
  }
}

void clattn_flags_print_help(const clattn_flag_spec* spec, FILE* out) {
  const int column = spec->help_column > 0 ? spec->help_column : DEFAULT_HELP_COLUMN;
  if (spec->usage) fputs(spec->usage, out);
  for (const clattn_flag* f = spec->flags; f->name; ++f) {
    if (!f->help) continue;
    char left[256], choices[200];
    const char* arg = f->arg;
    if (!arg && (f->kind == CLATTN_FLAG_CHOICE || f->kind == CLATTN_FLAG_CHOICE_SET)) {
      arg = join_choices(f->choices, f->kind == CLATTN_FLAG_CHOICE ? "|" : ",", choices,
                         sizeof choices);
    }
    if (!takes_value(f->kind) || !arg) {
      snprintf(left, sizeof left, "%s", f->name);
    } else if (f->kind == CLATTN_FLAG_CHOICE && f->implicit) {
      snprintf(left, sizeof left, "%s [%s]", f->name, arg);
    } else {
      snprintf(left, sizeof left, "%s %s", f->name, arg);
    }
    print_entry(out, column, left, f->help);
  }
  print_entry(out, column, "-h, --help", "print this help");
  print_entry(out, column, "--version", "print the version");
  if (spec->notes) fputs(spec->notes, out);
}

void clattn_flags_print_version(const char* tool, FILE* out) {
  int major = 0, minor = 0, patch = 0;
  clattn_version(&major, &minor, &patch);
  fprintf(out, "%s %d.%d.%d\n", tool, major, minor, patch);
}

int clattn_flag_parse_variant(const char* text, void* ptr) {
  return clattn_variant_from_name(text, (clattn_variant*)ptr) == CLATTN_SUCCESS ? 0 : -1;
}

int clattn_flag_parse_dtype(const char* text, void* ptr) {
  return clattn_dtype_from_name(text, (clattn_dtype*)ptr) == CLATTN_SUCCESS ? 0 : -1;
}
