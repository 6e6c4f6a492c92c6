/* PNG output through libpng (see png_writer.h). */
#include "maps/png_writer.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "maps/outfile.h"

/* Where libpng's complaints go until the write returns. */
typedef struct png_error_sink {
  char* buf;
  size_t size;
} png_error_sink;

static void on_png_error(png_structp png, png_const_charp message) {
  png_error_sink* sink = png_get_error_ptr(png);
  if (sink && sink->size) snprintf(sink->buf, sink->size, "libpng: %s", message);
  png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp message) {
  (void)png;
  (void)message; /* warnings change nothing in what is written */
}

/* text with every byte outside printable ASCII replaced by '?' (tEXt is Latin-1 and must
 * not hold NUL or most control characters); malloc'ed, NULL when out of memory. */
static char* latin1_copy(const char* text) {
  const size_t n = strlen(text);
  char* out = malloc(n + 1);
  if (!out) return NULL;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = (unsigned char)text[i];
    out[i] = (c >= 32 && c < 127) || c == '\n' ? (char)c : '?';
  }
  out[n] = '\0';
  return out;
}

int clattn_maps_png_write_stream(FILE* f, const clattn_maps_image* img, const char* description,
                                 char* err, size_t err_size) {
  png_error_sink sink = {err, err_size};
  png_structp png = NULL;
  png_infop info = NULL;
  char* volatile desc_copy = NULL;
  png_bytep* volatile rows = NULL;
  volatile int result = -1;
  if (!img || !img->pixels || img->width == 0 || img->height == 0) {
    snprintf(err, err_size, "no image to write");
    return -1;
  }
  png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, on_png_error, on_png_warning);
  if (png) info = png_create_info_struct(png);
  rows = malloc(img->height * sizeof *rows);
  if (description) desc_copy = latin1_copy(description);
  if (!png || !info || !rows || (description && !desc_copy)) {
    snprintf(err, err_size, "out of memory");
    goto cleanup;
  }
  if (setjmp(png_jmpbuf(png))) goto cleanup; /* err holds libpng's message */
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_text text[2];
  memset(text, 0, sizeof text);
  text[0].compression = PNG_TEXT_COMPRESSION_NONE;
  text[0].key = "Software";
  text[0].text = "clattn-maps";
  int n_text = 1;
  if (desc_copy) {
    text[1].compression = PNG_TEXT_COMPRESSION_NONE;
    text[1].key = "Description";
    text[1].text = desc_copy;
    n_text = 2;
  }
  png_set_text(png, info, text, n_text);
  for (size_t y = 0; y < img->height; ++y) rows[y] = img->pixels + y * img->width * 3;
  png_set_rows(png, info, rows);
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
  if (fflush(f) != 0 || ferror(f)) {
    snprintf(err, err_size, "write error");
    goto cleanup;
  }
  result = 0;
cleanup:
  png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
  free(rows);
  free(desc_copy);
  return result;
}

int clattn_maps_png_write(const char* path, const clattn_maps_image* img, const char* description,
                          char* err, size_t err_size) {
  clattn_maps_outfile out;
  if (clattn_maps_outfile_open(&out, path, err, err_size) != 0) return -1;
  if (clattn_maps_png_write_stream(out.f, img, description, err, err_size) != 0) {
    clattn_maps_outfile_abort(&out);
    return -1;
  }
  return clattn_maps_outfile_commit(&out, err, err_size);
}
