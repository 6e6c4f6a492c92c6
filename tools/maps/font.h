/* A small embedded bitmap font: misc-fixed 6x13 (the X11 "fixed" font; public domain), ASCII
 * 32..126, Latin-1 (U+00A0..U+00FF), the ellipsis U+2026 that ends cut labels and the marks
 * tokenizers use (U+010A, U+0120, U+2581). Text is UTF-8; a code point the table lacks, or a
 * byte that is not valid UTF-8, is drawn as '?'. */
#ifndef CLATTN_TOOLS_MAPS_FONT_H
#define CLATTN_TOOLS_MAPS_FONT_H

#include <stddef.h>
#include <stdint.h>

#include "maps/image.h"

#define CLATTN_MAPS_FONT_WIDTH 6   /* advance of every glyph, pixels */
#define CLATTN_MAPS_FONT_HEIGHT 13 /* rows of every glyph */
#define CLATTN_MAPS_FONT_ASCENT 11 /* rows above the baseline */

/* The 13 rows of code point cp's glyph, top first; bit 7 of a row is its leftmost pixel. */
const uint8_t* clattn_maps_font_glyph(uint32_t cp);

/* Decodes the code point at *s and advances *s past it (one byte for invalid UTF-8, which
 * decodes as U+FFFD). *s must not be at the terminating NUL. */
uint32_t clattn_maps_utf8_next(const char** s);

/* Glyphs in text (code points, invalid bytes counting one each). */
size_t clattn_maps_text_glyphs(const char* text);

/* Copies text into out (size bytes), cut to at most max_glyphs glyphs: a longer text keeps
 * its first max_glyphs - 1 and ends with U+2026. Returns out. */
char* clattn_maps_text_fit(const char* text, size_t max_glyphs, char* out, size_t size);

/* Draws text with its glyphs' top-left corner at (x, y), each pixel scale x scale. */
void clattn_maps_draw_text(clattn_maps_image* img, long x, long y, const char* text,
                           clattn_maps_rgb color, int scale);

/* Draws text turned a quarter counter-clockwise (reading upward, tops of the glyphs to the
 * left) so that its first glyph's bottom-left corner, before turning, is at (x, y): the text
 * covers [x, x + 13·scale) x (y - glyphs·6·scale, y]. */
void clattn_maps_draw_text_up(clattn_maps_image* img, long x, long y, const char* text,
                              clattn_maps_rgb color, int scale);

#endif
