/* Row softmax of the unfused path (GEMM, this kernel, GEMM): S holds scores already scaled
 * by scale * log2(e) (the first GEMM's alpha), [rows = batch * heads * seq_q, seq_kv];
 * each row becomes its softmax in place, P, with the masked keys set to 0. One work-item
 * per row, in float16 vectors where the row allows: the shape a CPU runs best; a GPU
 * would use a work-group per row.
 *
 * No build macros. OpenCL C 1.2. */

__kernel void bench_softmax_rows(__global float* restrict s, uint seq_q, uint seq_kv, int causal) {
  const uint i = get_global_id(0);
  const uint bh = get_global_id(1);
  if (i >= seq_q) return;
  __global float* row = s + ((size_t)bh * seq_q + i) * seq_kv;
  int limit = (int)seq_kv;
  if (causal) limit = clamp((int)i + (int)seq_kv - (int)seq_q + 1, 0, (int)seq_kv);
  const int vecs = limit / 16;

  float16 vm = (float16)(-FLT_MAX);
  for (int c = 0; c < vecs; ++c) vm = max(vm, vload16(c, row));
  float m = -FLT_MAX;
  for (int e = 0; e < 16; ++e) m = max(m, ((float*)&vm)[e]);
  for (int j = vecs * 16; j < limit; ++j) m = max(m, row[j]);

  float16 vs = (float16)(0.0f);
  for (int c = 0; c < vecs; ++c) {
    const float16 e = exp2(vload16(c, row) - (float16)(m));
    vs += e;
    vstore16(e, c, row);
  }
  float sum = 0.0f;
  for (int e = 0; e < 16; ++e) sum += ((float*)&vs)[e];
  for (int j = vecs * 16; j < limit; ++j) {
    const float e = exp2(row[j] - m);
    sum += e;
    row[j] = e;
  }

  const float inv = limit > 0 ? 1.0f / sum : 0.0f;
  for (int c = 0; c < vecs; ++c) vstore16(vload16(c, row) * (float16)(inv), c, row);
  for (int j = vecs * 16; j < limit; ++j) row[j] *= inv;
  for (int j = limit; j < (int)seq_kv; ++j) row[j] = 0.0f;
}
