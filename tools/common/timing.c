/* Wall-clock timing and statistics (see timing.h). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "common/timing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double clattn_tool_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int compare_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

double clattn_tool_median(const double* v, size_t n) {
  if (n == 0) return (double)NAN;
  double* c = malloc(n * sizeof *c);
  if (!c) return (double)NAN;
  memcpy(c, v, n * sizeof *c);
  qsort(c, n, sizeof *c, compare_double);
  double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
  free(c);
  return m;
}

double clattn_tool_min(const double* v, size_t n) {
  double m = (double)INFINITY;
  for (size_t i = 0; i < n; ++i) m = v[i] < m ? v[i] : m;
  return n ? m : (double)NAN;
}
