/* The kernel sources embedded at build time from the cl directory (generated clattn_kernels.c). */
#ifndef CLATTN_SRC_KERNEL_SOURCES_H
#define CLATTN_SRC_KERNEL_SOURCES_H

#include <stddef.h>

typedef struct clattn__kernel_source {
  const char* name; /* file name without ".cl" */
  const char* text; /* NUL-terminated */
  size_t size;      /* without the NUL */
} clattn__kernel_source;

extern const clattn__kernel_source clattn__kernel_sources[];
extern const size_t clattn__kernel_source_count;

#endif
