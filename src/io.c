/* Reading files the library is pointed at (the tuning file, kernel sources): regular files
 * only, opened without blocking, so that a FIFO, a device or a directory at that path gives
 * a clear error instead of a hang or a nonsensical size. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* What kind of file a mode is, for messages. */
static const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

clattn_status clattn__file_open_read(const clattn_context* ctx, clattn_status error,
                                     const char* what, const char* path, FILE** out, int* missing) {
  *out = NULL;
  if (missing) *missing = 0;
  /* O_NONBLOCK: opening a FIFO for reading must not wait for a writer. */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT && missing) {
      *missing = 1;
      return CLATTN_SUCCESS;
    }
    return clattn__fail(ctx, error, "cannot open %s %s: %s", what, path, strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    return clattn__fail(ctx, error, "cannot inspect %s %s: %s", what, path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return clattn__fail(ctx, error, "%s %s is %s; clattn reads regular files only", what, path,
                        kind_of(st.st_mode));
  }
  /* Regular files never block; clear the flag anyway so reads behave as usual. */
  const int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  FILE* f = fdopen(fd, "rb");
  if (!f) {
    const int e = errno;
    close(fd);
    return clattn__fail(ctx, error, "cannot open %s %s: %s", what, path, strerror(e));
  }
  *out = f;
  return CLATTN_SUCCESS;
}

/* The directory a new entry for `path` would go into, or the nearest one above it that
 * exists: 0 when it is a directory the process may create entries in. */
static int directory_writable(const char* path, char* dir, size_t size) {
  struct stat st;
  snprintf(dir, size, "%s", path);
  for (;;) {
    char* slash = strrchr(dir, '/');
    if (!slash) {
      snprintf(dir, size, ".");
    } else if (slash == dir) {
      dir[1] = '\0';
    } else {
      *slash = '\0';
    }
    if (stat(dir, &st) == 0) break;
    if (!slash || slash == dir) return -1;
  }
  return S_ISDIR(st.st_mode) && access(dir, W_OK | X_OK) == 0 ? 0 : -1;
}

clattn_status clattn__file_check_writable(const char* what, const char* path) {
  if (!path[0]) {
    return clattn__fail(NULL, CLATTN_ERROR_INVALID_ARGUMENT, "the path of %s is empty", what);
  }
  /* Replacing is a rename into the directory (which the writer creates where missing), so
   * it is that directory, or the nearest one above it that exists, that must be writable. */
  char dir[4096];
  if (directory_writable(path, dir, sizeof dir) != 0) {
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                        "cannot write %s %s: %s is not a directory this process may write to", what,
                        path, dir);
  }
  struct stat st;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT) return CLATTN_SUCCESS; /* a new file */
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE, "cannot inspect %s %s: %s", what, path,
                        strerror(errno));
  }
  if (S_ISLNK(st.st_mode)) {
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                        "%s %s is a symbolic link; clattn replaces regular files only (give the "
                        "link's target)",
                        what, path);
  }
  if (!S_ISREG(st.st_mode)) {
    return clattn__fail(NULL, CLATTN_ERROR_TUNING_FILE,
                        "%s %s is %s; clattn replaces regular files only", what, path,
                        kind_of(st.st_mode));
  }
  return CLATTN_SUCCESS;
}
