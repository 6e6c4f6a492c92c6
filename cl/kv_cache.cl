/* The KV cache's copies (src/kv_cache.c, src/attention_cached.c). OpenCL C 1.2.
 *
 * Pool layout, head-major: [heads_kv][num_blocks][block_tokens][head_dim] elements of KV_DTYPE;
 * token j of a sequence s is row j % block_tokens of block table[s * table_stride + j /
 * block_tokens] in every head's plane. A sequence's blocks are handed out in order on a fresh
 * cache, so one head's keys are then one long run, which the decode kernel streams as from a plain
 * buffer (with the heads inside each block, a 16-token block of one head was 8 KiB runs 256 KiB
 * apart at 32 heads of 128, about 20% slower to read).
 *
 * Work split of both kernels: dimension 0 runs over the head dim (padded up to the
 * work-group size, which the host keeps the same for every call so that no driver compiles
 * the kernel again for a new global size), dimension 1 over (token, head) pairs, dimension 2
 * over the batch. Every work-item copies one element of K and the same element of V. */

/* The pool index of element d of head h of token j of sequence s. */
inline uint clattn_kv_index(__global const int* table, uint table_stride, uint s, uint j, uint h,
                            uint d, uint block_tokens, uint head_dim, uint num_blocks) {
  const uint block = (uint)table[s * table_stride + j / block_tokens];
  return ((h * num_blocks + block) * block_tokens + j % block_tokens) * head_dim + d;
}

/* Appends `tokens` rows per sequence: source element (b, h, t, d) at src_off + b * sb +
 * h * sh + t * sn + d (the caller's strides) goes to token start[b] + t of sequence
 * seq_ids[b]. The pools hold KV_DTYPE; clattn_kv_append reads sources of that type,
 * clattn_kv_append_f32 float sources (the layer's projections), converting each element. */
#define CLATTN_KV_APPEND(name, SRC_DTYPE)                                                          \
  __kernel void name(                                                                              \
      __global const CLATTN_CAT(CLATTN_T_, SRC_DTYPE)* restrict k, uint k_off, uint k_sb,          \
      uint k_sh, uint k_sn, __global const CLATTN_CAT(CLATTN_T_, SRC_DTYPE)* restrict v,           \
      uint v_off, uint v_sb, uint v_sh, uint v_sn, __global KV_T* restrict k_pool,                 \
      __global KV_T* restrict v_pool, __global const int* restrict table, uint table_stride,       \
      __global const int* restrict seq_ids, __global const int* restrict start, uint block_tokens, \
      uint head_dim, uint heads_kv, uint num_blocks, uint tokens) {                                \
    const uint d = get_global_id(0);                                                               \
    const uint th = get_global_id(1);                                                              \
    const uint b = get_global_id(2);                                                               \
    if (d >= head_dim || th >= tokens * heads_kv) return;                                          \
    const uint t = th % tokens, h = th / tokens;                                                   \
    const uint s = (uint)seq_ids[b];                                                               \
    const uint j = (uint)start[b] + t;                                                             \
    const uint dst =                                                                               \
        clattn_kv_index(table, table_stride, s, j, h, d, block_tokens, head_dim, num_blocks);      \
    STORE_KV(1, CLATTN_LOAD(SRC_DTYPE, 1, k_off + b * k_sb + h * k_sh + t * k_sn + d, k), dst,     \
             k_pool);                                                                              \
    STORE_KV(1, CLATTN_LOAD(SRC_DTYPE, 1, v_off + b * v_sb + h * v_sh + t * v_sn + d, v), dst,     \
             v_pool);                                                                              \
  }

CLATTN_KV_APPEND(clattn_kv_append, KV_DTYPE)
CLATTN_KV_APPEND(clattn_kv_append_f32, 0)

/* Gathers the batch's cached tokens into contiguous [batch][heads_kv][max_len][head_dim]
 * tensors K at k_off and V at v_off of `out` (rows past a sequence's length are zero, so
 * the attention kernels that stage every row read defined values). */
__kernel void clattn_kv_gather(__global const KV_T* restrict k_pool,
                               __global const KV_T* restrict v_pool,
                               __global const int* restrict table, uint table_stride,
                               __global const int* restrict seq_ids,
                               __global const int* restrict lengths, uint block_tokens,
                               uint head_dim, uint heads_kv, uint num_blocks, uint max_len,
                               __global KV_T* restrict out, uint k_off, uint v_off) {
  const uint d = get_global_id(0);
  const uint jh = get_global_id(1);
  const uint b = get_global_id(2);
  if (d >= head_dim || jh >= max_len * heads_kv) return;
  const uint j = jh % max_len, h = jh / max_len;
  const uint dst = ((b * heads_kv + h) * max_len + j) * head_dim + d;
  if (j < (uint)lengths[b]) {
    const uint src = clattn_kv_index(table, table_stride, (uint)seq_ids[b], j, h, d, block_tokens,
                                     head_dim, num_blocks);
    STORE_KV(1, LOAD_KV(1, src, k_pool), k_off + dst, out);
    STORE_KV(1, LOAD_KV(1, src, v_pool), v_off + dst, out);
  } else {
    STORE_KV(1, 0.0f, k_off + dst, out);
    STORE_KV(1, 0.0f, v_off + dst, out);
  }
}
