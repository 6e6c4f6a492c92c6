/* cached: the attention core over a KV cache (clattn_attention_cached), the path a decode
 * step takes. The set-up creates a cache of one sequence per batch entry, sized to hold
 * exactly --seq-kv tokens each (in --block-tokens blocks), and appends the shared K and V
 * to it once; every timed call then attends the shared Q over the cache into the shared O,
 * so the output is checked against the same reference as fused's. The config is the one
 * given to fused (--variant, --num-splits, ...), left to the library when none is. */
#include <stdio.h>

#include "bench.h"

/* The library's tokens per block when the cache descriptor leaves it 0. */
#define DEFAULT_BLOCK_TOKENS 16

int bench_cached_setup(bench* B, impl* m) {
  const bench_options* o = B->o;
  const clattn_attention_desc* d = &B->desc;
  const size_t block = o->block_tokens ? o->block_tokens : DEFAULT_BLOCK_TOKENS;
  clattn_kv_cache_desc cd = CLATTN_KV_CACHE_DESC_INIT;
  cd.dtype = d->dtype;
  cd.max_sequences = d->batch;
  cd.heads_kv = bench_heads_kv(d);
  cd.head_dim = d->head_dim;
  cd.block_tokens = o->block_tokens;
  cd.capacity = d->batch * ((d->seq_kv + block - 1) / block * block);
  cd.max_seq_len = d->seq_kv;
  clattn_status st = clattn_kv_cache_create(B->ctx, &cd, &m->cache);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_kv_cache_create", st);
    return -1;
  }
  /* K and V are [batch, heads_kv, seq_kv, head_dim]: sequence i is batch entry i. */
  clattn_kv_append_desc ad = CLATTN_KV_APPEND_DESC_INIT;
  ad.count = d->batch;
  ad.seq_ids = NULL;
  ad.tokens = d->seq_kv;
  ad.layout = CLATTN_LAYOUT_BHND;
  st = clattn_kv_cache_append(m->cache, &ad, B->bk, 0, B->bv, 0, B->queue, 0, NULL, NULL);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_kv_cache_append", st);
    return -1;
  }
  const cl_int e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "clFinish failed: %d", (int)e);
    return -1;
  }
  clattn_kv_cache_usage usage = CLATTN_KV_CACHE_USAGE_INIT;
  st = clattn_kv_cache_get_usage(m->cache, &usage);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_kv_cache_get_usage", st);
    return -1;
  }
  /* The cache's pool (its copy of K and V); the call's workspace, if any, is not counted. */
  m->bytes_known = 1;
  m->bytes_allocated = usage.bytes_total;

  m->cached_desc = *d;
  m->cached_desc.seq_kv = 0; /* each sequence's length comes from the cache */
  m->requested = (clattn_attention_config)CLATTN_ATTENTION_CONFIG_INIT;
  m->requested.variant = o->variant;
  m->requested.block_m = o->block_m;
  m->requested.block_n = o->block_n;
  m->requested.rows_per_item = o->rows_per_item;
  m->requested.threads_per_row = o->threads_per_row;
  m->requested.num_splits = o->num_splits;
  const clattn_attention_config* c = &m->requested;
  const int given = c->variant != CLATTN_VARIANT_AUTO || c->block_m || c->block_n ||
                    c->rows_per_item || c->threads_per_row || c->num_splits;
  const char* variant = clattn_variant_name(c->variant);
  snprintf(m->config_json, sizeof m->config_json,
           "{\"variant\":\"%s\",\"block_m\":%u,\"block_n\":%u,\"rows_per_item\":%u,"
           "\"threads_per_row\":%u,\"num_splits\":%u,\"source\":\"%s\",\"kv_cache\":{"
           "\"block_tokens\":%zu,\"blocks_used\":%zu,\"tokens_used\":%zu,\"bytes_total\":%zu}}",
           variant ? variant : "?", c->block_m, c->block_n, c->rows_per_item, c->threads_per_row,
           c->num_splits, given ? "requested" : "library", usage.block_tokens, usage.blocks_used,
           usage.tokens_used, usage.bytes_total);
  snprintf(m->config_text, sizeof m->config_text, "KV cache, %zu-token blocks, %s%s",
           usage.block_tokens, given ? "requested " : "", variant ? variant : "?");
  return 0;
}

int bench_cached_run(bench* B, impl* m) {
  clattn_attention_buffers bufs = CLATTN_ATTENTION_BUFFERS_INIT;
  bufs.q = B->bq;
  bufs.o = B->bo;
  clattn_status st = clattn_attention_cached(m->cache, &m->cached_desc, NULL, &bufs, &m->requested,
                                             B->queue, 0, NULL, NULL);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_attention_cached", st);
    return -1;
  }
  const cl_int e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "clFinish failed: %d", (int)e);
    return -1;
  }
  return 0;
}

int bench_layer_cached_setup(bench* B, impl* m) {
  (void)B;
  m->skipped = 1;
  snprintf(m->skip_reason, sizeof m->skip_reason,
           "the layer over a KV cache (clattn_mha_forward_cached) is not timed here");
  return 0;
}
