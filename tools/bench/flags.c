/* clattn-bench's command line: the flag table (tools/common/flags.h) and what follows from
 * it (--impl's set, the lower bounds of --reps and --warmup). */
#include "common/flags.h"

#include <stdio.h>
#include <string.h>

#include "bench.h"

/* Largest --reps and --warmup: the times of every call are kept, and a typo should not turn
 * into hours of runs. */
#define MAX_REPS 1000000

/* Largest --block-tokens (the library refuses what it cannot hold; this keeps the cache's
 * capacity, batch * seq_kv rounded up to whole blocks, from overflowing). */
#define MAX_BLOCK_TOKENS 1048576

/* Largest --bandwidth-mb: the read buffer is twice as large. */
#define MAX_BANDWIDTH_MB 16384

/* "auto|tiled_local|register_blocked|...": the names of the library's registered variants,
 * so that --help lists every variant clattn_variant_from_name accepts. */
static const char* variant_choices(void) {
  static char text[192];
  size_t len = (size_t)snprintf(text, sizeof text, "auto");
  for (int v = 1; v < 32; ++v) {
    const char* name = clattn_variant_name((clattn_variant)v);
    if (!name || len >= sizeof text) continue;
    len += (size_t)snprintf(text + len, sizeof text - len, "|%s", name);
  }
  return text;
}

/* Decode mode's shape where the command line leaves it: one query row per sequence against
 * 4096 cached keys, 32 heads of 128. */
static void decode_defaults(bench_options* o, int seq_given, int seq_kv_given, int heads_given) {
  if (!seq_given) o->seq = 1;
  if (!seq_kv_given) o->seq_kv = 4096;
  if (!heads_given) o->heads = 32;
  if (!o->head_dim_given) o->head_dim = 128;
}

int bench_parse_options(int argc, char** argv, bench_options* o) {
  unsigned impls = 0;
  int impls_given = 0, seq_given = 0, seq_kv_given = 0, heads_given = 0;
  const clattn_flag flags[] = {
      CLATTN_FLAG_DEF_STRING("--device", &o->device, "SPEC",
                             "\"P:D\" or a name substring (default: CLATTN_DEVICE, else\n"
                             "first GPU, accelerator, CPU)"),
      CLATTN_FLAG_DEF_SIZE("--batch", &o->batch, "batch size (1)"),
      {.name = "--heads",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->heads,
       .arg = "N",
       .help = "query heads (8; --decode: 32)",
       .given = &heads_given},
      CLATTN_FLAG_DEF_SIZE("--kv-heads", &o->kv_heads,
                           "key/value heads, divides --heads (= heads)"),
      {.name = "--seq",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->seq,
       .arg = "N",
       .help = "query length (1024; --decode: 1)",
       .given = &seq_given},
      {.name = "--seq-kv",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->seq_kv,
       .arg = "N",
       .help = "key/value length (= seq; --decode: 4096)",
       .given = &seq_kv_given},
      {.name = "--head-dim",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->head_dim,
       .arg = "N",
       .help = "head dimension, 1..256 (64; with --mha: d_model / heads;\n"
               "--decode: 128)",
       .given = &o->head_dim_given},
      CLATTN_FLAG_DEF_SET("--decode", &o->decode,
                          "decode steps: few query rows (--seq, 1) against a long\n"
                          "K/V (--seq-kv, 4096); reports the GB/s of K and V read\n"
                          "and their share of the copy bandwidth"),
      CLATTN_FLAG_DEF_SET("--causal", &o->causal, "causal mask, bottom-right aligned"),
      CLATTN_FLAG_DEF_DTYPE(&o->dtype),
      CLATTN_FLAG_DEF_SET("--mha", &o->mha,
                          "time the whole layer instead (self-attention: Q/K/V\n"
                          "projections, attention, output projection, biases);\n"
                          "needs --d-model"),
      CLATTN_FLAG_DEF_SIZE("--d-model", &o->d_model, "the layer's model width E (implies --mha)"),
      {.name = "--impl",
       .kind = CLATTN_FLAG_CHOICE_SET,
       .ptr = &impls,
       .choices = bench_impl_names,
       .arg = "LIST",
       .help = "comma-separated: fused,unfused_clblast,naive,reference,\n"
               "cached (default: all but cached; --decode: fused,cached)",
       .given = &impls_given},
      {.name = "--variant",
       .kind = CLATTN_FLAG_CUSTOM,
       .ptr = &o->variant,
       .parse = clattn_flag_parse_variant,
       .arg = variant_choices(),
       .help = "fused's kernel variant (auto: the default\n"
               "for the device and shape; also the short tiled, regblock)"},
      CLATTN_FLAG_DEF_UNSIGNED("--block-m", &o->block_m,
                               "fused config: query rows per work-group (0: default)"),
      CLATTN_FLAG_DEF_UNSIGNED("--block-n", &o->block_n,
                               "fused config: keys per tile (0: default)"),
      CLATTN_FLAG_DEF_UNSIGNED("--rows-per-item", &o->rows_per_item,
                               "fused config: query rows per work-item (0: default)"),
      CLATTN_FLAG_DEF_UNSIGNED("--threads-per-row", &o->threads_per_row,
                               "fused config: work-items per query row (0: default)"),
      CLATTN_FLAG_DEF_UNSIGNED("--num-splits", &o->num_splits,
                               "fused config: split_kv's work-groups per (batch, kv\n"
                               "head) (0: default)"),
      {.name = "--block-tokens",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->block_tokens,
       .arg = "N",
       .max = MAX_BLOCK_TOKENS,
       .help = "cached: the KV cache's tokens per block (0: the library's, 16)"},
      CLATTN_FLAG_DEF_INT("--reps", &o->reps, MAX_REPS, "timed calls per implementation (10)"),
      CLATTN_FLAG_DEF_INT("--warmup", &o->warmup, MAX_REPS,
                          "untimed calls first, the first one builds (2, at least 1)"),
      {.name = "--max-seconds",
       .kind = CLATTN_FLAG_DOUBLE,
       .ptr = &o->max_seconds,
       .arg = "S",
       .help = "stop timing an implementation once its calls took S\n"
               "seconds (30; at least one timed call)"},
      {.name = "--reference-limit",
       .kind = CLATTN_FLAG_DOUBLE,
       .ptr = &o->reference_limit,
       .arg = "X",
       .help = "time the CPU reference only up to X multiply-adds\n"
               "B*H*Nq*Nkv*D (1e9)"},
      CLATTN_FLAG_DEF_SET("--no-peak", &o->no_peak, "skip the peak measurement"),
      CLATTN_FLAG_DEF_SET("--no-bandwidth", &o->no_bandwidth, "skip the bandwidth measurement"),
      {.name = "--bandwidth-mb",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->bandwidth_mb,
       .arg = "MB",
       .min = 1,
       .max = MAX_BANDWIDTH_MB,
       .help = "bandwidth: copy MB into MB, read 2*MB (256)"},
      CLATTN_FLAG_DEF_UINT64("--seed", &o->seed, "input generator seed (1)"),
      CLATTN_FLAG_DEF_SET("--startup", &o->startup,
                          "measure context creation + first call in fresh processes,\n"
                          "with an empty and then a warm PoCL kernel cache"),
      /* Internal: one measured start-up, see bench_run_startup. */
      CLATTN_FLAG_DEF_SET("--startup-child", &o->startup_child, NULL),
      CLATTN_FLAG_DEF_SET("--json", &o->json, "print one JSON object"),
      CLATTN_FLAG_DEF_END,
  };
  const clattn_flag_spec spec = {
      .tool = "clattn-bench",
      .usage =
          "usage: clattn-bench [options]\n"
          "\n"
          "Times clattn's fused attention beside an unfused CLBlast path, a naive kernel and\n"
          "the CPU reference on the same random inputs, and the device's FMA peak and memory\n"
          "bandwidth, in one run.\n"
          "\n",
      .notes = "\nExit status: 0 when every implementation ran, 1 on an error, 2 usage.\n",
      .flags = flags,
      .help_column = 25,
  };
  const clattn_flags_result r = clattn_flags_parse(&spec, argc, argv);
  if (r != CLATTN_FLAGS_OK) return r;
  if (o->decode) decode_defaults(o, seq_given, seq_kv_given, heads_given);
  if (impls_given) {
    for (int i = 0; i < IMPL_COUNT; ++i) o->want[i] = (impls >> i) & 1u;
  } else if (o->decode) {
    memset(o->want, 0, sizeof o->want);
    o->want[IMPL_FUSED] = 1;
    o->want[IMPL_CACHED] = 1;
  }
  if (o->reps < 1) o->reps = 1;
  if (o->warmup < 1) o->warmup = 1;
  return CLATTN_FLAGS_OK;
}
