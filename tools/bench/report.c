/* The results: a table (text) or one JSON object (--json). */
#include <math.h>
#include <stdio.h>

#include "bench.h"

/* Bytes of one element of the run's dtype. */
static double item_bytes(const clattn_attention_desc* d) {
  size_t item = sizeof(float);
  clattn_dtype_size(d->dtype, &item);
  return (double)item;
}

/* Bytes of K and V one call reads at least (each element once): 2*B*Hkv*Nkv*D*item. */
static double kv_bytes(const clattn_attention_desc* d) {
  return 2.0 * (double)d->batch * (double)bench_heads_kv(d) * (double)d->seq_kv *
         (double)d->head_dim * item_bytes(d);
}

/* Bytes one core call moves at least: Q, K and V read once and O written once. */
static double io_bytes(const bench* B) {
  return (double)(B->nq + B->nk + B->nv + B->no) * item_bytes(&B->desc);
}

static double bw_median(const bench_bandwidth* s) {
  return clattn_tool_median(s->gbps, (size_t)s->runs);
}

/* The share of a bandwidth figure, NaN when it was not measured. */
static double pct_of(double gbps, const bench_bandwidth* s) {
  return s->runs && s->best_gbps > 0 ? 100.0 * gbps / s->best_gbps : (double)NAN;
}

static void print_pct(double v) {
  if (isfinite(v)) {
    printf(" %6.1f%%", v);
  } else {
    printf(" %7s", "-");
  }
}

void bench_print_text(const bench* B, const impl* impls) {
  const clattn_attention_desc* d = &B->desc;
  printf("device   %s (%s, %s, %u compute units)\n", B->info.name,
         clattn_tool_device_type_name(B->info.type), B->info.platform_name, B->info.compute_units);
  if (B->layer) {
    printf(
        "layer    d_model=%zu H=%zu Hkv=%zu D=%zu B=%zu N=%zu%s, self-attention with biases, %s; "
        "%.4g GFLOP per call (projections 2*B*N*E*(H+2*Hkv)*D, attention 4*B*H*D per visible "
        "pair, output 2*B*N*H*D*E)\n",
        B->e, B->h, B->hkv, B->d, d->batch, d->seq_q, d->causal ? ", causal" : "",
        clattn_dtype_name(d->dtype), B->flops * 1e-9);
  } else {
    printf(
        "shape    B=%zu Hq=%zu Hkv=%zu Nq=%zu Nkv=%zu D=%zu%s, %s, [B,H,N,D]; %.4g GFLOP per "
        "call (4*B*H*D per visible query-key pair)\n",
        d->batch, d->heads_q, bench_heads_kv(d), d->seq_q, d->seq_kv, d->head_dim,
        d->causal ? ", causal" : "", clattn_dtype_name(d->dtype), B->flops * 1e-9);
    printf(
        "bytes    %.4g MB moved per call at least (Q, K, V read and O written once, %.0f bytes "
        "an element)\n",
        io_bytes(B) / 1048576.0, item_bytes(d));
  }
  if (B->peak_runs) {
    printf(
        "peak     %.1f GFLOP/s: best of %d runs of %d independent FMA chains of float%d per "
        "work-item, %zu work-items\n",
        B->peak_gflops, B->peak_runs, B->peak_chains, B->peak_vec, B->peak_global);
  } else {
    printf("peak     not measured\n");
  }
  if (B->band_copy.runs && B->band_read.runs) {
    printf(
        "copy     %.1f GB/s counting bytes read + written (median %.1f): best of %d runs, %.0f MB "
        "-> %.0f MB, float%d, %zu work-items per group\n",
        B->band_copy.best_gbps, bw_median(&B->band_copy), B->band_copy.runs,
        B->band_copy.bytes_read / 1048576.0, B->band_copy.bytes_written / 1048576.0, B->band_vec,
        B->band_copy.local);
    printf(
        "read     %.1f GB/s counting bytes read (median %.1f): best of %d runs, %.0f MB summed "
        "into one float per work-item, float%d, %zu work-items\n",
        B->band_read.best_gbps, bw_median(&B->band_read), B->band_read.runs,
        B->band_read.bytes_read / 1048576.0, B->band_vec, B->band_read.global);
  } else {
    printf("copy     bandwidth not measured\n");
  }
  if (B->o->decode) {
    printf("K, V     %.4g MB read per call at least (2*B*Hkv*Nkv*D*%.0f bytes)\n",
           kv_bytes(d) / 1048576.0, item_bytes(d));
  }
  if (B->layer) {
    printf("errors   against the double-precision layer reference on every element of y\n");
  } else {
    printf("errors   against the double-precision reference on every %zu%s query row\n",
           B->rows_step, B->rows_step == 1 ? "st" : "th");
  }
  const int decode = B->o->decode;
  printf("\n%-16s %-52s %10s %10s %9s %7s", "impl", "config", "median ms", "min ms", "GFLOP/s",
         "% peak");
  if (decode) printf(" %9s %7s %7s", "K,V GB/s", "% copy", "% read");
  printf(" %10s %9s %12s\n", "max |err|", "err/tol", "device bytes");
  for (int i = 0; i < IMPL_COUNT; ++i) {
    const impl* m = &impls[i];
    if (!B->o->want[i]) continue;
    if (m->skipped) {
      printf("%-16s skipped: %s\n", bench_impl_names[i], m->skip_reason);
      continue;
    }
    if (m->error[0]) {
      printf("%-16s error: %s\n", bench_impl_names[i], m->error);
      continue;
    }
    double med = clattn_tool_median(m->times, (size_t)m->count);
    double mn = clattn_tool_min(m->times, (size_t)m->count);
    double g = B->flops / (med * 1e6);
    printf("%-16s %-52s %10.3f %10.3f %9.2f ", bench_impl_names[i], m->config_text, med, mn, g);
    if (B->peak_runs) {
      printf("%6.1f%%", 100.0 * g / B->peak_gflops);
    } else {
      printf("%7s", "-");
    }
    if (decode) {
      const double kv = kv_bytes(d) / (med * 1e6);
      printf(" %9.2f", kv);
      print_pct(pct_of(kv, &B->band_copy));
      print_pct(pct_of(kv, &B->band_read));
    }
    printf(" %10.3g %9.3g", m->max_abs_err, m->max_err_over_tol);
    if (m->bytes_known) {
      printf(" %12zu", m->bytes_allocated);
    } else {
      printf(" %12s", "host");
    }
    if (m->nan_count) printf("  (%zu NaN)", m->nan_count);
    if (m->count < B->o->reps) printf("  (%ld reps: time limit)", m->count);
    printf("\n");
    if (m->id == IMPL_UNFUSED) {
      printf("%-16s stages (profiled medians):", "");
      for (int t = 0; t < B->stage_count; ++t) {
        printf("%s %s %.3f ms", t ? "," : "", B->stage_names[t],
               clattn_tool_median(m->stage_times[t], (size_t)m->count));
      }
      printf("\n");
    }
  }
  const impl* f = &impls[IMPL_FUSED];
  if (B->o->want[IMPL_FUSED] && !f->skipped && !f->error[0] && f->count) {
    double fm = clattn_tool_median(f->times, (size_t)f->count);
    for (int i = 1; i < IMPL_COUNT; ++i) {
      const impl* m = &impls[i];
      if (!B->o->want[i] || m->skipped || m->error[0] || !m->count) continue;
      printf("fused is %.2fx %s (median over median)\n",
             clattn_tool_median(m->times, (size_t)m->count) / fm, bench_impl_names[i]);
    }
  }
  if (B->layer) {
    printf(
        "\nx, y and the weights are shared and not counted; fused's bytes are the layer's "
        "workspace (clattn_mha_workspace_size), unfused's the score matrix, the projected rows, "
        "the heads' outputs and a column of ones (CLBlast's own temporaries not counted).\n");
  } else {
    printf(
        "\nInputs and output (Q, K, V, O: %zu bytes) are shared and not counted; fused's "
        "bytes are its workspace (clattn_attention_workspace_size), unfused's the score matrix "
        "(CLBlast's "
        "own temporaries not counted).\n",
        (B->nq + B->nk + B->nv + B->no) * sizeof(float));
  }
}

void bench_print_json(const bench* B, const impl* impls, int argc, char** argv) {
  const clattn_attention_desc* d = &B->desc;
  printf("{\"device\":");
  clattn_tool_json_string(stdout, B->info.name);
  printf(",\"device_type\":");
  clattn_tool_json_string(stdout, clattn_tool_device_type_name(B->info.type));
  printf(",\"platform\":");
  clattn_tool_json_string(stdout, B->info.platform_name);
  printf(",\"driver\":");
  clattn_tool_json_string(stdout, B->info.driver_version);
  printf(",\"compute_units\":%u", B->info.compute_units);
  printf(",\"command\":\"");
  for (int i = 0; i < argc; ++i) {
    if (i) putchar(' ');
    for (const char* p = argv[i]; *p; ++p) {
      if (*p == '"' || *p == '\\') putchar('\\');
      if ((unsigned char)*p >= 0x20) putchar(*p);
    }
  }
  printf("\"");
  printf(
      ",\"mode\":\"%s\",\"shape\":{\"batch\":%zu,\"heads_q\":%zu,\"heads_kv\":%zu,\"seq_q\":%zu,"
      "\"seq_kv\":%zu,\"head_dim\":%zu,\"causal\":%s,",
      B->layer       ? "layer"
      : B->o->decode ? "decode"
                     : "core",
      d->batch, d->heads_q, bench_heads_kv(d), d->seq_q, d->seq_kv, d->head_dim,
      d->causal ? "true" : "false");
  if (B->layer) {
    printf("\"d_model\":%zu,\"bias\":true,\"dtype\":\"%s\"}", B->e, clattn_dtype_name(d->dtype));
  } else {
    printf("\"layout\":\"bhnd\",\"dtype\":\"%s\"}", clattn_dtype_name(d->dtype));
  }
  printf(",\"flops_per_call\":%.17g", B->flops);
  printf(",\"peak_gflops\":");
  if (B->peak_runs) {
    clattn_tool_json_number(stdout, B->peak_gflops);
    printf(
        ",\"peak\":{\"kernel\":\"independent FMA chains\",\"vector_width\":%d,\"chains\":%d,"
        "\"work_items\":%zu,\"runs\":%d}",
        B->peak_vec, B->peak_chains, B->peak_global, B->peak_runs);
  } else {
    printf("null");
  }
  const int bw = B->band_copy.runs && B->band_read.runs;
  printf(",\"copy_gbps\":");
  clattn_tool_json_number(stdout, bw ? B->band_copy.best_gbps : (double)NAN);
  printf(",\"read_gbps\":");
  clattn_tool_json_number(stdout, bw ? B->band_read.best_gbps : (double)NAN);
  printf(",\"bandwidth\":");
  if (bw) {
    const bench_bandwidth* both[2] = {&B->band_copy, &B->band_read};
    const char* names[2] = {"copy", "read"};
    const char* counts[2] = {"bytes_read+bytes_written", "bytes_read"};
    for (int k = 0; k < 2; ++k) {
      const bench_bandwidth* s = both[k];
      printf("%s\"%s\":{\"gbps\":", k ? "," : "{", names[k]);
      clattn_tool_json_number(stdout, s->best_gbps);
      printf(",\"gbps_median\":");
      clattn_tool_json_number(stdout, bw_median(s));
      printf(
          ",\"counts\":\"%s\",\"bytes_read\":%.17g,\"bytes_written\":%.17g,\"vector_width\":%d,"
          "\"local_size\":%zu,\"work_items\":%zu,\"runs\":%d,\"statistic\":\"best\"}",
          counts[k], s->bytes_read, s->bytes_written, B->band_vec, s->local, s->global, s->runs);
    }
    printf("}");
  } else {
    printf("null");
  }
  if (B->o->decode) printf(",\"kv_bytes_per_call\":%.17g", kv_bytes(d));
  if (B->layer) {
    printf(",\"check\":{\"rows_step\":1}");
  } else {
    printf(",\"check\":{\"rows_step\":%zu},\"io_bytes\":%.17g", B->rows_step, io_bytes(B));
  }
  printf(",\"results\":[");
  int first = 1;
  for (int i = 0; i < IMPL_COUNT; ++i) {
    const impl* m = &impls[i];
    if (!B->o->want[i] || m->skipped || m->error[0]) continue;
    double med = clattn_tool_median(m->times, (size_t)m->count);
    double g = B->flops / (med * 1e6);
    printf("%s{\"impl\":\"%s\",\"config\":%s,\"ms\":", first ? "" : ",", bench_impl_names[i],
           m->config_json);
    first = 0;
    clattn_tool_json_number(stdout, med);
    printf(",\"ms_min\":");
    clattn_tool_json_number(stdout, clattn_tool_min(m->times, (size_t)m->count));
    printf(",\"gflops\":");
    clattn_tool_json_number(stdout, g);
    printf(",\"pct_peak\":");
    clattn_tool_json_number(stdout, B->peak_runs ? 100.0 * g / B->peak_gflops : (double)NAN);
    if (B->o->decode) {
      const double kv = kv_bytes(d) / (med * 1e6);
      printf(",\"kv_gbps\":");
      clattn_tool_json_number(stdout, kv);
      printf(",\"pct_copy_bandwidth\":");
      clattn_tool_json_number(stdout, pct_of(kv, &B->band_copy));
      printf(",\"pct_read_bandwidth\":");
      clattn_tool_json_number(stdout, pct_of(kv, &B->band_read));
    }
    printf(",\"max_abs_err\":");
    clattn_tool_json_number(stdout, m->max_abs_err);
    printf(",\"max_err_over_tol\":");
    clattn_tool_json_number(stdout, m->max_err_over_tol);
    printf(",\"nan_count\":%zu,\"bytes_allocated\":", m->nan_count);
    if (m->bytes_known) {
      printf("%zu", m->bytes_allocated);
    } else {
      printf("null");
    }
    printf(",\"reps\":%ld,\"first_call_ms\":", m->count);
    clattn_tool_json_number(stdout, m->first_ms);
    if (m->id == IMPL_UNFUSED) {
      printf(",\"stages_ms\":{");
      for (int t = 0; t < B->stage_count; ++t) {
        printf("%s\"%s\":", t ? "," : "", B->stage_keys[t]);
        clattn_tool_json_number(stdout, clattn_tool_median(m->stage_times[t], (size_t)m->count));
      }
      printf("}");
    }
    printf("}");
  }
  printf("],\"skipped\":[");
  first = 1;
  for (int i = 0; i < IMPL_COUNT; ++i) {
    const impl* m = &impls[i];
    if (!B->o->want[i] || (!m->skipped && !m->error[0])) continue;
    printf("%s{\"impl\":\"%s\",\"reason\":", first ? "" : ",", bench_impl_names[i]);
    clattn_tool_json_string(stdout, m->skipped ? m->skip_reason : m->error);
    printf("}");
    first = 0;
  }
  printf("],\"ratios\":{");
  const impl* f = &impls[IMPL_FUSED];
  first = 1;
  if (B->o->want[IMPL_FUSED] && !f->skipped && !f->error[0] && f->count) {
    double fm = clattn_tool_median(f->times, (size_t)f->count);
    for (int i = 1; i < IMPL_COUNT; ++i) {
      const impl* m = &impls[i];
      if (!B->o->want[i] || m->skipped || m->error[0] || !m->count) continue;
      printf("%s\"fused_speedup_over_%s\":", first ? "" : ",", bench_impl_names[i]);
      clattn_tool_json_number(stdout, clattn_tool_median(m->times, (size_t)m->count) / fm);
      first = 0;
    }
  }
  printf("}}\n");
}
