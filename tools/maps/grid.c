/* The picture's layout and its raster (see grid.h). */
#include "maps/grid.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maps/colormap.h"
#include "maps/font.h"

#define FW CLATTN_MAPS_FONT_WIDTH
#define FH CLATTN_MAPS_FONT_HEIGHT
#define MARGIN 16
#define TICK 4
#define GAP 3
#define PANEL_GAP 32
#define CAPTION_W (FH + 6) /* the column of the rotated "query" caption */
#define TITLE_H (FH + 8)
#define BAR_W 14
#define LABEL_CELL_MIN 12 /* a label per row or column from this many pixels per cell */

const clattn_maps_rgb clattn_maps_background = {255, 255, 255};

clattn_maps_rgb clattn_maps_tone_color(clattn_maps_tone tone) {
  static const clattn_maps_rgb kInk = {48, 48, 48}, kMuted = {128, 128, 128}, kStrong = {0, 0, 0};
  return tone == CLATTN_MAPS_MUTED ? kMuted : tone == CLATTN_MAPS_STRONG ? kStrong : kInk;
}

/* ---------------------------------------------------------------- items */

static int add_item(clattn_maps_layout* L, clattn_maps_item item) {
  if (L->item_count == L->item_capacity) {
    const size_t cap = L->item_capacity ? 2 * L->item_capacity : 256;
    clattn_maps_item* p = realloc(L->items, cap * sizeof *p);
    if (!p) {
      free(item.text);
      return -1;
    }
    L->items = p;
    L->item_capacity = cap;
  }
  L->items[L->item_count++] = item;
  return 0;
}

static int add_rect(clattn_maps_layout* L, long x, long y, long w, long h, clattn_maps_tone tone) {
  clattn_maps_item it = {.kind = CLATTN_MAPS_RECT, .x = x, .y = y, .w = w, .h = h, .tone = tone};
  return add_item(L, it);
}

#if defined(__GNUC__)
static int add_text(clattn_maps_layout* L, clattn_maps_item_kind kind, long x, long y,
                    clattn_maps_anchor anchor, clattn_maps_tone tone, const char* fmt, ...)
    __attribute__((format(printf, 7, 8)));
#endif

static int add_text(clattn_maps_layout* L, clattn_maps_item_kind kind, long x, long y,
                    clattn_maps_anchor anchor, clattn_maps_tone tone, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return -1;
  char* text = malloc((size_t)n + 1);
  if (!text) return -1;
  va_start(ap, fmt);
  vsnprintf(text, (size_t)n + 1, fmt, ap);
  va_end(ap);
  clattn_maps_item it = {
      .kind = kind, .x = x, .y = y, .anchor = anchor, .tone = tone, .text = text};
  return add_item(L, it);
}

void clattn_maps_layout_free(clattn_maps_layout* L) {
  if (!L) return;
  for (size_t i = 0; i < L->item_count; ++i) free(L->items[i].text);
  free(L->items);
  L->items = NULL;
  L->item_count = L->item_capacity = 0;
}

/* ---------------------------------------------------------------- helpers */

static size_t digits(size_t v) {
  size_t n = 1;
  while (v >= 10) {
    v /= 10;
    ++n;
  }
  return n;
}

/* The smallest of 1, 2, 5, 10, 20, 50, ... that is at least x. */
static size_t nice_at_least(double x) {
  size_t k = 1;
  for (;;) {
    if ((double)k >= x) return k;
    if ((double)(2 * k) >= x) return 2 * k;
    if ((double)(5 * k) >= x) return 5 * k;
    if (k > (size_t)1 << 40) return k * 10;
    k *= 10;
  }
}

/* Ticks of the scale [0, top]: a step of 1, 2, 2.5 or 5 times a power of ten giving 3 to 6
 * ticks, and the decimals that print it exactly. */
static double scale_step(double top, int* decimals) {
  const double raw = top / 5.0;
  const double p = pow(10.0, floor(log10(raw)));
  static const double kMant[] = {1.0, 2.0, 2.5, 5.0, 10.0};
  double step = 10.0 * p;
  int extra = 0;
  for (size_t i = 0; i < sizeof kMant / sizeof kMant[0]; ++i) {
    if (kMant[i] * p >= raw) {
      step = kMant[i] * p;
      extra = kMant[i] == 2.5;
      break;
    }
  }
  const int d = (int)-floor(log10(step) + 1e-9) + extra;
  *decimals = d > 0 ? d : 0;
  return step;
}

/* Where value v sits on the scale, 0 (bottom) to 1 (top), clamped; NaN for NaN. */
static double scale_position(const clattn_maps_layout* L, double v) {
  if (isnan(v)) return v;
  double t;
  if (L->log_scale) {
    t = v > L->bottom ? log10(v / L->bottom) / CLATTN_MAPS_LOG_DECADES : 0.0;
  } else {
    t = L->top > 0 ? v / L->top : 0.0;
  }
  return t < 0 ? 0 : t > 1 ? 1 : t;
}

clattn_maps_rgb clattn_maps_layout_color(const clattn_maps_layout* L, double v) {
  return clattn_maps_colormap(scale_position(L, v), 1.0);
}

/* The scale bar's ticks: positions 0..1 and their numbers. */
typedef struct scale_ticks {
  size_t n;
  double at[16];
  char text[16][24];
} scale_ticks;

static void make_scale_ticks(const clattn_maps_layout* L, scale_ticks* t) {
  t->n = 0;
  if (L->log_scale) {
    /* Each power of ten in [bottom, top]. */
    const int lo = (int)ceil(log10(L->bottom) - 1e-9), hi = (int)floor(log10(L->top) + 1e-9);
    for (int k = lo; k <= hi && t->n < 16; ++k) {
      t->at[t->n] = scale_position(L, pow(10.0, k));
      if (k >= 0) {
        snprintf(t->text[t->n], sizeof t->text[0], "%.0f", pow(10.0, k));
      } else {
        snprintf(t->text[t->n], sizeof t->text[0], "1e%d", k);
      }
      ++t->n;
    }
    return;
  }
  int decimals = 0;
  const double step = scale_step(L->top, &decimals);
  for (int i = 0; t->n < 16; ++i) {
    const double v = i * step;
    if (v > L->top * (1 + 1e-9)) break;
    t->at[t->n] = v / L->top;
    snprintf(t->text[t->n], sizeof t->text[0], "%.*f", decimals, v);
    ++t->n;
  }
}

/* The label of token i cut to the label width, into buf. */
static const char* fitted(const char* const* labels, size_t i, char* buf, size_t size) {
  return clattn_maps_text_fit(labels[i], CLATTN_MAPS_LABEL_MAX_GLYPHS, buf, size);
}

static size_t widest_label(const char* const* labels, size_t n, size_t every, int all) {
  size_t w = 0;
  char buf[64];
  for (size_t i = 0; i < n; i += all ? 1 : every) {
    const size_t g = clattn_maps_text_glyphs(fitted(labels, i, buf, sizeof buf));
    if (g > w) w = g;
  }
  return w * FW;
}

/* ---------------------------------------------------------------- layout */

void clattn_maps_layout_map_origin(const clattn_maps_layout* L, size_t p, size_t* x, size_t* y) {
  const size_t gx = p % L->grid_cols, gy = p / L->grid_cols;
  *x = L->origin_x + gx * L->panel_w + L->map_dx;
  *y = L->origin_y + gy * L->panel_h + L->map_dy;
}

float clattn_maps_layout_cell_value(const clattn_maps_grid* g, const clattn_maps_layout* L,
                                    size_t panel, size_t r, size_t c) {
  const float* m = g->values[panel];
  if (L->bin == 1) return m[r * g->cols + c];
  float best = -INFINITY;
  const size_t r1 = (r + 1) * L->bin < g->rows ? (r + 1) * L->bin : g->rows;
  const size_t c1 = (c + 1) * L->bin < g->cols ? (c + 1) * L->bin : g->cols;
  for (size_t i = r * L->bin; i < r1; ++i) {
    for (size_t j = c * L->bin; j < c1; ++j) {
      const float v = m[i * g->cols + j];
      if (isnan(v)) return v;
      if (v > best) best = v;
    }
  }
  return best;
}

/* Panels per grid row: the count nearest a 16:9 picture, few empty slots, at most 4000 pixels
 * wide unless one panel is wider. */
static size_t choose_columns(size_t panels, size_t panel_w, size_t panel_h) {
  size_t best = 1;
  double best_score = INFINITY;
  for (size_t c = 1; c <= panels; ++c) {
    const size_t r = (panels + c - 1) / c;
    if (c > 1 && c * panel_w > 4000) break;
    const double aspect = (double)(c * panel_w) / (double)(r * panel_h);
    const double score =
        fabs(log(aspect / (16.0 / 9.0))) + 1.5 * (double)(c * r - panels) / (double)panels;
    if (score < best_score) {
      best_score = score;
      best = c;
    }
  }
  return best;
}

int clattn_maps_layout_compute(const clattn_maps_grid* g, clattn_maps_layout* out, char* err,
                               size_t err_size) {
  memset(out, 0, sizeof *out);
  clattn_maps_layout* L = out;
  if (g->panels == 0 || g->rows == 0 || g->cols == 0) {
    snprintf(err, err_size, "nothing to draw");
    return -1;
  }
  if (g->cell > CLATTN_MAPS_CELL_MAX) {
    snprintf(err, err_size, "a cell of %zu pixels is above the limit of %d", g->cell,
             CLATTN_MAPS_CELL_MAX);
    return -1;
  }
  const int labels = g->row_labels || g->col_labels;
  const size_t longest = g->rows > g->cols ? g->rows : g->cols;
  L->bin = 1;
  L->cell = g->cell;
  if (L->cell == 0) {
    if (longest > CLATTN_MAPS_MAX_PIXELS_PER_MAP_SIDE) {
      L->bin =
          (longest + CLATTN_MAPS_MAX_PIXELS_PER_MAP_SIDE - 1) / CLATTN_MAPS_MAX_PIXELS_PER_MAP_SIDE;
      L->cell = 1;
    } else {
      L->cell = 480 / longest;
      if (L->cell > 32) L->cell = 32;
      if (labels && longest <= 96 && L->cell < 14) L->cell = 14;
      if (L->cell < 1) L->cell = 1;
    }
  }
  const size_t bins_r = (g->rows + L->bin - 1) / L->bin, bins_c = (g->cols + L->bin - 1) / L->bin;
  /* Sides are checked before anything is multiplied further (rows and cols are below 2^40). */
  if (bins_r > CLATTN_MAPS_IMAGE_MAX_SIDE || bins_c > CLATTN_MAPS_IMAGE_MAX_SIDE ||
      bins_r * L->cell > CLATTN_MAPS_IMAGE_MAX_SIDE ||
      bins_c * L->cell > CLATTN_MAPS_IMAGE_MAX_SIDE) {
    snprintf(err, err_size,
             "a map of %zu x %zu cells at %zu pixels per cell is wider than %d pixels; choose a "
             "smaller --cell (or leave it to the tool)",
             g->rows, g->cols, L->cell, CLATTN_MAPS_IMAGE_MAX_SIDE);
    return -1;
  }
  L->map_w = bins_c * L->cell;
  L->map_h = bins_r * L->cell;
  const double ppc = (double)L->cell / (double)L->bin; /* pixels per cell */

  /* Values: the scale's top and what the footnotes report. */
  float max_value = 0.0f;
  for (size_t p = 0; g->values && p < g->panels; ++p) {
    for (size_t i = 0; i < g->rows * g->cols; ++i) {
      const float v = g->values[p][i];
      if (isnan(v)) {
        ++L->nan_count;
      } else if (isfinite(v) && v > max_value) {
        max_value = v;
      }
    }
  }
  L->max_value = max_value;
  L->top = g->range == CLATTN_MAPS_RANGE_FIXED ? 1.0 : (max_value > 0 ? (double)max_value : 1.0);
  L->log_scale = g->range == CLATTN_MAPS_RANGE_LOG;
  L->bottom = L->log_scale ? L->top * pow(10.0, -CLATTN_MAPS_LOG_DECADES) : 0.0;

  /* Ticks every k tokens: at least the width of the longest index number apart. */
  const double need = (double)(FW * digits(longest - 1) + 12) < 20.0
                          ? 20.0
                          : (double)(FW * digits(longest - 1) + 12);
  L->tick_every = g->tick_every ? g->tick_every : nice_at_least(need / ppc);
  const size_t k = L->tick_every;
  const int row_every = g->row_labels && ppc >= LABEL_CELL_MIN;
  const int col_every = g->col_labels && ppc >= LABEL_CELL_MIN;

  /* Panel geometry. */
  const size_t row_text_w =
      g->row_labels ? widest_label(g->row_labels, g->rows, k, row_every) : FW * digits(g->rows - 1);
  const size_t col_text_h = g->col_labels ? widest_label(g->col_labels, g->cols, k, col_every) : 0;
  const size_t left = CAPTION_W + row_text_w + GAP + TICK + 1;
  const size_t top = TITLE_H + (g->col_labels ? col_text_h + GAP + TICK + 1 : 0);
  const size_t bottom = 1 + TICK + GAP + FH + 4 + FH + 6;
  size_t title_w = 0;
  for (size_t p = 0; p < g->panels; ++p) {
    const size_t w = FW * clattn_maps_text_glyphs(g->titles[p]);
    if (w > title_w) title_w = w;
  }
  const size_t map_area_w = L->map_w > title_w ? L->map_w : title_w;
  L->panel_w = left + map_area_w + PANEL_GAP;
  L->panel_h = top + L->map_h + bottom;
  L->map_dx = left;
  L->map_dy = top;
  L->grid_cols = g->columns ? (g->columns < g->panels ? g->columns : g->panels)
                            : choose_columns(g->panels, L->panel_w, L->panel_h);
  L->grid_rows = (g->panels + L->grid_cols - 1) / L->grid_cols;
  L->origin_x = MARGIN;
  L->origin_y = MARGIN + (g->title ? FH + 10 : 0);

  /* Scale bar and its captions, right of the grid. */
  L->bar_x = L->origin_x + L->grid_cols * L->panel_w;
  L->bar_y = L->origin_y + L->map_dy;
  L->bar_w = BAR_W;
  L->bar_h = L->map_h < 160 ? 160 : L->map_h;
  scale_ticks ticks;
  make_scale_ticks(L, &ticks);
  size_t tick_w = 0;
  for (size_t t = 0; t < ticks.n; ++t) {
    if (strlen(ticks.text[t]) * FW > tick_w) tick_w = strlen(ticks.text[t]) * FW;
  }
  char range[96];
  if (g->range == CLATTN_MAPS_RANGE_FIXED) {
    snprintf(range, sizeof range, "0 to 1 (fixed)");
  } else if (L->log_scale) {
    snprintf(range, sizeof range, "log, %.3g to max %.4g", L->bottom, L->top);
  } else {
    snprintf(range, sizeof range, "0 to max %.4g", L->top);
  }
  const char* name = g->value_name ? g->value_name : "p";
  size_t col_w = BAR_W + 1 + TICK + GAP + tick_w;
  if (FW * strlen(range) > col_w) col_w = FW * strlen(range);
  if (FW * clattn_maps_text_glyphs(name) > col_w) col_w = FW * clattn_maps_text_glyphs(name);

  /* Footnotes. */
  char notes[2][160];
  size_t n_notes = 0;
  if (L->bin > 1) {
    snprintf(notes[n_notes++], sizeof notes[0],
             "each pixel shows the largest value of %zu x %zu cells", L->bin, L->bin);
  }
  if (L->nan_count) {
    snprintf(notes[n_notes++], sizeof notes[0], "%zu NaN value%s drawn in red", L->nan_count,
             L->nan_count == 1 ? "" : "s");
  }

  const size_t grid_bottom = L->origin_y + L->grid_rows * L->panel_h;
  const size_t bar_bottom = L->bar_y + L->bar_h + 1 + GAP + 2 * (FH + 3) + 4;
  size_t content_bottom = grid_bottom > bar_bottom ? grid_bottom : bar_bottom;
  const size_t notes_y = content_bottom;
  content_bottom += n_notes * (FH + 4);
  L->width = L->bar_x + col_w + MARGIN;
  if (g->title && MARGIN + FW * clattn_maps_text_glyphs(g->title) + MARGIN > L->width) {
    L->width = MARGIN + FW * clattn_maps_text_glyphs(g->title) + MARGIN;
  }
  L->height = content_bottom + MARGIN;
  if (L->width > CLATTN_MAPS_IMAGE_MAX_SIDE || L->height > CLATTN_MAPS_IMAGE_MAX_SIDE ||
      L->width * L->height > CLATTN_MAPS_IMAGE_MAX_PIXELS) {
    snprintf(err, err_size,
             "the picture would be %zu x %zu pixels, above the limit (%d a side, %zu in all): "
             "draw fewer heads (--heads-to-draw), more panels a row (--columns) or smaller cells "
             "(--cell)",
             L->width, L->height, CLATTN_MAPS_IMAGE_MAX_SIDE, CLATTN_MAPS_IMAGE_MAX_PIXELS);
    return -1;
  }

  /* Items. */
  int bad = 0;
  char buf[64];
  if (g->title) {
    bad |= add_text(L, CLATTN_MAPS_TEXT, MARGIN, MARGIN + FH / 2, CLATTN_MAPS_START,
                    CLATTN_MAPS_STRONG, "%s", g->title);
  }
  for (size_t p = 0; p < g->panels && !bad; ++p) {
    size_t mx_u = 0, my_u = 0;
    clattn_maps_layout_map_origin(L, p, &mx_u, &my_u);
    const long mx = (long)mx_u, my = (long)my_u, mw = (long)L->map_w, mh = (long)L->map_h;
    const long px = mx - (long)L->map_dx, py = my - (long)L->map_dy;
    bad |= add_text(L, CLATTN_MAPS_TEXT, mx + mw / 2, py + FH / 2 + 2, CLATTN_MAPS_MIDDLE,
                    CLATTN_MAPS_STRONG, "%s", g->titles[p]);
    /* Frame, just outside the map. */
    bad |= add_rect(L, mx - 1, my - 1, mw + 2, 1, CLATTN_MAPS_MUTED);
    bad |= add_rect(L, mx - 1, my + mh, mw + 2, 1, CLATTN_MAPS_MUTED);
    bad |= add_rect(L, mx - 1, my, 1, mh, CLATTN_MAPS_MUTED);
    bad |= add_rect(L, mx + mw, my, 1, mh, CLATTN_MAPS_MUTED);
    /* Keys: ticks and numbers below; labels above. */
    for (size_t j = 0; j < g->cols && !bad; ++j) {
      const long cx = mx + (long)floor(((double)j + 0.5) * ppc);
      const int ticked = j % k == 0;
      if (ticked) {
        bad |= add_rect(L, cx, my + mh + 1, 1, TICK, CLATTN_MAPS_INK);
        bad |= add_text(L, CLATTN_MAPS_TEXT, cx, my + mh + 1 + TICK + GAP + FH / 2,
                        CLATTN_MAPS_MIDDLE, CLATTN_MAPS_INK, "%zu", j);
      }
      if (g->col_labels && (ticked || col_every)) {
        if (ticked) bad |= add_rect(L, cx, my - 1 - TICK, 1, TICK, CLATTN_MAPS_INK);
        bad |= add_text(L, CLATTN_MAPS_TEXT_UP, cx, my - 1 - TICK - GAP, CLATTN_MAPS_START,
                        CLATTN_MAPS_INK, "%s", fitted(g->col_labels, j, buf, sizeof buf));
      }
    }
    /* Queries: ticks on the left, with numbers or labels. */
    for (size_t i = 0; i < g->rows && !bad; ++i) {
      const long cy = my + (long)floor(((double)i + 0.5) * ppc);
      const int ticked = i % k == 0;
      if (ticked) bad |= add_rect(L, mx - 1 - TICK, cy, TICK, 1, CLATTN_MAPS_INK);
      if (g->row_labels && (ticked || row_every)) {
        bad |= add_text(L, CLATTN_MAPS_TEXT, mx - 1 - TICK - GAP, cy, CLATTN_MAPS_END,
                        CLATTN_MAPS_INK, "%s", fitted(g->row_labels, i, buf, sizeof buf));
      } else if (!g->row_labels && ticked) {
        bad |= add_text(L, CLATTN_MAPS_TEXT, mx - 1 - TICK - GAP, cy, CLATTN_MAPS_END,
                        CLATTN_MAPS_INK, "%zu", i);
      }
    }
    bad |= add_text(L, CLATTN_MAPS_TEXT, mx + mw / 2, my + mh + 1 + TICK + GAP + FH + 4 + FH / 2,
                    CLATTN_MAPS_MIDDLE, CLATTN_MAPS_MUTED, "key");
    bad |= add_text(L, CLATTN_MAPS_TEXT_UP, px + CAPTION_W / 2, my + mh / 2, CLATTN_MAPS_MIDDLE,
                    CLATTN_MAPS_MUTED, "query");
  }
  /* The scale bar's frame, ticks and captions (its colours are the back ends'). */
  const long bx = (long)L->bar_x, by = (long)L->bar_y, bw = (long)L->bar_w, bh = (long)L->bar_h;
  bad |= add_rect(L, bx - 1, by - 1, bw + 2, 1, CLATTN_MAPS_MUTED);
  bad |= add_rect(L, bx - 1, by + bh, bw + 2, 1, CLATTN_MAPS_MUTED);
  bad |= add_rect(L, bx - 1, by, 1, bh, CLATTN_MAPS_MUTED);
  bad |= add_rect(L, bx + bw, by, 1, bh, CLATTN_MAPS_MUTED);
  for (size_t t = 0; t < ticks.n && !bad; ++t) {
    const long y = by + bh - 1 - lround(ticks.at[t] * (double)(bh - 1));
    bad |= add_rect(L, bx + bw + 1, y, TICK, 1, CLATTN_MAPS_INK);
    bad |= add_text(L, CLATTN_MAPS_TEXT, bx + bw + 1 + TICK + GAP, y, CLATTN_MAPS_START,
                    CLATTN_MAPS_INK, "%s", ticks.text[t]);
  }
  const long cap_y = by + bh + 1 + GAP + FH / 2 + 2;
  bad |=
      add_text(L, CLATTN_MAPS_TEXT, bx, cap_y, CLATTN_MAPS_START, CLATTN_MAPS_STRONG, "%s", name);
  bad |= add_text(L, CLATTN_MAPS_TEXT, bx, cap_y + FH + 3, CLATTN_MAPS_START, CLATTN_MAPS_MUTED,
                  "%s", range);
  for (size_t n = 0; n < n_notes && !bad; ++n) {
    bad |= add_text(L, CLATTN_MAPS_TEXT, MARGIN, (long)(notes_y + n * (FH + 4)) + FH / 2,
                    CLATTN_MAPS_START, CLATTN_MAPS_MUTED, "%s", notes[n]);
  }
  if (bad) {
    clattn_maps_layout_free(L);
    snprintf(err, err_size, "out of memory laying out the picture");
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- raster */

int clattn_maps_render(const clattn_maps_grid* g, const clattn_maps_layout* L,
                       clattn_maps_image* img, char* err, size_t err_size) {
  if (clattn_maps_image_init(img, L->width, L->height, clattn_maps_background) != 0) {
    snprintf(err, err_size, "out of memory for a %zu x %zu picture", L->width, L->height);
    return -1;
  }
  const size_t bins_r = L->map_h / L->cell, bins_c = L->map_w / L->cell;
  for (size_t p = 0; p < g->panels; ++p) {
    size_t mx = 0, my = 0;
    clattn_maps_layout_map_origin(L, p, &mx, &my);
    for (size_t r = 0; r < bins_r; ++r) {
      for (size_t c = 0; c < bins_c; ++c) {
        const float v = clattn_maps_layout_cell_value(g, L, p, r, c);
        clattn_maps_image_fill(img, (long)(mx + c * L->cell), (long)(my + r * L->cell),
                               (long)L->cell, (long)L->cell, clattn_maps_layout_color(L, v));
      }
    }
  }
  for (size_t y = 0; y < L->bar_h; ++y) {
    /* The bar runs through the colour map evenly, whatever the scale. */
    const double t = (double)(L->bar_h - 1 - y) / (double)(L->bar_h - 1);
    clattn_maps_image_fill(img, (long)L->bar_x, (long)(L->bar_y + y), (long)L->bar_w, 1,
                           clattn_maps_colormap(t, 1.0));
  }
  for (size_t i = 0; i < L->item_count; ++i) {
    const clattn_maps_item* it = &L->items[i];
    const clattn_maps_rgb color = clattn_maps_tone_color(it->tone);
    if (it->kind == CLATTN_MAPS_RECT) {
      clattn_maps_image_fill(img, it->x, it->y, it->w, it->h, color);
      continue;
    }
    const long len = (long)(FW * clattn_maps_text_glyphs(it->text));
    const long shift = it->anchor == CLATTN_MAPS_START    ? 0
                       : it->anchor == CLATTN_MAPS_MIDDLE ? len / 2
                                                          : len;
    if (it->kind == CLATTN_MAPS_TEXT) {
      clattn_maps_draw_text(img, it->x - shift, it->y - FH / 2, it->text, color, 1);
      /* Titles in bold: struck again one pixel to the right. */
      if (it->tone == CLATTN_MAPS_STRONG) {
        clattn_maps_draw_text(img, it->x - shift + 1, it->y - FH / 2, it->text, color, 1);
      }
    } else {
      clattn_maps_draw_text_up(img, it->x - FH / 2, it->y + shift, it->text, color, 1);
    }
  }
  return 0;
}
