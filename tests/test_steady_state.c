/* A steady-state call does its kernels only: once a shape class has run, repeated calls of
 * the core (every variant, the context's workspace or the caller's, several queues) and of
 * the layer create no kernel, build no program, allocate no buffer and query no kernel.
 *
 * The OpenCL entry points that would do so are interposed here: this executable defines
 * them, so the library's calls (and CLBlast's) reach these first, which count the call by
 * the library it came from and forward it to the ICD loader. The counts tell clattn's own
 * calls from CLBlast's: CLBlast's C API creates its cl_kernel from its cached program on
 * every routine call and checks its local memory each time, which clattn cannot change;
 * those are reported, not failed. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>

#include "test_util.h"

enum {
  CREATE_KERNEL,
  CREATE_BUFFER,
  CREATE_SUB_BUFFER,
  BUILD_PROGRAM,
  CREATE_PROGRAM,
  KERNEL_WG_INFO,
  COUNTED
};
static const char* const kCounted[COUNTED] = {"clCreateKernel",       "clCreateBuffer",
                                              "clCreateSubBuffer",    "clBuildProgram",
                                              "clCreateProgramWith*", "clGetKernelWorkGroupInfo"};

/* [call][0]: from clattn (or this test), [call][1]: from CLBlast. */
static atomic_int counts[COUNTED][2];

static void count(int call, const void* caller) {
  Dl_info info;
  int from_clblast = dladdr(caller, &info) && info.dli_fname && strstr(info.dli_fname, "clblast");
  atomic_fetch_add(&counts[call][from_clblast], 1);
}

static void counts_reset(void) {
  for (int i = 0; i < COUNTED; ++i) {
    atomic_store(&counts[i][0], 0);
    atomic_store(&counts[i][1], 0);
  }
}

static void* next_symbol(const char* name) {
  void* f = dlsym(RTLD_NEXT, name);
  if (!f) abort(); /* no OpenCL loader: nothing can run */
  return f;
}

CL_API_ENTRY cl_kernel CL_API_CALL clCreateKernel(cl_program program, const char* name,
                                                  cl_int* err) {
  count(CREATE_KERNEL, __builtin_return_address(0));
  cl_kernel (*f)(cl_program, const char*, cl_int*) = next_symbol("clCreateKernel");
  return f(program, name, err);
}

CL_API_ENTRY cl_mem CL_API_CALL clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size,
                                               void* host, cl_int* err) {
  count(CREATE_BUFFER, __builtin_return_address(0));
  cl_mem (*f)(cl_context, cl_mem_flags, size_t, void*, cl_int*) = next_symbol("clCreateBuffer");
  return f(context, flags, size, host, err);
}

CL_API_ENTRY cl_mem CL_API_CALL clCreateSubBuffer(cl_mem buffer, cl_mem_flags flags,
                                                  cl_buffer_create_type type, const void* info,
                                                  cl_int* err) {
  count(CREATE_SUB_BUFFER, __builtin_return_address(0));
  cl_mem (*f)(cl_mem, cl_mem_flags, cl_buffer_create_type, const void*, cl_int*) =
      next_symbol("clCreateSubBuffer");
  return f(buffer, flags, type, info, err);
}

CL_API_ENTRY cl_int CL_API_CALL clBuildProgram(cl_program program, cl_uint num_devices,
                                               const cl_device_id* devices, const char* options,
                                               void(CL_CALLBACK* notify)(cl_program, void*),
                                               void* user) {
  count(BUILD_PROGRAM, __builtin_return_address(0));
  cl_int (*f)(cl_program, cl_uint, const cl_device_id*, const char*,
              void(CL_CALLBACK*)(cl_program, void*), void*) = next_symbol("clBuildProgram");
  return f(program, num_devices, devices, options, notify, user);
}

CL_API_ENTRY cl_program CL_API_CALL clCreateProgramWithSource(cl_context context, cl_uint count_,
                                                              const char** strings,
                                                              const size_t* lengths, cl_int* err) {
  count(CREATE_PROGRAM, __builtin_return_address(0));
  cl_program (*f)(cl_context, cl_uint, const char**, const size_t*, cl_int*) =
      next_symbol("clCreateProgramWithSource");
  return f(context, count_, strings, lengths, err);
}

CL_API_ENTRY cl_program CL_API_CALL clCreateProgramWithBinary(
    cl_context context, cl_uint num_devices, const cl_device_id* devices, const size_t* lengths,
    const unsigned char** binaries, cl_int* status, cl_int* err) {
  count(CREATE_PROGRAM, __builtin_return_address(0));
  cl_program (*f)(cl_context, cl_uint, const cl_device_id*, const size_t*, const unsigned char**,
                  cl_int*, cl_int*) = next_symbol("clCreateProgramWithBinary");
  return f(context, num_devices, devices, lengths, binaries, status, err);
}

CL_API_ENTRY cl_int CL_API_CALL clGetKernelWorkGroupInfo(cl_kernel kernel, cl_device_id device,
                                                         cl_kernel_work_group_info name,
                                                         size_t size, void* value,
                                                         size_t* size_ret) {
  count(KERNEL_WG_INFO, __builtin_return_address(0));
  cl_int (*f)(cl_kernel, cl_device_id, cl_kernel_work_group_info, size_t, void*, size_t*) =
      next_symbol("clGetKernelWorkGroupInfo");
  return f(kernel, device, name, size, value, size_ret);
}

/* Launches of clattn's kernels without an explicit work-group size: a driver may compile a
 * kernel again for each new global size then (PoCL does, for every new key length). */
static atomic_int launches_without_local;

CL_API_ENTRY cl_int CL_API_CALL clEnqueueNDRangeKernel(cl_command_queue queue, cl_kernel kernel,
                                                       cl_uint dims, const size_t* offset,
                                                       const size_t* global, const size_t* local,
                                                       cl_uint num_wait, const cl_event* wait,
                                                       cl_event* event) {
  Dl_info info;
  const void* caller = __builtin_return_address(0);
  const int from_clblast =
      dladdr(caller, &info) && info.dli_fname && strstr(info.dli_fname, "clblast");
  if (!local && !from_clblast) atomic_fetch_add(&launches_without_local, 1);
  cl_int (*f)(cl_command_queue, cl_kernel, cl_uint, const size_t*, const size_t*, const size_t*,
              cl_uint, const cl_event*, cl_event*) = next_symbol("clEnqueueNDRangeKernel");
  return f(queue, kernel, dims, offset, global, local, num_wait, wait, event);
}

/* Fails on any counted call of clattn's, and on any buffer or program CLBlast made;
 * CLBlast's per-call kernel objects and local-memory checks are only reported. */
static void expect_no_setup(const char* what, int calls) {
  for (int i = 0; i < COUNTED; ++i) {
    const int own = atomic_load(&counts[i][0]), clblast = atomic_load(&counts[i][1]);
    cr_expect_eq(own, 0, "%s: clattn made %d %s calls over %d steady-state calls", what, own,
                 kCounted[i], calls);
    if (i == CREATE_KERNEL || i == KERNEL_WG_INFO) {
      if (clblast)
        cr_log_info("%s: CLBlast made %d %s calls (per routine call)", what, clblast, kCounted[i]);
    } else {
      cr_expect_eq(clblast, 0, "%s: CLBlast made %d %s calls over %d steady-state calls", what,
                   clblast, kCounted[i], calls);
    }
  }
}

static cl_mem device_buffer(clattn_context* ctx, size_t bytes, const void* host) {
  cl_context cl_ctx = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem m =
      clCreateBuffer(cl_ctx, host ? CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE,
                     bytes, (void*)host, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateBuffer: %d", err);
  return m;
}

typedef struct core_bufs {
  test_problem p;
  int32_t lengths[2];
  cl_mem q, k, v, o, lse, kv_lengths;
} core_bufs;

static void core_bufs_init(core_bufs* c, clattn_context* ctx, const clattn_attention_desc* d) {
  test_problem_init(&c->p, d, 7);
  c->q = device_buffer(ctx, c->p.nq * sizeof(float), c->p.q);
  c->k = device_buffer(ctx, c->p.nk * sizeof(float), c->p.k);
  c->v = device_buffer(ctx, c->p.nv * sizeof(float), c->p.v);
  c->o = device_buffer(ctx, c->p.no * sizeof(float), NULL);
  c->lse = device_buffer(ctx, c->p.nl * sizeof(float), NULL);
  c->lengths[0] = (int32_t)d->seq_kv;
  c->lengths[1] = (int32_t)(d->seq_kv / 2);
  c->kv_lengths = device_buffer(ctx, sizeof c->lengths, c->lengths);
}

static void core_bufs_free(core_bufs* c) {
  cl_mem m[6] = {c->q, c->k, c->v, c->o, c->lse, c->kv_lengths};
  for (int i = 0; i < 6; ++i) clReleaseMemObject(m[i]);
  test_problem_free(&c->p);
}

/* Runs one call and waits for it. */
static void core_call(clattn_context* ctx, const clattn_attention_desc* d, core_bufs* c,
                      const clattn_attention_config* config, cl_command_queue queue,
                      cl_mem workspace) {
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = c->q;
  b.k = c->k;
  b.v = c->v;
  b.o = c->o;
  b.lse = c->lse;
  b.kv_lengths = c->kv_lengths;
  b.workspace = workspace;
  cl_event done = NULL;
  const clattn_status st = clattn_attention(ctx, d, &b, config, queue, 0, NULL, &done);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_attention: %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
  clReleaseEvent(done);
}

/* Reads O and LSE back and checks them against the reference. */
static void core_check(core_bufs* c, cl_command_queue queue, const char* label) {
  cr_assert_eq(
      clEnqueueReadBuffer(queue, c->o, CL_TRUE, 0, c->p.no * sizeof(float), c->p.o, 0, NULL, NULL),
      CL_SUCCESS);
  cr_assert_eq(clEnqueueReadBuffer(queue, c->lse, CL_TRUE, 0, c->p.nl * sizeof(float), c->p.lse, 0,
                                   NULL, NULL),
               CL_SUCCESS);
  test_check(&c->p.desc, c->p.q, c->p.k, c->p.v, c->lengths, c->p.o, c->p.lse, label);
}

#define REPEATS 4

/* Every variant: the first call makes the plan, the next ones only enqueue, on the
 * context's workspace, on two queues taking turns, and with the caller's workspace. */
Test(steady_state, core_calls_create_nothing) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  cl_command_queue own = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, &device, &own), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_command_queue other = clCreateCommandQueue(cl_ctx, device, 0, &err);
  cr_assert_eq(err, CL_SUCCESS);
  const clattn_variant variants[] = {CLATTN_VARIANT_AUTO, CLATTN_VARIANT_TILED_LOCAL,
                                     CLATTN_VARIANT_REGISTER_BLOCKED, CLATTN_VARIANT_SPLIT_KV,
                                     CLATTN_VARIANT_AUTO};
  for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; ++vi) {
    const clattn_attention_config config = test_config(variants[vi]);
    clattn_attention_desc d = test_desc(2, 4, 2, test_len(77), test_len(130), 32, 1);
    /* The last two: a decode shape (SPLIT_KV by default, its keys split and merged). */
    if (vi >= 3) d = test_desc(2, 4, 2, 1, test_len(1300), 32, 1);
    core_bufs c;
    core_bufs_init(&c, ctx, &d);
    size_t ws_bytes = 0;
    cr_assert_eq(clattn_attention_workspace_size(ctx, &d, &config, &ws_bytes), CLATTN_SUCCESS);
    cl_mem ws = device_buffer(ctx, ws_bytes ? ws_bytes : 16, NULL);
    core_call(ctx, &d, &c, &config, NULL, NULL); /* makes the plan and the workspace */

    char label[128];
    snprintf(label, sizeof label, "%s, one queue", clattn_variant_name(variants[vi]));
    counts_reset();
    for (int r = 0; r < REPEATS; ++r) core_call(ctx, &d, &c, &config, NULL, NULL);
    expect_no_setup(label, REPEATS);
    core_check(&c, own, label);

    snprintf(label, sizeof label, "%s, two queues", clattn_variant_name(variants[vi]));
    counts_reset();
    for (int r = 0; r < REPEATS; ++r) core_call(ctx, &d, &c, &config, r % 2 ? other : own, NULL);
    expect_no_setup(label, REPEATS);
    core_check(&c, own, label);

    /* A shorter call of the same class (its longer length in the same power-of-two bucket)
     * fits the plan and the workspace it already has. */
    clattn_attention_desc shorter = d;
    shorter.seq_kv = d.seq_kv - 1;
    snprintf(label, sizeof label, "%s, shorter keys", clattn_variant_name(variants[vi]));
    counts_reset();
    core_call(ctx, &shorter, &c, &config, NULL, NULL);
    expect_no_setup(label, 1);

    snprintf(label, sizeof label, "%s, caller's workspace", clattn_variant_name(variants[vi]));
    counts_reset();
    for (int r = 0; r < REPEATS; ++r) core_call(ctx, &d, &c, &config, NULL, ws);
    expect_no_setup(label, REPEATS);
    core_check(&c, own, label);
    clReleaseMemObject(ws);
    core_bufs_free(&c);
  }
  cr_expect_eq(atomic_load(&launches_without_local), 0,
               "%d of clattn's kernel launches left the work-group size to the driver",
               atomic_load(&launches_without_local));
  clReleaseCommandQueue(other);
  clattn_context_destroy(ctx);
}

/* The probabilities (attention maps): after the first call of a head dim, calls of any block,
 * on either queue, create, build, allocate and query nothing. */
Test(steady_state, probs_calls_create_nothing) {
  clattn_context* ctx = test_context(NULL);
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  cl_command_queue own = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, &device, &own), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_command_queue other = clCreateCommandQueue(cl_ctx, device, 0, &err);
  cr_assert_eq(err, CL_SUCCESS);
  const clattn_attention_desc d = test_desc(2, 4, 2, test_len(77), test_len(130), 32, 1);
  core_bufs c;
  core_bufs_init(&c, ctx, &d);
  core_call(ctx, &d, &c, NULL, NULL, NULL); /* the LSE */
  const size_t whole = d.batch * d.heads_q * d.seq_q * d.seq_kv;
  cl_mem p = device_buffer(ctx, whole * sizeof(float), NULL);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = c.q;
  b.k = c.k;
  b.lse = c.lse;
  b.kv_lengths = c.kv_lengths;
  clattn_probs_block blocks[3] = {CLATTN_PROBS_BLOCK_INIT, CLATTN_PROBS_BLOCK_INIT,
                                  CLATTN_PROBS_BLOCK_INIT};
  blocks[1].row_begin = d.seq_q - 1; /* the last row */
  blocks[1].rows = 1;
  blocks[2].head_begin = 1; /* one column of one head */
  blocks[2].heads = 1;
  blocks[2].col_begin = 5;
  blocks[2].cols = 1;
  for (int r = 0; r <= 3 * REPEATS; ++r) {
    if (r == 1) counts_reset(); /* the first call makes the kernel */
    cl_event done = NULL;
    const clattn_status st = clattn_attention_probs(ctx, &d, &b, &blocks[r % 3], p, 0,
                                                    r % 2 ? other : NULL, 0, NULL, &done);
    cr_assert_eq(st, CLATTN_SUCCESS, "probs: %s (%s)", clattn_status_name(st),
                 test_last_error(ctx));
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
  }
  expect_no_setup("probabilities", 3 * REPEATS);
  cr_expect_eq(atomic_load(&launches_without_local), 0,
               "%d of clattn's kernel launches left the work-group size to the driver",
               atomic_load(&launches_without_local));
  clReleaseMemObject(p);
  core_bufs_free(&c);
  clReleaseCommandQueue(other);
  clattn_context_destroy(ctx);
}

/* A workspace smaller than clattn_attention_workspace_size is refused, not overrun. */
Test(steady_state, small_caller_workspace_is_rejected) {
  clattn_context* ctx = test_context(NULL);
  const clattn_attention_config config = test_config(CLATTN_VARIANT_REGISTER_BLOCKED);
  clattn_attention_desc d = test_desc(1, 2, 2, 40, 70, 16, 0);
  core_bufs c;
  core_bufs_init(&c, ctx, &d);
  size_t ws_bytes = 0;
  cr_assert_eq(clattn_attention_workspace_size(ctx, &d, &config, &ws_bytes), CLATTN_SUCCESS);
  cr_assert_gt(ws_bytes, 16u);
  cl_mem ws = device_buffer(ctx, ws_bytes - 16, NULL);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = c.q;
  b.k = c.k;
  b.v = c.v;
  b.o = c.o;
  b.workspace = ws;
  clattn_status st = clattn_attention(ctx, &d, &b, &config, NULL, 0, NULL, NULL);
  cr_expect_eq(st, CLATTN_ERROR_BUFFER_TOO_SMALL, "got %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  b.workspace_offset = 4; /* not a multiple of 16 */
  st = clattn_attention(ctx, &d, &b, &config, NULL, 0, NULL, NULL);
  cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "got %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  clReleaseMemObject(ws);
  core_bufs_free(&c);
  clattn_context_destroy(ctx);
}

/* The layer at the README's shape class (narrower, so that the suite stays short): after
 * the first forward, forwards create nothing of clattn's and allocate nothing at all; with
 * attention weights too. */
Test(steady_state, layer_forwards_create_nothing) {
  clattn_context* ctx = test_context(NULL);
  const size_t e = 128, heads = 4, seq = test_len(128);
  clattn_mha_desc md = CLATTN_MHA_DESC_INIT;
  md.d_model = e;
  md.heads = heads;
  float* w_in = malloc(3 * e * e * sizeof(float));
  float* b_in = malloc(3 * e * sizeof(float));
  float* w_out = malloc(e * e * sizeof(float));
  float* b_out = malloc(e * sizeof(float));
  float* x = malloc(seq * e * sizeof(float));
  cr_assert(w_in && b_in && w_out && b_out && x);
  uint64_t state = 3;
  clattn_ref_fill_uniform(w_in, 3 * e * e, -0.1f, 0.1f, &state);
  clattn_ref_fill_uniform(b_in, 3 * e, -0.1f, 0.1f, &state);
  clattn_ref_fill_uniform(w_out, e * e, -0.1f, 0.1f, &state);
  clattn_ref_fill_uniform(b_out, e, -0.1f, 0.1f, &state);
  clattn_ref_fill_uniform(x, seq * e, -1.0f, 1.0f, &state);
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = w_in;
  w.in_proj_bias.host = b_in;
  w.out_proj_weight.host = w_out;
  w.out_proj_bias.host = b_out;
  clattn_mha* mha = NULL;
  cr_assert_eq(clattn_mha_create(ctx, &md, &w, &mha), CLATTN_SUCCESS, "%s", test_last_error(ctx));
  cl_mem xb = device_buffer(ctx, seq * e * sizeof(float), x);
  cl_mem yb = device_buffer(ctx, seq * e * sizeof(float), NULL);
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = 1;
  fwd.seq = seq;
  clattn_mha_buffers mb = CLATTN_MHA_BUFFERS_INIT;
  mb.x = xb;
  mb.y = yb;
  for (int r = 0; r <= REPEATS; ++r) {
    if (r == 1) counts_reset(); /* the first forward sets everything up */
    cl_event done = NULL;
    const clattn_status st = clattn_mha_forward(mha, &fwd, &mb, NULL, 0, NULL, &done);
    cr_assert_eq(st, CLATTN_SUCCESS, "forward: %s (%s)", clattn_status_name(st),
                 test_last_error(ctx));
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
  }
  expect_no_setup("layer forward", REPEATS);
  /* With attention weights, per head and their mean: the first such forward makes the
   * probabilities' kernels and the LSE's workspace, the next ones nothing. */
  cl_mem wb = device_buffer(ctx, (heads + 1) * seq * seq * sizeof(float), NULL);
  mb.attn_weights = wb;
  mb.attn_weights_mean = wb;
  mb.attn_weights_mean_offset = heads * seq * seq;
  for (int r = 0; r <= REPEATS; ++r) {
    if (r == 1) counts_reset();
    cl_event done = NULL;
    const clattn_status st = clattn_mha_forward(mha, &fwd, &mb, NULL, 0, NULL, &done);
    cr_assert_eq(st, CLATTN_SUCCESS, "forward with weights: %s (%s)", clattn_status_name(st),
                 test_last_error(ctx));
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
  }
  expect_no_setup("layer forward with attention weights", REPEATS);
  clReleaseMemObject(wb);
  clReleaseMemObject(xb);
  clReleaseMemObject(yb);
  clattn_mha_destroy(mha);
  free(w_in);
  free(b_in);
  free(w_out);
  free(b_out);
  free(x);
  clattn_context_destroy(ctx);
}

/* A decode loop over a KV cache (append one token per sequence, attend with one query row, take
 * its attention map): after its first step, steps create no kernel, build no program and
 * allocate no buffer, across block boundaries and growing lengths (within one power-of-two
 * length class, as plans are keyed). */
Test(steady_state, decode_steps_create_nothing) {
  clattn_context* ctx = test_context(NULL);
  const size_t count = 2, hk = 2, hq = 4, dim = 32, prompt = 70, steps = 40;
  clattn_kv_cache_desc cd = CLATTN_KV_CACHE_DESC_INIT;
  cd.max_sequences = 4;
  cd.heads_kv = hk;
  cd.head_dim = dim;
  cd.capacity = 512;
  cd.block_tokens = 16;
  clattn_kv_cache* cache = NULL;
  cr_assert_eq(clattn_kv_cache_create(ctx, &cd, &cache), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  const size_t n_prompt = count * hk * prompt * dim;
  float* kv = malloc(n_prompt * sizeof(float));
  float* q = malloc(count * hq * dim * sizeof(float));
  cr_assert(kv && q);
  uint64_t state = 11;
  clattn_ref_fill_uniform(kv, n_prompt, -1.0f, 1.0f, &state);
  clattn_ref_fill_uniform(q, count * hq * dim, -1.0f, 1.0f, &state);
  cl_mem kp = device_buffer(ctx, n_prompt * sizeof(float), kv);
  cl_mem kt = device_buffer(ctx, count * hk * dim * sizeof(float), kv);
  cl_mem qb = device_buffer(ctx, count * hq * dim * sizeof(float), q);
  cl_mem ob = device_buffer(ctx, count * hq * dim * sizeof(float), NULL);
  cl_mem lb = device_buffer(ctx, count * hq * sizeof(float), NULL);
  cl_mem pb = device_buffer(ctx, count * hq * (prompt + steps + 1) * sizeof(float), NULL);
  const int32_t ids[2] = {3, 1};
  clattn_kv_append_desc ad = CLATTN_KV_APPEND_DESC_INIT;
  ad.count = count;
  ad.seq_ids = ids;
  ad.tokens = prompt;
  cr_assert_eq(clattn_kv_cache_append(cache, &ad, kp, 0, kp, 0, NULL, 0, NULL, NULL),
               CLATTN_SUCCESS, "%s", test_last_error(ctx));
  ad.tokens = 1;
  clattn_attention_desc d = test_desc(count, hq, hk, 1, 0, dim, 1);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = qb;
  b.o = ob;
  b.lse = lb;
  for (size_t r = 0; r <= steps; ++r) {
    if (r == 1) counts_reset(); /* the first step makes the plan and the workspace */
    clattn_status st = clattn_kv_cache_append(cache, &ad, kt, 0, kt, 0, NULL, 0, NULL, NULL);
    cr_assert_eq(st, CLATTN_SUCCESS, "step %zu append: %s (%s)", r, clattn_status_name(st),
                 test_last_error(ctx));
    cl_event done = NULL;
    st = clattn_attention_cached(cache, &d, ids, &b, NULL, NULL, 0, NULL, &done);
    cr_assert_eq(st, CLATTN_SUCCESS, "step %zu attention: %s (%s)", r, clattn_status_name(st),
                 test_last_error(ctx));
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
    /* The step's attention map: every head's probabilities over the whole cache. */
    st = clattn_attention_probs_cached(cache, &d, ids, &b, NULL, pb, 0, NULL, 0, NULL, &done);
    cr_assert_eq(st, CLATTN_SUCCESS, "step %zu probabilities: %s (%s)", r, clattn_status_name(st),
                 test_last_error(ctx));
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
  }
  expect_no_setup("decode steps (attention and probabilities)", (int)steps);
  size_t len = 0;
  cr_assert_eq(clattn_kv_cache_seq_length(cache, 3, &len), CLATTN_SUCCESS);
  cr_expect_eq(len, prompt + steps + 1);
  cr_expect_eq(atomic_load(&launches_without_local), 0,
               "%d of clattn's kernel launches left the work-group size to the driver",
               atomic_load(&launches_without_local));
  cl_mem mems[6] = {kp, kt, qb, ob, lb, pb};
  for (int i = 0; i < 6; ++i) clReleaseMemObject(mems[i]);
  free(kv);
  free(q);
  clattn_kv_cache_destroy(cache);
  clattn_context_destroy(ctx);
}
