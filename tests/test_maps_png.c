/* clattn-maps' drawing (tools/maps/): the PNG writer's output read back through libpng (size,
 * bit depth, colour type, every pixel), files written whole or not at all, the colour map's
 * ends, the bitmap font, the layout's cells and limits, the SVG's cells, the .npy and raw
 * readers on good and malformed files, the labels file. No OpenCL device needed. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, open_memstream */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maps/colormap.h"
#include "maps/font.h"
#include "maps/grid.h"
#include "maps/image.h"
#include "maps/labels.h"
#include "maps/npy.h"
#include "maps/outfile.h"
#include "maps/png_writer.h"
#include "maps/svg_writer.h"

/* ---------------------------------------------------------------- helpers */

static char g_dir[64];

static void make_dir(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/clattn-maps-test.XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
}

static void remove_dir(void) {
  DIR* d = opendir(g_dir);
  if (!d) return;
  struct dirent* e;
  char path[512];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
    if (rmdir(path) != 0) unlink(path);
  }
  closedir(d);
  rmdir(g_dir);
}

static const char* in_dir(const char* name) {
  static char path[4][512];
  static int next;
  char* p = path[next++ % 4];
  snprintf(p, 512, "%s/%s", g_dir, name);
  return p;
}

/* Entries of the test directory (temporary files left behind would show here). */
static size_t dir_entries(void) {
  DIR* d = opendir(g_dir);
  cr_assert_not_null(d);
  size_t n = 0;
  struct dirent* e;
  while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static void write_bytes(const char* path, const void* bytes, size_t n) {
  FILE* f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(bytes, 1, n, f), n);
  fclose(f);
}

/* A PNG read back through libpng's own reader, untransformed. */
typedef struct png_back {
  png_uint_32 width, height;
  int bit_depth, color_type, interlace;
  unsigned char* pixels; /* rows of rowbytes */
  size_t rowbytes;
  char description[256];
} png_back;

static void read_png(const char* path, png_back* out) {
  memset(out, 0, sizeof *out);
  FILE* f = fopen(path, "rb");
  cr_assert_not_null(f, "%s not written", path);
  unsigned char sig[8];
  cr_assert_eq(fread(sig, 1, 8, f), 8);
  cr_assert_eq(png_sig_cmp(sig, 0, 8), 0, "%s is not a PNG", path);
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  cr_assert(png && info);
  if (setjmp(png_jmpbuf(png))) cr_assert_fail("libpng could not read %s", path);
  png_init_io(png, f);
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  png_get_IHDR(png, info, &out->width, &out->height, &out->bit_depth, &out->color_type,
               &out->interlace, NULL, NULL);
  out->rowbytes = png_get_rowbytes(png, info);
  out->pixels = malloc(out->rowbytes * out->height);
  png_bytep* rows = malloc(out->height * sizeof *rows);
  for (png_uint_32 y = 0; y < out->height; ++y) rows[y] = out->pixels + y * out->rowbytes;
  png_read_image(png, rows);
  png_read_end(png, info);
  png_textp text = NULL;
  int n_text = 0;
  png_get_text(png, info, &text, &n_text);
  for (int i = 0; i < n_text; ++i) {
    if (strcmp(text[i].key, "Description") == 0) {
      snprintf(out->description, sizeof out->description, "%s", text[i].text);
    }
  }
  free(rows);
  png_destroy_read_struct(&png, &info, NULL);
  fclose(f);
}

/* ---------------------------------------------------------------- PNG writer */

TestSuite(png, .init = make_dir, .fini = remove_dir);

/* Every pixel a different colour: (x·40 + y, 255 - x·40, y·80 + x). */
static clattn_maps_rgb pattern(size_t x, size_t y) {
  clattn_maps_rgb c = {(uint8_t)(x * 40 + y), (uint8_t)(255 - x * 40), (uint8_t)(y * 80 + x)};
  return c;
}

Test(png, read_back_through_libpng_has_the_size_depth_type_and_pixels) {
  clattn_maps_image img;
  const clattn_maps_rgb white = {255, 255, 255};
  cr_assert_eq(clattn_maps_image_init(&img, 5, 3, white), 0);
  for (size_t y = 0; y < 3; ++y) {
    for (size_t x = 0; x < 5; ++x) clattn_maps_image_put(&img, (long)x, (long)y, pattern(x, y));
  }
  char err[256] = "";
  const char* path = in_dir("small.png");
  cr_assert_eq(clattn_maps_png_write(path, &img, "clattn-maps --core", err, sizeof err), 0, "%s",
               err);
  clattn_maps_image_free(&img);

  png_back b;
  read_png(path, &b);
  cr_assert_eq(b.width, 5);
  cr_assert_eq(b.height, 3);
  cr_assert_eq(b.bit_depth, 8);
  cr_assert_eq(b.color_type, PNG_COLOR_TYPE_RGB);
  cr_assert_eq(b.interlace, PNG_INTERLACE_NONE);
  cr_assert_eq(b.rowbytes, 15);
  for (size_t y = 0; y < 3; ++y) {
    for (size_t x = 0; x < 5; ++x) {
      const unsigned char* p = b.pixels + y * b.rowbytes + 3 * x;
      const clattn_maps_rgb want = pattern(x, y);
      cr_assert(p[0] == want.r && p[1] == want.g && p[2] == want.b,
                "pixel (%zu, %zu) is (%d, %d, %d), expected (%d, %d, %d)", x, y, p[0], p[1], p[2],
                want.r, want.g, want.b);
    }
  }
  cr_assert_str_eq(b.description, "clattn-maps --core");
  free(b.pixels);
  /* Written whole: the picture alone, no temporary file beside it; readable by all. */
  cr_assert_eq(dir_entries(), 1);
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  const mode_t mask = umask(0);
  umask(mask);
  cr_assert_eq(st.st_mode & 0777, 0666 & ~mask);
}

Test(png, a_failed_write_leaves_the_old_file_and_no_temporary) {
  const clattn_maps_rgb grey = {9, 9, 9};
  clattn_maps_image img;
  cr_assert_eq(clattn_maps_image_init(&img, 2, 2, grey), 0);
  char err[256] = "";
  const char* path = in_dir("keep.png");
  cr_assert_eq(clattn_maps_png_write(path, &img, NULL, err, sizeof err), 0, "%s", err);
  struct stat before;
  cr_assert_eq(stat(path, &before), 0);
  clattn_maps_image empty = {0};
  cr_assert_eq(clattn_maps_png_write(path, &empty, NULL, err, sizeof err), -1);
  cr_assert(strstr(err, "no image") != NULL, "%s", err);
  struct stat after;
  cr_assert_eq(stat(path, &after), 0);
  cr_assert_eq(after.st_size, before.st_size);
  cr_assert_eq(dir_entries(), 1);
  clattn_maps_image_free(&img);
}

Test(png, destinations_that_are_not_files_are_refused) {
  const clattn_maps_rgb grey = {9, 9, 9};
  clattn_maps_image img;
  cr_assert_eq(clattn_maps_image_init(&img, 2, 2, grey), 0);
  char err[512] = "";
  cr_assert_eq(clattn_maps_png_write(g_dir, &img, NULL, err, sizeof err), -1);
  cr_assert(strstr(err, "is not a regular file (a directory)") != NULL, "%s", err);
  cr_assert_eq(clattn_maps_png_write("/dev/null", &img, NULL, err, sizeof err), -1);
  cr_assert(strstr(err, "a device") != NULL, "%s", err);
  cr_assert_eq(clattn_maps_png_write(in_dir("no/such/dir.png"), &img, NULL, err, sizeof err), -1);
  cr_assert(strstr(err, "cannot write") != NULL && strstr(err, "No such file") != NULL, "%s", err);
  cr_assert_eq(clattn_maps_png_write("", &img, NULL, err, sizeof err), -1);
  cr_assert(strstr(err, "empty") != NULL, "%s", err);
  cr_assert_eq(symlink("small.png", in_dir("link.png")), 0);
  cr_assert_eq(clattn_maps_png_write(in_dir("link.png"), &img, NULL, err, sizeof err), -1);
  cr_assert(strstr(err, "symbolic link") != NULL, "%s", err);
  cr_assert_eq(dir_entries(), 1); /* the link alone */
  clattn_maps_image_free(&img);
}

Test(png, images_beyond_the_limits_are_refused) {
  clattn_maps_image img;
  const clattn_maps_rgb c = {0, 0, 0};
  cr_assert_eq(clattn_maps_image_init(&img, 0, 5, c), -1);
  cr_assert_eq(clattn_maps_image_init(&img, CLATTN_MAPS_IMAGE_MAX_SIDE + 1, 1, c), -1);
  cr_assert_eq(clattn_maps_image_init(&img, 16384, 16384, c), -1); /* 2^28 pixels */
  cr_assert_null(img.pixels);
}

/* ---------------------------------------------------------------- colour map */

Test(colormap, viridis_ends_and_lookup) {
  const uint8_t* lo = clattn_maps_viridis[0];
  const uint8_t* hi = clattn_maps_viridis[255];
  cr_assert(lo[0] == 68 && lo[1] == 1 && lo[2] == 84, "(%d, %d, %d)", lo[0], lo[1], lo[2]);
  cr_assert(hi[0] == 253 && hi[1] == 231 && hi[2] == 37, "(%d, %d, %d)", hi[0], hi[1], hi[2]);
  clattn_maps_rgb c = clattn_maps_colormap(0.0, 1.0);
  cr_assert(c.r == 68 && c.g == 1 && c.b == 84);
  c = clattn_maps_colormap(0.5, 0.5); /* the top of the scale */
  cr_assert(c.r == 253 && c.g == 231 && c.b == 37);
  c = clattn_maps_colormap(7.0, 1.0); /* clamped */
  cr_assert(c.r == 253 && c.g == 231 && c.b == 37);
  c = clattn_maps_colormap(-1.0, 1.0);
  cr_assert(c.r == 68 && c.g == 1 && c.b == 84);
  c = clattn_maps_colormap(0.5, 1.0); /* round(127.5) = 128 */
  cr_assert(c.r == clattn_maps_viridis[128][0] && c.g == clattn_maps_viridis[128][1] &&
            c.b == clattn_maps_viridis[128][2]);
  c = clattn_maps_colormap(NAN, 1.0);
  cr_assert(c.r == clattn_maps_nan_color.r && c.g == clattn_maps_nan_color.g &&
            c.b == clattn_maps_nan_color.b);
  /* Luminance rises along the map (a perceptual map's defining property). */
  double prev = -1;
  for (int i = 0; i < 256; i += 15) {
    const uint8_t* e = clattn_maps_viridis[i];
    const double y = 0.2126 * e[0] + 0.7152 * e[1] + 0.0722 * e[2];
    cr_assert_gt(y, prev, "entry %d", i);
    prev = y;
  }
}

/* ---------------------------------------------------------------- font */

Test(font, glyph_rows_and_drawn_pixels) {
  /* misc-fixed 6x13 'H': two stems in columns 0 and 4, rows 2..10, the bar on row 6. */
  static const uint8_t kH[13] = {0x00, 0x00, 0x88, 0x88, 0x88, 0x88, 0xf8,
                                 0x88, 0x88, 0x88, 0x88, 0x00, 0x00};
  cr_assert_arr_eq(clattn_maps_font_glyph('H'), kH, 13);
  const uint8_t* blank = clattn_maps_font_glyph(' ');
  for (int r = 0; r < 13; ++r) cr_assert_eq(blank[r], 0);
  cr_assert_eq(clattn_maps_font_glyph(0x4E00), clattn_maps_font_glyph('?'));
  cr_assert_neq(clattn_maps_font_glyph(0xE9), clattn_maps_font_glyph('?')); /* é */
  cr_assert_neq(clattn_maps_font_glyph(0x2026), clattn_maps_font_glyph('?'));

  const clattn_maps_rgb white = {255, 255, 255}, ink = {0, 0, 0};
  clattn_maps_image img;
  cr_assert_eq(clattn_maps_image_init(&img, 10, 16, white), 0);
  clattn_maps_draw_text(&img, 2, 1, "H", ink, 1);
  for (size_t y = 0; y < 16; ++y) {
    for (size_t x = 0; x < 10; ++x) {
      const int r = (int)y - 1, c = (int)x - 2;
      const int on = r >= 0 && r < 13 && c >= 0 && c < 6 && (kH[r] & (0x80 >> c));
      cr_assert_eq(clattn_maps_image_get(&img, x, y).r, on ? 0 : 255, "(%zu, %zu)", x, y);
    }
  }
  /* Turned a quarter counter-clockwise: glyph pixel (c, r) lands on (x + r, y - c - 1). */
  clattn_maps_image up;
  cr_assert_eq(clattn_maps_image_init(&up, 16, 10, white), 0);
  clattn_maps_draw_text_up(&up, 1, 8, "H", ink, 1);
  for (int r = 0; r < 13; ++r) {
    for (int c = 0; c < 6; ++c) {
      const int on = (kH[r] & (0x80 >> c)) != 0;
      cr_assert_eq(clattn_maps_image_get(&up, (size_t)(1 + r), (size_t)(8 - c - 1)).r,
                   on ? 0 : 255);
    }
  }
  clattn_maps_image_free(&img);
  clattn_maps_image_free(&up);
}

Test(font, utf8_and_cut_labels) {
  const char* s =
      "a\xC3\xA9\xFF"
      "b";
  cr_assert_eq(clattn_maps_utf8_next(&s), 'a');
  cr_assert_eq(clattn_maps_utf8_next(&s), 0xE9);
  cr_assert_eq(clattn_maps_utf8_next(&s), 0xFFFD); /* a stray byte: one replacement */
  cr_assert_eq(clattn_maps_utf8_next(&s), 'b');
  cr_assert_eq(*s, '\0');
  cr_assert_eq(clattn_maps_text_glyphs("caf\xC3\xA9"), 4);
  char buf[64];
  cr_assert_str_eq(clattn_maps_text_fit("short", 12, buf, sizeof buf), "short");
  cr_assert_str_eq(clattn_maps_text_fit("tokenization", 12, buf, sizeof buf), "tokenization");
  cr_assert_str_eq(clattn_maps_text_fit("tokenizations", 12, buf, sizeof buf),
                   "tokenizatio\xE2\x80\xA6");
  cr_assert_str_eq(clattn_maps_text_fit("\xC3\xA9\xC3\xA9\xC3\xA9", 2, buf, sizeof buf),
                   "\xC3\xA9\xE2\x80\xA6");
}

/* ---------------------------------------------------------------- layout and SVG */

static clattn_maps_rgb entry(int i) {
  clattn_maps_rgb c = {clattn_maps_viridis[i][0], clattn_maps_viridis[i][1],
                       clattn_maps_viridis[i][2]};
  return c;
}

static int same(clattn_maps_rgb a, clattn_maps_rgb b) {
  return a.r == b.r && a.g == b.g && a.b == b.b;
}

Test(grid, cells_take_the_colour_of_their_value) {
  /* A 4 x 4 identity-like map: 0.8 on the diagonal, key 3 masked (0), the rest 0.05. */
  float m[16];
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) m[i * 4 + j] = j == 3 ? 0.0f : i == j ? 0.8f : 0.05f;
  }
  const float* values[1] = {m};
  const char* titles[1] = {"head 0"};
  clattn_maps_grid g = {
      .panels = 1, .values = values, .titles = titles, .rows = 4, .cols = 4, .cell = 8};
  clattn_maps_layout L;
  char err[512];
  cr_assert_eq(clattn_maps_layout_compute(&g, &L, err, sizeof err), 0, "%s", err);
  cr_assert_eq(L.cell, 8);
  cr_assert_eq(L.bin, 1);
  cr_assert_eq(L.map_w, 32);
  cr_assert_eq(L.map_h, 32);
  cr_assert_float_eq(L.top, 0.8, 1e-7); /* 0..max */
  clattn_maps_image img;
  cr_assert_eq(clattn_maps_render(&g, &L, &img, err, sizeof err), 0, "%s", err);
  size_t mx, my;
  clattn_maps_layout_map_origin(&L, 0, &mx, &my);
  for (size_t i = 0; i < 4; ++i) {
    for (size_t j = 0; j < 4; ++j) {
      const clattn_maps_rgb want = j == 3 ? entry(0) : i == j ? entry(255) : entry(16);
      for (size_t dy = 0; dy < 8; ++dy) {
        for (size_t dx = 0; dx < 8; ++dx) {
          cr_assert(same(clattn_maps_image_get(&img, mx + j * 8 + dx, my + i * 8 + dy), want),
                    "cell (%zu, %zu)", i, j);
        }
      }
    }
  }
  /* A frame just outside the map; the bar's top is the scale's top. */
  cr_assert(
      same(clattn_maps_image_get(&img, mx - 1, my), clattn_maps_tone_color(CLATTN_MAPS_MUTED)));
  cr_assert(same(clattn_maps_image_get(&img, L.bar_x, L.bar_y), entry(255)));
  cr_assert(same(clattn_maps_image_get(&img, L.bar_x, L.bar_y + L.bar_h - 1), entry(0)));
  clattn_maps_image_free(&img);
  clattn_maps_layout_free(&L);

  /* The fixed range: 0.8 of 1 is entry round(204) = 204. */
  g.range = CLATTN_MAPS_RANGE_FIXED;
  cr_assert_eq(clattn_maps_layout_compute(&g, &L, err, sizeof err), 0, "%s", err);
  cr_assert_eq(clattn_maps_render(&g, &L, &img, err, sizeof err), 0, "%s", err);
  clattn_maps_layout_map_origin(&L, 0, &mx, &my);
  cr_assert(same(clattn_maps_image_get(&img, mx + 1, my + 1), entry(204)));
  clattn_maps_image_free(&img);
  clattn_maps_layout_free(&L);
}

Test(grid, the_log_scale_spans_four_decades_below_the_largest_value) {
  const float m[4] = {2.0f, 0.02f, 1e-5f, 0.0f};
  const float* values[1] = {m};
  const char* titles[1] = {"head 0"};
  clattn_maps_grid g = {.panels = 1,
                        .values = values,
                        .titles = titles,
                        .rows = 2,
                        .cols = 2,
                        .cell = 4,
                        .range = CLATTN_MAPS_RANGE_LOG};
  clattn_maps_layout L;
  char err[512];
  cr_assert_eq(clattn_maps_layout_compute(&g, &L, err, sizeof err), 0, "%s", err);
  cr_assert(L.log_scale);
  cr_assert_float_eq(L.bottom, 2e-4, 1e-12);
  cr_assert(same(clattn_maps_layout_color(&L, 2.0), entry(255)));
  cr_assert(same(clattn_maps_layout_color(&L, 0.02), entry(128))); /* 2 of 4 decades */
  cr_assert(same(clattn_maps_layout_color(&L, 1e-5), entry(0)));
  cr_assert(same(clattn_maps_layout_color(&L, 0.0), entry(0)));
  /* The bar's ticks are the powers of ten inside the scale: 1e-3, 1e-2, 1e-1 and 1. */
  size_t found = 0;
  for (size_t i = 0; i < L.item_count; ++i) {
    const char* t = L.items[i].text;
    if (t && (!strcmp(t, "1e-3") || !strcmp(t, "1e-2") || !strcmp(t, "1e-1") || !strcmp(t, "1"))) {
      ++found;
    }
  }
  cr_assert_eq(found, 4);
  clattn_maps_layout_free(&L);
}

Test(grid, long_sequences_are_binned_by_their_largest_value) {
  const size_t n = 1500;
  float* m = calloc(n * n, sizeof *m);
  m[1001 * n + 7] = 0.5f;
  const float* values[1] = {m};
  const char* titles[1] = {"head 0"};
  clattn_maps_grid g = {.panels = 1, .values = values, .titles = titles, .rows = n, .cols = n};
  clattn_maps_layout L;
  char err[512];
  cr_assert_eq(clattn_maps_layout_compute(&g, &L, err, sizeof err), 0, "%s", err);
  cr_assert_eq(L.bin, 2);
  cr_assert_eq(L.map_w, 750);
  cr_assert_float_eq(clattn_maps_layout_cell_value(&g, &L, 0, 500, 3), 0.5f, 0);
  cr_assert_float_eq(clattn_maps_layout_cell_value(&g, &L, 0, 500, 4), 0.0f, 0);
  cr_assert_eq(clattn_maps_svg_check(&g, err, sizeof err), -1);
  cr_assert(strstr(err, "above its limit of 131072 cells") != NULL, "%s", err);
  clattn_maps_layout_free(&L);
  /* A cell size that would make the picture too large says what to change. */
  g.cell = 64;
  cr_assert_eq(clattn_maps_layout_compute(&g, &L, err, sizeof err), -1);
  cr_assert(strstr(err, "--cell") != NULL, "%s", err);
  g.cell = 65;
  cr_assert_eq(clattn_maps_layout_compute(&g, &L, err, sizeof err), -1);
  free(m);
}

Test(grid, svg_cells_carry_their_value_and_tokens) {
  const float m[4] = {0.75f, 0.25f, 0.0f, 1.0f};
  const float* values[1] = {m};
  const char* titles[1] = {"head 2"};
  const char* rows[2] = {"the", "a<b"};
  clattn_maps_grid g = {.panels = 1,
                        .values = values,
                        .titles = titles,
                        .rows = 2,
                        .cols = 2,
                        .row_labels = rows,
                        .col_labels = rows};
  clattn_maps_layout L;
  char err[512];
  cr_assert_eq(clattn_maps_layout_compute(&g, &L, err, sizeof err), 0, "%s", err);
  char* text = NULL;
  size_t size = 0;
  FILE* f = open_memstream(&text, &size);
  cr_assert_eq(clattn_maps_svg_write_stream(f, &g, &L, err, sizeof err), 0, "%s", err);
  fclose(f);
  cr_assert(strstr(text, "<title>head 2: q 0 'the', k 1 'a&lt;b': 0.25</title>") != NULL);
  cr_assert(strstr(text, "<title>head 2: q 1 'a&lt;b', k 0 'the': 0</title>") != NULL);
  cr_assert(strstr(text, "fill=\"#fde725\"><title>head 2: q 1 'a&lt;b', k 1 'a&lt;b': 1<") != NULL);
  size_t rects = 0;
  for (const char* p = text; (p = strstr(p, "<title>")) != NULL; ++p) ++rects;
  cr_assert_eq(rects, 4);
  cr_assert(strstr(text, "</svg>\n") != NULL);
  free(text);
  clattn_maps_layout_free(&L);
}

/* ---------------------------------------------------------------- .npy and raw files */

/* A .npy file in memory as NumPy writes it: magic, version, header padded with spaces to a
 * multiple of 64 bytes and ended by '\n', then the data. */
static size_t make_npy(unsigned char* out, int major, const char* dict, const void* data,
                       size_t data_bytes) {
  const size_t prefix = major == 1 ? 10 : 12;
  size_t hlen = strlen(dict) + 1;
  while ((prefix + hlen) % 64) ++hlen;
  memcpy(out, "\x93NUMPY", 6);
  out[6] = (unsigned char)major;
  out[7] = 0;
  out[8] = (unsigned char)(hlen & 0xff);
  out[9] = (unsigned char)(hlen >> 8);
  if (major != 1) out[10] = out[11] = 0;
  memset(out + prefix, ' ', hlen);
  memcpy(out + prefix, dict, strlen(dict));
  out[prefix + hlen - 1] = '\n';
  memcpy(out + prefix + hlen, data, data_bytes);
  return prefix + hlen + data_bytes;
}

Test(npy, float32_and_float64_files_read) {
  unsigned char buf[512];
  const float f32[6] = {1, 2, 3, 4, 5, 6.5f};
  size_t n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f32,
                      sizeof f32);
  clattn_maps_array a;
  char err[512];
  cr_assert_eq(clattn_maps_npy_parse(buf, n, &a, err, sizeof err), 0, "%s", err);
  cr_assert_eq(a.ndim, 2);
  cr_assert(a.shape[0] == 2 && a.shape[1] == 3 && a.count == 6);
  cr_assert_arr_eq(a.data, f32, sizeof f32);
  const size_t want[3] = {1, 2, 3};
  cr_assert(clattn_maps_array_has_shape(&a, want, 3));
  cr_assert(clattn_maps_array_has_shape(&a, want + 1, 2));
  cr_assert_not(clattn_maps_array_has_shape(&a, want, 2));
  clattn_maps_array_free(&a);

  const double f64[3] = {0.5, -2.25, 1e-3};
  n = make_npy(buf, 2, "{\"shape\": (3,), \"fortran_order\": False, \"descr\": \"<f8\"}", f64,
               sizeof f64);
  cr_assert_eq(clattn_maps_npy_parse(buf, n, &a, err, sizeof err), 0, "%s", err);
  cr_assert(a.ndim == 1 && a.shape[0] == 3);
  cr_assert(a.data[0] == 0.5f && a.data[1] == -2.25f && a.data[2] == (float)1e-3);
  clattn_maps_array_free(&a);

  /* Fortran order (numpy.save of a transposed array) comes back in C order: the 2 x 3 array
   * [[1, 3, 5], [2, 4, 6.5]] is stored column by column as 1 2 3 4 5 6.5. */
  n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", f32,
               sizeof f32);
  cr_assert_eq(clattn_maps_npy_parse(buf, n, &a, err, sizeof err), 0, "%s", err);
  const float c_order[6] = {1, 3, 5, 2, 4, 6.5f};
  cr_assert_arr_eq(a.data, c_order, sizeof c_order);
  clattn_maps_array_free(&a);
  /* And a 2 x 3 x 2 one: element [i][j][k] at i + 2j + 6k in the file. */
  float f3[12];
  for (int e = 0; e < 12; ++e) f3[e] = (float)e;
  n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 2), }", f3,
               sizeof f3);
  cr_assert_eq(clattn_maps_npy_parse(buf, n, &a, err, sizeof err), 0, "%s", err);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      for (int k = 0; k < 2; ++k) {
        cr_assert_eq(a.data[(i * 3 + j) * 2 + k], (float)(i + 2 * j + 6 * k));
      }
    }
  }
  clattn_maps_array_free(&a);

  n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", f32, 4);
  cr_assert_eq(clattn_maps_npy_parse(buf, n, &a, err, sizeof err), 0, "%s", err);
  cr_assert(a.ndim == 0 && a.count == 1 && a.data[0] == 1.0f);
  clattn_maps_array_free(&a);

  /* Through a file, and raw float32 with the shape given. */
  n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f32,
               sizeof f32);
  make_dir();
  write_bytes(in_dir("a.npy"), buf, n);
  write_bytes(in_dir("a.raw"), f32, sizeof f32);
  const size_t raw_shape[2] = {3, 2};
  cr_assert_eq(clattn_maps_array_read(in_dir("a.npy"), raw_shape, 2, &a, err, sizeof err), 0, "%s",
               err);
  cr_assert(a.shape[0] == 2 && a.shape[1] == 3); /* the file's own shape */
  clattn_maps_array_free(&a);
  cr_assert_eq(clattn_maps_array_read(in_dir("a.raw"), raw_shape, 2, &a, err, sizeof err), 0, "%s",
               err);
  cr_assert(a.shape[0] == 3 && a.shape[1] == 2 && a.data[5] == 6.5f);
  clattn_maps_array_free(&a);
  const size_t wrong[2] = {4, 2};
  cr_assert_eq(clattn_maps_array_read(in_dir("a.raw"), wrong, 2, &a, err, sizeof err), -1);
  cr_assert(strstr(err, "as raw float32 of shape [4, 2] it would be 32 bytes, not 24") != NULL,
            "%s", err);
  cr_assert_eq(clattn_maps_array_read(in_dir("a.raw"), NULL, 0, &a, err, sizeof err), -1);
  cr_assert(strstr(err, "is not a .npy file") != NULL, "%s", err);
  cr_assert_eq(clattn_maps_array_read(in_dir("missing.npy"), NULL, 0, &a, err, sizeof err), -1);
  cr_assert(strstr(err, "cannot read") != NULL && strstr(err, "No such file") != NULL, "%s", err);
  cr_assert_eq(clattn_maps_array_read(g_dir, NULL, 0, &a, err, sizeof err), -1);
  cr_assert(strstr(err, "not a regular file") != NULL, "%s", err);
  remove_dir();
}

/* The parse of dict (with data_bytes of zeros) is refused with a message holding fragment. */
static void expect_refused(int major, const char* dict, size_t data_bytes, const char* fragment) {
  unsigned char buf[1024];
  unsigned char zeros[64] = {0};
  const size_t n = make_npy(buf, major, dict, zeros, data_bytes);
  clattn_maps_array a;
  char err[512] = "";
  cr_assert_eq(clattn_maps_npy_parse(buf, n, &a, err, sizeof err), -1, "accepted: %s", dict);
  cr_assert(strstr(err, fragment) != NULL, "%s: message \"%s\" lacks \"%s\"", dict, err, fragment);
  cr_assert_null(a.data);
}

Test(npy, malformed_headers_are_refused_with_a_reason) {
  expect_refused(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8,
                 "'>f4'; this tool reads little-endian float32");
  expect_refused(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8, "big-endian");
  expect_refused(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8, "'<i4'");
  expect_refused(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }", 4, "'<f2'");
  expect_refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20,
                 "needs 24 data bytes, the file has 20");
  expect_refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12,
                 "needs 8 data bytes, the file has 12");
  expect_refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
                 0, "has more than");
  expect_refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                 0, "not the dictionary");
  expect_refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 0,
                 "not the dictionary");
  expect_refused(1, "{'descr': '<f4', 'fortran_order': False, }", 0, "not the dictionary");
  expect_refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", 8,
                 "not the dictionary");
  expect_refused(1, "{'descr': '<f4', 'fortran_order': maybe, 'shape': (2,), }", 8,
                 "not the dictionary");
  expect_refused(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8,
                 "structured");
  expect_refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4,
                 "more than 8 dimensions");
  expect_refused(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", 8,
                 "not the dictionary");

  clattn_maps_array a;
  char err[512];
  unsigned char buf[64] = "\x93NUMPY\x01\x00\xff\x7f{";
  cr_assert_eq(clattn_maps_npy_parse(buf, 12, &a, err, sizeof err), -1);
  cr_assert(strstr(err, "truncated in its header") != NULL, "%s", err);
  memcpy(buf, "\x93NUMPY\x04\x00\x10\x00", 10);
  cr_assert_eq(clattn_maps_npy_parse(buf, 40, &a, err, sizeof err), -1);
  cr_assert(strstr(err, "version 4.0") != NULL, "%s", err);
  memcpy(buf, "PK\x03\x04", 4);
  cr_assert_eq(clattn_maps_npy_parse(buf, 40, &a, err, sizeof err), -1);
  cr_assert(strstr(err, "not a .npy file") != NULL, "%s", err);
  cr_assert_eq(clattn_maps_npy_parse(buf, 3, &a, err, sizeof err), -1);
}

/* ---------------------------------------------------------------- labels */

Test(labels, one_token_a_line) {
  make_dir();
  clattn_maps_labels l;
  char err[512];
  write_bytes(in_dir("t.txt"), "The\ncat\r\n\n&<x>\nend", 18);
  cr_assert_eq(clattn_maps_labels_read(in_dir("t.txt"), &l, err, sizeof err), 0, "%s", err);
  cr_assert_eq(l.count, 5);
  cr_assert_str_eq(l.items[0], "The");
  cr_assert_str_eq(l.items[1], "cat");
  cr_assert_str_eq(l.items[2], "");
  cr_assert_str_eq(l.items[3], "&<x>");
  cr_assert_str_eq(l.items[4], "end");
  clattn_maps_labels_free(&l);
  write_bytes(in_dir("z.txt"), "a\0b\n", 4); /* a NUL byte is drawn, not an end */
  cr_assert_eq(clattn_maps_labels_read(in_dir("z.txt"), &l, err, sizeof err), 0, "%s", err);
  cr_assert_eq(l.count, 1);
  cr_assert_str_eq(l.items[0], "a?b");
  clattn_maps_labels_free(&l);
  write_bytes(in_dir("u.txt"), "a\nb\n", 4);
  cr_assert_eq(clattn_maps_labels_read(in_dir("u.txt"), &l, err, sizeof err), 0, "%s", err);
  cr_assert_eq(l.count, 2);
  clattn_maps_labels_free(&l);
  write_bytes(in_dir("e.txt"), "", 0);
  cr_assert_eq(clattn_maps_labels_read(in_dir("e.txt"), &l, err, sizeof err), 0, "%s", err);
  cr_assert_eq(l.count, 0);
  clattn_maps_labels_free(&l);
  cr_assert_eq(clattn_maps_labels_read(in_dir("none.txt"), &l, err, sizeof err), -1);
  cr_assert(strstr(err, "cannot read") != NULL, "%s", err);
  remove_dir();
}
