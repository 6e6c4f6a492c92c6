/* A generation loop over a KV cache: one attention layer with random weights and rotary
 * embeddings, four sequences whose prompts are prefilled one by one, then decode steps of
 * all four together, each step's input being the previous step's output (as a model feeds
 * its next token back). Prints the time of each phase and the cache's use at the end.
 *
 *   build/examples/generate [device selector]    (e.g. "cpu", "0:0"; default: CLATTN_DEVICE) */
#include <clattn/clattn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { SEQS = 4, E = 256, HEADS = 8, HEADS_KV = 2, HEAD_DIM = 32, STEPS = 64 };

#define CHECK(call)                                                                                \
  do {                                                                                             \
    clattn_status st_ = (call);                                                                    \
    if (st_ != CLATTN_SUCCESS) {                                                                   \
      char msg_[1024] = "";                                                                        \
      if (ctx) clattn_context_get_last_error(ctx, msg_, sizeof msg_, NULL);                        \
      fprintf(stderr, "%s:%d: %s: %s\n  %s\n", __FILE__, __LINE__, #call, clattn_status_name(st_), \
              msg_);                                                                               \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

/* n uniform values in [-bound, bound) (xorshift). */
static float* random_floats(size_t n, float bound, uint64_t* s) {
  float* p = malloc(n * sizeof *p);
  for (size_t i = 0; p && i < n; ++i) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    p[i] = bound * (2.0f * (float)(*s >> 40) / (float)(1 << 24) - 1.0f);
  }
  return p;
}

static int by_value(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  clattn_context* ctx = NULL;
  clattn_context_options opt = CLATTN_CONTEXT_OPTIONS_INIT;
  opt.device = argc > 1 ? argv[1] : NULL;
  CHECK(clattn_context_create(&opt, &ctx));
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  CHECK(clattn_context_get_device_info(ctx, &info));
  printf("device: %s\n", info.name);

  /* The layer: GQA (8 query heads over 2 key/value heads of 32), Llama-style rotary. */
  uint64_t seed = 42;
  const size_t qkv = (HEADS + 2 * HEADS_KV) * HEAD_DIM;
  float* w_in = random_floats(qkv * E, 0.0625f, &seed);
  float* w_out = random_floats(E * HEADS * HEAD_DIM, 0.0625f, &seed);
  clattn_mha_desc desc = CLATTN_MHA_DESC_INIT;
  desc.d_model = E;
  desc.heads = HEADS;
  desc.heads_kv = HEADS_KV;
  desc.head_dim = HEAD_DIM;
  desc.rope = CLATTN_ROPE_NEOX;
  clattn_mha_weights weights = CLATTN_MHA_WEIGHTS_INIT;
  weights.in_proj_weight.host = w_in;
  weights.out_proj_weight.host = w_out;
  clattn_mha* mha = NULL;
  CHECK(clattn_mha_create(ctx, &desc, &weights, &mha));
  free(w_in);
  free(w_out);

  /* The cache: room for every prompt and every decoded token of the four sequences. */
  const size_t prompt[SEQS] = {5, 17, 33, 64};
  clattn_kv_cache_desc kd = CLATTN_KV_CACHE_DESC_INIT;
  kd.dtype = CLATTN_DTYPE_F32;
  kd.max_sequences = SEQS;
  kd.heads_kv = HEADS_KV;
  kd.head_dim = HEAD_DIM;
  kd.capacity = SEQS * (64 + STEPS);
  clattn_kv_cache* cache = NULL;
  CHECK(clattn_kv_cache_create(ctx, &kd, &cache));

  /* Prefill: each prompt on its own (batch 1, causal), from host arrays (the first call also
   * builds the kernels). */
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = 1;
  fwd.causal = 1;
  float* y_host = malloc(64 * E * sizeof(float));
  for (int32_t s = 0; s < SEQS; ++s) {
    float* x = random_floats(prompt[s] * E, 1.0f, &seed);
    fwd.seq = prompt[s];
    const double t0 = now_ms();
    CHECK(clattn_mha_forward_cached_host(mha, cache, &fwd, &s, x, y_host));
    printf("prefill sequence %d: %3zu tokens in %7.2f ms\n", (int)s, prompt[s], now_ms() - t0);
    free(x);
  }

  /* Decode: all four sequences one token each per step, on device buffers; y becomes the
   * next step's x (the two buffers swap). */
  cl_context cl_ctx;
  cl_command_queue queue;
  CHECK(clattn_context_get_cl(ctx, &cl_ctx, NULL, &queue));
  const size_t bytes = SEQS * E * sizeof(float);
  float* x0 = random_floats(SEQS * E, 1.0f, &seed);
  cl_int err;
  cl_mem x = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, x0, &err);
  cl_int err2;
  cl_mem y = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err2);
  free(x0);
  if (err != CL_SUCCESS || err2 != CL_SUCCESS) {
    fprintf(stderr, "clCreateBuffer failed: %d, %d\n", err, err2);
    return 1;
  }
  fwd.batch = SEQS;
  fwd.seq = 1;
  double ms[STEPS];
  for (int t = 0; t < STEPS; ++t) {
    clattn_mha_buffers b = CLATTN_MHA_BUFFERS_INIT;
    b.x = x;
    b.y = y;
    const double t0 = now_ms();
    CHECK(clattn_mha_forward_cached(mha, cache, &fwd, NULL, &b, queue, 0, NULL, NULL));
    clFinish(queue);
    ms[t] = now_ms() - t0;
    cl_mem next = y;
    y = x;
    x = next;
  }
  clEnqueueReadBuffer(queue, x, CL_TRUE, 0, bytes, y_host, 0, NULL, NULL);
  qsort(ms, STEPS, sizeof ms[0], by_value);
  printf("decode: %d steps of %d sequences: median %.3f ms, min %.3f, max %.3f\n", STEPS, SEQS,
         ms[STEPS / 2], ms[0], ms[STEPS - 1]);
  printf("last output of sequence 0: %.5f %.5f %.5f ...\n", y_host[0], y_host[1], y_host[2]);

  clattn_kv_cache_usage usage = CLATTN_KV_CACHE_USAGE_INIT;
  CHECK(clattn_kv_cache_get_usage(cache, &usage));
  printf("cache: %zu tokens in %zu of %zu blocks of %zu tokens, %zu of %zu bytes\n",
         usage.tokens_used, usage.blocks_used, usage.blocks_total, usage.block_tokens,
         usage.bytes_used, usage.bytes_total);

  free(y_host);
  clReleaseMemObject(x);
  clReleaseMemObject(y);
  clattn_kv_cache_destroy(cache);
  clattn_mha_destroy(mha);
  clattn_context_destroy(ctx);
  return 0;
}
