/* The device's multiply-add peak: a throughput kernel (peak.cl) of many independent FMA
 * chains in the widest float vectors, calibrated to run at least PEAK_MIN_MS; the best of
 * the runs after calibration (three, then one per round of the benchmark) is the peak. */
#include <math.h>
#include <stdio.h>

#include "bench.h"

/* Shortest run of the peak kernel, so launch overhead does not count. */
#define PEAK_MIN_MS 40.0

/* One run of the peak kernel; GFLOP/s from its profiled time, or a negative value. */
double bench_peak_run(bench* B, double* ms_out) {
  cl_event ev = NULL;
  size_t global = B->peak_global;
  size_t local = B->peak_local;
  cl_int e = clSetKernelArg(B->peak_kernel, 3, sizeof(cl_int), &B->peak_iters);
  if (e == CL_SUCCESS) {
    e = clEnqueueNDRangeKernel(B->queue, B->peak_kernel, 1, NULL, &global, local ? &local : NULL, 0,
                               NULL, &ev);
  }
  if (e == CL_SUCCESS) e = clFinish(B->queue);
  cl_ulong start = 0, end = 0;
  if (e == CL_SUCCESS) {
    e = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof start, &start, NULL);
  }
  if (e == CL_SUCCESS) {
    e = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL);
  }
  if (ev) clReleaseEvent(ev);
  if (e != CL_SUCCESS || end <= start) return -1.0;
  double ms = (double)(end - start) * 1e-6;
  if (ms_out) *ms_out = ms;
  double flops = 2.0 * B->peak_vec * B->peak_chains * (double)B->peak_iters * (double)global;
  double g = flops / (ms * 1e6);
  B->peak_runs++;
  if (g > B->peak_gflops) B->peak_gflops = g;
  return g;
}

/* Builds the peak kernel, sizes a run to at least PEAK_MIN_MS and takes the best of three. */
int bench_peak_setup(bench* B, char* err, size_t err_size) {
  cl_uint native = 0;
  clGetDeviceInfo(B->device, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT, sizeof native, &native, NULL);
  cl_uint preferred = 0;
  clGetDeviceInfo(B->device, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT, sizeof preferred, &preferred,
                  NULL);
  cl_uint w = native > preferred ? native : preferred;
  B->peak_vec = w >= 16 ? 16 : w >= 8 ? 8 : w >= 4 ? 4 : w >= 2 ? 2 : 1;
  /* CPUs: enough chains to cover the FMA latency times the FMA ports (4 x 2 on Zen and
   * Skylake-X, with some to spare); GPUs hide latency across work-items instead. */
  const int cpu = B->info.type == CLATTN_DEVICE_TYPE_CPU;
  B->peak_chains = cpu ? 12 : 8;
  size_t per_unit = cpu ? 16 : 2048;
  B->peak_global = (size_t)(B->info.compute_units ? B->info.compute_units : 1) * per_unit;
  /* On a CPU a work-group runs on one core: one work-item per group spreads them over all
   * cores (a driver left to choose may put them all in one group). */
  B->peak_local = cpu ? 1 : 0;
  char opts[64];
  snprintf(opts, sizeof opts, "-DVEC=%d -DCHAINS=%d", B->peak_vec, B->peak_chains);
  B->peak_program = bench_build_program(B, "peak", opts, err, err_size);
  if (!B->peak_program) return -1;
  cl_int e = CL_SUCCESS;
  B->peak_kernel = clCreateKernel(B->peak_program, "bench_fma_peak", &e);
  if (e == CL_SUCCESS) {
    B->peak_out =
        clCreateBuffer(B->cl_ctx, CL_MEM_WRITE_ONLY, B->peak_global * sizeof(float), NULL, &e);
  }
  cl_float a = 0.999999f, b = 1e-7f;
  if (e == CL_SUCCESS) e = clSetKernelArg(B->peak_kernel, 0, sizeof(cl_mem), &B->peak_out);
  if (e == CL_SUCCESS) e = clSetKernelArg(B->peak_kernel, 1, sizeof a, &a);
  if (e == CL_SUCCESS) e = clSetKernelArg(B->peak_kernel, 2, sizeof b, &b);
  if (e != CL_SUCCESS) {
    snprintf(err, err_size, "setting up the peak kernel failed: OpenCL error %d", (int)e);
    return -1;
  }
  B->peak_iters = 64;
  for (int tries = 0; tries < 20; ++tries) {
    double ms = 0.0;
    if (bench_peak_run(B, &ms) < 0) {
      snprintf(err, err_size, "the peak kernel failed to run or to report its time");
      return -1;
    }
    if (ms >= PEAK_MIN_MS) break;
    double scale = ms > 0.5 ? 1.25 * PEAK_MIN_MS / ms : 8.0;
    B->peak_iters = (int)fmin(1 << 28, B->peak_iters * scale);
  }
  B->peak_gflops = 0.0; /* the calibration runs include the first launch */
  B->peak_runs = 0;
  for (int i = 0; i < 3; ++i) bench_peak_run(B, NULL);
  return 0;
}

void bench_peak_release(bench* B) {
  if (B->peak_kernel) clReleaseKernel(B->peak_kernel);
  if (B->peak_program) clReleaseProgram(B->peak_program);
  if (B->peak_out) clReleaseMemObject(B->peak_out);
}
