/* One context shared by several threads at once: each of 8 threads runs attention on its
 * own shapes (every thread's different; head dims and variants shared, so that the first
 * builds of the same program race), on its own in-order queue through the cl_mem entry
 * point; a second test puts half of the threads on the blocking host form, which shares the
 * context's queue. Every result is checked against the reference afterwards, on the main
 * thread, and each program must have been built once (the cache's build counter, an
 * internal hook: this suite links the static library). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"
#include "internal.h"
#include "test_util.h"

#define NUM_THREADS 8
#define RUNS_PER_THREAD 3

typedef struct thread_job {
  clattn_context* ctx;
  int index;
  int host_form; /* 1: clattn_attention_host on the context's queue */
  clattn_attention_desc desc[RUNS_PER_THREAD];
  clattn_variant variant[RUNS_PER_THREAD];
  test_problem problem[RUNS_PER_THREAD];
  clattn_status status[RUNS_PER_THREAD];
  cl_int cl_status[RUNS_PER_THREAD];
} thread_job;

/* The cl_mem path on the thread's own queue; returns an OpenCL error, or CL_SUCCESS with
 * *status set to clattn's. */
static cl_int run_on_own_queue(thread_job* job, int r, cl_command_queue queue) {
  cl_context cl_ctx = NULL;
  clattn_context_get_cl(job->ctx, &cl_ctx, NULL, NULL);
  test_problem* p = &job->problem[r];
  cl_int err = CL_SUCCESS;
  cl_mem bq =
      clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, p->nq * 4, p->q, &err);
  cl_mem bk =
      clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, p->nk * 4, p->k, &err);
  cl_mem bv =
      clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, p->nv * 4, p->v, &err);
  cl_mem bo = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, p->no * 4, NULL, &err);
  cl_mem bl = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, p->nl * 4, NULL, &err);
  if (bq && bk && bv && bo && bl) {
    clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
    b.q = bq;
    b.k = bk;
    b.v = bv;
    b.o = bo;
    b.lse = bl;
    const clattn_attention_config config = test_config(job->variant[r]);
    job->status[r] = clattn_attention(job->ctx, &job->desc[r], &b, &config, queue, 0, NULL, NULL);
    if (job->status[r] == CLATTN_SUCCESS) {
      err = clEnqueueReadBuffer(queue, bo, CL_FALSE, 0, p->no * 4, p->o, 0, NULL, NULL);
      if (err == CL_SUCCESS) {
        err = clEnqueueReadBuffer(queue, bl, CL_TRUE, 0, p->nl * 4, p->lse, 0, NULL, NULL);
      }
    }
  }
  cl_mem mems[5] = {bq, bk, bv, bo, bl};
  for (int i = 0; i < 5; ++i) {
    if (mems[i]) clReleaseMemObject(mems[i]);
  }
  return err;
}

static void* thread_main(void* arg) {
  thread_job* job = arg;
  cl_context cl_ctx = NULL;
  cl_device_id device = NULL;
  clattn_context_get_cl(job->ctx, &cl_ctx, &device, NULL);
  cl_int err = CL_SUCCESS;
  cl_command_queue queue = clCreateCommandQueue(cl_ctx, device, 0, &err);
  for (int r = 0; r < RUNS_PER_THREAD; ++r) {
    test_problem* p = &job->problem[r];
    if (!job->host_form) {
      job->cl_status[r] = queue ? run_on_own_queue(job, r, queue) : err;
    } else {
      const clattn_attention_config config = test_config(job->variant[r]);
      job->status[r] = clattn_attention_host(job->ctx, &job->desc[r], p->q, p->k, p->v, p->o,
                                             p->lse, NULL, &config);
    }
  }
  if (queue) clReleaseCommandQueue(queue);
  return NULL;
}

/* Number of distinct (kernel file, build options) pairs the jobs need: the programs a
 * context must build, each once. */
static size_t distinct_programs(clattn_context* ctx, thread_job* jobs) {
  char keys[NUM_THREADS * RUNS_PER_THREAD][320];
  size_t n = 0;
  for (int t = 0; t < NUM_THREADS; ++t) {
    for (int r = 0; r < RUNS_PER_THREAD; ++r) {
      clattn__attention_shape sh;
      cr_assert_eq(clattn__attention_shape_resolve(ctx, &jobs[t].desc[r], &sh), CLATTN_SUCCESS);
      const clattn_attention_config requested = test_config(jobs[t].variant[r]);
      clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
      cr_assert_eq(clattn_attention_get_config(ctx, &jobs[t].desc[r], &requested, &used),
                   CLATTN_SUCCESS);
      char options[256], key[320];
      const clattn__variant* v = clattn__variant_find(used.variant);
      cr_assert_not_null(v);
      v->build_options(&sh, &used, options, sizeof options);
      snprintf(key, sizeof key, "%s %s", v->source, options);
      size_t i = 0;
      while (i < n && strcmp(keys[i], key) != 0) ++i;
      if (i == n) snprintf(keys[n++], sizeof keys[0], "%s", key);
    }
  }
  return n;
}

static void run_threads(int host_form_on_odd_threads) {
  clattn_context* ctx = test_context(NULL);
  clattn_device_info info = {.struct_size = sizeof info};
  cr_assert_eq(clattn_context_get_device_info(ctx, &info), CLATTN_SUCCESS);
  if (strstr(info.platform_name, "Oclgrind") != NULL) {
    clattn_context_destroy(ctx);
    /* Its simulator runs one kernel per process at a time and asserts otherwise. */
    cr_skip_test("Oclgrind cannot run kernels from several threads at once");
  }
  cr_assert_eq(clattn__program_build_count(ctx), 0u, "a fresh context has built programs");
  static thread_job jobs[NUM_THREADS];
  memset(jobs, 0, sizeof jobs);
  static const size_t head_dims[] = {16, 64, 40};
  for (int t = 0; t < NUM_THREADS; ++t) {
    jobs[t].ctx = ctx;
    jobs[t].index = t;
    jobs[t].host_form = host_form_on_odd_threads && t % 2 == 1;
    for (int r = 0; r < RUNS_PER_THREAD; ++r) {
      /* Every (thread, run) has its own lengths; batch, grouping and mask vary too. */
      const int shape = t * RUNS_PER_THREAD + r;
      jobs[t].desc[r] = test_desc(1 + shape % 2, 4, shape % 3 == 0 ? 1 : 2, 17 + 5 * shape,
                                  29 + 3 * shape, head_dims[r], shape % 2);
      jobs[t].variant[r] =
          (t + r) % 2 ? CLATTN_VARIANT_TILED_LOCAL : CLATTN_VARIANT_REGISTER_BLOCKED;
      test_problem_init(&jobs[t].problem[r], &jobs[t].desc[r], 1000u * t + r);
    }
  }
  pthread_t threads[NUM_THREADS];
  for (int t = 0; t < NUM_THREADS; ++t) {
    cr_assert_eq(pthread_create(&threads[t], NULL, thread_main, &jobs[t]), 0);
  }
  for (int t = 0; t < NUM_THREADS; ++t) pthread_join(threads[t], NULL);

  for (int t = 0; t < NUM_THREADS; ++t) {
    for (int r = 0; r < RUNS_PER_THREAD; ++r) {
      char label[300];
      char shape[256];
      test_label(shape, sizeof shape, &jobs[t].desc[r], jobs[t].variant[r]);
      snprintf(label, sizeof label, "thread %d run %d (%s): %s", t, r,
               jobs[t].host_form ? "host form" : "own queue", shape);
      cr_assert_eq(jobs[t].cl_status[r], CL_SUCCESS, "%s: OpenCL error %d", label,
                   (int)jobs[t].cl_status[r]);
      cr_assert_eq(jobs[t].status[r], CLATTN_SUCCESS, "%s: %s", label,
                   clattn_status_name(jobs[t].status[r]));
      const test_problem* p = &jobs[t].problem[r];
      test_check(&jobs[t].desc[r], p->q, p->k, p->v, NULL, p->o, p->lse, label);
      test_problem_free(&jobs[t].problem[r]);
    }
  }
  /* Each program once: as many builds as distinct programs, however the threads raced. */
  const size_t builds = clattn__program_build_count(ctx);
  const size_t programs = distinct_programs(ctx, jobs);
  cr_assert_gt(programs, 1u, "the jobs need only %zu program", programs);
  cr_assert_lt(programs, (size_t)(NUM_THREADS * RUNS_PER_THREAD), "no two jobs share a program");
  cr_assert_eq(builds, programs, "%zu program builds for %zu distinct programs", builds, programs);
  cr_assert_eq(clattn__program_build_count(ctx), builds, "resolving the configs built again");
  clattn_context_destroy(ctx);
}

Test(threads, own_queues, .timeout = 600.0) { run_threads(0); }

Test(threads, own_queues_and_host_form, .timeout = 600.0) { run_threads(1); }
