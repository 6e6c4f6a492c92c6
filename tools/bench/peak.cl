/* The device's multiply-add throughput: every work-item runs CHAINS independent chains of
 * fma on vectors of VEC floats, so the FMA units never wait for a result (a single dependent
 * chain measures the FMA latency instead). One step of one chain is 2 * VEC flops.
 *
 * Build macros: VEC (1, 2, 4, 8 or 16), CHAINS (1 to 16). OpenCL C 1.2. */

#if VEC == 16
typedef float16 vec_t;
#elif VEC == 8
typedef float8 vec_t;
#elif VEC == 4
typedef float4 vec_t;
#elif VEC == 2
typedef float2 vec_t;
#else
typedef float vec_t;
#endif

/* a and b are arguments so the compiler cannot fold the chains; a close to 1 and b small
 * keep the values finite. out gets one value per work-item, so no chain is dead code. */
__kernel void bench_fma_peak(__global float* out, float a, float b, int iters) {
  const float g = (float)get_global_id(0) * 1e-6f;
  vec_t x[CHAINS];
#pragma unroll
  for (int c = 0; c < CHAINS; ++c) x[c] = (vec_t)(g + (float)c * 1e-3f);
  const vec_t va = (vec_t)(a), vb = (vec_t)(b);
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int c = 0; c < CHAINS; ++c) x[c] = fma(x[c], va, vb);
  }
  vec_t sum = x[0];
#pragma unroll
  for (int c = 1; c < CHAINS; ++c) sum += x[c];
#if VEC == 1
  out[get_global_id(0)] = sum;
#else
  float t = 0.0f;
  for (int e = 0; e < VEC; ++e) t += ((float*)&sum)[e];
  out[get_global_id(0)] = t;
#endif
}
