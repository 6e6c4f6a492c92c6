/* clattn-bench's own OpenCL programs (the .cl files of tools/bench, embedded at build time). */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "bench_kernels.h"

static const char* bench_source(const char* name) {
  for (size_t i = 0; i < clattn_bench_kernel_source_count; ++i) {
    if (strcmp(clattn_bench_kernel_sources[i].name, name) == 0) {
      return clattn_bench_kernel_sources[i].text;
    }
  }
  return NULL;
}

/* Builds tools/bench/<name>.cl with options; on failure writes the log into err. */
cl_program bench_build_program(const bench* B, const char* name, const char* options, char* err,
                               size_t err_size) {
  const char* text = bench_source(name);
  if (!text) {
    snprintf(err, err_size, "no embedded bench kernel %s.cl", name);
    return NULL;
  }
  cl_int e = CL_SUCCESS;
  cl_program p = clCreateProgramWithSource(B->cl_ctx, 1, &text, NULL, &e);
  if (e != CL_SUCCESS) {
    snprintf(err, err_size, "clCreateProgramWithSource(%s.cl) failed: %d", name, (int)e);
    return NULL;
  }
  char full[256];
  snprintf(full, sizeof full, "-cl-std=CL1.2 %s", options);
  e = clBuildProgram(p, 1, &B->device, full, NULL, NULL);
  if (e != CL_SUCCESS) {
    char log[700] = "";
    clGetProgramBuildInfo(p, B->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
    snprintf(err, err_size, "building %s.cl (%s) failed: %d: %s", name, full, (int)e, log);
    clReleaseProgram(p);
    return NULL;
  }
  return p;
}
