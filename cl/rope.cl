/* Rotary position embeddings (RoPE), in place on the layer's projected Q and K (src/mha.c).
 *
 * Work split: one work-item per rotated pair of one head of one row; Q's pairs first, then
 * K's; the global size is rounded up to the work-group size and the items past the last pair
 * return at once (no barrier, no local memory). Each tensor is `rows` rows of `heads` heads of
 * head_dim floats, back to back from its offset; `seq` rows per sequence, so row r belongs to
 * sequence r / seq and sits at position start[r / seq] + r % seq (has_start 0: start is not
 * read and positions begin at 0).
 *
 * Pair i < npairs (= rope_dims / 2) of a head is dims (i, i + npairs) with neox set (GPT-NeoX,
 * Hugging Face's rotate_half) and (2i, 2i + 1) otherwise (GPT-J's rotate_every_two); both
 * rotate by angle = pos * theta^(-2i / rope_dims):
 *   (a, b) -> (a cos - b sin, a sin + b cos).
 *
 * Accuracy: the host gives each inverse frequency as two floats, hi + lo (computed in
 * double). pos (an integer below 2^24, exact in float) times hi + lo is kept as p_hi + p_lo,
 * p_lo gathering the product's rounding error (exact, by fma) and pos * lo; the angle is then
 * reduced by whole turns k = rint(p_hi / 2pi) against 2pi split in two floats, with fma, so
 * that the argument of sin and cos is within a few 2^-24 of the exact angle mod 2pi in
 * (-pi, pi] (about 3e-7 rad, at any position up to 2^24), where OpenCL C's single-precision
 * sin and cos are accurate to 4 ulp. Each of cos and sin is thus within about 14 u of the
 * exact value (u = 2^-24), and a rotated element within about 17 u (|a| + |b|). A plain float
 * product pos * inv_freq (as PyTorch's float32 RoPE computes it) would be off by up to
 * u * angle rad instead: 6e-3 rad at position 1e5. */

#define CLATTN_TWO_PI_HI 6.28318548202514648f     /* (float)(2 pi) */
#define CLATTN_TWO_PI_LO (-1.74845553146951e-07f) /* 2 pi - CLATTN_TWO_PI_HI */
#define CLATTN_INV_TWO_PI 0.159154943091895336f

/* Rotates the pair at `p` (dims p[0] and p[step]) by pos * (hi + lo). */
inline void clattn_rope_pair(__global float* p, uint step, float pos, float hi, float lo) {
  const float p_hi = pos * hi;
  const float p_lo = fma(pos, hi, -p_hi) + pos * lo;
  const float k = rint(p_hi * CLATTN_INV_TWO_PI);
  const float r = fma(-k, CLATTN_TWO_PI_LO, fma(-k, CLATTN_TWO_PI_HI, p_hi)) + p_lo;
  const float c = cos(r), s = sin(r);
  const float a = p[0], b = p[step];
  p[0] = a * c - b * s;
  p[step] = a * s + b * c;
}

__kernel void clattn_rope(__global float* q, uint q_off, uint q_rows, uint q_heads, uint q_seq,
                          __global float* k, uint k_off, uint k_rows, uint k_heads, uint k_seq,
                          uint head_dim, uint npairs, int neox,
                          __global const float* restrict inv_freq,
                          __global const int* restrict start, int has_start) {
  uint id = (uint)get_global_id(0);
  const uint q_pairs = q_rows * q_heads * npairs, k_pairs = k_rows * k_heads * npairs;
  __global float* x = q;
  uint off = q_off, heads = q_heads, seq = q_seq;
  if (id >= q_pairs) {
    id -= q_pairs;
    if (id >= k_pairs) return;
    x = k;
    off = k_off;
    heads = k_heads;
    seq = k_seq;
  }
  const uint i = id % npairs, rest = id / npairs;
  const uint h = rest % heads, row = rest / heads;
  int pos = (int)(row % seq);
  if (has_start) pos += start[row / seq];
  __global float* head = x + off + (row * heads + h) * head_dim;
  if (neox) {
    clattn_rope_pair(head + i, npairs, (float)pos, inv_freq[2 * i], inv_freq[2 * i + 1]);
  } else {
    clattn_rope_pair(head + 2 * i, 1, (float)pos, inv_freq[2 * i], inv_freq[2 * i + 1]);
  }
}
