/* fused: clattn_attention with its default (or the given) config. */
#include <stdio.h>

#include "bench.h"

int bench_fused_setup(bench* B, impl* m) {
  const bench_options* o = B->o;
  m->requested = (clattn_attention_config)CLATTN_ATTENTION_CONFIG_INIT;
  m->requested.variant = o->variant;
  m->requested.block_m = o->block_m;
  m->requested.block_n = o->block_n;
  m->requested.rows_per_item = o->rows_per_item;
  m->requested.threads_per_row = o->threads_per_row;
  m->requested.num_splits = o->num_splits;
  m->used = (clattn_attention_config)CLATTN_ATTENTION_CONFIG_INIT;
  clattn_status st = clattn_attention_get_config(B->ctx, &B->desc, &m->requested, &m->used);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_attention_get_config", st);
    return -1;
  }
  st = clattn_attention_workspace_size(B->ctx, &B->desc, &m->requested, &m->bytes_allocated);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_attention_workspace_size", st);
    return -1;
  }
  m->bytes_known = 1;
  const clattn_attention_config* c = &m->used;
  snprintf(m->config_json, sizeof m->config_json,
           "{\"variant\":\"%s\",\"block_m\":%u,\"block_n\":%u,\"rows_per_item\":%u,"
           "\"threads_per_row\":%u,\"num_splits\":%u,\"source\":\"%s\"}",
           clattn_variant_name(c->variant), c->block_m, c->block_n, c->rows_per_item,
           c->threads_per_row, c->num_splits, bench_config_origin(c->source));
  char tiles[96];
  clattn_attention_config_describe(c, tiles, sizeof tiles, NULL);
  snprintf(m->config_text, sizeof m->config_text, "%s (%s)", tiles, bench_config_origin(c->source));
  return 0;
}

int bench_fused_run(bench* B, impl* m) {
  clattn_attention_buffers bufs = CLATTN_ATTENTION_BUFFERS_INIT;
  bufs.q = B->bq;
  bufs.k = B->bk;
  bufs.v = B->bv;
  bufs.o = B->bo;
  clattn_status st =
      clattn_attention(B->ctx, &B->desc, &bufs, &m->requested, B->queue, 0, NULL, NULL);
  if (st != CLATTN_SUCCESS) {
    bench_clattn_error(B, m, "clattn_attention", st);
    return -1;
  }
  cl_int e = clFinish(B->queue);
  if (e != CL_SUCCESS) {
    bench_set_error(m, "clFinish failed: %d", (int)e);
    return -1;
  }
  return 0;
}
