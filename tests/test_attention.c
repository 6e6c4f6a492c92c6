/* Correctness of the attention core against the double-precision reference: shape sweeps,
 * masks, head grouping, layouts and strides, and the cl_mem entry point. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clattn/clattn.h"
#include "reference.h"
#include "test_util.h"

/* SPLIT_KV runs prefill shapes too (in chunks of rows): every promise holds there as well. */
static const clattn_variant kVariants[] = {
    CLATTN_VARIANT_TILED_LOCAL, CLATTN_VARIANT_REGISTER_BLOCKED, CLATTN_VARIANT_SPLIT_KV};
#define NUM_VARIANTS (sizeof kVariants / sizeof kVariants[0])

/* ---------------------------------------------------------------- sweep */

typedef struct sweep_param {
  clattn_variant variant;
  size_t head_dim;
} sweep_param;

ParameterizedTestParameters(attention, sweep) {
  static const size_t dims[] = {1, 8, 32, 64, 80, 128, 256};
  static sweep_param params[NUM_VARIANTS * (sizeof dims / sizeof dims[0])];
  size_t n = 0;
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; ++d) {
      params[n].variant = kVariants[v];
      params[n].head_dim = dims[d];
      ++n;
    }
  }
  return cr_make_param_array(sweep_param, params, n);
}

/* Nq = Nkv = seq over small, tail and large sizes, causal off and on, two heads. */
ParameterizedTest(sweep_param* param, attention, sweep, .timeout = 600.0) {
  static const size_t seqs[] = {1, 7, 64, 100, 257, 1000};
  static const size_t small_seqs[] = {1, 7, 37, 100}; /* CLATTN_TEST_SMALL */
  const size_t* lens = test_small() ? small_seqs : seqs;
  const size_t num_lens =
      test_small() ? sizeof small_seqs / sizeof small_seqs[0] : sizeof seqs / sizeof seqs[0];
  clattn_context* ctx = test_context(NULL);
  for (size_t s = 0; s < num_lens; ++s) {
    for (int causal = 0; causal <= 1; ++causal) {
      const size_t seq = lens[s];
      const size_t heads = param->head_dim == 256 && seq == 1000 ? 1 : 2;
      clattn_attention_desc desc = test_desc(1, heads, heads, seq, seq, param->head_dim, causal);
      test_run_host(ctx, &desc, param->variant, NULL,
                    0x5EED0000u + param->head_dim * 4096 + seq * 2 + (uint64_t)causal);
    }
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- shapes and masks */

/* seq_q != seq_kv both ways; with seq_q > seq_kv and causal, the first seq_q - seq_kv rows
 * see no key: O exactly 0 and LSE -INFINITY. */
Test(attention, unequal_lengths, .timeout = 300.0) {
  static const size_t pairs[][2] = {{37, 300}, {300, 37}};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t p = 0; p < 2; ++p) {
      for (int causal = 0; causal <= 1; ++causal) {
        const size_t nq = pairs[p][0], nkv = pairs[p][1], dim = 32;
        clattn_attention_desc desc = test_desc(1, 2, 2, nq, nkv, dim, causal);
        test_run_host(ctx, &desc, kVariants[v], NULL, 77 + p * 2 + (uint64_t)causal);

        if (!(causal && nq > nkv)) continue;
        char label[256];
        test_label(label, sizeof label, &desc, kVariants[v]);
        test_problem pr;
        test_problem_init(&pr, &desc, 1234);
        clattn_attention_config config = test_config(kVariants[v]);
        clattn_status st =
            clattn_attention_host(ctx, &desc, pr.q, pr.k, pr.v, pr.o, pr.lse, NULL, &config);
        cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s", label, clattn_status_name(st));
        for (size_t h = 0; h < 2; ++h) {
          for (size_t i = 0; i < nq; ++i) {
            const float lse = pr.lse[h * nq + i];
            if (i < nq - nkv) {
              for (size_t d = 0; d < dim; ++d) {
                cr_assert(pr.o[(h * nq + i) * dim + d] == 0.0f,
                          "%s: fully masked row h=%zu i=%zu d=%zu is %g, not 0", label, h, i, d,
                          (double)pr.o[(h * nq + i) * dim + d]);
              }
              cr_assert(isinf(lse) && lse < 0.0f, "%s: LSE of fully masked row %zu is %g", label, i,
                        (double)lse);
            } else {
              cr_assert(isfinite(lse), "%s: LSE of row %zu (sees %zu keys) is %g", label, i,
                        i - (nq - nkv) + 1, (double)lse);
            }
          }
        }
        test_problem_free(&pr);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* Grouped-query (Hq=8, Hkv=2), multi-query (Hq=4, Hkv=1) and heads_kv = 0 (means Hq). */
Test(attention, grouped_heads, .timeout = 300.0) {
  static const size_t heads[][2] = {{8, 2}, {4, 1}, {3, 0}, {6, 3}};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t g = 0; g < sizeof heads / sizeof heads[0]; ++g) {
      for (int causal = 0; causal <= 1; ++causal) {
        clattn_attention_desc desc =
            test_desc(2, heads[g][0], heads[g][1], test_len(70), test_len(70), 64, causal);
        test_run_host(ctx, &desc, kVariants[v], NULL, 900 + g * 2 + (uint64_t)causal);
        desc = test_desc(1, heads[g][0], heads[g][1], test_len(33), test_len(90), 40, causal);
        test_run_host(ctx, &desc, kVariants[v], NULL, 950 + g * 2 + (uint64_t)causal);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* [batch, seq, heads, head_dim] tensors through the layout field (all strides 0). */
Test(attention, layout_bnhd, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (int causal = 0; causal <= 1; ++causal) {
      clattn_attention_desc desc = test_desc(2, 4, 2, test_len(50), test_len(77), 40, causal);
      desc.layout = CLATTN_LAYOUT_BNHD;
      test_run_host(ctx, &desc, kVariants[v], NULL, 31 + (uint64_t)causal);
      desc = test_desc(1, 3, 3, test_len(64), test_len(64), 64, causal);
      desc.layout = CLATTN_LAYOUT_BNHD;
      test_run_host(ctx, &desc, kVariants[v], NULL, 41 + (uint64_t)causal);
    }
  }
  clattn_context_destroy(ctx);
}

/* Explicit strides with padded rows, heads and batches, each tensor different (one in
 * [b, n, h, d] order), through the host entry point. */
Test(attention, custom_strides, .timeout = 300.0) {
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (int causal = 0; causal <= 1; ++causal) {
      const size_t B = 2, Hq = 4, Hkv = 2, Nq = 45, Nkv = 70, D = 20;
      clattn_attention_desc desc = test_desc(B, Hq, Hkv, Nq, Nkv, D, causal);
      desc.q_strides.seq = D + 3;
      desc.q_strides.head = Nq * (D + 3) + 5;
      desc.q_strides.batch = Hq * desc.q_strides.head + 7;
      desc.k_strides.head = D + 1; /* [b][n][h][d] with padding */
      desc.k_strides.seq = Hkv * (D + 1) + 2;
      desc.k_strides.batch = Nkv * desc.k_strides.seq + 3;
      desc.v_strides.seq = 2 * D;
      desc.v_strides.head = Nkv * 2 * D;
      desc.v_strides.batch = Hkv * Nkv * 2 * D;
      desc.o_strides.head = D; /* [b][n][h][d], row padded */
      desc.o_strides.seq = Hq * D + 9;
      desc.o_strides.batch = Nq * desc.o_strides.seq;
      test_run_host(ctx, &desc, kVariants[v], NULL, 555 + (uint64_t)causal);
    }
  }
  clattn_context_destroy(ctx);
}

/* Per-batch key lengths: 0 (rows see nothing: exactly 0), seq_kv, values in between,
 * negative and too large (clamped). Causal alignment still uses seq_kv. */
Test(attention, kv_lengths, .timeout = 300.0) {
  static const size_t shapes[][2] = {{40, 100}, {100, 40}, {64, 64}};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
      for (int causal = 0; causal <= 1; ++causal) {
        const size_t nq = shapes[s][0], nkv = shapes[s][1];
        const int32_t lengths[6] = {0, (int32_t)nkv, 17, -3, (int32_t)nkv + 50, 1};
        clattn_attention_desc desc = test_desc(6, 2, 1, nq, nkv, 24, causal);
        test_run_host(ctx, &desc, kVariants[v], lengths, 4242 + s * 2 + (uint64_t)causal);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* Masked keys are never read into a row: an Inf in the value of key `bad` (and a NaN in its
 * key) under a causal mask reaches exactly the rows that can see it. Rows before it must
 * match the reference; rows from it on must be non-finite. Keys past a sequence's length
 * hold NaN and must change nothing. */
Test(attention, masked_keys_never_read, .timeout = 300.0) {
  const size_t n = 70, dim = 24, bad = 40;
  const int32_t lengths[2] = {(int32_t)n, 55};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    clattn_attention_desc desc = test_desc(2, 2, 2, n, n, dim, 1);
    char label[256];
    test_label(label, sizeof label, &desc, kVariants[v]);
    test_problem p;
    test_problem_init(&p, &desc, 9100 + v);
    const clattn_strides ks = test_strides(&desc, 'k'), vs = test_strides(&desc, 'v');
    for (size_t b = 0; b < 2; ++b) {
      for (size_t h = 0; h < 2; ++h) {
        for (size_t j = 0; j < n; ++j) {
          const int poison_inf = b == 0 && j == bad;
          const int poison_nan = j >= (size_t)lengths[b];
          if (!poison_inf && !poison_nan) continue;
          for (size_t d = 0; d < dim; ++d) {
            p.k[b * ks.batch + h * ks.head + j * ks.seq + d] = NAN;
            p.v[b * vs.batch + h * vs.head + j * vs.seq + d] = poison_inf ? INFINITY : NAN;
          }
        }
      }
    }
    /* The key of `bad` is NaN too, so rows that see it get NaN scores: only the rows before
     * it may stay finite. */
    const clattn_attention_config config = test_config(kVariants[v]);
    clattn_status st =
        clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, p.lse, lengths, &config);
    cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s (%s)", label, clattn_status_name(st),
                 test_last_error(ctx));
    double* ref = malloc(p.no * sizeof(double));
    cr_assert_not_null(ref);
    cr_assert_eq(clattn_ref_attention(&desc, p.q, p.k, p.v, lengths, ref, NULL, 1), 0);
    const clattn_strides os = test_strides(&desc, 'o');
    for (size_t b = 0; b < 2; ++b) {
      for (size_t h = 0; h < 2; ++h) {
        for (size_t i = 0; i < n; ++i) {
          const size_t base = b * os.batch + h * os.head + i * os.seq;
          const int sees_bad = b == 0 && i >= bad;
          const double tol =
              sees_bad ? 0.0 : clattn_ref_row_tolerance(&desc, p.q, p.k, p.v, lengths, b, h, i);
          for (size_t d = 0; d < dim; ++d) {
            const double got = p.o[base + d];
            if (sees_bad) {
              cr_assert(!isfinite(got),
                        "%s: O[b=%zu,h=%zu,i=%zu,d=%zu] = %g, but the row sees "
                        "key %zu whose value is Inf",
                        label, b, h, i, d, got, bad);
            } else {
              cr_assert(fabs(got - ref[base + d]) <= tol,
                        "%s: O[b=%zu,h=%zu,i=%zu,d=%zu] = %.9g, reference %.9g, tol %.3g: a "
                        "masked key reached the row",
                        label, b, h, i, d, got, ref[base + d], tol);
            }
          }
        }
      }
    }
    free(ref);
    test_problem_free(&p);
  }
  clattn_context_destroy(ctx);
}

/* Causal masks on sizes that are not multiples of any tile, with odd head_dim. */
Test(attention, causal_tails, .timeout = 300.0) {
  static const size_t shapes[][2] = {{1, 50},    {50, 1},    {17, 17}, {33, 65},  {65, 33},
                                     {129, 127}, {127, 129}, {200, 3}, {1, 1000}, {5, 1000}};
  static const size_t dims[] = {3, 17, 100};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
      for (size_t d = 0; d < sizeof dims / sizeof dims[0]; ++d) {
        clattn_attention_desc desc =
            test_desc(1, 2, 2, test_len(shapes[s][0]), test_len(shapes[s][1]), dims[d], 1);
        test_run_host(ctx, &desc, kVariants[v], NULL, 8000 + s * 8 + d);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* Explicit scales, including a negative one and a large one (sharp softmax). */
Test(attention, explicit_scale, .timeout = 300.0) {
  static const float scales[] = {0.5f, 2.0f, -0.25f, 8.0f, 0.125f};
  clattn_context* ctx = test_context(NULL);
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (size_t s = 0; s < sizeof scales / sizeof scales[0]; ++s) {
      for (int causal = 0; causal <= 1; ++causal) {
        clattn_attention_desc desc = test_desc(1, 2, 2, test_len(70), test_len(90), 64, causal);
        desc.scale = scales[s];
        test_run_host(ctx, &desc, kVariants[v], NULL, 300 + s * 2 + (uint64_t)causal);
      }
    }
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- cl_mem entry point */

/* Fills the rows a tensor addresses with random values, leaving the rest as is. */
static void fill_rows(float* base, const clattn_attention_desc* desc, char which, uint64_t* state) {
  const clattn_strides s = test_strides(desc, which);
  const int is_q = which == 'q' || which == 'o';
  const size_t heads = is_q ? desc->heads_q : test_heads_kv(desc);
  const size_t seq = is_q ? desc->seq_q : desc->seq_kv;
  for (size_t b = 0; b < desc->batch; ++b) {
    for (size_t h = 0; h < heads; ++h) {
      for (size_t n = 0; n < seq; ++n) {
        clattn_ref_fill_uniform(base + b * s.batch + h * s.head + n * s.seq, desc->head_dim, -1.0f,
                                1.0f, state);
      }
    }
  }
}

/* Marks the elements of O the kernel may write (relative to the tensor's start). */
static unsigned char* output_mask(const clattn_attention_desc* desc, size_t size) {
  unsigned char* mask = calloc(size, 1);
  cr_assert_not_null(mask);
  const clattn_strides s = test_strides(desc, 'o');
  for (size_t b = 0; b < desc->batch; ++b) {
    for (size_t h = 0; h < desc->heads_q; ++h) {
      for (size_t n = 0; n < desc->seq_q; ++n) {
        memset(mask + b * s.batch + h * s.head + n * s.seq, 1, desc->head_dim);
      }
    }
  }
  return mask;
}

static cl_mem make_buffer(cl_context cl_ctx, size_t bytes) {
  cl_int err = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateBuffer(%zu bytes): %d", bytes, (int)err);
  return mem;
}

/* Buffers at nonzero offsets with padded strides, written by non-blocking writes whose
 * events, and a user event, form the wait list. The call must not run before the user event
 * completes, must return an event, and must not touch buffer elements outside O and LSE. */
static void run_cl_mem_case(clattn_variant variant, int own_queue, int causal) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  cl_command_queue ctx_queue = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, &device, &ctx_queue), CLATTN_SUCCESS);
  cr_assert(cl_ctx != NULL && device != NULL && ctx_queue != NULL);
  cl_int err = CL_SUCCESS;
  cl_command_queue queue = ctx_queue;
  if (own_queue) {
    queue = clCreateCommandQueue(cl_ctx, device, 0, &err);
    cr_assert_eq(err, CL_SUCCESS, "clCreateCommandQueue: %d", (int)err);
  }

  const size_t B = 2, Hq = 4, Hkv = 2, Nq = 45, Nkv = 70, D = 20;
  clattn_attention_desc desc = test_desc(B, Hq, Hkv, Nq, Nkv, D, causal);
  desc.q_strides.seq = D + 4;
  desc.q_strides.head = Nq * (D + 4) + 3;
  desc.q_strides.batch = Hq * desc.q_strides.head + 1;
  desc.k_strides.head = D + 2;
  desc.k_strides.seq = Hkv * (D + 2);
  desc.k_strides.batch = Nkv * desc.k_strides.seq + 5;
  desc.v_strides.seq = D;
  desc.v_strides.head = Nkv * D;
  desc.v_strides.batch = Hkv * Nkv * D;
  desc.o_strides.seq = D + 1;
  desc.o_strides.head = Nq * (D + 1);
  desc.o_strides.batch = Hq * Nq * (D + 1) + 2;
  char label[256];
  test_label(label, sizeof label, &desc, variant);

  const size_t q_off = 13, k_off = 7, v_off = 0, o_off = 29, l_off = 11, slack = 9;
  const size_t nq = q_off + test_span(&desc, 'q') + slack;
  const size_t nk = k_off + test_span(&desc, 'k') + slack;
  const size_t nv = v_off + test_span(&desc, 'v') + slack;
  const size_t no = o_off + test_span(&desc, 'o') + slack;
  const size_t nl = l_off + test_span(&desc, 'l') + slack;
  size_t lib_span = 0;
  cr_assert_eq(clattn_attention_tensor_size(&desc, 'o', &lib_span), CLATTN_SUCCESS);
  cr_assert_eq(lib_span, test_span(&desc, 'o'));

  /* Unaddressed input elements hold a large value: reading one would show in the result. */
  const float pad_in = 1000.0f, pad_out = -777.0f;
  float* hq = malloc(nq * sizeof(float));
  float* hk = malloc(nk * sizeof(float));
  float* hv = malloc(nv * sizeof(float));
  float* ho = malloc(no * sizeof(float));
  float* hl = malloc(nl * sizeof(float));
  cr_assert(hq && hk && hv && ho && hl);
  for (size_t i = 0; i < nq; ++i) hq[i] = pad_in;
  for (size_t i = 0; i < nk; ++i) hk[i] = pad_in;
  for (size_t i = 0; i < nv; ++i) hv[i] = pad_in;
  for (size_t i = 0; i < no; ++i) ho[i] = pad_out;
  for (size_t i = 0; i < nl; ++i) hl[i] = pad_out;
  uint64_t state = 2024 + (uint64_t)variant * 2 + (uint64_t)causal;
  fill_rows(hq + q_off, &desc, 'q', &state);
  fill_rows(hk + k_off, &desc, 'k', &state);
  fill_rows(hv + v_off, &desc, 'v', &state);
  const int32_t lengths[2] = {(int32_t)Nkv - 11, (int32_t)Nkv};

  cl_mem mq = make_buffer(cl_ctx, nq * sizeof(float));
  cl_mem mk = make_buffer(cl_ctx, nk * sizeof(float));
  cl_mem mv = make_buffer(cl_ctx, nv * sizeof(float));
  cl_mem mo = make_buffer(cl_ctx, no * sizeof(float));
  cl_mem ml = make_buffer(cl_ctx, nl * sizeof(float));
  cl_mem mlen = make_buffer(cl_ctx, sizeof lengths);

  cl_event waits[7];
  cl_uint nw = 0;
  err = clEnqueueWriteBuffer(queue, mq, CL_FALSE, 0, nq * sizeof(float), hq, 0, NULL, &waits[nw++]);
  err |=
      clEnqueueWriteBuffer(queue, mk, CL_FALSE, 0, nk * sizeof(float), hk, 0, NULL, &waits[nw++]);
  err |=
      clEnqueueWriteBuffer(queue, mv, CL_FALSE, 0, nv * sizeof(float), hv, 0, NULL, &waits[nw++]);
  err |=
      clEnqueueWriteBuffer(queue, mo, CL_FALSE, 0, no * sizeof(float), ho, 0, NULL, &waits[nw++]);
  err |=
      clEnqueueWriteBuffer(queue, ml, CL_FALSE, 0, nl * sizeof(float), hl, 0, NULL, &waits[nw++]);
  err |= clEnqueueWriteBuffer(queue, mlen, CL_FALSE, 0, sizeof lengths, lengths, 0, NULL,
                              &waits[nw++]);
  cr_assert_eq(err, CL_SUCCESS, "clEnqueueWriteBuffer failed");
  cl_event gate = clCreateUserEvent(cl_ctx, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateUserEvent: %d", (int)err);
  waits[nw++] = gate;

  clattn_attention_buffers bufs = CLATTN_ATTENTION_BUFFERS_INIT;
  bufs.q = mq;
  bufs.k = mk;
  bufs.v = mv;
  bufs.o = mo;
  bufs.lse = ml;
  bufs.kv_lengths = mlen;
  bufs.q_offset = q_off;
  bufs.k_offset = k_off;
  bufs.v_offset = v_off;
  bufs.o_offset = o_off;
  bufs.lse_offset = l_off;
  clattn_attention_config config = test_config(variant);
  cl_event done = NULL;
  clattn_status st =
      clattn_attention(ctx, &desc, &bufs, &config, own_queue ? queue : NULL, nw, waits, &done);
  if (st != CLATTN_SUCCESS) clSetUserEventStatus(gate, CL_COMPLETE);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s: clattn_attention returned %s (%s)", label,
               clattn_status_name(st), test_last_error(ctx));
  cr_assert_not_null(done, "%s: no event returned", label);

  /* Still gated by the user event. */
  struct timespec pause = {0, 50 * 1000 * 1000};
  nanosleep(&pause, NULL);
  cl_int exec = CL_COMPLETE;
  err = clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
  cr_assert_eq(err, CL_SUCCESS);
  const int ran_early = exec == CL_COMPLETE || exec == CL_RUNNING;
  cr_assert_eq(clSetUserEventStatus(gate, CL_COMPLETE), CL_SUCCESS);
  cr_assert(!ran_early, "%s: the attention ran before its wait list completed", label);

  cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
  err = clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
  cr_assert(err == CL_SUCCESS && exec == CL_COMPLETE, "%s: event status %d", label, (int)exec);
  err = clEnqueueReadBuffer(queue, mo, CL_TRUE, 0, no * sizeof(float), ho, 0, NULL, NULL);
  err |= clEnqueueReadBuffer(queue, ml, CL_TRUE, 0, nl * sizeof(float), hl, 0, NULL, NULL);
  cr_assert_eq(err, CL_SUCCESS, "clEnqueueReadBuffer failed");

  test_check(&desc, hq + q_off, hk + k_off, hv + v_off, lengths, ho + o_off, hl + l_off, label);

  unsigned char* mask = output_mask(&desc, test_span(&desc, 'o'));
  for (size_t i = 0; i < no; ++i) {
    const int inside = i >= o_off && i - o_off < test_span(&desc, 'o') && mask[i - o_off];
    if (!inside) {
      cr_assert(ho[i] == pad_out, "%s: O buffer element %zu (outside the tensor) was written",
                label, i);
    }
  }
  for (size_t i = 0; i < nl; ++i) {
    if (i < l_off || i - l_off >= test_span(&desc, 'l')) {
      cr_assert(hl[i] == pad_out, "%s: LSE buffer element %zu (outside) was written", label, i);
    }
  }
  free(mask);

  for (cl_uint i = 0; i < nw; ++i) clReleaseEvent(waits[i]);
  clReleaseEvent(done);
  clReleaseMemObject(mq);
  clReleaseMemObject(mk);
  clReleaseMemObject(mv);
  clReleaseMemObject(mo);
  clReleaseMemObject(ml);
  clReleaseMemObject(mlen);
  if (own_queue) clReleaseCommandQueue(queue);
  free(hq);
  free(hk);
  free(hv);
  free(ho);
  free(hl);
  clattn_context_destroy(ctx);
}

Test(attention, cl_mem_offsets_events, .timeout = 120.0) {
  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    for (int causal = 0; causal <= 1; ++causal) run_cl_mem_case(kVariants[v], 0, causal);
  }
}

/* A second in-order queue of the context's cl_context, passed explicitly. */
Test(attention, cl_mem_own_queue, .timeout = 120.0) {
  for (size_t v = 0; v < NUM_VARIANTS; ++v) run_cl_mem_case(kVariants[v], 1, 1);
}

/* ---------------------------------------------------------------- configs */

Test(attention, config_defaults) {
  clattn_context* ctx = test_context(NULL);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  cr_assert_eq(clattn_context_get_device_info(ctx, &info), CLATTN_SUCCESS);
  clattn_attention_desc desc = test_desc(1, 4, 4, 300, 300, 64, 1);

  clattn_attention_config used;
  memset(&used, 0, sizeof used);
  used.struct_size = sizeof used;
  clattn_status st = clattn_attention_get_config(ctx, &desc, NULL, &used);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s (%s)", clattn_status_name(st), test_last_error(ctx));
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_HEURISTIC, "source %d", (int)used.source);
  const clattn_variant expected = info.type == CLATTN_DEVICE_TYPE_GPU
                                      ? CLATTN_VARIANT_TILED_LOCAL
                                      : CLATTN_VARIANT_REGISTER_BLOCKED;
  cr_assert_eq(used.variant, expected, "AUTO resolved to %s on a device of type %d",
               test_variant_name(used.variant), (int)info.type);
  cr_assert_neq(used.block_n, 0u);

  /* A requested config with every field 0 asks for nothing: the header allows reading it as
   * the caller's (USER) or as the default (HEURISTIC). */
  clattn_attention_config auto_req = test_config(CLATTN_VARIANT_AUTO);
  st = clattn_attention_get_config(ctx, &desc, &auto_req, &used);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s", clattn_status_name(st));
  cr_assert_eq(used.variant, expected);
  cr_assert(
      used.source == CLATTN_CONFIG_SOURCE_USER || used.source == CLATTN_CONFIG_SOURCE_HEURISTIC,
      "source %d", (int)used.source);
  /* Any field set makes it the caller's. */
  clattn_attention_config partial = test_config(CLATTN_VARIANT_AUTO);
  partial.block_n = 32;
  st = clattn_attention_get_config(ctx, &desc, &partial, &used);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s (%s)", clattn_status_name(st), test_last_error(ctx));
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_USER, "source %d", (int)used.source);
  cr_assert_eq(used.block_n, 32u);

  for (size_t v = 0; v < NUM_VARIANTS; ++v) {
    clattn_attention_config req = test_config(kVariants[v]);
    st = clattn_attention_get_config(ctx, &desc, &req, &used);
    cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s (%s)", test_variant_name(kVariants[v]),
                 clattn_status_name(st), test_last_error(ctx));
    cr_assert_eq(used.variant, kVariants[v], "asked for %s, got %s",
                 test_variant_name(kVariants[v]), test_variant_name(used.variant));
    cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_USER, "source %d", (int)used.source);
    cr_assert_neq(used.block_n, 0u, "%s: block_n 0", test_variant_name(kVariants[v]));
    cr_assert(used.block_n >= 16 && used.block_n <= 256, "block_n %u", used.block_n);
    if (kVariants[v] == CLATTN_VARIANT_TILED_LOCAL) {
      cr_assert_neq(used.block_m, 0u, "TILED_LOCAL: block_m 0");
      cr_assert(used.block_m <= info.max_work_group_size, "block_m %u > max work-group %zu",
                used.block_m, info.max_work_group_size);
    } else {
      /* REGISTER_BLOCKED: 1..16; SPLIT_KV: 1..64. */
      const unsigned max_rows = kVariants[v] == CLATTN_VARIANT_SPLIT_KV ? 64 : 16;
      cr_assert(used.rows_per_item >= 1 && used.rows_per_item <= max_rows, "rows_per_item %u",
                used.rows_per_item);
    }
  }
  clattn_context_destroy(ctx);
}

/* Explicit tile sizes are honoured and give correct results on tail shapes. Each config
 * needs under 32 KiB of local memory, the least a full-profile OpenCL device has. */
Test(attention, explicit_configs, .timeout = 300.0) {
  static const clattn_attention_config configs[] = {
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_TILED_LOCAL,
       .block_m = 16,
       .block_n = 16,
       .rows_per_item = 0,
       .threads_per_row = 0},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_TILED_LOCAL,
       .block_m = 64,
       .block_n = 64,
       .rows_per_item = 0,
       .threads_per_row = 0},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_TILED_LOCAL,
       .block_m = 32,
       .block_n = 128,
       .rows_per_item = 0,
       .threads_per_row = 0},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_TILED_LOCAL,
       .block_m = 16,
       .block_n = 16,
       .rows_per_item = 0,
       .threads_per_row = 2},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_TILED_LOCAL,
       .block_m = 8,
       .block_n = 32,
       .rows_per_item = 0,
       .threads_per_row = 8},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_TILED_LOCAL,
       .block_m = 8,
       .block_n = 8,
       .rows_per_item = 0,
       .threads_per_row = 32},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_REGISTER_BLOCKED,
       .block_m = 0,
       .block_n = 16,
       .rows_per_item = 1,
       .threads_per_row = 0},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_REGISTER_BLOCKED,
       .block_m = 0,
       .block_n = 32,
       .rows_per_item = 3,
       .threads_per_row = 0},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_REGISTER_BLOCKED,
       .block_m = 0,
       .block_n = 64,
       .rows_per_item = 16,
       .threads_per_row = 0},
      {.struct_size = sizeof(clattn_attention_config),
       .variant = CLATTN_VARIANT_REGISTER_BLOCKED,
       .block_m = 0,
       .block_n = 128,
       .rows_per_item = 4,
       .threads_per_row = 0},
  };
  clattn_context* ctx = test_context(NULL);
  for (size_t c = 0; c < sizeof configs / sizeof configs[0]; ++c) {
    for (int causal = 0; causal <= 1; ++causal) {
      const clattn_attention_config* req = &configs[c];
      clattn_attention_desc desc = test_desc(1, 2, 2, test_len(45), test_len(131), 24, causal);
      char label[256];
      test_label(label, sizeof label, &desc, req->variant);
      clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
      clattn_status st = clattn_attention_get_config(ctx, &desc, req, &used);
      cr_assert_eq(st, CLATTN_SUCCESS, "%s block_m=%u block_n=%u rows=%u: %s (%s)", label,
                   req->block_m, req->block_n, req->rows_per_item, clattn_status_name(st),
                   test_last_error(ctx));
      cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_USER);
      cr_assert_eq(used.variant, req->variant);
      cr_assert_eq(used.block_n, req->block_n, "%s: block_n %u used, %u asked", label, used.block_n,
                   req->block_n);
      if (req->variant == CLATTN_VARIANT_TILED_LOCAL) {
        cr_assert_eq(used.block_m, req->block_m, "%s: block_m %u used, %u asked", label,
                     used.block_m, req->block_m);
        if (req->threads_per_row) {
          cr_assert_eq(used.threads_per_row, req->threads_per_row,
                       "%s: threads_per_row %u used, %u asked", label, used.threads_per_row,
                       req->threads_per_row);
        }
      } else {
        cr_assert_eq(used.rows_per_item, req->rows_per_item, "%s: rows %u used, %u asked", label,
                     used.rows_per_item, req->rows_per_item);
      }
      test_problem p;
      test_problem_init(&p, &desc, 7000 + c * 2 + (uint64_t)causal);
      st = clattn_attention_host(ctx, &desc, p.q, p.k, p.v, p.o, p.lse, NULL, req);
      cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s (%s)", label, clattn_status_name(st),
                   test_last_error(ctx));
      char full[400];
      snprintf(full, sizeof full, "%s block_m=%u block_n=%u rows=%u threads_per_row=%u", label,
               req->block_m, req->block_n, req->rows_per_item, used.threads_per_row);
      test_check(&desc, p.q, p.k, p.v, NULL, p.o, p.lse, full);
      test_problem_free(&p);
    }
  }
  clattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- sizes */

/* clattn_attention_tensor_size agrees with the header's rules (computed here). */
Test(attention, tensor_size) {
  clattn_attention_desc descs[4];
  descs[0] = test_desc(3, 4, 2, 10, 20, 8, 0);
  descs[1] = descs[0];
  descs[1].layout = CLATTN_LAYOUT_BNHD;
  descs[2] = test_desc(2, 6, 0, 5, 7, 33, 1);
  descs[3] = test_desc(2, 2, 1, 5, 9, 16, 0);
  descs[3].q_strides = (clattn_strides){1000, 100, 17};
  descs[3].k_strides = (clattn_strides){500, 16, 32};
  descs[3].v_strides = (clattn_strides){300, 150, 16};
  descs[3].o_strides = (clattn_strides){2000, 200, 20};
  static const char which[] = {'q', 'k', 'v', 'o', 'l'};
  for (size_t d = 0; d < 4; ++d) {
    for (size_t w = 0; w < sizeof which; ++w) {
      size_t got = 0;
      clattn_status st = clattn_attention_tensor_size(&descs[d], which[w], &got);
      cr_assert_eq(st, CLATTN_SUCCESS, "desc %zu '%c': %s", d, which[w], clattn_status_name(st));
      cr_assert_eq(got, test_span(&descs[d], which[w]), "desc %zu '%c': %zu, expected %zu", d,
                   which[w], got, test_span(&descs[d], which[w]));
    }
  }
}
