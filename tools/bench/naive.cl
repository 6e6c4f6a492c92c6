/* The simplest attention kernel, for comparison: one work-item per query row walks every
 * visible key once with an online softmax, in scalars. Q, K, V and O are contiguous
 * [batch, heads, seq, HEAD_DIM]; query head h reads key/value head h / group.
 *
 * Build macro: HEAD_DIM. OpenCL C 1.2. */

__kernel void bench_attention_naive(__global const float* restrict q,
                                    __global const float* restrict k,
                                    __global const float* restrict v, __global float* restrict o,
                                    uint heads_q, uint group, uint seq_q, uint seq_kv,
                                    float scale_log2, int causal) {
  const uint i = get_global_id(0);
  const uint h = get_global_id(1);
  const uint b = get_global_id(2);
  if (i >= seq_q) return;
  const uint heads_kv = heads_q / group;
  const uint hk = h / group;
  __global const float* qrow = q + ((size_t)(b * heads_q + h) * seq_q + i) * HEAD_DIM;
  __global const float* kb = k + (size_t)(b * heads_kv + hk) * seq_kv * HEAD_DIM;
  __global const float* vb = v + (size_t)(b * heads_kv + hk) * seq_kv * HEAD_DIM;
  __global float* orow = o + ((size_t)(b * heads_q + h) * seq_q + i) * HEAD_DIM;

  /* Bottom-right aligned causal mask: key j is visible when j <= i + seq_kv - seq_q. */
  int limit = (int)seq_kv;
  if (causal) limit = clamp((int)i + (int)seq_kv - (int)seq_q + 1, 0, (int)seq_kv);

  float qr[HEAD_DIM], acc[HEAD_DIM];
  for (int d = 0; d < HEAD_DIM; ++d) {
    qr[d] = qrow[d] * scale_log2;
    acc[d] = 0.0f;
  }
  float m = -FLT_MAX, l = 0.0f;
  for (int j = 0; j < limit; ++j) {
    float s = 0.0f;
    for (int d = 0; d < HEAD_DIM; ++d) s = fma(qr[d], kb[(size_t)j * HEAD_DIM + d], s);
    const float m_new = max(m, s);
    const float corr = exp2(m - m_new);
    const float p = exp2(s - m_new);
    l = l * corr + p;
    for (int d = 0; d < HEAD_DIM; ++d) acc[d] = fma(p, vb[(size_t)j * HEAD_DIM + d], acc[d] * corr);
    m = m_new;
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int d = 0; d < HEAD_DIM; ++d) orow[d] = acc[d] * inv;
}
