/* The tuning file and the tuner: round trip, damaged files ignored safely, concurrent
 * writers, a writer's leftovers, unwritable directories, older variant spellings, unknown
 * dtypes, entries beyond the device's limits, and a short tuning run whose result a new
 * context uses. (tests/test_tuning_lookup.c checks the lookup from inside.) */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clattn/clattn_tuning.h"
#include "test_util.h"

/* A fresh directory per test and the tuning file path inside it. */
static void temp_file(char* dir, size_t dir_size, char* path, size_t path_size) {
  snprintf(dir, dir_size, "%s/clattn-tuning-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
  snprintf(path, path_size, "%s/tuning.json", dir);
}

static void remove_tree(const char* dir) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static void write_bytes(const char* path, const void* data, size_t n) {
  FILE* f = fopen(path, "wb");
  cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
  cr_assert_eq(fwrite(data, 1, n, f), n);
  fclose(f);
}

static char* read_all(const char* path, size_t* n) {
  FILE* f = fopen(path, "rb");
  cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* buf = malloc((size_t)size + 1);
  cr_assert_not_null(buf);
  cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
  buf[size] = '\0';
  fclose(f);
  *n = (size_t)size;
  return buf;
}

/* An attention entry for a made-up device; head_dim and causal make the slot. */
static clattn_tuning_entry fake_entry(size_t head_dim, int causal) {
  clattn_tuning_entry e = CLATTN_TUNING_ENTRY_INIT;
  e.kind = CLATTN_TUNING_ATTENTION;
  snprintf(e.vendor, sizeof e.vendor, "example");
  snprintf(e.device, sizeof e.device, "Example \"Device\" 9000");
  snprintf(e.driver, sizeof e.driver, "1.2.3");
  e.compute_units = 64;
  e.local_mem_size = 65536;
  snprintf(e.kernel, sizeof e.kernel, "attention_tiled");
  snprintf(e.source_hash, sizeof e.source_hash, "fnv1a64:0123456789abcdef");
  e.head_dim = head_dim;
  e.causal = causal;
  e.seq_bucket = 10;
  e.config.struct_size = sizeof e.config;
  e.config.variant = CLATTN_VARIANT_TILED_LOCAL;
  e.config.block_m = 64;
  e.config.block_n = 16;
  e.config.rows_per_item = 1;
  e.config.threads_per_row = 2;
  e.time_ms = 1.5;
  e.default_time_ms = 2.25;
  snprintf(e.tuned_at, sizeof e.tuned_at, "2026-01-01T00:00:00Z");
  return e;
}

static size_t table_count(const char* path, clattn_status* status) {
  clattn_tuning_table* t = NULL;
  *status = clattn_tuning_table_load(path, &t);
  cr_assert_not_null(t, "the table must be usable after load (%s)", clattn_status_name(*status));
  size_t n = 99;
  cr_assert_eq(clattn_tuning_table_count(t, &n), CLATTN_SUCCESS);
  clattn_tuning_table_destroy(t);
  return n;
}

Test(tuning_file, round_trip) {
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  clattn_tuning_entry in[2] = {fake_entry(64, 1), CLATTN_TUNING_ENTRY_INIT};
  in[1].kind = CLATTN_TUNING_GEMM;
  snprintf(in[1].vendor, sizeof in[1].vendor, "pocl");
  snprintf(in[1].device, sizeof in[1].device, "cpu");
  snprintf(in[1].driver, sizeof in[1].driver, "3.1");
  snprintf(in[1].kernel, sizeof in[1].kernel, "Xgemm");
  in[1].gemm_m = 1024;
  in[1].gemm_k = 512;
  in[1].param_count = 2;
  snprintf(in[1].param_names[0], sizeof in[1].param_names[0], "MWG");
  in[1].param_values[0] = 64;
  snprintf(in[1].param_names[1], sizeof in[1].param_names[1], "XGEMM_MIN_INDIRECT_SIZE");
  in[1].param_values[1] = 128;
  cr_assert_eq(clattn_tuning_file_store(path, in, 2), CLATTN_SUCCESS);

  clattn_tuning_table* t = NULL;
  cr_assert_eq(clattn_tuning_table_load(path, &t), CLATTN_SUCCESS);
  size_t n = 0;
  clattn_tuning_table_count(t, &n);
  cr_assert_eq(n, 2);
  clattn_tuning_entry a = CLATTN_TUNING_ENTRY_INIT, g = CLATTN_TUNING_ENTRY_INIT;
  cr_assert_eq(clattn_tuning_table_get(t, 0, &a), CLATTN_SUCCESS);
  cr_assert_eq(clattn_tuning_table_get(t, 1, &g), CLATTN_SUCCESS);
  cr_assert_eq(clattn_tuning_table_get(t, 2, &g), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_str_eq(a.device, in[0].device);
  cr_assert_str_eq(a.vendor, "example");
  cr_assert_str_eq(a.driver, "1.2.3");
  cr_assert_str_eq(a.source_hash, in[0].source_hash);
  cr_assert_eq(a.compute_units, 64);
  cr_assert_eq(a.local_mem_size, 65536);
  cr_assert_eq(a.head_dim, 64);
  cr_assert_eq(a.causal, 1);
  cr_assert_eq(a.seq_bucket, 10);
  cr_assert_eq(a.config.variant, CLATTN_VARIANT_TILED_LOCAL);
  cr_assert_eq(a.config.block_m, 64);
  cr_assert_eq(a.config.block_n, 16);
  cr_assert_eq(a.config.threads_per_row, 2);
  cr_assert_float_eq(a.time_ms, 1.5, 1e-12);
  cr_assert_float_eq(a.default_time_ms, 2.25, 1e-12);
  cr_assert_eq(g.kind, CLATTN_TUNING_GEMM);
  cr_assert_eq(g.gemm_m, 1024);
  cr_assert_eq(g.param_count, 2);
  cr_assert_str_eq(g.param_names[1], "XGEMM_MIN_INDIRECT_SIZE");
  cr_assert_eq(g.param_values[1], 128);
  clattn_tuning_table_destroy(t);

  /* Storing the same slot again replaces it; another slot is added. */
  in[0].config.block_n = 32;
  clattn_tuning_entry other = fake_entry(128, 0);
  cr_assert_eq(clattn_tuning_file_store(path, &in[0], 1), CLATTN_SUCCESS);
  cr_assert_eq(clattn_tuning_file_store(path, &other, 1), CLATTN_SUCCESS);
  clattn_status st;
  cr_assert_eq(table_count(path, &st), 3);
  cr_assert_eq(clattn_tuning_table_load(path, &t), CLATTN_SUCCESS);
  clattn_tuning_table_get(t, 0, &a);
  cr_assert_eq(a.config.block_n, 32);
  clattn_tuning_table_destroy(t);
  remove_tree(dir);
}

Test(tuning_file, missing_file_is_empty_and_fine) {
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  clattn_status st;
  cr_assert_eq(table_count(path, &st), 0);
  cr_assert_eq(st, CLATTN_SUCCESS);
  remove_tree(dir);
}

/* Every damaged file: an empty table, CLATTN_ERROR_TUNING_FILE, a message naming the file,
 * and a context that still works on the heuristics. */
static void expect_ignored(const char* path, const char* what) {
  clattn_status st;
  cr_assert_eq(table_count(path, &st), 0, "%s: entries read", what);
  cr_assert_eq(st, CLATTN_ERROR_TUNING_FILE, "%s: status %s", what, clattn_status_name(st));
  char msg[1024];
  clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
  cr_assert(strstr(msg, path) != NULL, "%s: message \"%s\" does not name the file", what, msg);
}

static void expect_context_ignores(const char* path) {
  setenv("CLATTN_TUNING_FILE", path, 1);
  clattn_context* ctx = test_context(NULL);
  clattn_tuning_info info = CLATTN_TUNING_INFO_INIT;
  cr_assert_eq(clattn_context_get_tuning_info(ctx, &info), CLATTN_SUCCESS);
  cr_assert_str_eq(info.path, path);
  cr_assert_eq(info.found, 1);
  cr_assert_eq(info.status, CLATTN_ERROR_TUNING_FILE);
  cr_assert(info.message[0] != '\0');
  clattn_attention_desc desc = test_desc(1, 2, 0, 33, 33, 16, 0);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS, "%s",
               test_last_error(ctx));
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_HEURISTIC);
  test_run_host(ctx, &desc, CLATTN_VARIANT_AUTO, NULL, 7);
  clattn_context_destroy(ctx);
}

Test(tuning_file, damaged_files_are_ignored) {
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  clattn_tuning_entry e[3] = {fake_entry(64, 0), fake_entry(64, 1), fake_entry(32, 0)};
  cr_assert_eq(clattn_tuning_file_store(path, e, 3), CLATTN_SUCCESS);
  size_t n = 0;
  char* good = read_all(path, &n);
  cr_assert_gt(n, 100);

  /* Every truncation of a valid file. */
  char bad[320];
  snprintf(bad, sizeof bad, "%s/bad.json", dir);
  for (size_t len = 0; len < n; len += (len < 64 ? 1 : 7)) {
    write_bytes(bad, good, len);
    char what[64];
    snprintf(what, sizeof what, "truncated to %zu bytes", len);
    expect_ignored(bad, what);
  }
  /* Another format version, another format, not an object, binary noise. */
  const char* texts[] = {"{\"format\":\"clattn-tuning\",\"version\":2,\"entries\":[]}",
                         "{\"format\":\"clattn-tuning\",\"version\":\"1\",\"entries\":[]}",
                         "{\"format\":\"other\",\"version\":1,\"entries\":[]}",
                         "{\"format\":\"clattn-tuning\",\"version\":1,\"entries\":{}}",
                         "[1,2,3]",
                         "null",
                         "\xff\xfe\x00garbage"};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; ++i) {
    write_bytes(bad, texts[i], strlen(texts[i]) + (i == 6 ? 4 : 0));
    expect_ignored(bad, texts[i]);
  }
  /* Very large: past the size limit, even when it would parse. */
  size_t big = (size_t)17 << 20;
  char* huge = malloc(big);
  cr_assert_not_null(huge);
  memset(huge, ' ', big);
  memcpy(huge + big - n, good, n);
  write_bytes(bad, huge, big);
  free(huge);
  expect_ignored(bad, "17 MiB");

  /* Scrambled bytes at random offsets: never a crash; a parse either fails cleanly or
   * yields entries whose fields passed the range checks. */
  uint64_t state = 99;
  for (int round = 0; round < 200; ++round) {
    char* copy = malloc(n);
    memcpy(copy, good, n);
    float r[3];
    clattn_ref_fill_uniform(r, 3, 0.0f, 1.0f, &state);
    for (int k = 0; k < 1 + (int)(r[2] * 4); ++k) {
      clattn_ref_fill_uniform(r, 2, 0.0f, 1.0f, &state);
      copy[(size_t)(r[0] * (float)(n - 1))] = (char)(r[1] * 255.0f);
    }
    write_bytes(bad, copy, n);
    free(copy);
    clattn_tuning_table* t = NULL;
    clattn_status st = clattn_tuning_table_load(bad, &t);
    cr_assert(st == CLATTN_SUCCESS || st == CLATTN_ERROR_TUNING_FILE, "status %s",
              clattn_status_name(st));
    size_t count = 0;
    clattn_tuning_table_count(t, &count);
    cr_assert_leq(count, 3);
    for (size_t i = 0; i < count; ++i) {
      clattn_tuning_entry x = CLATTN_TUNING_ENTRY_INIT;
      clattn_tuning_table_get(t, i, &x);
      cr_assert(x.head_dim >= 1 && x.head_dim <= 256);
      cr_assert(x.config.block_m >= 1 && x.config.block_m <= 1024);
    }
    clattn_tuning_table_destroy(t);
  }

  /* A context on a damaged file: defaults, with the reason recorded. */
  write_bytes(bad, good, n / 2);
  expect_context_ignores(bad);
  write_bytes(bad, "", 0);
  expect_context_ignores(bad);
  free(good);
  remove_tree(dir);
}

/* Two processes store 40 entries each, one at a time, into one file at once. */
Test(tuning_file, concurrent_writers_lose_nothing) {
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  const int per_writer = 40;
  pid_t pids[2];
  for (int w = 0; w < 2; ++w) {
    pids[w] = fork();
    cr_assert_neq(pids[w], -1, "fork: %s", strerror(errno));
    if (pids[w] == 0) {
      int failures = 0;
      for (int i = 0; i < per_writer; ++i) {
        clattn_tuning_entry e = fake_entry((size_t)i + 1, w);
        if (clattn_tuning_file_store(path, &e, 1) != CLATTN_SUCCESS) ++failures;
      }
      _exit(failures ? 1 : 0);
    }
  }
  for (int w = 0; w < 2; ++w) {
    int status = 0;
    cr_assert_eq(waitpid(pids[w], &status, 0), pids[w]);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d failed", w);
  }
  clattn_status st;
  cr_assert_eq(table_count(path, &st), 2 * (size_t)per_writer);
  cr_assert_eq(st, CLATTN_SUCCESS);
  remove_tree(dir);
}

/* A writer killed after writing its temporary file, while holding the lock: readers see the
 * old file, and the next writer gets the lock (record locks die with their process). */
Test(tuning_file, killed_writer_leaves_old_file_intact) {
  char dir[256], path[300], tmp[340], lock[320];
  temp_file(dir, sizeof dir, path, sizeof path);
  clattn_tuning_entry e = fake_entry(64, 0);
  cr_assert_eq(clattn_tuning_file_store(path, &e, 1), CLATTN_SUCCESS);
  size_t n_before = 0;
  char* before = read_all(path, &n_before);

  snprintf(tmp, sizeof tmp, "%s.tmp.Zx81Qa", path);
  write_bytes(tmp, "{\"format\":\"clattn-tuning\",\"version\":1,\"entries\":[{\"kind", 55);
  snprintf(lock, sizeof lock, "%s.lock", path);
  int pipefd[2];
  cr_assert_eq(pipe(pipefd), 0);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    int fd = open(lock, O_RDWR | O_CREAT, 0644);
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fd < 0 || fcntl(fd, F_SETLKW, &fl) != 0) _exit(1);
    if (write(pipefd[1], "x", 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  char c;
  cr_assert_eq(read(pipefd[0], &c, 1), 1, "the child did not take the lock");
  cr_assert_eq(kill(pid, SIGKILL), 0);
  int status;
  waitpid(pid, &status, 0);
  close(pipefd[0]);
  close(pipefd[1]);

  size_t n_after = 0;
  char* after = read_all(path, &n_after);
  cr_assert_eq(n_after, n_before);
  cr_assert_eq(memcmp(before, after, n_before), 0, "the file changed");
  clattn_status st;
  cr_assert_eq(table_count(path, &st), 1);
  cr_assert_eq(st, CLATTN_SUCCESS);
  clattn_tuning_entry e2 = fake_entry(128, 0);
  cr_assert_eq(clattn_tuning_file_store(path, &e2, 1), CLATTN_SUCCESS);
  cr_assert_eq(table_count(path, &st), 2);
  free(before);
  free(after);
  remove_tree(dir);
}

/* A store leaves no lock file behind, and removes the temporary files of writers killed
 * before their rename (old-style names and ones naming a dead pid), but not one naming a live
 * process; concurrent writers still lose nothing (concurrent_writers_lose_nothing). */
Test(tuning_file, store_leaves_no_lock_and_removes_dead_writers_temps) {
  char dir[256], path[300], lock[320], old_tmp[340], dead_tmp[360], live_tmp[360];
  temp_file(dir, sizeof dir, path, sizeof path);
  snprintf(lock, sizeof lock, "%s.lock", path);
  snprintf(old_tmp, sizeof old_tmp, "%s.tmp.Zx81Qa", path);
  /* Above any pid_max Linux allows (2^22), so never a live process. */
  snprintf(dead_tmp, sizeof dead_tmp, "%s.tmp.999999999.Ab12Cd", path);
  snprintf(live_tmp, sizeof live_tmp, "%s.tmp.%ld.Ef34Gh", path, (long)getpid());
  clattn_tuning_entry e = fake_entry(64, 0);
  cr_assert_eq(clattn_tuning_file_store(path, &e, 1), CLATTN_SUCCESS);
  cr_assert_eq(access(lock, F_OK), -1, "the lock file %s was left", lock);
  write_bytes(old_tmp, "{\"format\"", 10);
  write_bytes(dead_tmp, "{\"format\"", 10);
  write_bytes(live_tmp, "{\"format\"", 10);
  clattn_tuning_entry e2 = fake_entry(128, 0);
  cr_assert_eq(clattn_tuning_file_store(path, &e2, 1), CLATTN_SUCCESS);
  cr_assert_eq(access(old_tmp, F_OK), -1, "%s was left", old_tmp);
  cr_assert_eq(access(dead_tmp, F_OK), -1, "%s was left", dead_tmp);
  cr_assert_eq(access(live_tmp, F_OK), 0, "%s, of a live process, was removed", live_tmp);
  cr_assert_eq(access(lock, F_OK), -1, "the lock file %s was left", lock);
  clattn_status st;
  cr_assert_eq(table_count(path, &st), 2);
  cr_assert_eq(st, CLATTN_SUCCESS);
  remove_tree(dir);
}

Test(tuning_file, unwritable_directory_gives_a_clear_status) {
  char dir[256], path[300], ro[300], file[340];
  temp_file(dir, sizeof dir, path, sizeof path);
  if (geteuid() == 0) {
    /* Permissions do not stop root: use a directory no one can create files in. */
    snprintf(file, sizeof file, "/proc/clattn-no-such-dir/tuning.json");
  } else {
    snprintf(ro, sizeof ro, "%s/ro", dir);
    cr_assert_eq(mkdir(ro, 0555), 0);
    snprintf(file, sizeof file, "%s/tuning.json", ro);
  }
  clattn_tuning_entry e = fake_entry(64, 0);
  cr_assert_eq(clattn_tuning_file_store(file, &e, 1), CLATTN_ERROR_TUNING_FILE);
  char msg[1024];
  clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
  cr_assert(strstr(msg, "cannot") != NULL, "message: %s", msg);
  cr_assert_eq(access(file, F_OK), -1, "the file must not exist");
  remove_tree(dir);
}

Test(tuning_file, bad_arguments) {
  cr_assert_eq(clattn_tuning_table_load(NULL, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_tuning_table_destroy(NULL), CLATTN_SUCCESS);
  cr_assert_eq(clattn_tuning_file_store("/tmp/x.json", NULL, 1), CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_tuning_entry e = fake_entry(64, 0);
  e.struct_size = 1;
  cr_assert_eq(clattn_tuning_file_store("/tmp/x.json", &e, 1), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(clattn_tune_attention(NULL, NULL, NULL, NULL, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
  setenv("CLATTN_TUNING_FILE", "/some/where/t.json", 1);
  char buf[64];
  cr_assert_eq(clattn_tuning_file_path(buf, sizeof buf, NULL), CLATTN_SUCCESS);
  cr_assert_str_eq(buf, "/some/where/t.json");
  unsetenv("CLATTN_TUNING_FILE");
  setenv("XDG_CACHE_HOME", "/xdg", 1);
  cr_assert_eq(clattn_tuning_file_path(buf, sizeof buf, NULL), CLATTN_SUCCESS);
  cr_assert_str_eq(buf, "/xdg/clattn/tuning.json");
  unsetenv("XDG_CACHE_HOME");
  setenv("HOME", "/home/u", 1);
  cr_assert_eq(clattn_tuning_file_path(buf, sizeof buf, NULL), CLATTN_SUCCESS);
  cr_assert_str_eq(buf, "/home/u/.cache/clattn/tuning.json");
}

/* One attention entry for the made-up device of fake_entry, as a file holds it. */
static void append_json_entry(char* buf, size_t size, const char* variant, const char* dtype,
                              size_t head_dim) {
  size_t n = strlen(buf);
  snprintf(buf + n, size - n,
           "%s{\"kind\":\"attention\",\"device\":{\"vendor\":\"example\",\"name\":\"Example 9000\","
           "\"driver\":\"1.2.3\",\"compute_units\":64,\"local_mem_size\":65536},"
           "\"kernel\":\"attention_tiled\",\"source_hash\":\"fnv1a64:0123456789abcdef\","
           "\"dtype\":\"%s\",\"head_dim\":%zu,\"causal\":false,\"seq_bucket\":10,"
           "\"config\":{\"variant\":\"%s\",\"block_m\":8,\"block_n\":16,\"rows_per_item\":1,"
           "\"threads_per_row\":1},\"time_ms\":1,\"default_time_ms\":2}",
           buf[n - 1] == '[' ? "" : ",", dtype, head_dim, variant);
}

/* Files written before the variants took the registry's names spelt tiled_local "tiled";
 * they load, short names too, and the next store writes the registry's names. */
Test(tuning_file, older_variant_spellings_still_load) {
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  char text[8192] = "{\"format\":\"clattn-tuning\",\"version\":1,\"entries\":[";
  const char* spellings[] = {"tiled", "register_blocked", "regblock", "TILED_LOCAL"};
  const clattn_variant expected[] = {CLATTN_VARIANT_TILED_LOCAL, CLATTN_VARIANT_REGISTER_BLOCKED,
                                     CLATTN_VARIANT_REGISTER_BLOCKED, CLATTN_VARIANT_TILED_LOCAL};
  for (size_t i = 0; i < 4; ++i) append_json_entry(text, sizeof text, spellings[i], "f32", 8 + i);
  /* Not a variant of an entry: dropped. */
  append_json_entry(text, sizeof text, "auto", "f32", 20);
  append_json_entry(text, sizeof text, "split_kv_someday", "f32", 21);
  strcat(text, "]}");
  write_bytes(path, text, strlen(text));

  clattn_tuning_table* t = NULL;
  cr_assert_eq(clattn_tuning_table_load(path, &t), CLATTN_SUCCESS);
  size_t n = 0;
  clattn_tuning_table_count(t, &n);
  cr_assert_eq(n, 4);
  for (size_t i = 0; i < n; ++i) {
    clattn_tuning_entry e = CLATTN_TUNING_ENTRY_INIT;
    cr_assert_eq(clattn_tuning_table_get(t, i, &e), CLATTN_SUCCESS);
    cr_assert_eq(e.head_dim, 8 + i);
    cr_assert_eq(e.config.variant, expected[i], "\"%s\" read as variant %d", spellings[i],
                 (int)e.config.variant);
    cr_assert_eq(e.dtype, CLATTN_DTYPE_F32);
  }
  clattn_tuning_table_destroy(t);

  /* A merge rewrites the file with the registry's names. */
  clattn_tuning_entry other = fake_entry(128, 0);
  cr_assert_eq(clattn_tuning_file_store(path, &other, 1), CLATTN_SUCCESS);
  clattn_status st;
  cr_assert_eq(table_count(path, &st), 5);
  size_t len = 0;
  char* after = read_all(path, &len);
  cr_assert(strstr(after, "\"tiled_local\"") != NULL);
  cr_assert(strstr(after, "\"register_blocked\"") != NULL);
  cr_assert(strstr(after, "\"tiled\"") == NULL && strstr(after, "\"regblock\"") == NULL &&
                strstr(after, "\"TILED_LOCAL\"") == NULL,
            "older spellings were written back:\n%s", after);
  free(after);
  remove_tree(dir);
}

/* f32, f16 and bf16 entries are read (spelled exactly so); an entry of a dtype this version
 * does not know is dropped when read, and one with a dtype or variant it cannot name is
 * refused, with nothing written. */
Test(tuning_file, unknown_dtypes_and_variants_are_neither_read_nor_written) {
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  char text[4096] = "{\"format\":\"clattn-tuning\",\"version\":1,\"entries\":[";
  append_json_entry(text, sizeof text, "tiled_local", "f16", 64);
  append_json_entry(text, sizeof text, "tiled_local", "bf16", 64);
  append_json_entry(text, sizeof text, "tiled_local", "f32", 64);
  append_json_entry(text, sizeof text, "tiled_local", "fp8", 64);
  append_json_entry(text, sizeof text, "tiled_local", "F16", 64);
  strcat(text, "]}");
  write_bytes(path, text, strlen(text));
  clattn_tuning_table* t = NULL;
  cr_assert_eq(clattn_tuning_table_load(path, &t), CLATTN_SUCCESS);
  size_t n = 0;
  clattn_tuning_table_count(t, &n);
  cr_assert_eq(n, 3, "the f16, bf16 and f32 entries are read, no other");
  const clattn_dtype order[3] = {CLATTN_DTYPE_F16, CLATTN_DTYPE_BF16, CLATTN_DTYPE_F32};
  for (size_t i = 0; i < n; ++i) {
    clattn_tuning_entry e = CLATTN_TUNING_ENTRY_INIT;
    cr_assert_eq(clattn_tuning_table_get(t, i, &e), CLATTN_SUCCESS);
    cr_assert_eq(e.dtype, order[i], "entry %zu read as dtype %d", i, (int)e.dtype);
  }
  clattn_tuning_table_destroy(t);

  char fresh[320];
  snprintf(fresh, sizeof fresh, "%s/fresh.json", dir);
  clattn_tuning_entry e[2] = {fake_entry(64, 0), fake_entry(32, 0)};
  e[1].dtype = (clattn_dtype)7;
  cr_assert_eq(clattn_tuning_file_store(fresh, e, 2), CLATTN_ERROR_INVALID_ARGUMENT);
  e[1].dtype = CLATTN_DTYPE_F32;
  e[1].config.variant = (clattn_variant)99;
  cr_assert_eq(clattn_tuning_file_store(fresh, e, 2), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(access(fresh, F_OK), -1, "nothing may be written");
  remove_tree(dir);
}

/* ------------------------------------------------------------ on the device */

/* Tuning runs time kernels within a budget: on Oclgrind's simulator the timings mean
 * nothing and a budget runs out before the candidates do. The file tests above run there. */
static void skip_tuner_on_simulator(void) {
  clattn_context* probe = test_context(NULL);
  test_skip_on_oclgrind(probe, "tuning runs time kernels; a simulator's times mean nothing");
  clattn_context_destroy(probe);
}

/* A tiny tuning run: 3 candidates of one variant, short shape. */
static clattn_tune_result tiny_run_typed(clattn_context* ctx, const char* path, int no_write,
                                         clattn_dtype dtype) {
  clattn_tune_options o = CLATTN_TUNE_OPTIONS_INIT;
  o.dtype = dtype;
  o.heads = 2;
  o.seq = 200;
  o.head_dim = 32;
  o.causal = 1;
  o.budget_seconds = 20;
  o.max_candidates = 3;
  o.reps = 3;
  o.output = path;
  o.no_write = no_write;
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  clattn_context_get_device_info(ctx, &info);
  o.variant = info.type == CLATTN_DEVICE_TYPE_GPU || info.type == CLATTN_DEVICE_TYPE_ACCELERATOR
                  ? CLATTN_VARIANT_TILED_LOCAL
                  : CLATTN_VARIANT_REGISTER_BLOCKED;
  clattn_tune_result r = CLATTN_TUNE_RESULT_INIT;
  clattn_status st = clattn_tune_attention(ctx, &o, NULL, NULL, &r);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_tune_attention: %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  cr_assert_eq(r.tried, 3);
  cr_assert_eq(r.failed_verify, 0);
  cr_assert_gt(r.best_ms, 0.0);
  cr_assert_leq(r.best_ms, r.default_ms, "the default is a candidate, so the winner is faster");
  cr_assert_eq(r.written, !no_write);
  cr_assert_eq(r.entry.dtype, dtype);
  return r;
}

static clattn_tune_result tiny_run(clattn_context* ctx, const char* path, int no_write) {
  return tiny_run_typed(ctx, path, no_write, CLATTN_DTYPE_F32);
}

/* A run in bf16 writes a bf16 entry: it serves bf16 shapes of its class (and float32 queries
 * over a bf16 KV cache, whose K and V are bf16), never a float32 shape. */
Test(tuner, a_16bit_run_serves_its_dtype) {
  skip_tuner_on_simulator();
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  setenv("CLATTN_TUNING_FILE", path, 1);
  clattn_context* ctx = test_context(NULL);
  const clattn_tune_result r = tiny_run_typed(ctx, path, 0, CLATTN_DTYPE_BF16);
  clattn_context_destroy(ctx);
  ctx = test_context(NULL);
  clattn_attention_desc desc = test_desc(1, 2, 0, 177, 177, 32, 1);
  desc.dtype = CLATTN_DTYPE_BF16;
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS);
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_TUNED, "source %d", (int)used.source);
  cr_assert_eq(used.variant, r.entry.config.variant);
  test_run_host(ctx, &desc, CLATTN_VARIANT_AUTO, NULL, 5);
  desc.dtype = CLATTN_DTYPE_F32;
  cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS);
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_HEURISTIC, "a bf16 entry served an f32 shape");
  clattn_context_destroy(ctx);
  unsetenv("CLATTN_TUNING_FILE");
  remove_tree(dir);
}

Test(tuner, short_run_is_used_by_a_new_context) {
  skip_tuner_on_simulator();
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  setenv("CLATTN_TUNING_FILE", path, 1);
  clattn_context* ctx = test_context(NULL);
  clattn_tune_result r = tiny_run(ctx, path, 0);
  clattn_context_destroy(ctx);

  /* A new context reads the file: the tuned config serves shapes of that class (length 200
   * and its neighbours), and results are right. */
  ctx = test_context(NULL);
  clattn_tuning_info info = CLATTN_TUNING_INFO_INIT;
  cr_assert_eq(clattn_context_get_tuning_info(ctx, &info), CLATTN_SUCCESS);
  cr_assert_eq(info.status, CLATTN_SUCCESS, "%s", info.message);
  cr_assert_eq(info.entries, 1);
  cr_assert_eq(info.device_entries, 1);
  clattn_attention_desc desc = test_desc(1, 2, 0, 177, 177, 32, 1);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS);
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_TUNED, "source %d", (int)used.source);
  cr_assert_eq(used.variant, r.entry.config.variant);
  cr_assert_eq(used.block_n, r.entry.config.block_n);
  cr_assert_eq(used.rows_per_item, r.entry.config.rows_per_item);
  cr_assert_eq(used.block_m, r.entry.config.block_m);
  test_run_host(ctx, &desc, CLATTN_VARIANT_AUTO, NULL, 3);
  /* Another class (not causal) and an explicit config are not affected. */
  desc.causal = 0;
  cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS);
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_HEURISTIC);
  clattn_attention_config req = test_config(r.entry.config.variant);
  desc.causal = 1;
  cr_assert_eq(clattn_attention_get_config(ctx, &desc, &req, &used), CLATTN_SUCCESS);
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_USER);
  cl_device_id device;
  clattn_context_get_cl(ctx, NULL, &device, NULL);
  int level = -1, current = -1;
  cr_assert_eq(clattn_tuning_entry_match(&r.entry, device, &level, &current), CLATTN_SUCCESS);
  cr_assert_eq(level, CLATTN_CONFIG_SOURCE_TUNED);
  cr_assert_eq(current, 1);
  clattn_context_destroy(ctx);

  /* The same device under another driver: the second level. */
  clattn_tuning_entry other = r.entry;
  snprintf(other.driver, sizeof other.driver, "0.0-other");
  char path2[340];
  snprintf(path2, sizeof path2, "%s/other.json", dir);
  cr_assert_eq(clattn_tuning_file_store(path2, &other, 1), CLATTN_SUCCESS);
  setenv("CLATTN_TUNING_FILE", path2, 1);
  ctx = test_context(NULL);
  cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS);
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_TUNED_OTHER_DRIVER, "source %d", (int)used.source);
  clattn_context_destroy(ctx);
  remove_tree(dir);
}

Test(tuner, entries_beyond_limits_or_for_changed_kernels_are_rejected) {
  skip_tuner_on_simulator();
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  setenv("CLATTN_TUNING_FILE", path, 1);
  clattn_context* ctx = test_context(NULL);
  clattn_tune_result r = tiny_run(ctx, path, 1);
  clattn_device_info dev = CLATTN_DEVICE_INFO_INIT;
  clattn_context_get_device_info(ctx, &dev);
  cl_device_id device;
  clattn_context_get_cl(ctx, NULL, &device, NULL);
  clattn_context_destroy(ctx);

  clattn_tuning_entry e[2] = {r.entry, r.entry};
  /* Beyond the device: more work-items or rows per item than it allows. */
  if (e[0].config.variant == CLATTN_VARIANT_TILED_LOCAL) {
    e[0].config.threads_per_row = 32;
    e[0].config.block_m = (unsigned)(dev.max_work_group_size / 32 + 1) * 2;
  } else {
    e[0].config.rows_per_item = 64;
    e[0].config.block_m = 64;
  }
  /* A kernel that changed since: its hash no longer matches. */
  e[1].causal = !e[1].causal;
  snprintf(e[1].source_hash, sizeof e[1].source_hash, "fnv1a64:0000000000000000");
  cr_assert_eq(clattn_tuning_file_store(path, e, 2), CLATTN_SUCCESS);
  int level = -1, current = -1;
  cr_assert_eq(clattn_tuning_entry_match(&e[0], device, &level, &current), CLATTN_SUCCESS);
  cr_assert_eq(level, CLATTN_CONFIG_SOURCE_TUNED);
  cr_assert_eq(current, 0);
  cr_assert_eq(clattn_tuning_entry_match(&e[1], device, &level, &current), CLATTN_SUCCESS);
  cr_assert_eq(current, 0);

  ctx = test_context(NULL);
  clattn_tuning_info info = CLATTN_TUNING_INFO_INIT;
  clattn_context_get_tuning_info(ctx, &info);
  cr_assert_eq(info.entries, 2);
  cr_assert_eq(info.device_entries, 0);
  for (int causal = 0; causal < 2; ++causal) {
    clattn_attention_desc desc = test_desc(1, 2, 0, 200, 200, 32, causal);
    clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
    cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS);
    cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_HEURISTIC);
  }
  clattn_context_destroy(ctx);
  remove_tree(dir);
}

static int stop_at_once(const clattn_tune_progress* p, void* user) {
  (void)p;
  ++*(int*)user;
  return 1;
}

Test(tuner, dry_run_and_interruption_write_nothing) {
  skip_tuner_on_simulator();
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  clattn_context* ctx = test_context(NULL);
  clattn_tune_options o = CLATTN_TUNE_OPTIONS_INIT;
  o.seq = 100;
  o.head_dim = 16;
  o.heads = 1;
  o.output = path;
  o.dry_run = 1;
  clattn_tune_result r = CLATTN_TUNE_RESULT_INIT;
  cr_assert_eq(clattn_tune_attention(ctx, &o, NULL, NULL, &r), CLATTN_SUCCESS);
  size_t space = 0;
  for (int v = 0; v < CLATTN_TUNE_MAX_VARIANTS; ++v) space += r.space_variants[v];
  cr_assert_gt(space, 0);
  cr_assert_eq(r.tried, 0);
  cr_assert_eq(clattn_tune_gemm(ctx, &o, NULL, NULL, &r), CLATTN_SUCCESS);
  cr_assert_gt(r.space_gemm, 0);
  o.dry_run = 0;
  int calls = 0;
  cr_assert_eq(clattn_tune_attention(ctx, &o, stop_at_once, &calls, &r), CLATTN_SUCCESS);
  cr_assert_eq(calls, 1);
  cr_assert_eq(r.interrupted, 1);
  cr_assert_eq(r.written, 0);
  cr_assert_eq(access(path, F_OK), -1, "nothing may be written");
  clattn_context_destroy(ctx);
  remove_tree(dir);
}

/* Counts the candidates tried and those whose name starts with the variant's. */
typedef struct variant_count {
  const char* name;
  int tried, of_variant;
} variant_count;

static int count_variant(const clattn_tune_progress* p, void* user) {
  variant_count* c = user;
  if (strcmp(p->outcome, "running") == 0) return 0; /* a poll within a candidate */
  c->tried++;
  if (strncmp(p->candidate, c->name, strlen(c->name)) == 0) c->of_variant++;
  return 0;
}

/* A named variant is the only one searched, also when clattn would prefer another for the
 * device (tiled on a CPU, register-blocked on a GPU): before, its heuristic default ran first
 * and could win, writing an entry of the other variant. */
Test(tuner, a_named_variant_is_the_only_one_searched) {
  skip_tuner_on_simulator();
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  clattn_context* ctx = test_context(NULL);
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  clattn_context_get_device_info(ctx, &info);
  const clattn_variant other =
      info.type == CLATTN_DEVICE_TYPE_GPU || info.type == CLATTN_DEVICE_TYPE_ACCELERATOR
          ? CLATTN_VARIANT_REGISTER_BLOCKED
          : CLATTN_VARIANT_TILED_LOCAL;
  clattn_tune_options o = CLATTN_TUNE_OPTIONS_INIT;
  o.heads = 2;
  o.seq = 200;
  o.head_dim = 32;
  o.budget_seconds = 20;
  o.max_candidates = 3;
  o.reps = 3;
  o.output = path;
  o.variant = other;
  variant_count count = {clattn_variant_name(other), 0, 0};
  clattn_tune_result r = CLATTN_TUNE_RESULT_INIT;
  clattn_status st = clattn_tune_attention(ctx, &o, count_variant, &count, &r);
  cr_assert_eq(st, CLATTN_SUCCESS, "clattn_tune_attention: %s (%s)", clattn_status_name(st),
               test_last_error(ctx));
  cr_assert_eq(r.default_config.variant, other, "the default timed is of variant %d",
               (int)r.default_config.variant);
  cr_assert_gt(count.tried, 0);
  cr_assert_eq(count.of_variant, count.tried, "%d of %d candidates were of the %s variant",
               count.of_variant, count.tried, count.name);
  cr_assert_eq(r.written, 1);
  cr_assert_eq(r.entry.config.variant, other, "the entry written is of variant %d",
               (int)r.entry.config.variant);
  clattn_tuning_table* t = NULL;
  cr_assert_eq(clattn_tuning_table_load(path, &t), CLATTN_SUCCESS);
  clattn_tuning_entry e = CLATTN_TUNING_ENTRY_INIT;
  cr_assert_eq(clattn_tuning_table_get(t, 0, &e), CLATTN_SUCCESS);
  cr_assert_eq(e.config.variant, other);
  clattn_tuning_table_destroy(t);
  clattn_context_destroy(ctx);
  remove_tree(dir);
}

Test(tuner, gemm_run_verifies_and_applies) {
  skip_tuner_on_simulator();
  char dir[256], path[300];
  temp_file(dir, sizeof dir, path, sizeof path);
  setenv("CLATTN_TUNING_FILE", path, 1);
  clattn_context* ctx = test_context(NULL);
  clattn_tune_options o = CLATTN_TUNE_OPTIONS_INIT;
  o.heads = 2;
  o.head_dim = 32;
  o.seq = 256;
  o.output = path;
  o.max_candidates = 2; /* CLBlast's own parameters and one core candidate */
  o.reps = 3;
  clattn_tune_result r = CLATTN_TUNE_RESULT_INIT;
  clattn_status st = clattn_tune_gemm(ctx, &o, NULL, NULL, &r);
  cr_assert_eq(st, CLATTN_SUCCESS, "%s", test_last_error(ctx));
  cr_assert_eq(r.tried, 2);
  cr_assert_eq(r.failed_verify, 0);
  cr_assert_gt(r.default_ms, 0.0);
  clattn_context_destroy(ctx);
  ctx = test_context(NULL);
  clattn_tuning_info info = CLATTN_TUNING_INFO_INIT;
  clattn_context_get_tuning_info(ctx, &info);
  /* Written only when it beat CLBlast's parameters; then a new context applies it. */
  cr_assert_eq(info.gemm_source, r.written ? CLATTN_CONFIG_SOURCE_TUNED : 0);
  clattn_context_destroy(ctx);
  remove_tree(dir);
}

/* A FIFO where the tuning file should be is reported and ignored: creating a context does not
 * wait for a writer (the suite's timeout catches a hang). */
Test(tuning_file, fifo_is_not_waited_for, .timeout = 60) {
  char dir[4096], path[4200];
  temp_file(dir, sizeof dir, path, sizeof path);
  cr_assert_eq(mkfifo(path, 0600), 0, "mkfifo: %s", strerror(errno));
  setenv("CLATTN_TUNING_FILE", path, 1);
  clattn_context* ctx = test_context(NULL);
  clattn_tuning_info info = CLATTN_TUNING_INFO_INIT;
  cr_assert_eq(clattn_context_get_tuning_info(ctx, &info), CLATTN_SUCCESS);
  cr_assert_eq(info.status, CLATTN_ERROR_TUNING_FILE, "%s", clattn_status_name(info.status));
  cr_assert(strstr(info.message, "FIFO") != NULL, "message \"%s\"", info.message);
  clattn_attention_desc desc = test_desc(1, 2, 0, 33, 33, 16, 0);
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  cr_assert_eq(clattn_attention_get_config(ctx, &desc, NULL, &used), CLATTN_SUCCESS);
  cr_assert_eq(used.source, CLATTN_CONFIG_SOURCE_HEURISTIC);
  clattn_context_destroy(ctx);
  unsetenv("CLATTN_TUNING_FILE");
  remove_tree(dir);
}

/* Storing replaces regular files only: a symbolic link (its target stays as it was), a FIFO,
 * a device and a directory are refused with TUNING_FILE before any lock file is made, and
 * an empty path is INVALID_ARGUMENT. */
Test(tuning_file, store_replaces_regular_files_only, .timeout = 60) {
  char dir[4096], path[4200], link[4200], fifo[4200], lock[4300];
  temp_file(dir, sizeof dir, path, sizeof path);
  const clattn_tuning_entry e = fake_entry(64, 0);
  static const char target_text[] = "not a tuning file, and not to be touched\n";
  write_bytes(path, target_text, sizeof target_text - 1);
  snprintf(link, sizeof link, "%s/link.json", dir);
  cr_assert_eq(symlink(path, link), 0, "symlink: %s", strerror(errno));
  snprintf(fifo, sizeof fifo, "%s/fifo.json", dir);
  cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo: %s", strerror(errno));
  const char* refused[] = {link, fifo, dir, "/dev/null"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; ++i) {
    const clattn_status st = clattn_tuning_file_store(refused[i], &e, 1);
    cr_expect_eq(st, CLATTN_ERROR_TUNING_FILE, "%s: %s", refused[i], clattn_status_name(st));
    snprintf(lock, sizeof lock, "%s.lock", refused[i]);
    struct stat sb;
    cr_expect_neq(lstat(lock, &sb), 0, "%s was created", lock);
  }
  size_t n = 0;
  char* text = read_all(path, &n);
  cr_expect_str_eq(text, target_text, "the link's target changed");
  free(text);
  struct stat sb;
  cr_assert_eq(lstat(link, &sb), 0);
  cr_expect(S_ISLNK(sb.st_mode), "the link was replaced");
  cr_assert_eq(stat("/dev/null", &sb), 0);
  cr_expect(S_ISCHR(sb.st_mode), "/dev/null is no longer a device");
  cr_expect_eq(clattn_tuning_file_store("", &e, 1), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_neq(lstat(".lock", &sb), 0, "storing to \"\" created .lock");
  remove_tree(dir);
}

/* A file of a newer format version is left as it is, not replaced by this version's. */
Test(tuning_file, newer_format_is_left_alone) {
  char dir[4096], path[4200];
  temp_file(dir, sizeof dir, path, sizeof path);
  static const char newer[] = "{\"format\": \"clattn-tuning\", \"version\": 7, \"entries\": []}\n";
  write_bytes(path, newer, sizeof newer - 1);
  const clattn_tuning_entry e = fake_entry(64, 0);
  const clattn_status st = clattn_tuning_file_store(path, &e, 1);
  cr_expect_eq(st, CLATTN_ERROR_TUNING_FILE, "%s", clattn_status_name(st));
  char msg[1024];
  clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
  cr_expect(strstr(msg, "newer") != NULL, "message \"%s\"", msg);
  size_t n = 0;
  char* text = read_all(path, &n);
  cr_expect_str_eq(text, newer);
  free(text);
  remove_tree(dir);
}

/* An entry the reader would drop (a NaN time, a head dim beyond 256) is refused before
 * anything is written, so it cannot replace a valid entry and then vanish. */
Test(tuning_file, entries_that_would_not_read_back_are_refused) {
  char dir[4096], path[4200];
  temp_file(dir, sizeof dir, path, sizeof path);
  const clattn_tuning_entry good = fake_entry(64, 0);
  cr_assert_eq(clattn_tuning_file_store(path, &good, 1), CLATTN_SUCCESS);
  size_t before_n = 0;
  char* before = read_all(path, &before_n);
  clattn_tuning_entry bad[2] = {good, good};
  bad[0].time_ms = NAN;
  bad[1].head_dim = 100000;
  for (int i = 0; i < 2; ++i) {
    const clattn_status st = clattn_tuning_file_store(path, &bad[i], 1);
    cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "entry %d: %s", i, clattn_status_name(st));
  }
  size_t after_n = 0;
  char* after = read_all(path, &after_n);
  cr_expect_str_eq(after, before, "the file changed");
  free(before);
  free(after);
  remove_tree(dir);
}

/* Many entries: 20,000 slots (11 MB) stored and read back in one piece, and a slot given twice in
 * one store keeps its first position and its last value, as merging one by one would.
 * (Reading such a file took 19 s when each entry scanned the table; the timeout is only a
 * guard against that, not a benchmark.) */
Test(tuning_file, many_entries_and_repeated_slots, .timeout = 120) {
  char dir[4096], path[4200];
  temp_file(dir, sizeof dir, path, sizeof path);
  enum { N = 20000 };
  clattn_tuning_entry* many = malloc((N + 1) * sizeof *many);
  cr_assert_not_null(many);
  for (size_t i = 0; i < N; ++i) {
    many[i] = fake_entry(1 + i % 256, 0);
    many[i].seq_bucket = (unsigned)(i / 256 % 40);
    snprintf(many[i].driver, sizeof many[i].driver, "driver %zu", i / (256 * 40));
  }
  many[N] = many[7];
  many[N].time_ms = 0.75; /* the same slot as entry 7, a newer time */
  cr_assert_eq(clattn_tuning_file_store(path, many, N + 1), CLATTN_SUCCESS);
  clattn_tuning_table* t = NULL;
  cr_assert_eq(clattn_tuning_table_load(path, &t), CLATTN_SUCCESS);
  size_t count = 0;
  cr_assert_eq(clattn_tuning_table_count(t, &count), CLATTN_SUCCESS);
  cr_expect_eq(count, (size_t)N);
  clattn_tuning_entry e = CLATTN_TUNING_ENTRY_INIT;
  cr_assert_eq(clattn_tuning_table_get(t, 7, &e), CLATTN_SUCCESS);
  cr_expect_eq(e.head_dim, many[7].head_dim);
  cr_expect_eq(e.time_ms, 0.75, "the later value of a repeated slot did not win");
  cr_assert_eq(clattn_tuning_table_get(t, 8, &e), CLATTN_SUCCESS);
  cr_expect_eq(e.head_dim, many[8].head_dim, "entries moved");
  clattn_tuning_table_destroy(t);
  /* More than a reader would read (16 MiB): refused, and the file left as it was. */
  enum { M = 40000 };
  clattn_tuning_entry* more = realloc(many, M * sizeof *more);
  cr_assert_not_null(more);
  for (size_t i = N; i < M; ++i) {
    more[i] = fake_entry(1 + i % 256, 1);
    more[i].seq_bucket = (unsigned)(i / 256 % 40);
    snprintf(more[i].driver, sizeof more[i].driver, "driver %zu", i / (256 * 40));
  }
  size_t before = 0, after = 0;
  char* text = read_all(path, &before);
  free(text);
  cr_expect_eq(clattn_tuning_file_store(path, more, M), CLATTN_ERROR_TUNING_FILE);
  text = read_all(path, &after);
  free(text);
  cr_expect_eq(after, before, "the file changed");
  free(more);
  remove_tree(dir);
}

/* clattn_tuning_file_check says beforehand what clattn_tuning_file_store would refuse, and
 * writes nothing. */
Test(tuning_file, check_before_storing) {
  char dir[4096], path[4200], deep[4300], under_file[4300];
  temp_file(dir, sizeof dir, path, sizeof path);
  snprintf(deep, sizeof deep, "%s/a/b/tuning.json", dir);
  cr_expect_eq(clattn_tuning_file_check(deep), CLATTN_SUCCESS, "a new path in new directories");
  struct stat sb;
  cr_expect_neq(stat(deep, &sb), 0, "the check created the file");
  write_bytes(path, "{}", 2);
  cr_expect_eq(clattn_tuning_file_check(path), CLATTN_SUCCESS, "an existing regular file");
  snprintf(under_file, sizeof under_file, "%s/x.json", path); /* path is a file, not a dir */
  cr_expect_eq(clattn_tuning_file_check(under_file), CLATTN_ERROR_TUNING_FILE);
  cr_expect_eq(clattn_tuning_file_store(under_file, NULL, 0), CLATTN_ERROR_TUNING_FILE);
  cr_expect_eq(clattn_tuning_file_check("/dev/null"), CLATTN_ERROR_TUNING_FILE);
  cr_expect_eq(clattn_tuning_file_check(dir), CLATTN_ERROR_TUNING_FILE);
  cr_expect_eq(clattn_tuning_file_check(""), CLATTN_ERROR_INVALID_ARGUMENT);
  remove_tree(dir);
}
