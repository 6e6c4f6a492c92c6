/* The perceptual colour map of the pictures: viridis (256 entries), dark for 0, bright for
 * the top of the scale. */
#ifndef CLATTN_TOOLS_MAPS_COLORMAP_H
#define CLATTN_TOOLS_MAPS_COLORMAP_H

#include <stdint.h>

#include "maps/image.h"

/* viridis as 8-bit sRGB, entry 0 = (68, 1, 84) .. entry 255 = (253, 231, 37). */
extern const uint8_t clattn_maps_viridis[256][3];

/* The colour for value v on the scale [0, top]: entry round(255·v/top), clamped to the ends;
 * NaN gets clattn_maps_nan_color (a value outside the map, so that it cannot be mistaken for
 * one). top <= 0 maps everything to entry 0. */
clattn_maps_rgb clattn_maps_colormap(double v, double top);

extern const clattn_maps_rgb clattn_maps_nan_color;

#endif
