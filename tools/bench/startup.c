/* --startup: context creation plus the first attention call in fresh processes, once with
 * an empty PoCL kernel cache (cold) and once with the cache that run filled (warm). */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

static int remove_entry(const char* path, const struct stat* sb, int flag, struct FTW* ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* In a fresh process (--startup-child): context creation, then the first clattn_attention +
 * clFinish on device buffers. Prints "context_ms first_call_ms". */
int bench_startup_child(const bench_options* o, const clattn_attention_desc* desc) {
  double t0 = clattn_tool_now_ms();
  clattn_context* ctx = NULL;
  clattn_context_options copt = CLATTN_CONTEXT_OPTIONS_INIT;
  copt.device = o->device;
  clattn_status st = clattn_context_create(&copt, &ctx);
  double t1 = clattn_tool_now_ms();
  if (st != CLATTN_SUCCESS) {
    fprintf(stderr, "clattn-bench: clattn_context_create failed: %s\n", clattn_status_name(st));
    return 1;
  }
  cl_context cl_ctx = NULL;
  cl_command_queue queue = NULL;
  clattn_context_get_cl(ctx, &cl_ctx, NULL, &queue);
  size_t n[4] = {0, 0, 0, 0};
  const char which[4] = {'q', 'k', 'v', 'o'};
  cl_mem mem[4] = {NULL, NULL, NULL, NULL};
  int rc = 1;
  for (int i = 0; i < 4; ++i) {
    clattn_attention_tensor_size(desc, which[i], &n[i]);
    cl_int e = CL_SUCCESS;
    mem[i] = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, n[i] * sizeof(float), NULL, &e);
    float zero = 0.0f;
    if (e == CL_SUCCESS) {
      e = clEnqueueFillBuffer(queue, mem[i], &zero, sizeof zero, 0, n[i] * sizeof(float), 0, NULL,
                              NULL);
    }
    if (e != CL_SUCCESS) goto cleanup;
  }
  if (clFinish(queue) != CL_SUCCESS) goto cleanup;
  clattn_attention_buffers bufs = CLATTN_ATTENTION_BUFFERS_INIT;
  bufs.q = mem[0];
  bufs.k = mem[1];
  bufs.v = mem[2];
  bufs.o = mem[3];
  double t2 = clattn_tool_now_ms();
  st = clattn_attention(ctx, desc, &bufs, NULL, NULL, 0, NULL, NULL);
  if (st != CLATTN_SUCCESS || clFinish(queue) != CL_SUCCESS) {
    fprintf(stderr, "clattn-bench: the first clattn_attention failed: %s\n",
            clattn_status_name(st));
    goto cleanup;
  }
  double t3 = clattn_tool_now_ms();
  printf("%.3f %.3f\n", t1 - t0, t3 - t2);
  rc = 0;
cleanup:
  for (int i = 0; i < 4; ++i) {
    if (mem[i]) clReleaseMemObject(mem[i]);
  }
  clattn_context_destroy(ctx);
  return rc;
}

/* Runs this program again with --startup-child and POCL_CACHE_DIR=cache_dir; fills the
 * child's two figures and the whole process's wall time. */
static int run_child(char** child_argv, const char* cache_dir, double* ctx_ms, double* first_ms,
                     double* process_ms) {
  int fd[2];
  if (pipe(fd) != 0) return -1;
  double t0 = clattn_tool_now_ms();
  pid_t pid = fork();
  if (pid < 0) {
    close(fd[0]);
    close(fd[1]);
    return -1;
  }
  if (pid == 0) {
    dup2(fd[1], STDOUT_FILENO);
    close(fd[0]);
    close(fd[1]);
    setenv("POCL_CACHE_DIR", cache_dir, 1);
    execv("/proc/self/exe", child_argv);
    _exit(127);
  }
  close(fd[1]);
  char buf[256];
  size_t len = 0;
  ssize_t got;
  while (len < sizeof buf - 1 && (got = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0) {
    len += (size_t)got;
  }
  buf[len] = '\0';
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  *process_ms = clattn_tool_now_ms() - t0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  if (sscanf(buf, "%lf %lf", ctx_ms, first_ms) != 2) return -1;
  return 0;
}

int bench_run_startup(const bench_options* o, const clattn_attention_desc* d, int argc,
                      char** argv) {
  /* The child gets the same arguments with --startup replaced. */
  char** child_argv = calloc((size_t)argc + 1, sizeof *child_argv);
  if (!child_argv) return 1;
  for (int i = 0; i < argc; ++i) {
    child_argv[i] = strcmp(argv[i], "--startup") == 0 ? "--startup-child" : argv[i];
  }
  char dir[] = "/tmp/clattn-bench-cache-XXXXXX";
  if (!mkdtemp(dir)) {
    fprintf(stderr, "clattn-bench: mkdtemp failed: %s\n", strerror(errno));
    free(child_argv);
    return 1;
  }
  double c[2] = {0, 0}, f[2] = {0, 0}, p[2] = {0, 0};
  int rc = 0;
  for (int pass = 0; pass < 2 && rc == 0; ++pass) {
    if (run_child(child_argv, dir, &c[pass], &f[pass], &p[pass]) != 0) {
      fprintf(stderr, "clattn-bench: the %s start-up run failed\n", pass ? "warm" : "cold");
      rc = 1;
    }
  }
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(child_argv);
  if (rc) return rc;
  const char* names[2] = {"cold", "warm"};
  if (o->json) {
    printf(
        "{\"startup\":{\"shape\":{\"batch\":%zu,\"heads_q\":%zu,\"heads_kv\":%zu,\"seq_q\":%zu,"
        "\"seq_kv\":%zu,\"head_dim\":%zu,\"causal\":%s},\"cache\":\"POCL_CACHE_DIR, empty "
        "for cold\"",
        d->batch, d->heads_q, bench_heads_kv(d), d->seq_q, d->seq_kv, d->head_dim,
        d->causal ? "true" : "false");
    for (int i = 0; i < 2; ++i) {
      printf(
          ",\"%s\":{\"context_ms\":%.3f,\"first_call_ms\":%.3f,\"total_ms\":%.3f,"
          "\"process_ms\":%.3f}",
          names[i], c[i], f[i], c[i] + f[i], p[i]);
    }
    printf("}}\n");
  } else {
    printf("start-up: context creation + first clattn_attention (+ clFinish), fresh processes\n");
    printf("%-5s %12s %15s %10s %12s\n", "cache", "context ms", "first call ms", "total ms",
           "process ms");
    for (int i = 0; i < 2; ++i) {
      printf("%-5s %12.1f %15.1f %10.1f %12.1f\n", names[i], c[i], f[i], c[i] + f[i], p[i]);
    }
    printf(
        "cold: POCL_CACHE_DIR set to a new empty directory; warm: the same directory again.\n"
        "process ms: fork to exit, including loading libraries and tearing down.\n");
  }
  return 0;
}
