/* An 8-bit RGB raster the maps are drawn into, and the few primitives the layout needs. */
#ifndef CLATTN_TOOLS_MAPS_IMAGE_H
#define CLATTN_TOOLS_MAPS_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct clattn_maps_rgb {
  uint8_t r, g, b;
} clattn_maps_rgb;

/* Largest image the tools make: a side of 32768 pixels, 2^26 pixels (192 MiB) in all. */
#define CLATTN_MAPS_IMAGE_MAX_SIDE 32768
#define CLATTN_MAPS_IMAGE_MAX_PIXELS ((size_t)1 << 26)

typedef struct clattn_maps_image {
  size_t width, height;
  uint8_t* pixels; /* width * height * 3 bytes, rows top to bottom, R G B */
} clattn_maps_image;

/* Allocates a width x height image filled with background. Returns 0, or -1 (and leaves *img
 * empty) for a zero side, one above the limits, or no memory. */
int clattn_maps_image_init(clattn_maps_image* img, size_t width, size_t height,
                           clattn_maps_rgb background);

/* Frees the pixels; an empty image (or NULL) is a no-op. */
void clattn_maps_image_free(clattn_maps_image* img);

/* Sets one pixel; coordinates outside the image are ignored. */
void clattn_maps_image_put(clattn_maps_image* img, long x, long y, clattn_maps_rgb c);

/* Fills the rectangle [x, x + w) x [y, y + h), clipped to the image. */
void clattn_maps_image_fill(clattn_maps_image* img, long x, long y, long w, long h,
                            clattn_maps_rgb c);

/* The outline, 1 pixel wide, of the rectangle [x, x + w) x [y, y + h). */
void clattn_maps_image_frame(clattn_maps_image* img, long x, long y, long w, long h,
                             clattn_maps_rgb c);

/* The colour of pixel (x, y), which must be inside the image. */
clattn_maps_rgb clattn_maps_image_get(const clattn_maps_image* img, size_t x, size_t y);

#endif
