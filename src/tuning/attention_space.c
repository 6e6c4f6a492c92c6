/* The attention search: each registered variant's tuning_space gives its candidates, the
 * preferred variant's default and its neighbours run first, then the other variants'
 * defaults, then the rest at random while the budget lasts. Every candidate is checked
 * against a double-precision CPU reference on lengths that are not multiples of its tiles;
 * the winner again on wider shapes and on sampled rows of the tuned shape, then confirmed
 * against the default by alternating runs (search.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tuning.h"

/* Attention results: inputs are uniform in [-1, 1], so every output is a convex combination
 * of values in [-1, 1]; the fp32 kernels stay within ~1e-6 of the double reference on the
 * short verification rows, while one key missed or counted twice out of a few hundred moves
 * an output by ~1e-3. */
#define ATTENTION_TOL 1e-4
/* Configs one variant's space may hold. */
#define SPACE_CAP 512
/* The default's neighbours searched first, with the other variants' defaults. */
#define CORE_NEIGHBOURS 8
/* After the core set, a variant whose best is this much slower than the overall best is not
 * searched further. */
#define VARIANT_PRUNE_FACTOR 2.0

/* ------------------------------------------------------------ reference */

/* One output row in double precision: Q, K, V contiguous [B, H, N, D] with equal heads. */
static void reference_row(const float* q, const float* k, const float* v, size_t heads,
                          size_t seq_q, size_t seq_kv, size_t d, int causal, size_t b, size_t h,
                          size_t i, double* out) {
  const float* qr = q + ((b * heads + h) * seq_q + i) * d;
  const float* kb = k + (b * heads + h) * seq_kv * d;
  const float* vb = v + (b * heads + h) * seq_kv * d;
  const double scale = 1.0 / sqrt((double)d);
  long limit = (long)seq_kv;
  if (causal) {
    long l = (long)i + (long)seq_kv - (long)seq_q + 1;
    if (l < limit) limit = l;
  }
  for (size_t x = 0; x < d; ++x) out[x] = 0.0;
  if (limit <= 0) return;
  double mx = -INFINITY;
  for (long j = 0; j < limit; ++j) {
    double s = 0;
    for (size_t x = 0; x < d; ++x) s += (double)qr[x] * kb[j * d + x];
    if (s * scale > mx) mx = s * scale;
  }
  double sum = 0;
  for (long j = 0; j < limit; ++j) {
    double s = 0;
    for (size_t x = 0; x < d; ++x) s += (double)qr[x] * kb[j * d + x];
    double p = exp(s * scale - mx);
    sum += p;
    for (size_t x = 0; x < d; ++x) out[x] += p * vb[j * d + x];
  }
  for (size_t x = 0; x < d; ++x) out[x] /= sum;
}

typedef struct vshape {
  size_t batch, heads, seq_q, seq_kv;
} vshape;

/* Lengths are primes (or 1), so never multiples of a tile larger than 1. */
static const vshape kCandidateShapes[] = {{1, 2, 131, 131}, {2, 1, 61, 131}, {2, 2, 3, 1021}};
static const vshape kWinnerShapes[] = {{1, 2, 131, 131}, {2, 1, 61, 131},  {1, 1, 1, 1},
                                       {1, 2, 257, 67},  {1, 3, 509, 509}, {2, 2, 37, 1021},
                                       {1, 3, 1, 2039}};

static clattn_attention_desc make_desc(const vshape* s, size_t d, int causal, clattn_dtype dtype) {
  clattn_attention_desc desc = CLATTN_ATTENTION_DESC_INIT;
  desc.dtype = dtype;
  desc.batch = s->batch;
  desc.heads_q = s->heads;
  desc.seq_q = s->seq_q;
  desc.seq_kv = s->seq_kv;
  desc.head_dim = d;
  desc.causal = causal;
  return desc;
}

/* Rounds n floats in place to a dtype's values (the inputs of a 16-bit run). */
static void round_to(float* x, size_t n, clattn_dtype dtype) {
  for (size_t i = 0; i < n; ++i) {
    float held; /* room for one element of any dtype */
    clattn__store_element(&held, dtype, 0, x[i]);
    x[i] = clattn__load_element(&held, dtype, 0);
  }
}

/* An output's allowance: the float32 tolerance, and in a 16-bit dtype its rounding. */
static double output_tol(double tol, clattn_dtype dtype, double ref) {
  const double u = dtype == CLATTN_DTYPE_F16 ? 0x1p-11 : dtype == CLATTN_DTYPE_BF16 ? 0x1p-8 : 0.0;
  return tol + u * (fabs(ref) + tol);
}

/* clattn_attention_host in a 16-bit dtype, on float arrays that hold values of it. */
static clattn_status host_16bit(clattn__tune_run* t, const clattn_attention_desc* desc,
                                const float* q, size_t nq, const float* k, const float* v,
                                size_t nk, float* o, const clattn_attention_config* c) {
  uint16_t* bits = clattn__malloc((2 * nq + 2 * nk) * sizeof *bits);
  if (!bits) return clattn__fail(t->ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  uint16_t *qb = bits, *kb = qb + nq, *vb = kb + nk, *ob = vb + nk;
  clattn_convert(q, CLATTN_DTYPE_F32, qb, desc->dtype, nq);
  clattn_convert(k, CLATTN_DTYPE_F32, kb, desc->dtype, nk);
  clattn_convert(v, CLATTN_DTYPE_F32, vb, desc->dtype, nk);
  const clattn_status status = clattn_attention_host(t->ctx, desc, qb, kb, vb, ob, NULL, NULL, c);
  if (status == CLATTN_SUCCESS) clattn_convert(ob, desc->dtype, o, CLATTN_DTYPE_F32, nq);
  free(bits);
  return status;
}

/* Runs config on small shapes through the host API in `dtype` and compares every row with the
 * reference. Returns CLATTN_SUCCESS, CLATTN_ERROR_INVALID_CONFIG on a wrong result, or the
 * failing call's status. */
static clattn_status verify_in(clattn__tune_run* t, const clattn_attention_config* c,
                               const vshape* shapes, size_t count, clattn_dtype dtype) {
  clattn_status status = CLATTN_SUCCESS;
  const size_t d = t->o.head_dim;
  float *q = NULL, *k = NULL, *v = NULL, *o = NULL;
  double* ref = clattn__malloc(d * sizeof *ref);
  if (!ref) return clattn__fail(t->ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  for (size_t s = 0; s < count && status == CLATTN_SUCCESS && !clattn__tune_poll(t); ++s) {
    const vshape* sh = &shapes[s];
    size_t nq = sh->batch * sh->heads * sh->seq_q * d;
    size_t nk = sh->batch * sh->heads * sh->seq_kv * d;
    q = clattn__malloc(nq * sizeof *q);
    o = clattn__malloc(nq * sizeof *o);
    k = clattn__malloc(nk * sizeof *k);
    v = clattn__malloc(nk * sizeof *v);
    if (!q || !o || !k || !v) {
      status = clattn__fail(t->ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    } else {
      clattn__tune_rng r = {0x1234 + s};
      for (size_t i = 0; i < nq; ++i) q[i] = clattn__tune_unit(&r);
      for (size_t i = 0; i < nk; ++i) k[i] = clattn__tune_unit(&r);
      for (size_t i = 0; i < nk; ++i) v[i] = clattn__tune_unit(&r);
      clattn_attention_desc desc = make_desc(sh, d, t->o.causal, dtype);
      if (dtype != CLATTN_DTYPE_F32) {
        /* The inputs take the dtype's values, so the reference reads what the device does. */
        round_to(q, nq, dtype);
        round_to(k, nk, dtype);
        round_to(v, nk, dtype);
      }
      status = dtype == CLATTN_DTYPE_F32
                   ? clattn_attention_host(t->ctx, &desc, q, k, v, o, NULL, NULL, c)
                   : host_16bit(t, &desc, q, nq, k, v, nk, o, c);
      double worst = 0;
      for (size_t b = 0; status == CLATTN_SUCCESS && b < sh->batch; ++b) {
        for (size_t h = 0; h < sh->heads; ++h) {
          for (size_t i = 0; i < sh->seq_q; ++i) {
            reference_row(q, k, v, sh->heads, sh->seq_q, sh->seq_kv, d, t->o.causal, b, h, i, ref);
            const float* row = o + ((b * sh->heads + h) * sh->seq_q + i) * d;
            for (size_t x = 0; x < d; ++x) {
              /* The error over the allowance, in units of the float32 tolerance. */
              const double e = fabs((double)row[x] - ref[x]) * ATTENTION_TOL /
                               output_tol(ATTENTION_TOL, dtype, ref[x]);
              if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
            }
          }
        }
      }
      if (status == CLATTN_SUCCESS && !(worst <= ATTENTION_TOL)) {
        status = clattn__fail(t->ctx, CLATTN_ERROR_INVALID_CONFIG,
                              "wrong result on %zux%zux%zux%zu: error %.3g > %.3g", sh->batch,
                              sh->heads, sh->seq_q, sh->seq_kv, worst, ATTENTION_TOL);
      }
    }
    free(q);
    free(k);
    free(v);
    free(o);
    q = k = v = o = NULL;
  }
  free(ref);
  return status;
}

/* Verifies a config in float32, where its tiles are checked most strictly, and in the tuned
 * dtype when that is 16-bit, where its loads and stores are. */
static clattn_status verify_attention(clattn__tune_run* t, const clattn_attention_config* c,
                                      const vshape* shapes, size_t count) {
  clattn_status status = verify_in(t, c, shapes, count, CLATTN_DTYPE_F32);
  if (status == CLATTN_SUCCESS && t->o.dtype != CLATTN_DTYPE_F32) {
    status = verify_in(t, c, shapes, count, t->o.dtype);
  }
  return status;
}

/* ------------------------------------------------------------ timing */

typedef struct timing_bufs {
  clattn_attention_desc desc;
  clattn_attention_buffers b;
  float *q, *k, *v; /* host copies, for the sampled check of the winner */
} timing_bufs;

static void timing_release(timing_bufs* tb) {
  if (tb->b.q) clReleaseMemObject(tb->b.q);
  if (tb->b.k) clReleaseMemObject(tb->b.k);
  if (tb->b.v) clReleaseMemObject(tb->b.v);
  if (tb->b.o) clReleaseMemObject(tb->b.o);
  free(tb->q);
  free(tb->k);
  free(tb->v);
}

/* Inputs and buffers for timed calls of shape s (queries [B, H, seq_q, D], keys and values
 * [B, H, seq_kv, D]). */
static clattn_status timing_init(clattn__tune_run* t, timing_bufs* tb, const vshape* s) {
  clattn_status status = CLATTN_SUCCESS;
  memset(tb, 0, sizeof *tb);
  tb->desc = make_desc(s, t->o.head_dim, t->o.causal, t->o.dtype);
  tb->b.struct_size = sizeof tb->b;
  const size_t nq = s->batch * s->heads * s->seq_q * t->o.head_dim;
  const size_t nk = s->batch * s->heads * s->seq_kv * t->o.head_dim;
  tb->q = clattn__malloc(nq * sizeof(float));
  tb->k = clattn__malloc(nk * sizeof(float));
  tb->v = clattn__malloc(nk * sizeof(float));
  if (!tb->q || !tb->k || !tb->v) {
    return clattn__fail(t->ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
  }
  clattn__tune_rng r = {0x777};
  for (size_t i = 0; i < nq; ++i) tb->q[i] = clattn__tune_unit(&r);
  for (size_t i = 0; i < nk; ++i) tb->k[i] = clattn__tune_unit(&r);
  for (size_t i = 0; i < nk; ++i) tb->v[i] = clattn__tune_unit(&r);
  /* The device's copies in the tuned dtype; the host keeps their values as floats. */
  const clattn_dtype dtype = t->o.dtype;
  const size_t item = clattn__dtype_size(dtype);
  const size_t qbytes = nq * item;
  float* src[3] = {tb->q, tb->k, tb->v};
  const size_t counts[3] = {nq, nk, nk};
  cl_mem* dst[3] = {&tb->b.q, &tb->b.k, &tb->b.v};
  for (int i = 0; i < 3; ++i) {
    round_to(src[i], counts[i], dtype);
    void* bits = clattn__malloc(counts[i] * item);
    if (!bits) return clattn__fail(t->ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    clattn_convert(src[i], CLATTN_DTYPE_F32, bits, dtype, counts[i]);
    status = clattn__buffer_create(t->ctx, CL_MEM_READ_ONLY, counts[i] * item, bits, dst[i]);
    free(bits);
    if (status != CLATTN_SUCCESS) return status;
  }
  CLATTN__CHECK(clattn__buffer_create(t->ctx, CL_MEM_READ_WRITE, qbytes, NULL, &tb->b.o));
cleanup:
  return status;
}

/* Device time of one call, from a marker enqueued just before it to the end of its last
 * command (the register-blocked variant enqueues two kernels). */
static clattn_status time_once(clattn__tune_run* t, timing_bufs* tb,
                               const clattn_attention_config* c, double* ms) {
  clattn_status status = CLATTN_SUCCESS;
  cl_event marker = NULL, done = NULL;
  cl_command_queue queue = t->ctx->queue;
  CLATTN__CL_CHECK(t->ctx, clFinish(queue));
  CLATTN__CL_CHECK(t->ctx, clEnqueueMarkerWithWaitList(queue, 0, NULL, &marker));
  CLATTN__CHECK(clattn_attention(t->ctx, &tb->desc, &tb->b, c, queue, 0, NULL, &done));
  CLATTN__CL_CHECK(t->ctx, clWaitForEvents(1, &done));
  cl_ulong t0 = 0, t1 = 0, s1 = 0;
  CLATTN__CL_CHECK(t->ctx,
                   clGetEventProfilingInfo(done, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL));
  CLATTN__CL_CHECK(t->ctx,
                   clGetEventProfilingInfo(done, CL_PROFILING_COMMAND_START, sizeof s1, &s1, NULL));
  if (clGetEventProfilingInfo(marker, CL_PROFILING_COMMAND_END, sizeof t0, &t0, NULL) !=
          CL_SUCCESS ||
      t0 == 0 || t0 > s1) {
    t0 = s1;
  }
  *ms = (double)(t1 - t0) * 1e-6;
cleanup:
  if (marker) clReleaseEvent(marker);
  if (done) clReleaseEvent(done);
  return status;
}

/* The winner on sampled rows of the timed shape (its output is still in tb->b.o). */
static clattn_status verify_sampled(clattn__tune_run* t, timing_bufs* tb,
                                    const clattn_attention_config* c) {
  clattn_status status = CLATTN_SUCCESS;
  double ms = 0;
  const clattn_attention_desc* s = &tb->desc;
  const size_t d = t->o.head_dim, n = s->batch * s->heads_q * s->seq_q * d;
  float* o = clattn__malloc(n * sizeof *o);
  double* ref = clattn__malloc(d * sizeof *ref);
  if (!o || !ref) {
    status = clattn__fail(t->ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  CLATTN__CHECK(time_once(t, tb, c, &ms));
  /* O in the tuned dtype, read into the float array (it is large enough) and widened there
   * from the back. */
  CLATTN__CL_CHECK(t->ctx, clEnqueueReadBuffer(t->ctx->queue, tb->b.o, CL_TRUE, 0,
                                               n * clattn__dtype_size(s->dtype), o, 0, NULL, NULL));
  for (size_t i = n; s->dtype != CLATTN_DTYPE_F32 && i > 0; --i) {
    o[i - 1] = clattn__load_element(o, s->dtype, i - 1);
  }
  clattn__tune_rng r = {0x99};
  for (int k = 0; k < 16; ++k) {
    size_t b = clattn__tune_rand(&r) % s->batch, h = clattn__tune_rand(&r) % s->heads_q;
    size_t i = k == 0 ? s->seq_q - 1 : k == 1 ? 0 : clattn__tune_rand(&r) % s->seq_q;
    reference_row(tb->q, tb->k, tb->v, s->heads_q, s->seq_q, s->seq_kv, d, t->o.causal, b, h, i,
                  ref);
    const float* row = o + ((b * s->heads_q + h) * s->seq_q + i) * d;
    for (size_t x = 0; x < d; ++x) {
      /* Long rows sum more terms: allow for sqrt(N) growth of the rounding error. */
      const double tol =
          output_tol(ATTENTION_TOL * sqrt((double)s->seq_kv / 128.0 + 1.0), s->dtype, ref[x]);
      if (!(fabs((double)row[x] - ref[x]) <= tol)) {
        status = clattn__fail(t->ctx, CLATTN_ERROR_INVALID_CONFIG,
                              "wrong result on the tuned shape at row %zu", i);
        goto cleanup;
      }
    }
  }
cleanup:
  free(o);
  free(ref);
  return status;
}

/* How long one timed call may take. Neither the budget nor the callback can stop a call in
 * flight, so a call at a long sequence (one 65536-token call is minutes on a CPU) would hold
 * the run that long; the candidates are then timed on a slice of the tuned shape instead. */
#define CALL_CAP_MS 250.0
/* Query rows of the probe that sizes the slice, per compute unit. */
#define PROBE_ROWS_PER_CU 256
/* Query rows of a slice are a multiple of this (every block_m of the spaces divides it). */
#define SLICE_ROW_STEP 128

/* The shape candidates are timed on: the tuned one, or, when a call of it would take longer
 * than CALL_CAP_MS, a slice of it: its last query rows over fewer heads, the keys at full
 * length, so that each work-group does what it does at the tuned shape and there are only
 * fewer of them (at least PROBE_ROWS_PER_CU query rows per compute unit, to fill the
 * device). A call of def on a probe slice, scaled by the rows, predicts a call's time. */
static clattn_status timed_shape(clattn__tune_run* t, const clattn_attention_config* def,
                                 vshape* out) {
  const size_t n = t->o.seq, nq = t->o.seq_q, planes = t->o.batch * t->o.heads;
  const vshape full = {t->o.batch, t->o.heads, nq, n};
  size_t probe_rows =
      PROBE_ROWS_PER_CU * (t->ctx->info.compute_units ? t->ctx->info.compute_units : 1);
  *out = full;
  if (probe_rows >= nq * planes || probe_rows >= nq) return CLATTN_SUCCESS;
  probe_rows = (probe_rows + SLICE_ROW_STEP - 1) / SLICE_ROW_STEP * SLICE_ROW_STEP;
  if (probe_rows >= nq) return CLATTN_SUCCESS;
  const vshape probe = {1, 1, probe_rows, n};
  timing_bufs tb;
  double ms = 0;
  t->name = "sizing the timed shape";
  clattn_status status = timing_init(t, &tb, &probe);
  /* Twice: PoCL compiles for a new launch shape on its first call. */
  for (int i = 0; i < 2 && status == CLATTN_SUCCESS && !clattn__tune_poll(t); ++i) {
    status = time_once(t, &tb, def, &ms);
  }
  timing_release(&tb);
  if (status != CLATTN_SUCCESS || t->res->interrupted || !(ms > 0)) {
    /* The default cannot be run (the search goes on without it): the probe's shape. */
    clattn__log("tune: the default could not size the timed shape; timing %zu query rows",
                probe_rows);
    *out = probe;
    return t->res->interrupted ? CLATTN_SUCCESS : status;
  }
  const double full_ms = ms * (double)(nq * planes) / (double)probe_rows;
  if (full_ms <= CALL_CAP_MS) return CLATTN_SUCCESS;
  /* Query rows (over all planes) that fit the cap: whole heads while they fit, else the last
   * rows of one head. */
  double rows = (double)probe_rows * CALL_CAP_MS / ms;
  if (rows >= (double)nq) {
    size_t p = (size_t)(rows / (double)nq);
    if (p > planes) p = planes;
    *out = (vshape){p > t->o.heads ? p / t->o.heads : 1, p > t->o.heads ? t->o.heads : p, nq, n};
  } else {
    size_t r = (size_t)rows / SLICE_ROW_STEP * SLICE_ROW_STEP;
    *out = (vshape){1, 1, r > probe_rows ? r : probe_rows, n};
  }
  clattn__log(
      "tune: a call at the tuned shape would take about %.0f ms; timing %zu x %zu heads of "
      "%zu query rows over %zu keys instead",
      full_ms, out->batch, out->heads, out->seq_q, out->seq_kv);
  return CLATTN_SUCCESS;
}

/* ------------------------------------------------------------ candidates */

typedef struct cand {
  clattn_attention_config c;
  double median, minimum;
  int ok;
} cand;

static int same_config(const clattn_attention_config* a, const clattn_attention_config* b) {
  return a->variant == b->variant && a->block_m == b->block_m && a->block_n == b->block_n &&
         a->rows_per_item == b->rows_per_item && a->threads_per_row == b->threads_per_row;
}

/* The registry index of a variant (clattn__variant_count() when it has none). */
static size_t variant_index(clattn_variant id) {
  size_t i = 0;
  while (i < clattn__variant_count() && clattn__variant_at(i)->id != id) ++i;
  return i;
}

/* "<variant name> <its description of the tiles>", for the callback and the log. */
static void describe(const clattn_attention_config* c, char* buf, size_t size) {
  const clattn__variant* v = clattn__variant_find(c->variant);
  char tiles[96] = "";
  if (v) v->describe(c, tiles, sizeof tiles);
  snprintf(buf, size, "%s %s", v ? v->name : "unknown", tiles);
}

/* Appends c unless it is already in the list or does not fit the device. */
static void add_candidate(clattn_attention_config* list, size_t* n, size_t cap,
                          const clattn_attention_config* c, const clattn_device_info* info,
                          size_t head_dim) {
  if (*n >= cap || !clattn__config_fits(info, head_dim, c)) return;
  for (size_t i = 0; i < *n; ++i) {
    if (same_config(&list[i], c)) return;
  }
  list[(*n)++] = *c;
}

/* How many fields of c differ from the default's, each by a factor of two; -1 when one
 * differs by more (or c is of another variant). */
static int neighbour_steps(const clattn_attention_config* c, const clattn_attention_config* def) {
  if (c->variant != def->variant) return -1;
  const unsigned x[4] = {c->block_m, c->block_n, c->rows_per_item, c->threads_per_row};
  const unsigned y[4] = {def->block_m, def->block_n, def->rows_per_item, def->threads_per_row};
  int steps = 0;
  for (int i = 0; i < 4; ++i) {
    if (x[i] == y[i]) continue;
    if (x[i] != 2 * y[i] && 2 * x[i] != y[i]) return -1;
    ++steps;
  }
  return steps;
}

/* The core set around the default: the configs of its variant's space whose every field is
 * the default's, half or double it, the fewest fields changed first, at most
 * CORE_NEIGHBOURS; appended in the space's order. */
static void add_neighbours(clattn_attention_config* list, size_t* n, size_t cap,
                           const clattn_attention_config* space, size_t nspace,
                           const clattn_attention_config* def, const clattn_device_info* info,
                           size_t head_dim) {
  size_t at_steps[5] = {0};
  for (size_t j = 0; j < nspace; ++j) {
    int s = neighbour_steps(&space[j], def);
    if (s > 0) at_steps[s]++;
  }
  /* Every neighbour up to `full` steps, and the first `left` of those one step further. */
  size_t left = CORE_NEIGHBOURS;
  int full = 0;
  while (full < 4 && at_steps[full + 1] <= left) left -= at_steps[++full];
  for (size_t j = 0; j < nspace; ++j) {
    int s = neighbour_steps(&space[j], def);
    if (s <= 0 || s > full + 1) continue;
    if (s == full + 1) {
      if (!left) continue;
      --left;
    }
    add_candidate(list, n, cap, &space[j], info, head_dim);
  }
}

/* The heuristic config of a variant for the tuned shape (no tuning entry involved). */
static clattn_status heuristic(clattn__tune_run* t, clattn_variant v,
                               clattn_attention_config* out) {
  clattn_attention_config req = CLATTN_ATTENTION_CONFIG_INIT;
  req.variant = v;
  vshape s = {t->o.batch, t->o.heads, t->o.seq_q, t->o.seq};
  clattn_attention_desc desc = make_desc(&s, t->o.head_dim, t->o.causal, t->o.dtype);
  return clattn_attention_get_config(t->ctx, &desc, &req, out);
}

/* What the search pipeline's steps need of one candidate. */
typedef struct trial {
  timing_bufs* tb;
  const clattn_attention_config* c;
} trial;

/* Builds the candidate's kernel for the timed shape. */
static clattn_status trial_prepare(clattn__tune_run* t, void* arg) {
  const trial* tr = arg;
  clattn_attention_config used;
  return clattn_attention_get_config(t->ctx, &tr->tb->desc, tr->c, &used);
}

static clattn_status trial_verify(clattn__tune_run* t, void* arg) {
  const trial* tr = arg;
  return verify_attention(t, tr->c, kCandidateShapes,
                          sizeof kCandidateShapes / sizeof kCandidateShapes[0]);
}

static clattn_status trial_once(clattn__tune_run* t, void* arg, double* ms) {
  const trial* tr = arg;
  return time_once(t, tr->tb, tr->c, ms);
}

/* Tries one candidate: build, verify, time. Returns 1 when the run must stop. */
static int try_candidate(clattn__tune_run* t, timing_bufs* tb, cand* cd) {
  char name[128];
  describe(&cd->c, name, sizeof name);
  trial tr = {tb, &cd->c};
  const clattn__tune_candidate c = {.phase = "attention",
                                    .name = name,
                                    .prepare = trial_prepare,
                                    .verify = trial_verify,
                                    .once = trial_once,
                                    .arg = &tr};
  return clattn__tune_try(t, &c, &cd->median, &cd->minimum, &cd->ok);
}

static int cmp_cand(const void* a, const void* b) {
  const cand *x = a, *y = b;
  if (x->ok != y->ok) return y->ok - x->ok;
  return x->median < y->median ? -1 : x->median > y->median;
}

/* The default (winner 0) and the winner (1), confirming: one timed run each time. */
typedef struct pair {
  timing_bufs* tb;
  const clattn_attention_config *def, *win;
} pair;

static clattn_status pair_measure(clattn__tune_run* t, void* arg, int winner, double* median,
                                  double* minimum) {
  const pair* p = arg;
  clattn_status status = time_once(t, p->tb, winner ? p->win : p->def, median);
  *minimum = *median;
  return status;
}

/* The paired timing of the winner against the default (when the default passed and is not
 * the winner already). The default is kept unless the winner beats it by the margin; these
 * paired medians are the figures reported. */
static clattn_status confirm(clattn__tune_run* t, timing_bufs* tb, const cand* cands, size_t ncand,
                             const clattn_attention_config* def, const cand** win, double* win_ms,
                             double* win_min) {
  const cand* dc = NULL;
  for (size_t i = 0; i < ncand; ++i) {
    if (cands[i].ok && same_config(&cands[i].c, def)) dc = &cands[i];
  }
  if (!dc || dc == *win) return CLATTN_SUCCESS;
  pair p = {tb, &dc->c, &(*win)->c};
  clattn__tune_confirmation cf;
  clattn_status status = clattn__tune_confirm(
      t, clattn__tune_confirm_pairs(dc->median, (*win)->median), pair_measure, &p, &cf);
  if (status != CLATTN_SUCCESS) return status;
  t->res->default_ms = cf.default_ms;
  t->res->default_min_ms = cf.default_min_ms;
  if (cf.winner_holds) {
    *win_ms = cf.winner_ms;
    *win_min = cf.winner_min_ms;
  } else {
    clattn__log(
        "tune: the winner (%.3f ms) does not beat the default (%.3f ms) when timed "
        "alternately; keeping the default",
        cf.winner_ms, cf.default_ms);
    *win = dc;
    *win_ms = cf.default_ms;
    *win_min = cf.default_min_ms;
  }
  return CLATTN_SUCCESS;
}

clattn_status clattn_tune_attention(clattn_context* ctx, const clattn_tune_options* options,
                                    clattn_tune_progress_fn progress, void* user,
                                    clattn_tune_result* result) {
  clattn__tune_run t;
  clattn_status status = clattn__tune_run_init(&t, ctx, options, progress, user, result);
  if (status != CLATTN_SUCCESS) return status;
  timing_bufs tb;
  memset(&tb, 0, sizeof tb);
  const size_t nv = clattn__variant_count(), d = t.o.head_dim;
  size_t* vorder = NULL; /* registry indices, the preferred variant first */
  size_t* nspace = NULL;
  clattn_attention_config* spaces = NULL; /* SPACE_CAP per variant */
  clattn_attention_config* order = NULL;
  cand* cands = NULL;
  int* pruned = NULL;
  double* best = NULL;
  size_t ncand = 0;

  /* The variant clattn would choose for the tuned shape leads; its default is the one to
   * beat. */
  vshape s = {t.o.batch, t.o.heads, t.o.seq_q, t.o.seq};
  const clattn_attention_desc desc = make_desc(&s, d, t.o.causal, t.o.dtype);
  clattn__attention_shape shape;
  CLATTN__CHECK(clattn__attention_shape_resolve(ctx, &desc, &shape));
  vorder = clattn__calloc(nv + 1, sizeof *vorder);
  nspace = clattn__calloc(nv + 1, sizeof *nspace);
  spaces = clattn__calloc((nv + 1) * SPACE_CAP, sizeof *spaces);
  if (!vorder || !nspace || !spaces) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  /* A variant named in the options is the only one searched, its default the one to beat. */
  const size_t first = t.o.variant == CLATTN_VARIANT_AUTO
                           ? clattn__variant_preferred(&ctx->info, &shape)
                           : variant_index(t.o.variant);
  if (first == nv) {
    status = clattn__fail(ctx, CLATTN_ERROR_INTERNAL, "no kernel variant suits this shape");
    goto cleanup;
  }
  if (t.o.variant != CLATTN_VARIANT_AUTO &&
      ((shape.paged && !clattn__variant_at(first)->reads_pages) ||
       clattn__variant_at(first)->preference(&ctx->info, &shape) == 0)) {
    status = clattn__fail(ctx, CLATTN_ERROR_UNSUPPORTED,
                          "the %s variant does not serve this shape; nothing tuned",
                          clattn__variant_at(first)->name);
    goto cleanup;
  }
  vorder[0] = first;
  for (size_t i = 0, k = 1; i < nv; ++i) {
    if (i != first) vorder[k++] = i;
  }
  for (size_t k = 0; k < nv; ++k) {
    const clattn__variant* v = clattn__variant_at(vorder[k]);
    if (t.o.variant == CLATTN_VARIANT_AUTO || t.o.variant == v->id) {
      nspace[vorder[k]] = v->tuning_space(&ctx->info, d, spaces + vorder[k] * SPACE_CAP, SPACE_CAP);
    }
    if ((unsigned)v->id < CLATTN_TUNE_MAX_VARIANTS) {
      result->space_variants[v->id] = nspace[vorder[k]];
    }
  }
  if (t.o.dry_run) goto cleanup;

  /* The order of the search: the default, a core set around it and the other variants'
   * defaults, then the rest at random. */
  const size_t cap = nv * SPACE_CAP + nv + 1;
  order = clattn__calloc(cap, sizeof *order);
  cands = clattn__calloc(cap, sizeof *cands);
  pruned = clattn__calloc(nv, sizeof *pruned);
  best = clattn__calloc(nv, sizeof *best);
  if (!order || !cands || !pruned || !best) {
    status = clattn__fail(ctx, CLATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    goto cleanup;
  }
  size_t norder = 0;
  clattn_attention_config def;
  CLATTN__CHECK(heuristic(&t, clattn__variant_at(first)->id, &def));
  result->default_config = def;
  order[norder++] = def;
  if (nspace[first]) {
    add_neighbours(order, &norder, cap, spaces + first * SPACE_CAP, nspace[first], &def, &ctx->info,
                   d);
  }
  for (size_t k = 1; k < nv; ++k) {
    clattn_attention_config other;
    if (nspace[vorder[k]] &&
        heuristic(&t, clattn__variant_at(vorder[k])->id, &other) == CLATTN_SUCCESS) {
      other.source = CLATTN_CONFIG_SOURCE_USER;
      add_candidate(order, &norder, cap, &other, &ctx->info, d);
    }
  }
  const size_t core = norder;
  for (size_t k = 0; k < nv; ++k) {
    const clattn_attention_config* space = spaces + vorder[k] * SPACE_CAP;
    for (size_t j = 0; j < nspace[vorder[k]]; ++j) {
      add_candidate(order, &norder, cap, &space[j], &ctx->info, d);
    }
  }
  clattn__tune_shuffle(&t, order, norder, sizeof *order, core);
  t.total = norder;
  if (t.o.max_candidates && t.total > t.o.max_candidates) t.total = t.o.max_candidates;

  vshape timed;
  CLATTN__CHECK(timed_shape(&t, &def, &timed));
  if (result->interrupted) goto cleanup;
  CLATTN__CHECK(timing_init(&t, &tb, &timed));
  for (size_t i = 0; i < norder && ncand < t.total; ++i) {
    if (i > 0 && !clattn__tune_time_left(&t)) break;
    if (pruned[variant_index(order[i].variant)]) continue;
    cand* cd = &cands[ncand++];
    cd->c = order[i];
    cd->c.source = CLATTN_CONFIG_SOURCE_USER;
    int stop = try_candidate(&t, &tb, cd);
    if (i == 0) {
      if (!cd->ok) {
        clattn__log("tune: the default config failed; searching anyway");
      } else {
        t.default_ms = cd->median;
        result->default_ms = cd->median;
        result->default_min_ms = cd->minimum;
      }
    }
    if (stop) break;
    if (i + 1 == core) {
      /* After the core set: drop a variant far behind the best. */
      for (size_t j = 0; j < ncand; ++j) {
        size_t v = variant_index(cands[j].c.variant);
        if (cands[j].ok && (best[v] == 0 || cands[j].median < best[v])) best[v] = cands[j].median;
      }
      for (size_t v = 0; v < nv; ++v) {
        if (!best[v] || best[v] > VARIANT_PRUNE_FACTOR * t.best_ms) {
          pruned[v] = 1;
          clattn__log("tune: %s variant not searched further", clattn__variant_at(v)->name);
        }
      }
    }
  }
  if (result->interrupted) goto cleanup;

  /* The fastest candidate that also passes the wider check wins. */
  qsort(cands, ncand, sizeof *cands, cmp_cand);
  const cand* win = NULL;
  t.name = "checking the winner";
  for (size_t i = 0; i < ncand && cands[i].ok && !win && !result->interrupted; ++i) {
    if (verify_attention(&t, &cands[i].c, kWinnerShapes,
                         sizeof kWinnerShapes / sizeof kWinnerShapes[0]) == CLATTN_SUCCESS &&
        verify_sampled(&t, &tb, &cands[i].c) == CLATTN_SUCCESS) {
      win = &cands[i];
    } else {
      clattn__log("tune: a candidate failed the wider check; trying the next");
      result->failed_verify++;
    }
  }
  if (result->interrupted) goto cleanup;
  if (!win) {
    status = clattn__fail(ctx, CLATTN_ERROR_INTERNAL, "no config passed verification");
    goto cleanup;
  }
  double win_ms = win->median, win_min = win->minimum;
  CLATTN__CHECK(confirm(&t, &tb, cands, ncand, &def, &win, &win_ms, &win_min));
  if (result->interrupted) goto cleanup;
  clattn_tuning_entry* e = &result->entry;
  memset(e, 0, sizeof *e);
  e->struct_size = sizeof *e;
  e->kind = CLATTN_TUNING_ATTENTION;
  clattn__tuning_device_key(&ctx->info, e);
  snprintf(e->kernel, sizeof e->kernel, "%s", clattn__variant_find(win->c.variant)->source);
  CLATTN__CHECK(clattn__tuning_source_hash(ctx, ctx->kernel_dir, e->kernel, e->source_hash,
                                           sizeof e->source_hash));
  e->dtype = shape.dtype;
  e->head_dim = d;
  e->causal = t.o.causal;
  e->seq_bucket = clattn__seq_bucket(t.o.seq_q > t.o.seq ? t.o.seq_q : t.o.seq);
  e->seq_q_bucket = clattn__seq_bucket(t.o.seq_q);
  e->config = win->c;
  e->config.source = CLATTN_CONFIG_SOURCE_USER;
  e->time_ms = win_ms;
  e->default_time_ms = result->default_ms;
  clattn__tune_utc_now(e->tuned_at, sizeof e->tuned_at);
  result->best_ms = win_ms;
  result->best_min_ms = win_min;
  CLATTN__CHECK(clattn__tune_store(&t, e));
cleanup:
  timing_release(&tb);
  free(vorder);
  free(nspace);
  free(spaces);
  free(order);
  free(cands);
  free(pruned);
  free(best);
  return status;
}
