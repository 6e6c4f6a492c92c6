/* The RGB raster (see image.h). */
#include "maps/image.h"

#include <stdlib.h>

int clattn_maps_image_init(clattn_maps_image* img, size_t width, size_t height,
                           clattn_maps_rgb background) {
  img->width = img->height = 0;
  img->pixels = NULL;
  if (width == 0 || height == 0 || width > CLATTN_MAPS_IMAGE_MAX_SIDE ||
      height > CLATTN_MAPS_IMAGE_MAX_SIDE || width * height > CLATTN_MAPS_IMAGE_MAX_PIXELS) {
    return -1;
  }
  uint8_t* p = malloc(width * height * 3);
  if (!p) return -1;
  for (size_t i = 0; i < width * height; ++i) {
    p[3 * i] = background.r;
    p[3 * i + 1] = background.g;
    p[3 * i + 2] = background.b;
  }
  img->width = width;
  img->height = height;
  img->pixels = p;
  return 0;
}

void clattn_maps_image_free(clattn_maps_image* img) {
  if (!img) return;
  free(img->pixels);
  img->pixels = NULL;
  img->width = img->height = 0;
}

void clattn_maps_image_put(clattn_maps_image* img, long x, long y, clattn_maps_rgb c) {
  if (x < 0 || y < 0 || (size_t)x >= img->width || (size_t)y >= img->height) return;
  uint8_t* p = img->pixels + ((size_t)y * img->width + (size_t)x) * 3;
  p[0] = c.r;
  p[1] = c.g;
  p[2] = c.b;
}

void clattn_maps_image_fill(clattn_maps_image* img, long x, long y, long w, long h,
                            clattn_maps_rgb c) {
  long x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
  long x1 = x + w, y1 = y + h;
  if (x1 > (long)img->width) x1 = (long)img->width;
  if (y1 > (long)img->height) y1 = (long)img->height;
  for (long yy = y0; yy < y1; ++yy) {
    uint8_t* p = img->pixels + ((size_t)yy * img->width + (size_t)x0) * 3;
    for (long xx = x0; xx < x1; ++xx, p += 3) {
      p[0] = c.r;
      p[1] = c.g;
      p[2] = c.b;
    }
  }
}

void clattn_maps_image_frame(clattn_maps_image* img, long x, long y, long w, long h,
                             clattn_maps_rgb c) {
  if (w <= 0 || h <= 0) return;
  clattn_maps_image_fill(img, x, y, w, 1, c);
  clattn_maps_image_fill(img, x, y + h - 1, w, 1, c);
  clattn_maps_image_fill(img, x, y, 1, h, c);
  clattn_maps_image_fill(img, x + w - 1, y, 1, h, c);
}

clattn_maps_rgb clattn_maps_image_get(const clattn_maps_image* img, size_t x, size_t y) {
  const uint8_t* p = img->pixels + (y * img->width + x) * 3;
  clattn_maps_rgb c = {p[0], p[1], p[2]};
  return c;
}
