/* The SVG back end (see svg_writer.h). */
#include "maps/svg_writer.h"

#include <math.h>
#include <string.h>

#include "maps/colormap.h"
#include "maps/font.h"

int clattn_maps_svg_check(const clattn_maps_grid* g, char* err, size_t err_size) {
  const size_t per_map = g->rows * g->cols;
  if ((g->rows && per_map / g->rows != g->cols) || per_map > CLATTN_MAPS_SVG_MAX_CELLS ||
      g->panels * per_map > CLATTN_MAPS_SVG_MAX_CELLS) {
    snprintf(err, err_size,
             "an SVG of %zu map%s of %zu x %zu cells is above its limit of %zu cells in all: "
             "draw fewer heads (--heads-to-draw) or shorter sequences, or write the PNG alone",
             g->panels, g->panels == 1 ? "" : "s", g->rows, g->cols, CLATTN_MAPS_SVG_MAX_CELLS);
    return -1;
  }
  return 0;
}

/* text as XML character data: markup escaped, characters XML 1.0 forbids (control characters,
 * invalid UTF-8) replaced. */
static void put_escaped(FILE* f, const char* text) {
  while (*text) {
    const char* start = text;
    const uint32_t cp = clattn_maps_utf8_next(&text);
    switch (cp) {
      case '&':
        fputs("&amp;", f);
        break;
      case '<':
        fputs("&lt;", f);
        break;
      case '>':
        fputs("&gt;", f);
        break;
      case '"':
        fputs("&quot;", f);
        break;
      case '\'':
        fputs("&apos;", f);
        break;
      default:
        if (cp == 0xFFFD || (cp < 0x20 && cp != '\t') || cp == 0xFFFE || cp == 0xFFFF) {
          fputs("\xEF\xBF\xBD", f); /* U+FFFD */
        } else {
          fwrite(start, 1, (size_t)(text - start), f);
        }
    }
  }
}

static void put_color(FILE* f, clattn_maps_rgb c) { fprintf(f, "#%02x%02x%02x", c.r, c.g, c.b); }

int clattn_maps_svg_write_stream(FILE* f, const clattn_maps_grid* g, const clattn_maps_layout* L,
                                 char* err, size_t err_size) {
  if (clattn_maps_svg_check(g, err, err_size) != 0) return -1;
  if (L->bin != 1) {
    snprintf(err, err_size, "internal error: the SVG of a binned layout");
    return -1;
  }
  fprintf(f,
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%zu\" height=\"%zu\" "
          "viewBox=\"0 0 %zu %zu\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" "
          "font-size=\"10\">\n",
          L->width, L->height, L->width, L->height);
  fputs(
      "<style>.m rect:hover{stroke:#ff2020;stroke-width:2px;vector-effect:non-scaling-stroke}"
      "</style>\n",
      f);
  /* The colour map as a gradient for the scale bar, 0 at the bottom. */
  fputs("<defs><linearGradient id=\"cmap\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">", f);
  for (int i = 0; i <= 16; ++i) {
    const int e = i * 255 / 16;
    const clattn_maps_rgb c = {clattn_maps_viridis[e][0], clattn_maps_viridis[e][1],
                               clattn_maps_viridis[e][2]};
    fprintf(f, "<stop offset=\"%g\" stop-color=\"", i / 16.0);
    put_color(f, c);
    fputs("\"/>", f);
  }
  fputs("</linearGradient></defs>\n", f);
  fputs("<rect width=\"100%\" height=\"100%\" fill=\"", f);
  put_color(f, clattn_maps_background);
  fputs("\"/>\n", f);

  for (size_t p = 0; p < g->panels; ++p) {
    size_t mx = 0, my = 0;
    clattn_maps_layout_map_origin(L, p, &mx, &my);
    /* Cells in cell units: each rect is 1 x 1, scaled by the cell size. */
    fprintf(f,
            "<g class=\"m\" transform=\"translate(%zu %zu) scale(%zu)\" "
            "shape-rendering=\"crispEdges\">\n",
            mx, my, L->cell);
    for (size_t i = 0; i < g->rows; ++i) {
      for (size_t j = 0; j < g->cols; ++j) {
        const float v = g->values[p][i * g->cols + j];
        fprintf(f, "<rect x=\"%zu\" y=\"%zu\" width=\"1\" height=\"1\" fill=\"", j, i);
        put_color(f, clattn_maps_layout_color(L, v));
        fputs("\"><title>", f);
        put_escaped(f, g->titles[p]);
        fprintf(f, ": q %zu", i);
        if (g->row_labels) {
          fputs(" '", f);
          put_escaped(f, g->row_labels[i]);
          fputs("'", f);
        }
        fprintf(f, ", k %zu", j);
        if (g->col_labels) {
          fputs(" '", f);
          put_escaped(f, g->col_labels[j]);
          fputs("'", f);
        }
        fprintf(f, ": %.6g</title></rect>\n", (double)v);
      }
    }
    fputs("</g>\n", f);
  }
  fprintf(f, "<rect x=\"%zu\" y=\"%zu\" width=\"%zu\" height=\"%zu\" fill=\"url(#cmap)\"/>\n",
          L->bar_x, L->bar_y, L->bar_w, L->bar_h);

  static const char* const kAnchor[] = {"start", "middle", "end"};
  for (size_t n = 0; n < L->item_count; ++n) {
    const clattn_maps_item* it = &L->items[n];
    const clattn_maps_rgb color = clattn_maps_tone_color(it->tone);
    if (it->kind == CLATTN_MAPS_RECT) {
      fprintf(f, "<rect x=\"%ld\" y=\"%ld\" width=\"%ld\" height=\"%ld\" fill=\"", it->x, it->y,
              it->w, it->h);
      put_color(f, color);
      fputs("\"/>\n", f);
      continue;
    }
    if (it->kind == CLATTN_MAPS_TEXT) {
      fprintf(f, "<text x=\"%ld\" y=\"%ld\"", it->x, it->y);
    } else {
      fprintf(f, "<text transform=\"translate(%ld %ld) rotate(-90)\"", it->x, it->y);
    }
    fprintf(f, " text-anchor=\"%s\" dominant-baseline=\"central\" fill=\"", kAnchor[it->anchor]);
    put_color(f, color);
    fputs(it->tone == CLATTN_MAPS_STRONG ? "\" font-weight=\"bold\">" : "\">", f);
    put_escaped(f, it->text);
    fputs("</text>\n", f);
  }
  fputs("</svg>\n", f);
  if (fflush(f) != 0 || ferror(f)) {
    snprintf(err, err_size, "write error");
    return -1;
  }
  return 0;
}
