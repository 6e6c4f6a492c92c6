/* The device's memory bandwidth beside the FMA peak (bandwidth.cl): a copy of
 * --bandwidth-mb MB into as many (GB/s counting the bytes read plus the bytes written), and
 * a read of twice that, summed into one float per work-item (GB/s counting the bytes read).
 * Buffers are far larger than the caches at the default 256 MB, filled before the first
 * run (so the pages exist), and each kernel runs three times after a warm-up and then once
 * per round of the benchmark: the best run is the figure, the median says how much it
 * drifted. Times are the kernels' profiled times. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

/* Largest work-group the kernels are launched with. */
#define BW_MAX_LOCAL 256

/* One run of one kernel: its GB/s (negative on failure), kept in s. */
static double bw_run(bench* B, bench_bandwidth* s) {
  cl_event ev = NULL;
  size_t global = s->global, local = s->local;
  cl_int e = clEnqueueNDRangeKernel(B->queue, s->kernel, 1, NULL, &global, &local, 0, NULL, &ev);
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
  const double gbps = (s->bytes_read + s->bytes_written) / (double)(end - start);
  if (s->runs < s->cap) s->gbps[s->runs++] = gbps;
  if (gbps > s->best_gbps) s->best_gbps = gbps;
  return gbps;
}

void bench_bandwidth_run(bench* B) {
  if (!B->band_program) return;
  bw_run(B, &B->band_copy);
  bw_run(B, &B->band_read);
}

/* The kernel `name` over n vectors of src into dst, its local size and a global size of
 * `global` work-items rounded up to whole groups. */
static int bw_kernel(bench* B, bench_bandwidth* s, const char* name, cl_mem src, cl_mem dst,
                     cl_ulong n, size_t global, char* err, size_t err_size) {
  cl_int e = CL_SUCCESS;
  s->kernel = clCreateKernel(B->band_program, name, &e);
  size_t wg = 0;
  if (e == CL_SUCCESS) {
    e = clGetKernelWorkGroupInfo(s->kernel, B->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg, &wg,
                                 NULL);
  }
  if (e == CL_SUCCESS) e = clSetKernelArg(s->kernel, 0, sizeof(cl_mem), &src);
  if (e == CL_SUCCESS) e = clSetKernelArg(s->kernel, 1, sizeof(cl_mem), &dst);
  if (e == CL_SUCCESS) e = clSetKernelArg(s->kernel, 2, sizeof n, &n);
  if (e != CL_SUCCESS) {
    snprintf(err, err_size, "setting up %s failed: OpenCL error %d", name, (int)e);
    return -1;
  }
  s->local = 1;
  while (s->local * 2 <= BW_MAX_LOCAL && s->local * 2 <= wg) s->local *= 2;
  s->global = (global + s->local - 1) / s->local * s->local;
  s->cap = 3 + B->o->reps;
  s->gbps = calloc((size_t)s->cap, sizeof *s->gbps);
  if (!s->gbps) {
    snprintf(err, err_size, "out of host memory");
    return -1;
  }
  return 0;
}

int bench_bandwidth_setup(bench* B, char* err, size_t err_size) {
  const int cpu = B->info.type == CLATTN_DEVICE_TYPE_CPU;
  /* A cache line per work-item on CPUs; 16-byte loads, which coalesce best, on GPUs. */
  B->band_vec = cpu ? 16 : 4;
  const size_t vec_bytes = (size_t)B->band_vec * sizeof(float);
  const size_t copy_bytes = B->o->bandwidth_mb << 20;
  const size_t read_bytes = 2 * copy_bytes;
  cl_ulong max_alloc = 0;
  clGetDeviceInfo(B->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
  if (max_alloc && read_bytes > max_alloc) {
    snprintf(err, err_size,
             "--bandwidth-mb %zu reads a buffer of %zu MB, above the device's largest allocation "
             "(%llu MB)",
             B->o->bandwidth_mb, read_bytes >> 20, (unsigned long long)(max_alloc >> 20));
    return -1;
  }
  char opts[48];
  snprintf(opts, sizeof opts, "-DVEC=%d -DCONTIGUOUS=%d", B->band_vec, cpu);
  B->band_program = bench_build_program(B, "bandwidth", opts, err, err_size);
  if (!B->band_program) return -1;
  cl_int e = CL_SUCCESS;
  /* The copy reads the first half of src; the read all of it. */
  B->band_src = clCreateBuffer(B->cl_ctx, CL_MEM_READ_ONLY, read_bytes, NULL, &e);
  if (e == CL_SUCCESS)
    B->band_dst = clCreateBuffer(B->cl_ctx, CL_MEM_WRITE_ONLY, copy_bytes, NULL, &e);
  const cl_float one = 1.0f, zero = 0.0f;
  if (e == CL_SUCCESS) {
    e = clEnqueueFillBuffer(B->queue, B->band_src, &one, sizeof one, 0, read_bytes, 0, NULL, NULL);
  }
  if (e == CL_SUCCESS) {
    e = clEnqueueFillBuffer(B->queue, B->band_dst, &zero, sizeof zero, 0, copy_bytes, 0, NULL,
                            NULL);
  }
  if (e == CL_SUCCESS) e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    snprintf(err, err_size,
             "allocating the bandwidth buffers (%zu + %zu MB) failed: OpenCL error %d",
             read_bytes >> 20, copy_bytes >> 20, (int)e);
    return -1;
  }
  const cl_ulong copy_n = copy_bytes / vec_bytes, read_n = read_bytes / vec_bytes;
  if (bw_kernel(B, &B->band_copy, "bench_copy", B->band_src, B->band_dst, copy_n, (size_t)copy_n,
                err, err_size) != 0) {
    return -1;
  }
  /* A few groups per compute unit (CPU: one core runs a group), many more on a GPU. */
  const size_t units = B->info.compute_units ? B->info.compute_units : 1;
  const size_t groups = units * (cpu ? 4 : 16);
  /* A multiple of any local size bw_kernel picks (powers of two up to BW_MAX_LOCAL). */
  const size_t read_global = groups * BW_MAX_LOCAL;
  B->band_out = clCreateBuffer(B->cl_ctx, CL_MEM_WRITE_ONLY, read_global * sizeof(float), NULL, &e);
  if (e != CL_SUCCESS) {
    snprintf(err, err_size, "clCreateBuffer (bandwidth) failed: OpenCL error %d", (int)e);
    return -1;
  }
  if (bw_kernel(B, &B->band_read, "bench_read", B->band_src, B->band_out, read_n, read_global, err,
                err_size) != 0) {
    return -1;
  }
  B->band_copy.bytes_read = (double)copy_bytes;
  B->band_copy.bytes_written = (double)copy_bytes;
  B->band_read.bytes_read = (double)read_bytes;
  B->band_read.bytes_written = (double)(B->band_read.global * sizeof(float));
  /* A warm-up run of each (first launches), then three that count. */
  bench_bandwidth* both[2] = {&B->band_copy, &B->band_read};
  for (int k = 0; k < 2; ++k) {
    if (bw_run(B, both[k]) < 0) {
      snprintf(err, err_size, "the bandwidth kernels failed to run or to report their time");
      return -1;
    }
    both[k]->runs = 0;
    both[k]->best_gbps = 0.0;
  }
  for (int i = 0; i < 3; ++i) bench_bandwidth_run(B);
  return 0;
}

void bench_bandwidth_release(bench* B) {
  bench_bandwidth* both[2] = {&B->band_copy, &B->band_read};
  for (int k = 0; k < 2; ++k) {
    if (both[k]->kernel) clReleaseKernel(both[k]->kernel);
    free(both[k]->gbps);
  }
  if (B->band_program) clReleaseProgram(B->band_program);
  cl_mem mems[3] = {B->band_src, B->band_dst, B->band_out};
  for (int i = 0; i < 3; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
}
