/* Token labels (see labels.h). */
#define _POSIX_C_SOURCE 200809L

#include "maps/labels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int clattn_maps_labels_read(const char* path, clattn_maps_labels* out, char* err, size_t err_size) {
  out->items = NULL;
  out->count = 0;
  char* text = NULL;
  int result = -1;
  FILE* f = fopen(path, "rb");
  if (!f) {
    snprintf(err, err_size, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, err_size, "cannot read %s: not a regular file", path);
    goto cleanup;
  }
  if ((unsigned long long)st.st_size > CLATTN_MAPS_LABELS_MAX_BYTES) {
    snprintf(err, err_size, "%s is larger than %zu bytes: not a file of tokens", path,
             CLATTN_MAPS_LABELS_MAX_BYTES);
    goto cleanup;
  }
  const size_t size = (size_t)st.st_size;
  text = malloc(size + 1);
  if (!text) {
    snprintf(err, err_size, "out of memory reading %s", path);
    goto cleanup;
  }
  if (fread(text, 1, size, f) != size) {
    snprintf(err, err_size, "cannot read %s: %s", path, ferror(f) ? strerror(errno) : "short read");
    goto cleanup;
  }
  text[size] = '\0';
  size_t lines = 0;
  for (size_t i = 0; i < size; ++i) {
    if (text[i] == '\0') text[i] = '?';
    if (text[i] == '\n') ++lines;
  }
  if (size > 0 && text[size - 1] != '\n') ++lines;
  /* One block: the pointers, then the text. */
  char** items = malloc(lines * sizeof *items + size + 1);
  if (!items) {
    snprintf(err, err_size, "out of memory reading %s", path);
    goto cleanup;
  }
  char* block = (char*)(items + lines);
  memcpy(block, text, size + 1);
  size_t n = 0;
  for (char* p = block; n < lines;) {
    char* nl = strchr(p, '\n');
    if (nl) *nl = '\0';
    const size_t len = strlen(p);
    if (len > 0 && p[len - 1] == '\r') p[len - 1] = '\0';
    items[n++] = p;
    if (!nl) break;
    p = nl + 1;
  }
  out->items = items;
  out->count = lines;
  result = 0;
cleanup:
  free(text);
  fclose(f);
  return result;
}

void clattn_maps_labels_free(clattn_maps_labels* labels) {
  if (!labels) return;
  free(labels->items);
  labels->items = NULL;
  labels->count = 0;
}
