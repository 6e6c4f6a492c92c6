/* SPLIT_KV reading K and V from a KV cache's block pools in place (clattn__launch.paged),
 * from inside (the static library): pools and a block table built by hand, blocks shuffled
 * and shared out of order between sequences, batch indices mapped to other sequence ids,
 * per-sequence lengths (0, inside a block, several blocks) with the per-length causal mask
 * (CLATTN__CAUSAL_PER_LENGTH). Each batch index is checked against the double-precision
 * reference of its own dense sequence (causal 1 on its length is causal 2's alignment), with
 * test_check's tolerances. Pool slots past a sequence's length, and unused blocks, hold NaN:
 * a key no row sees must never be read. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test_util.h"

#define B 3
#define HQ 8
#define HKV 2
#define D 32
#define BT 16          /* block_tokens */
#define PAD 8          /* block_stride = HKV * BT * D + PAD */
#define NBLOCKS 24     /* in the pools */
#define TABLE_STRIDE 9 /* blocks per sequence in the table */
#define NSEQ 4

static cl_mem buffer(clattn_context* ctx, size_t bytes, const void* host) {
  cl_int err = CL_SUCCESS;
  cl_mem m = clCreateBuffer(ctx->cl_ctx,
                            host ? CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE,
                            bytes, (void*)host, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateBuffer: %d", err);
  return m;
}

/* One run: seq_q query rows per sequence, causal per length or none, a requested config
 * (NULL: the default). */
static void run_paged(clattn_context* ctx, size_t seq_q, int causal,
                      const clattn_attention_config* config, uint64_t seed) {
  const int32_t lengths[B] = {37, 0, 100};
  const int32_t seq_ids[B] = {2, 3, 0};
  const size_t block_stride = HKV * BT * D + PAD;
  size_t max_len = 0;
  for (int b = 0; b < B; ++b) {
    if ((size_t)lengths[b] > max_len) max_len = (size_t)lengths[b];
  }

  /* A block table with blocks handed out in a scrambled order (7 is prime to NBLOCKS). */
  int32_t table[NSEQ * TABLE_STRIDE];
  for (size_t i = 0; i < NSEQ * TABLE_STRIDE; ++i) table[i] = -1;
  size_t next = 0;
  for (int b = 0; b < B; ++b) {
    const size_t blocks = ((size_t)lengths[b] + BT - 1) / BT;
    for (size_t i = 0; i < blocks; ++i) {
      table[seq_ids[b] * TABLE_STRIDE + i] = (int32_t)((next++ * 7 + 3) % NBLOCKS);
    }
  }
  cr_assert_leq(next, NBLOCKS);

  const size_t pool_elems = NBLOCKS * block_stride;
  float* kp = malloc(pool_elems * sizeof(float));
  float* vp = malloc(pool_elems * sizeof(float));
  cr_assert(kp && vp);
  for (size_t i = 0; i < pool_elems; ++i) kp[i] = vp[i] = NAN;

  /* Dense per-sequence K, V and Q, and the pools filled from them. */
  float *kd[B], *vd[B];
  const size_t nq = B * HQ * seq_q * D;
  float* q = malloc(nq * sizeof(float));
  float* o = malloc(nq * sizeof(float));
  float* lse = malloc(B * HQ * seq_q * sizeof(float));
  cr_assert(q && o && lse);
  uint64_t state = seed;
  clattn_ref_fill_uniform(q, nq, -1.0f, 1.0f, &state);
  for (size_t i = 0; i < nq; ++i) o[i] = NAN;
  for (int b = 0; b < B; ++b) {
    const size_t n = HKV * (size_t)lengths[b] * D;
    kd[b] = malloc((n ? n : 1) * sizeof(float));
    vd[b] = malloc((n ? n : 1) * sizeof(float));
    cr_assert(kd[b] && vd[b]);
    clattn_ref_fill_uniform(kd[b], n, -1.0f, 1.0f, &state);
    clattn_ref_fill_uniform(vd[b], n, -1.0f, 1.0f, &state);
    for (size_t hk = 0; hk < HKV; ++hk) {
      for (size_t j = 0; j < (size_t)lengths[b]; ++j) {
        const int32_t block = table[seq_ids[b] * TABLE_STRIDE + j / BT];
        const size_t at = (size_t)block * block_stride + hk * BT * D + (j % BT) * D;
        memcpy(kp + at, kd[b] + (hk * lengths[b] + j) * D, D * sizeof(float));
        memcpy(vp + at, vd[b] + (hk * lengths[b] + j) * D, D * sizeof(float));
      }
    }
  }

  /* The shape a cache's attention gives the core. */
  clattn_attention_desc desc = test_desc(B, HQ, HKV, seq_q, max_len, D, 0);
  clattn__attention_shape sh;
  cr_assert_eq(clattn__attention_shape_resolve(ctx, &desc, &sh), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  sh.paged = 1;
  sh.causal = causal ? CLATTN__CAUSAL_PER_LENGTH : 0;
  sh.k.batch = sh.v.batch = 0;
  sh.k.head = sh.v.head = BT * D;
  sh.k.seq = sh.v.seq = D;
  clattn__plan* plan = NULL;
  cr_assert_eq(clattn__plan_get(ctx, &sh, config, &plan), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  cr_assert_eq(plan->variant->id, CLATTN_VARIANT_SPLIT_KV, "paged K/V planned with %s",
               plan->variant->name);

  clattn_attention_buffers bufs = CLATTN_ATTENTION_BUFFERS_INIT;
  bufs.q = buffer(ctx, nq * sizeof(float), q);
  bufs.o = buffer(ctx, nq * sizeof(float), o);
  bufs.lse = buffer(ctx, B * HQ * seq_q * sizeof(float), NULL);
  bufs.k = buffer(ctx, pool_elems * sizeof(float), kp);
  bufs.v = buffer(ctx, pool_elems * sizeof(float), vp);
  bufs.kv_lengths = buffer(ctx, sizeof lengths, lengths);
  clattn__paged_kv paged = {.block_table = buffer(ctx, sizeof table, table),
                            .table_stride = TABLE_STRIDE,
                            .block_tokens = BT,
                            .block_stride = block_stride,
                            .seq_ids = buffer(ctx, sizeof seq_ids, seq_ids)};
  cl_event done = NULL;
  cr_assert_eq(
      clattn__plan_enqueue(ctx, plan, &sh, &bufs, NULL, 0, ctx->queue, 0, NULL, &done, &paged),
      CLATTN_SUCCESS, "%s", test_last_error(ctx));
  cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
  clReleaseEvent(done);
  cr_assert_eq(
      clEnqueueReadBuffer(ctx->queue, bufs.o, CL_TRUE, 0, nq * sizeof(float), o, 0, NULL, NULL),
      CL_SUCCESS);
  cr_assert_eq(clEnqueueReadBuffer(ctx->queue, bufs.lse, CL_TRUE, 0, B * HQ * seq_q * sizeof(float),
                                   lse, 0, NULL, NULL),
               CL_SUCCESS);

  char tiles[128] = "";
  clattn_attention_config_describe(&plan->config, tiles, sizeof tiles, NULL);
  for (int b = 0; b < B; ++b) {
    const size_t rows = HQ * seq_q;
    const float* ob = o + b * rows * D;
    const float* lb = lse + b * rows;
    char label[256];
    snprintf(label, sizeof label, "paged %s: batch %d (sequence %d, %d keys), Nq=%zu causal=%d",
             tiles, b, seq_ids[b], lengths[b], seq_q, causal);
    if (lengths[b] == 0) {
      for (size_t i = 0; i < rows * D; ++i) cr_assert(ob[i] == 0.0f, "%s: O %g", label, ob[i]);
      for (size_t i = 0; i < rows; ++i) {
        cr_assert(isinf(lb[i]) && lb[i] < 0.0f, "%s: LSE %g", label, (double)lb[i]);
      }
      continue;
    }
    clattn_attention_desc one = test_desc(1, HQ, HKV, seq_q, (size_t)lengths[b], D, causal);
    test_check(&one, q + b * rows * D, kd[b], vd[b], NULL, ob, lb, label);
  }

  cl_mem mems[8] = {bufs.q, bufs.o,          bufs.lse,          bufs.k,
                    bufs.v, bufs.kv_lengths, paged.block_table, paged.seq_ids};
  for (int i = 0; i < 8; ++i) clReleaseMemObject(mems[i]);
  for (int b = 0; b < B; ++b) {
    free(kd[b]);
    free(vd[b]);
  }
  free(kp);
  free(vp);
  free(q);
  free(o);
  free(lse);
}

/* The default config (chosen because only SPLIT_KV reads pages), one and several query rows,
 * causal per length and none. */
Test(decode_paged, default_config, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t nq = 1; nq <= 3; nq += 2) {
    for (int causal = 0; causal <= 1; ++causal) run_paged(ctx, nq, causal, NULL, 10 + nq + causal);
  }
  clattn_context_destroy(ctx);
}

/* Split counts (splits starting on block boundaries, more splits than blocks), keys per step
 * that do not divide a block or exceed it, one row per work-item. */
Test(decode_paged, explicit_configs, .timeout = 300.0) {
  static const unsigned splits[] = {1, 2, 5, 64};
  static const unsigned bns[] = {5, 16, 64};
  clattn_context* ctx = test_context(NULL);
  for (size_t s = 0; s < sizeof splits / sizeof splits[0]; ++s) {
    for (size_t k = 0; k < sizeof bns / sizeof bns[0]; ++k) {
      clattn_attention_config c = test_config(CLATTN_VARIANT_SPLIT_KV);
      c.rows_per_item = c.block_m = (unsigned)(1 + (s + k) % 3);
      c.block_n = bns[k];
      c.threads_per_row = 1;
      c.num_splits = splits[s];
      run_paged(ctx, 2, (int)((s + k) % 2), &c, 100 + s * 8 + k);
    }
  }
  clattn_context_destroy(ctx);
}

/* A variant that cannot read pages is refused for a paged shape. */
Test(decode_paged, other_variants_refused) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc desc = test_desc(1, 2, 2, 1, 64, 16, 0);
  clattn__attention_shape sh;
  cr_assert_eq(clattn__attention_shape_resolve(ctx, &desc, &sh), CLATTN_SUCCESS);
  sh.paged = 1;
  sh.causal = CLATTN__CAUSAL_PER_LENGTH;
  const clattn_attention_config c = test_config(CLATTN_VARIANT_REGISTER_BLOCKED);
  clattn__plan* plan = NULL;
  cr_assert_eq(clattn__plan_get(ctx, &sh, &c, &plan), CLATTN_ERROR_INVALID_CONFIG);
  clattn_context_destroy(ctx);
}
