/* The benchmark's own kernels (the .cl files beside this header), embedded at build time by
 * cmake/embed_kernels.cmake. They are not library kernels. */
#ifndef CLATTN_TOOLS_BENCH_KERNELS_H
#define CLATTN_TOOLS_BENCH_KERNELS_H

#include <stddef.h>

typedef struct clattn_bench_kernel_source {
  const char* name; /* file name without ".cl" */
  const char* text; /* NUL-terminated */
  size_t size;      /* without the NUL */
} clattn_bench_kernel_source;

extern const clattn_bench_kernel_source clattn_bench_kernel_sources[];
extern const size_t clattn_bench_kernel_source_count;

#endif
