/* Bias rows: every row of a matrix C (row-major, leading dimension ldc) gets the same bias
 * vector, or zeros without one. A GEMM with beta = 1 then adds the product, which makes
 * "C = A·Bᵀ + bias" with CLBlast, which has no bias epilogue. */

/* C[i, j] = bias[j] (0 when has_bias is 0) for i < rows, j < cols. Global size: at least
 * (cols, rows); any work-group size. */
__kernel void clattn_bias_rows(__global float* restrict c, uint c_off, uint ldc,
                               __global const float* restrict bias, uint bias_off, int has_bias,
                               uint rows, uint cols) {
  const uint j = get_global_id(0);
  const uint i = get_global_id(1);
  if (i >= rows || j >= cols) return;
  c[c_off + i * ldc + j] = has_bias ? bias[bias_off + j] : 0.0f;
}
