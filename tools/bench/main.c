/* clattn-bench: clattn's fused attention side by side with the alternatives and with the
 * device's own multiply-add peak, measured in one run on the same inputs.
 *
 * Implementations (--impl picks some, default all):
 *   fused            clattn_attention with its default (or the given) config;
 *   unfused_clblast  CLBlast strided-batched GEMM for S = Q·Kᵀ, a row-softmax kernel, CLBlast
 *                    strided-batched GEMM for O = P·V (S stored in full: N×N per head);
 *   naive            one work-item per query row, scalar, online softmax;
 *   reference        the double-precision CPU reference (reference/reference.c), only where the
 *                    shape is small enough (--reference-limit);
 *   cached           clattn_attention_cached over a KV cache holding the same K and V
 *                    (appended once at set-up), the path a decode step takes.
 * The peak is measured by a throughput kernel (tools/bench/peak.cl): many independent FMA
 * chains in the device's widest vectors, the best of several runs spread over the whole
 * benchmark. So is the memory bandwidth (tools/bench/bandwidth.cl): a copy of --bandwidth-mb
 * MB (256) into as many, counted as bytes read + bytes written, and a read of twice that.
 * Implementations run in turns (one call each per round), so that load changes on a shared machine
 * hit all of them alike and their ratios stay meaningful.
 *
 * --mha --d-model E times the whole layer instead (projections, attention, output projection;
 * self-attention): `fused` is clattn_mha_forward, `unfused_clblast` the same CLBlast GEMMs for
 * the projections around the unfused attention above, `reference` the double-precision layer
 * (reference/reference.c); there is no naive layer. GFLOP/s count the projections too.
 *
 * --decode times decode steps: the core on one query row per sequence (--seq, 1) against a
 * long K/V (--seq-kv, 4096; --heads 32, --head-dim 128 unless given), `fused` and `cached`
 * unless --impl says otherwise, and reports per implementation the bytes of K and V one call
 * reads (2*B*Hkv*Nkv*D*4), the GB/s that makes and its share of the copy and read
 * bandwidths measured in the same run.
 *
 * --startup measures context creation plus the first attention call in fresh processes: once
 * with an empty PoCL kernel cache (cold) and once with the cache that run filled (warm).
 *
 * Exit status: 0 when every implementation ran, 1 on an error, 2 on a bad command line.
 *
 * This file is the orchestration: parse, set up the inputs, set up and warm up each
 * implementation, time them in rounds, report. Each concern has its file in tools/bench/:
 * flags.c (command line), core.c and layer.c (the two modes' inputs; layer.c also the layer's
 * implementations), impl_*.c (the core's implementations), peak.c, check.c, report.c,
 * startup.c, program.c (the bench's own kernels). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* One timed call; 0 on success. */
static int timed_call(bench* B, impl* m, double* ms) {
  double t = clattn_tool_now_ms();
  int rc = bench_impl_run(B, m);
  *ms = clattn_tool_now_ms() - t;
  m->spent_ms += *ms;
  return rc;
}

/* Warm-up calls (the first builds kernels; the last, on an output filled with NaN, is the one
 * checked against the reference). */
static int warm_up(bench* B, impl* m) {
  const bench_options* o = B->o;
  /* A NaN of the output's dtype (0x7e00 is one in f16 and in bf16 alike). */
  const float nan_f32 = NAN;
  const uint16_t nan_16 = 0x7e00u;
  const size_t item = bench_item(B);
  const void* nan_value = item == sizeof nan_f32 ? (const void*)&nan_f32 : (const void*)&nan_16;
  /* The reference has nothing to build or warm: one call, the checked one. */
  const long calls = m->id == IMPL_REFERENCE ? 1 : o->warmup;
  for (long w = 0; w < calls; ++w) {
    int last = w == calls - 1 || m->spent_ms > 0.5e3 * o->max_seconds;
    if (last && m->id != IMPL_REFERENCE) {
      cl_int e = clEnqueueFillBuffer(B->queue, B->out_mem, nan_value, item, 0, B->out_elems * item,
                                     0, NULL, NULL);
      if (e == CL_SUCCESS) e = clFinish(B->queue);
      if (e != CL_SUCCESS) {
        bench_set_error(m, "clEnqueueFillBuffer failed: %d", (int)e);
        return -1;
      }
    }
    double ms = 0.0;
    if (timed_call(B, m, &ms) != 0) return -1;
    if (w == 0) m->first_ms = ms;
    if (last) return bench_check_output(B, m);
  }
  return 0;
}

/* A failure before any result: the message on stderr, and with --json also one JSON object
 * on stdout ({"ok": false, "error": ...}, as clattn-run prints), so that a script reading
 * stdout always gets JSON. */
static void report_failure(const bench_options* o, const char* message) {
  fprintf(stderr, "clattn-bench: %s\n", message);
  if (o->json) {
    printf("{\"ok\":false,\"error\":{\"message\":");
    clattn_tool_json_string(stdout, message);
    printf("}}\n");
  }
}

int main(int argc, char** argv) {
  bench_options o = {.batch = 1,
                     .heads = 8,
                     .seq = 1024,
                     .head_dim = 64,
                     .variant = CLATTN_VARIANT_AUTO,
                     .reps = 10,
                     .warmup = 2,
                     .max_seconds = 30.0,
                     .reference_limit = 1e9,
                     .want = {1, 1, 1, 1},
                     .seed = 1,
                     .bandwidth_mb = 256};
  const int parsed = bench_parse_options(argc, argv, &o);
  if (parsed != 0) {
    if (parsed == 1) return 0; /* --help, --version */
    fprintf(stderr, "(clattn-bench --help lists the options)\n");
    return 2;
  }
  const int layer_mode = o.mha || o.d_model;
  if (layer_mode && !o.d_model) {
    fprintf(stderr, "clattn-bench: --mha needs --d-model\n");
    return 2;
  }
  if (layer_mode && o.decode) {
    fprintf(stderr, "clattn-bench: --decode times the attention core; drop --mha\n");
    return 2;
  }
  if (layer_mode && (o.startup || o.startup_child)) {
    fprintf(stderr, "clattn-bench: --startup measures the attention core; drop --mha\n");
    return 2;
  }

  bench B;
  memset(&B, 0, sizeof B);
  B.o = &o;
  B.desc = (clattn_attention_desc)CLATTN_ATTENTION_DESC_INIT;
  B.desc.batch = o.batch;
  B.desc.heads_q = o.heads;
  B.desc.heads_kv = o.kv_heads ? o.kv_heads : o.heads;
  B.desc.seq_q = o.seq;
  B.desc.seq_kv = o.seq_kv ? o.seq_kv : o.seq;
  B.desc.head_dim = o.head_dim;
  B.desc.causal = o.causal;
  B.desc.dtype = o.dtype;
  if (o.startup_child) return bench_startup_child(&o, &B.desc);
  if (o.startup) return bench_run_startup(&o, &B.desc, argc, argv);

  int exit_code = 1;
  impl impls[IMPL_COUNT];
  memset(impls, 0, sizeof impls);
  char err[1024] = "";
  clattn_context_options copt = CLATTN_CONTEXT_OPTIONS_INIT;
  copt.device = o.device;
  clattn_status st = clattn_context_create(&copt, &B.ctx);
  if (st != CLATTN_SUCCESS) {
    char detail[1024] = "";
    clattn_context_get_last_error(NULL, detail, sizeof detail, NULL);
    snprintf(err, sizeof err, "clattn_context_create failed: %s: %s", clattn_status_name(st),
             detail);
    report_failure(&o, err);
    goto cleanup;
  }
  B.info = (clattn_device_info)CLATTN_DEVICE_INFO_INIT;
  clattn_context_get_device_info(B.ctx, &B.info);
  clattn_context_get_cl(B.ctx, &B.cl_ctx, &B.device, &B.queue);

  /* The inputs, output and reference every implementation shares. */
  const int rc =
      layer_mode ? bench_layer_inputs(&B, err, sizeof err) : bench_core_inputs(&B, err, sizeof err);
  if (rc != 0) {
    report_failure(&o, err);
    exit_code = rc;
    goto cleanup;
  }

  if (!o.no_peak && bench_peak_setup(&B, err, sizeof err) != 0) {
    char message[1100];
    snprintf(message, sizeof message, "peak: %s", err);
    report_failure(&o, message);
    goto cleanup;
  }

  if (!o.no_bandwidth && bench_bandwidth_setup(&B, err, sizeof err) != 0) {
    char message[1100];
    snprintf(message, sizeof message, "bandwidth: %s", err);
    report_failure(&o, message);
    goto cleanup;
  }

  for (int i = 0; i < IMPL_COUNT; ++i) {
    impl* m = &impls[i];
    m->id = i;
    if (!o.want[i]) continue;
    m->times = calloc((size_t)o.reps, sizeof *m->times);
    int ok = m->times != NULL;
    for (int t = 0; t < MAX_STAGES; ++t) {
      m->stage_times[t] = calloc((size_t)o.reps, sizeof(double));
      ok = ok && m->stage_times[t];
    }
    if (!ok) {
      bench_set_error(m, "out of host memory");
      continue;
    }
    if (bench_impl_setup(&B, m) != 0 || m->skipped) continue;
    if (warm_up(&B, m) != 0) continue;
    m->active = 1;
  }

  /* Rounds: every active implementation once, one run of the peak kernel and one of each
   * bandwidth kernel. */
  for (long round = 0; round < o.reps; ++round) {
    int any = 0;
    for (int i = 0; i < IMPL_COUNT; ++i) {
      impl* m = &impls[i];
      if (!m->active) continue;
      double ms = 0.0;
      if (timed_call(&B, m, &ms) != 0) {
        m->active = 0;
        continue;
      }
      if (m->id == IMPL_UNFUSED) {
        for (int t = 0; t < B.stage_count; ++t) m->stage_times[t][m->count] = m->last_stage_ms[t];
      }
      m->times[m->count++] = ms;
      if (m->spent_ms > 1e3 * o.max_seconds) m->active = 0;
      any = 1;
    }
    if (!o.no_peak) bench_peak_run(&B, NULL);
    bench_bandwidth_run(&B);
    if (!any) break;
  }

  if (o.json) {
    bench_print_json(&B, impls, argc, argv);
  } else {
    bench_print_text(&B, impls);
  }
  exit_code = 0;
  for (int i = 0; i < IMPL_COUNT; ++i) {
    if (o.want[i] && impls[i].error[0]) {
      fprintf(stderr, "clattn-bench: %s: %s\n", bench_impl_names[i], impls[i].error);
      exit_code = 1;
    }
  }

cleanup:
  for (int i = 0; i < IMPL_COUNT; ++i) bench_impl_release(&impls[i]);
  bench_peak_release(&B);
  bench_bandwidth_release(&B);
  bench_core_release(&B);
  bench_layer_release(&B);
  clattn_context_destroy(B.ctx);
  return exit_code;
}
