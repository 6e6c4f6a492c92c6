/* The vector version of the picture: the same layout as the PNG, every cell a rect whose
 * <title> (shown on hover) says "head 3: q 5, k 2: 0.1234" (with the tokens when labelled). */
#ifndef CLATTN_TOOLS_MAPS_SVG_WRITER_H
#define CLATTN_TOOLS_MAPS_SVG_WRITER_H

#include <stddef.h>
#include <stdio.h>

#include "maps/grid.h"

/* Most cells (all panels together) an SVG holds: about 110 bytes each, so about 14 MB,
 * which browsers still open quickly. */
#define CLATTN_MAPS_SVG_MAX_CELLS ((size_t)131072)

/* Whether g fits an SVG; when not, -1 and a message saying what to change. */
int clattn_maps_svg_check(const clattn_maps_grid* g, char* err, size_t err_size);

/* Writes the SVG of g laid out as layout (not binned) to f. Returns 0, or -1 with a message. */
int clattn_maps_svg_write_stream(FILE* f, const clattn_maps_grid* g,
                                 const clattn_maps_layout* layout, char* err, size_t err_size);

#endif
