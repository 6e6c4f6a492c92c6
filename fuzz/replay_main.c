/* Replays fuzz inputs without libFuzzer: each argument is a file or a directory whose
 * regular files are fed, one at a time, to the target's LLVMFuzzerTestOneInput. A finding
 * shows up as a crash, a sanitizer report or a trap, so any failure fails the run. */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

/* Feeds one file; returns 0, or 1 when it could not be read. */
static int replay_file(const char* path) {
  FILE* f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return 1;
  }
  size_t cap = 4096, size = 0;
  uint8_t* data = malloc(cap);
  int rc = 0;
  while (data) {
    size += fread(data + size, 1, cap - size, f);
    if (size < cap) break;
    uint8_t* bigger = realloc(data, cap * 2);
    if (!bigger) {
      free(data);
      data = NULL;
      break;
    }
    data = bigger;
    cap *= 2;
  }
  if (!data || ferror(f)) {
    fprintf(stderr, "replay: cannot read %s\n", path);
    rc = 1;
  } else {
    /* A copy of exactly `size` bytes, so that a read past the input is caught under ASan. */
    uint8_t* exact = malloc(size ? size : 1);
    if (!exact) {
      rc = 1;
    } else {
      memcpy(exact, data, size);
      LLVMFuzzerTestOneInput(exact, size);
      free(exact);
    }
  }
  free(data);
  fclose(f);
  return rc;
}

int main(int argc, char** argv) {
  size_t files = 0;
  int failed = 0;
  for (int a = 1; a < argc; ++a) {
    struct stat st;
    if (stat(argv[a], &st) != 0) {
      fprintf(stderr, "replay: no such file or directory: %s\n", argv[a]);
      failed = 1;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      failed |= replay_file(argv[a]);
      ++files;
      continue;
    }
    DIR* dir = opendir(argv[a]);
    if (!dir) {
      fprintf(stderr, "replay: cannot open directory %s\n", argv[a]);
      failed = 1;
      continue;
    }
    for (struct dirent* e; (e = readdir(dir)) != NULL;) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
      if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
      failed |= replay_file(path);
      ++files;
    }
    closedir(dir);
  }
  printf("replay: %zu inputs%s\n", files, failed ? ", some unreadable" : ", all passed");
  if (files == 0) {
    fprintf(stderr, "replay: no input found\n");
    return 1;
  }
  return failed;
}
