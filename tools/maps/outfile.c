/* Output files written whole or not at all (see outfile.h). */
#define _POSIX_C_SOURCE 200809L

#include "maps/outfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static void release(clattn_maps_outfile* out) {
  free(out->path);
  free(out->tmp_path);
  out->path = out->tmp_path = NULL;
  out->f = NULL;
}

int clattn_maps_outfile_open(clattn_maps_outfile* out, const char* path, char* err,
                             size_t err_size) {
  out->f = NULL;
  out->path = out->tmp_path = NULL;
  if (!path || !*path) {
    snprintf(err, err_size, "the output path is empty");
    return -1;
  }
  struct stat st;
  if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
    snprintf(err, err_size, "%s exists and is not a regular file (%s); not replaced", path,
             S_ISDIR(st.st_mode)                          ? "a directory"
             : S_ISLNK(st.st_mode)                        ? "a symbolic link"
             : S_ISFIFO(st.st_mode)                       ? "a FIFO"
             : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                          : "not a file");
    return -1;
  }
  const size_t len = strlen(path);
  out->path = malloc(len + 1);
  out->tmp_path = malloc(len + sizeof ".tmp.XXXXXX");
  if (!out->path || !out->tmp_path) {
    snprintf(err, err_size, "out of memory");
    release(out);
    return -1;
  }
  memcpy(out->path, path, len + 1);
  memcpy(out->tmp_path, path, len);
  memcpy(out->tmp_path + len, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
  const int fd = mkstemp(out->tmp_path);
  if (fd < 0) {
    snprintf(err, err_size, "cannot write %s: %s", path, strerror(errno));
    release(out);
    return -1;
  }
  out->f = fdopen(fd, "wb");
  if (!out->f) {
    snprintf(err, err_size, "cannot write %s: %s", path, strerror(errno));
    close(fd);
    unlink(out->tmp_path);
    release(out);
    return -1;
  }
  return 0;
}

int clattn_maps_outfile_commit(clattn_maps_outfile* out, char* err, size_t err_size) {
  if (!out->f) {
    snprintf(err, err_size, "internal error: output file not open");
    return -1;
  }
  /* mkstemp makes the file 0600; a picture is for reading, as any new file would be. */
  const mode_t mask = umask(0);
  umask(mask);
  int failed = fflush(out->f) != 0 || ferror(out->f);
  int saved = errno;
  if (!failed && (fchmod(fileno(out->f), 0666 & ~mask) != 0 || fsync(fileno(out->f)) != 0)) {
    failed = 1;
    saved = errno;
  }
  if (fclose(out->f) != 0 && !failed) {
    failed = 1;
    saved = errno;
  }
  out->f = NULL;
  if (!failed && rename(out->tmp_path, out->path) != 0) {
    failed = 1;
    saved = errno;
  }
  if (failed) {
    snprintf(err, err_size, "cannot write %s: %s", out->path, strerror(saved));
    unlink(out->tmp_path);
  }
  release(out);
  return failed ? -1 : 0;
}

void clattn_maps_outfile_abort(clattn_maps_outfile* out) {
  if (!out || !out->tmp_path) return;
  if (out->f) fclose(out->f);
  unlink(out->tmp_path);
  release(out);
}
