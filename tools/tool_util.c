/* Helpers shared by the clattn command-line tools. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "tool_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void tool_json_string(FILE* f, const char* s) {
  fputc('"', f);
  for (const unsigned char* p = (const unsigned char*)(s ? s : ""); *p; ++p) {
    switch (*p) {
      case '"':
        fputs("\\\"", f);
        break;
      case '\\':
        fputs("\\\\", f);
        break;
      case '\n':
        fputs("\\n", f);
        break;
      case '\r':
        fputs("\\r", f);
        break;
      case '\t':
        fputs("\\t", f);
        break;
      default:
        if (*p < 0x20 || *p == 0x7f) {
          fprintf(f, "\\u%04x", (unsigned)*p);
        } else {
          fputc(*p, f);
        }
    }
  }
  fputc('"', f);
}

const char* tool_device_type_name(clattn_device_type type) {
  switch (type) {
    case CLATTN_DEVICE_TYPE_CPU:
      return "CPU";
    case CLATTN_DEVICE_TYPE_GPU:
      return "GPU";
    case CLATTN_DEVICE_TYPE_ACCELERATOR:
      return "ACCELERATOR";
    default:
      return "OTHER";
  }
}

double tool_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int compare_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

double tool_median(const double* v, size_t n) {
  if (n == 0) return (double)NAN;
  double* c = malloc(n * sizeof *c);
  if (!c) return (double)NAN;
  memcpy(c, v, n * sizeof *c);
  qsort(c, n, sizeof *c, compare_double);
  double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
  free(c);
  return m;
}

double tool_min(const double* v, size_t n) {
  double m = (double)INFINITY;
  for (size_t i = 0; i < n; ++i) m = v[i] < m ? v[i] : m;
  return n ? m : (double)NAN;
}

void tool_json_number(FILE* f, double v) {
  if (isfinite(v)) {
    fprintf(f, "%.6g", v);
  } else {
    fputs("null", f);
  }
}

double tool_visible_pairs(size_t seq_q, size_t seq_kv, int causal) {
  if (!causal) return (double)seq_q * (double)seq_kv;
  double pairs = 0.0;
  long long nq = (long long)seq_q, nkv = (long long)seq_kv;
  for (long long i = 0; i < nq; ++i) {
    long long seen = i + nkv - nq + 1;
    if (seen < 0) seen = 0;
    if (seen > nkv) seen = nkv;
    pairs += (double)seen;
  }
  return pairs;
}
