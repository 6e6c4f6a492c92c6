/* Storage conversions around a 16-bit layer's float32 computation (src/mha.c): x, key and
 * value widened into the workspace before the projections, y rounded from it after them.
 * Build macro QO_DTYPE: the layer's storage type (common.cl's macros read and write it).
 *
 * Work split: one work-item per element, the global size rounded up to the work-group size
 * (the host keeps that size for every call, so that no driver compiles the kernel again for
 * a new global size); the items past n return at once. */

__kernel void clattn_convert_widen(__global const QO_T* restrict src, uint src_off,
                                   __global float* restrict dst, uint dst_off, uint n) {
  const uint i = get_global_id(0);
  if (i < n) dst[dst_off + i] = LOAD_QO(1, src_off + i, src);
}

__kernel void clattn_convert_narrow(__global const float* restrict src, uint src_off,
                                    __global QO_T* restrict dst, uint dst_off, uint n) {
  const uint i = get_global_id(0);
  if (i < n) STORE_QO(1, src[src_off + i], dst_off + i, dst);
}
