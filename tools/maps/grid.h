/* The picture's layout: a panel per map (title, axis ticks, token labels, axis captions), the
 * panels in a grid, a colour scale bar with ticks, a title line and footnotes. The layout is
 * computed once and drawn by two back ends, the raster (clattn_maps_render, for the PNG) and
 * the SVG writer, from the same geometry and the same list of text and tick items. */
#ifndef CLATTN_TOOLS_MAPS_GRID_H
#define CLATTN_TOOLS_MAPS_GRID_H

#include <stddef.h>

#include "maps/image.h"

/* Label text longer than this many glyphs is cut, ending with an ellipsis. */
#define CLATTN_MAPS_LABEL_MAX_GLYPHS 12

/* Largest cell, pixels. */
#define CLATTN_MAPS_CELL_MAX 64

/* Above this many rows or columns a map is drawn binned: one pixel per bin x bin cells,
 * the largest value of the bin (so a lone bright cell stays visible). */
#define CLATTN_MAPS_MAX_PIXELS_PER_MAP_SIDE 1024

/* The colour scale: linear from 0 to the largest finite value drawn, linear from 0 to 1, or
 * logarithmic over the 4 decades below the largest value (smaller values, 0 included, take
 * the bottom colour). */
typedef enum clattn_maps_range {
  CLATTN_MAPS_RANGE_MAX = 0,
  CLATTN_MAPS_RANGE_FIXED = 1,
  CLATTN_MAPS_RANGE_LOG = 2
} clattn_maps_range;

#define CLATTN_MAPS_LOG_DECADES 4

/* What to draw. */
typedef struct clattn_maps_grid {
  size_t panels;
  const float* const* values; /* panels maps, each rows x cols, row-major (query i, key j) */
  const char* const* titles;  /* panels titles ("head 3", "mean") */
  size_t rows, cols;
  const char* const* row_labels; /* rows tokens, or NULL */
  const char* const* col_labels; /* cols tokens, or NULL */
  clattn_maps_range range;       /* the colour scale */
  size_t cell;                   /* pixels per cell, 1..64; 0: chosen from the size */
  size_t columns;                /* panels per row of the grid; 0: chosen */
  size_t tick_every;             /* axis tick every this many tokens; 0: chosen */
  const char* title;             /* a line above the grid, or NULL */
  const char* value_name;        /* what the values are, under the scale bar; NULL: "p" */
} clattn_maps_grid;

typedef enum clattn_maps_item_kind {
  CLATTN_MAPS_TEXT,    /* horizontal text; (x, y): anchor point, y the vertical centre */
  CLATTN_MAPS_TEXT_UP, /* text reading upward; x the centre line, y the anchor point */
  CLATTN_MAPS_RECT     /* a filled rectangle (ticks, frames): x, y, w, h */
} clattn_maps_item_kind;

typedef enum clattn_maps_anchor {
  CLATTN_MAPS_START, /* text begins at the point (left; for TEXT_UP, bottom) */
  CLATTN_MAPS_MIDDLE,
  CLATTN_MAPS_END
} clattn_maps_anchor;

typedef enum clattn_maps_tone {
  CLATTN_MAPS_INK,   /* text, ticks */
  CLATTN_MAPS_MUTED, /* frames, secondary text */
  CLATTN_MAPS_STRONG /* titles */
} clattn_maps_tone;

typedef struct clattn_maps_item {
  clattn_maps_item_kind kind;
  long x, y, w, h;
  clattn_maps_anchor anchor;
  clattn_maps_tone tone;
  char* text; /* TEXT items: malloc'ed UTF-8 */
} clattn_maps_item;

typedef struct clattn_maps_layout {
  size_t bin;  /* cells per pixel side of a bin (1: not binned) */
  size_t cell; /* pixels per drawn cell (per bin when binned) */
  size_t map_w, map_h;
  size_t grid_cols, grid_rows;
  size_t panel_w, panel_h; /* pitch of the panels */
  size_t map_dx, map_dy;   /* the map's top-left corner within its panel */
  size_t origin_x, origin_y;
  size_t bar_x, bar_y, bar_w, bar_h;
  size_t width, height;
  size_t tick_every;
  double top;    /* value at the top of the scale */
  double bottom; /* value at its bottom: 0, or top / 10^4 on the log scale */
  int log_scale;
  double max_value; /* largest finite value drawn (0 when none) */
  size_t nan_count; /* NaN values drawn */
  clattn_maps_item* items;
  size_t item_count, item_capacity;
} clattn_maps_layout;

/* Computes the layout of g (values NULL: as if every value were 0, to learn the picture's size
 * before there are values; only the scale's numbers may then differ). Returns 0, or -1 with a
 * message in err: nothing to draw, a cell size above 64, an image larger than
 * CLATTN_MAPS_IMAGE_MAX_SIDE or _MAX_PIXELS (the message says what to change), no memory. */
int clattn_maps_layout_compute(const clattn_maps_grid* g, clattn_maps_layout* out, char* err,
                               size_t err_size);

/* Frees the layout's items. */
void clattn_maps_layout_free(clattn_maps_layout* layout);

/* Top-left pixel of panel p's map. */
void clattn_maps_layout_map_origin(const clattn_maps_layout* layout, size_t p, size_t* x,
                                   size_t* y);

/* The value a drawn cell or bin shows: row r, column c of the drawn map (bins: their largest
 * value, NaN when any is NaN). */
float clattn_maps_layout_cell_value(const clattn_maps_grid* g, const clattn_maps_layout* layout,
                                    size_t panel, size_t r, size_t c);

/* The colour of value v on the layout's scale. */
clattn_maps_rgb clattn_maps_layout_color(const clattn_maps_layout* layout, double v);

/* Draws the picture into *img (allocated here; free with clattn_maps_image_free). Returns 0,
 * or -1 with a message. */
int clattn_maps_render(const clattn_maps_grid* g, const clattn_maps_layout* layout,
                       clattn_maps_image* img, char* err, size_t err_size);

/* The colours of the tones and the background, shared by both back ends. */
clattn_maps_rgb clattn_maps_tone_color(clattn_maps_tone tone);
extern const clattn_maps_rgb clattn_maps_background;

#endif
