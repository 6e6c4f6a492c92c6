/* .npy and raw float32 input (see npy.h). */
#define _POSIX_C_SOURCE 200809L

#include "maps/npy.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* ---------------------------------------------------------------- header dictionary */

typedef struct cursor {
  const char* p;
  const char* end;
} cursor;

static void skip_blanks(cursor* c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) {
    ++c->p;
  }
}

static int accept(cursor* c, char ch) {
  skip_blanks(c);
  if (c->p < c->end && *c->p == ch) {
    ++c->p;
    return 1;
  }
  return 0;
}

/* A quoted Python string ('...' or "..."), without escapes, into buf. */
static int parse_string(cursor* c, char* buf, size_t size) {
  skip_blanks(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return -1;
  const char quote = *c->p++;
  size_t n = 0;
  while (c->p < c->end && *c->p != quote) {
    if (*c->p == '\\' || n + 1 >= size) return -1;
    buf[n++] = *c->p++;
  }
  if (c->p >= c->end) return -1;
  ++c->p;
  buf[n] = '\0';
  return 0;
}

static int parse_size(cursor* c, size_t* out) {
  skip_blanks(c);
  if (c->p >= c->end || !isdigit((unsigned char)*c->p)) return -1;
  size_t v = 0;
  while (c->p < c->end && isdigit((unsigned char)*c->p)) {
    const size_t d = (size_t)(*c->p - '0');
    if (v > (SIZE_MAX - d) / 10) return -1;
    v = v * 10 + d;
    ++c->p;
  }
  /* Python 2's NumPy wrote 3L. */
  if (c->p < c->end && *c->p == 'L') ++c->p;
  *out = v;
  return 0;
}

typedef struct npy_header {
  char descr[32];
  int fortran_order;
  size_t shape[CLATTN_MAPS_ARRAY_MAX_DIMS];
  size_t ndim;
} npy_header;

static int parse_header(const char* text, size_t len, npy_header* h, char* err, size_t err_size) {
  cursor c = {text, text + len};
  int have_descr = 0, have_order = 0, have_shape = 0;
  if (!accept(&c, '{')) goto malformed;
  while (!accept(&c, '}')) {
    char key[32];
    if (parse_string(&c, key, sizeof key) != 0 || !accept(&c, ':')) goto malformed;
    if (strcmp(key, "descr") == 0) {
      if (parse_string(&c, h->descr, sizeof h->descr) != 0) {
        snprintf(err, err_size, "its dtype is not a simple one (a structured array?)");
        return -1;
      }
      have_descr = 1;
    } else if (strcmp(key, "fortran_order") == 0) {
      skip_blanks(&c);
      if ((size_t)(c.end - c.p) >= 4 && strncmp(c.p, "True", 4) == 0) {
        h->fortran_order = 1;
        c.p += 4;
      } else if ((size_t)(c.end - c.p) >= 5 && strncmp(c.p, "False", 5) == 0) {
        h->fortran_order = 0;
        c.p += 5;
      } else {
        goto malformed;
      }
      have_order = 1;
    } else if (strcmp(key, "shape") == 0) {
      if (!accept(&c, '(')) goto malformed;
      h->ndim = 0;
      while (!accept(&c, ')')) {
        size_t v = 0;
        if (parse_size(&c, &v) != 0) goto malformed;
        if (h->ndim == CLATTN_MAPS_ARRAY_MAX_DIMS) {
          snprintf(err, err_size, "it has more than %d dimensions", CLATTN_MAPS_ARRAY_MAX_DIMS);
          return -1;
        }
        h->shape[h->ndim++] = v;
        if (!accept(&c, ',')) {
          if (!accept(&c, ')')) goto malformed;
          break;
        }
      }
      have_shape = 1;
    } else {
      goto malformed;
    }
    if (!accept(&c, ',')) {
      if (!accept(&c, '}')) goto malformed;
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape) goto malformed;
  skip_blanks(&c);
  if (c.p != c.end) goto malformed;
  return 0;
malformed:
  snprintf(err, err_size,
           "its header is not the dictionary of 'descr', 'fortran_order' and 'shape' that NumPy "
           "writes");
  return -1;
}

/* ---------------------------------------------------------------- arrays */

static int shape_count(const size_t* shape, size_t ndim, size_t* count) {
  size_t n = 1;
  for (size_t i = 0; i < ndim; ++i) {
    if (shape[i] != 0 && n > CLATTN_MAPS_ARRAY_MAX_ELEMENTS / shape[i]) return -1;
    n *= shape[i];
  }
  if (n > CLATTN_MAPS_ARRAY_MAX_ELEMENTS) return -1;
  *count = n;
  return 0;
}

const char* clattn_maps_shape_string(const size_t* shape, size_t ndim, char* buf, size_t size) {
  size_t len = 0;
  if (size == 0) return buf;
  buf[0] = '\0';
  int n = snprintf(buf, size, "[");
  if (n > 0) len = (size_t)n;
  for (size_t i = 0; i < ndim && len < size; ++i) {
    n = snprintf(buf + len, size - len, "%s%zu", i ? ", " : "", shape[i]);
    if (n < 0) break;
    len += (size_t)n;
  }
  if (len < size) snprintf(buf + len, size - len, "]");
  return buf;
}

int clattn_maps_npy_parse(const void* bytes, size_t size, clattn_maps_array* out, char* err,
                          size_t err_size) {
  const unsigned char* b = bytes;
  memset(out, 0, sizeof *out);
  if (size < 10 || memcmp(b, kMagic, sizeof kMagic) != 0) {
    snprintf(err, err_size, "it is not a .npy file (no \\x93NUMPY magic string)");
    return -1;
  }
  const unsigned major = b[6];
  size_t header_len = 0, prefix = 0;
  if (major == 1) {
    header_len = (size_t)b[8] | (size_t)b[9] << 8;
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) {
      snprintf(err, err_size, "it is truncated in its header");
      return -1;
    }
    header_len = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    prefix = 12;
  } else {
    snprintf(err, err_size, "its .npy format version %u.%u is not one this tool reads (1, 2, 3)",
             major, (unsigned)b[7]);
    return -1;
  }
  if (header_len > size - prefix) {
    snprintf(err, err_size, "it is truncated in its header (%zu header bytes, %zu in the file)",
             header_len, size - prefix);
    return -1;
  }
  npy_header h;
  memset(&h, 0, sizeof h);
  if (parse_header((const char*)b + prefix, header_len, &h, err, err_size) != 0) return -1;
  size_t item = 0;
  if (strcmp(h.descr, "<f4") == 0) {
    item = 4;
  } else if (strcmp(h.descr, "<f8") == 0) {
    item = 8;
  } else {
    snprintf(err, err_size,
             "its dtype is '%s'; this tool reads little-endian float32 ('<f4') or float64 "
             "('<f8')%s",
             h.descr, h.descr[0] == '>' ? " (this one is big-endian)" : "");
    return -1;
  }
  char shape_text[160];
  clattn_maps_shape_string(h.shape, h.ndim, shape_text, sizeof shape_text);
  size_t count = 0;
  if (shape_count(h.shape, h.ndim, &count) != 0) {
    snprintf(err, err_size, "its shape %s has more than %zu elements", shape_text,
             CLATTN_MAPS_ARRAY_MAX_ELEMENTS);
    return -1;
  }
  const size_t data_bytes = size - prefix - header_len;
  if (data_bytes != count * item) {
    snprintf(err, err_size, "its shape %s of %s needs %zu data bytes, the file has %zu", shape_text,
             item == 4 ? "float32" : "float64", count * item, data_bytes);
    return -1;
  }
  float* data = malloc((count ? count : 1) * sizeof *data);
  if (!data) {
    snprintf(err, err_size, "out of memory for %zu elements", count);
    return -1;
  }
  const unsigned char* d = b + prefix + header_len;
  for (size_t i = 0; i < count; ++i) {
    /* Byte by byte: little-endian whatever the host, and no unaligned loads. */
    if (item == 4) {
      uint32_t u = (uint32_t)d[4 * i] | (uint32_t)d[4 * i + 1] << 8 | (uint32_t)d[4 * i + 2] << 16 |
                   (uint32_t)d[4 * i + 3] << 24;
      memcpy(&data[i], &u, sizeof u);
    } else {
      uint64_t u = 0;
      for (int k = 7; k >= 0; --k) u = u << 8 | d[8 * i + (size_t)k];
      double v;
      memcpy(&v, &u, sizeof v);
      data[i] = (float)v;
    }
  }
  if (h.fortran_order && h.ndim > 1 && count > 1) {
    /* Column-major (what numpy.save writes for a transposed array): into C order. */
    float* c_order = malloc(count * sizeof *c_order);
    if (!c_order) {
      free(data);
      snprintf(err, err_size, "out of memory for %zu elements", count);
      return -1;
    }
    for (size_t i = 0; i < count; ++i) {
      size_t rest = i, f_index = 0, f_stride = 1;
      size_t index[CLATTN_MAPS_ARRAY_MAX_DIMS];
      for (size_t d = h.ndim; d-- > 0;) {
        index[d] = rest % h.shape[d];
        rest /= h.shape[d];
      }
      for (size_t d = 0; d < h.ndim; ++d) {
        f_index += index[d] * f_stride;
        f_stride *= h.shape[d];
      }
      c_order[i] = data[f_index];
    }
    free(data);
    data = c_order;
  }
  out->data = data;
  out->ndim = h.ndim;
  memcpy(out->shape, h.shape, sizeof h.shape);
  out->count = count;
  return 0;
}

int clattn_maps_array_read(const char* path, const size_t* raw_shape, size_t raw_ndim,
                           clattn_maps_array* out, char* err, size_t err_size) {
  char why[512] = "";
  unsigned char* bytes = NULL;
  int result = -1;
  memset(out, 0, sizeof *out);
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
  const unsigned long long max_bytes = 8ull * CLATTN_MAPS_ARRAY_MAX_ELEMENTS + (1u << 20);
  if ((unsigned long long)st.st_size > max_bytes) {
    snprintf(err, err_size, "%s is larger than %llu bytes", path, max_bytes);
    goto cleanup;
  }
  const size_t size = (size_t)st.st_size;
  bytes = malloc(size ? size : 1);
  if (!bytes) {
    snprintf(err, err_size, "out of memory reading %s (%zu bytes)", path, size);
    goto cleanup;
  }
  if (fread(bytes, 1, size, f) != size) {
    snprintf(err, err_size, "cannot read %s: %s", path, ferror(f) ? strerror(errno) : "short read");
    goto cleanup;
  }
  if (size >= sizeof kMagic && memcmp(bytes, kMagic, sizeof kMagic) == 0) {
    if (clattn_maps_npy_parse(bytes, size, out, why, sizeof why) != 0) {
      snprintf(err, err_size, "%s: %s", path, why);
      goto cleanup;
    }
    result = 0;
    goto cleanup;
  }
  if (!raw_shape) {
    snprintf(err, err_size, "%s is not a .npy file (no \\x93NUMPY magic string)", path);
    goto cleanup;
  }
  char shape_text[160];
  clattn_maps_shape_string(raw_shape, raw_ndim, shape_text, sizeof shape_text);
  size_t count = 0;
  if (raw_ndim > CLATTN_MAPS_ARRAY_MAX_DIMS || shape_count(raw_shape, raw_ndim, &count) != 0) {
    snprintf(err, err_size, "%s: the shape %s is too large", path, shape_text);
    goto cleanup;
  }
  if (size != count * sizeof(float)) {
    snprintf(err, err_size,
             "%s is not a .npy file, and as raw float32 of shape %s it would be %zu bytes, not "
             "%zu",
             path, shape_text, count * sizeof(float), size);
    goto cleanup;
  }
  out->data = malloc((count ? count : 1) * sizeof(float));
  if (!out->data) {
    snprintf(err, err_size, "out of memory reading %s", path);
    goto cleanup;
  }
  memcpy(out->data, bytes, count * sizeof(float));
  out->ndim = raw_ndim;
  memcpy(out->shape, raw_shape, raw_ndim * sizeof *raw_shape);
  out->count = count;
  result = 0;
cleanup:
  free(bytes);
  fclose(f);
  return result;
}

void clattn_maps_array_free(clattn_maps_array* a) {
  if (!a) return;
  free(a->data);
  memset(a, 0, sizeof *a);
}

int clattn_maps_array_has_shape(const clattn_maps_array* a, const size_t* expected, size_t ndim) {
  size_t i = 0, j = 0;
  while (i < a->ndim && a->shape[i] == 1) ++i;
  while (j < ndim && expected[j] == 1) ++j;
  if (a->ndim - i != ndim - j) return 0;
  for (; i < a->ndim; ++i, ++j) {
    if (a->shape[i] != expected[j]) return 0;
  }
  return 1;
}
