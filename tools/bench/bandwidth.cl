/* The device's memory bandwidth, two ways:
 *   bench_copy  every work-item copies one vector of VEC floats from src to dst (each byte
 *               read once and written once);
 *   bench_read  every work-item sums its share of src's vectors and writes one float (each
 *               byte of src read once, next to nothing written).
 * In the copy consecutive work-items touch consecutive vectors, so a GPU's loads coalesce
 * and a CPU's work-group walks one contiguous range. In the read, a work-item's share is
 * the vectors gid, gid + global size, ... (coalesced across a GPU's work-items), or with
 * CONTIGUOUS=1 one contiguous range per work-item (a CPU runs a work-item's whole loop
 * before the next work-item's, so strided shares would defeat its prefetchers).
 *
 * Build macros: VEC (4, 8 or 16), CONTIGUOUS (0 or 1). OpenCL C 1.2. */

#if VEC == 16
typedef float16 vec_t;
#elif VEC == 8
typedef float8 vec_t;
#else
typedef float4 vec_t;
#endif

/* n vectors; work-items past n do nothing. */
__kernel void bench_copy(__global const vec_t* restrict src, __global vec_t* restrict dst,
                         ulong n) {
  const size_t i = get_global_id(0);
  if (i < n) dst[i] = src[i];
}

/* n vectors of src; out holds one float per work-item, so no load is dead code. */
__kernel void bench_read(__global const vec_t* restrict src, __global float* restrict out,
                         ulong n) {
  const size_t gid = get_global_id(0);
  const size_t items = get_global_size(0);
  vec_t acc = (vec_t)(0.0f);
#if CONTIGUOUS
  const ulong chunk = (n + items - 1) / items;
  const ulong begin = gid * chunk;
  const ulong end = begin + chunk < n ? begin + chunk : n;
  for (ulong i = begin; i < end; ++i) acc += src[i];
#else
  for (size_t i = gid; i < n; i += items) acc += src[i];
#endif
#if VEC == 16
  const float8 h8 = acc.lo + acc.hi;
  const float4 h4 = h8.lo + h8.hi;
#elif VEC == 8
  const float4 h4 = acc.lo + acc.hi;
#else
  const float4 h4 = acc;
#endif
  out[gid] = h4.x + h4.y + h4.z + h4.w;
}
