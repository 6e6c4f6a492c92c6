/* Wall-clock timing and the statistics the tools report over repeated calls. */
#ifndef CLATTN_TOOLS_COMMON_TIMING_H
#define CLATTN_TOOLS_COMMON_TIMING_H

#include <stddef.h>

/* Milliseconds on a monotonic clock. */
double clattn_tool_now_ms(void);

/* Median and minimum of n values (NaN when n is 0); v is left as it is. */
double clattn_tool_median(const double* v, size_t n);
double clattn_tool_min(const double* v, size_t n);

#endif
