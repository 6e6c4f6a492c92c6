/* PNG output through libpng: 8-bit RGB, no interlacing. */
#ifndef CLATTN_TOOLS_MAPS_PNG_WRITER_H
#define CLATTN_TOOLS_MAPS_PNG_WRITER_H

#include <stddef.h>
#include <stdio.h>

#include "maps/image.h"

/* Writes img to f as a PNG (colour type RGB, bit depth 8), with a tEXt "Software" chunk of
 * "clattn-maps" and, when description is not NULL, a "Description" chunk holding it (Latin-1
 * as PNG requires; other bytes become '?'). Returns 0, or -1 with libpng's or the stream's
 * message in err. f stays open. */
int clattn_maps_png_write_stream(FILE* f, const clattn_maps_image* img, const char* description,
                                 char* err, size_t err_size);

/* The same to path, written whole or not at all (see outfile.h). */
int clattn_maps_png_write(const char* path, const clattn_maps_image* img, const char* description,
                          char* err, size_t err_size);

#endif
