/* Storage types: their sizes and names, and the host conversions between them, which round
 * as PyTorch's Tensor.to does (bit for bit on every non-NaN value; tools/dtype_torch_check.py
 * checks all 65,536 16-bit patterns and a sweep of floats against torch). Written on the
 * bits alone, so the result does not depend on the floating-point environment. */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

size_t clattn__dtype_size(clattn_dtype dtype) {
  switch (dtype) {
    case CLATTN_DTYPE_F32:
      return 4;
    case CLATTN_DTYPE_F16:
    case CLATTN_DTYPE_BF16:
      return 2;
  }
  return 0;
}

clattn_status clattn_dtype_size(clattn_dtype dtype, size_t* bytes) {
  const size_t n = clattn__dtype_size(dtype);
  if (!n || !bytes) return CLATTN_ERROR_INVALID_ARGUMENT;
  *bytes = n;
  return CLATTN_SUCCESS;
}

static const struct {
  const char* name;
  clattn_dtype dtype;
} kNames[] = {
    {"f32", CLATTN_DTYPE_F32},  {"fp32", CLATTN_DTYPE_F32},  {"float32", CLATTN_DTYPE_F32},
    {"f16", CLATTN_DTYPE_F16},  {"fp16", CLATTN_DTYPE_F16},  {"float16", CLATTN_DTYPE_F16},
    {"half", CLATTN_DTYPE_F16}, {"bf16", CLATTN_DTYPE_BF16}, {"bfloat16", CLATTN_DTYPE_BF16},
};

const char* clattn_dtype_name(clattn_dtype dtype) {
  /* The first name of each dtype in kNames is its own. */
  for (size_t i = 0; i < sizeof kNames / sizeof kNames[0]; ++i) {
    if (kNames[i].dtype == dtype) return kNames[i].name;
  }
  return NULL;
}

clattn_status clattn_dtype_from_name(const char* name, clattn_dtype* dtype) {
  if (!name || !dtype) return CLATTN_ERROR_INVALID_ARGUMENT;
  for (size_t i = 0; i < sizeof kNames / sizeof kNames[0]; ++i) {
    if (strcasecmp(name, kNames[i].name) == 0) {
      *dtype = kNames[i].dtype;
      return CLATTN_SUCCESS;
    }
  }
  return CLATTN_ERROR_INVALID_ARGUMENT;
}

uint16_t clattn__f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;  /* NaN: quiet, as PyTorch's scalar path */
  if (abs >= 0x477ff000u) return sign | 0x7c00u; /* from 65520 (65504 + half an ulp): Inf */
  if (abs >= 0x38800000u) {
    /* Normal in f16 (from 2^-14): rebias the exponent by 127 - 15, keep 10 mantissa bits,
     * rounding to nearest even (a carry into the exponent is the right result). */
    const uint32_t r = abs - 0x38000000u;
    return sign | (uint16_t)((r + 0xfffu + ((r >> 13) & 1u)) >> 13);
  }
  if (abs <= 0x33000000u) return sign; /* up to 2^-25 (a tie with 0, which is even): 0 */
  /* Subnormal in f16: the value in units of 2^-24 is the 24-bit significand shifted right
   * by 126 - exponent (14 to 24), rounded to nearest even. */
  const uint32_t e = abs >> 23;
  const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;
  const uint32_t half = 1u << (shift - 1);
  const uint32_t rem = m & ((1u << shift) - 1u);
  uint32_t q = m >> shift;
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return sign | (uint16_t)q;
}

float clattn__f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
  if (e == 0x1fu) {
    x = sign | 0x7f800000u | (m << 13); /* Inf, or NaN with its payload */
  } else if (e == 0) {
    if (m == 0) {
      x = sign;
    } else {
      /* Subnormal: m·2^-24, normalised. */
      uint32_t shift = 0;
      while (!(m & 0x400u)) {
        m <<= 1;
        ++shift;
      }
      x = sign | ((113u - shift) << 23) | ((m & 0x3ffu) << 13);
    }
  } else {
    x = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &x, sizeof f);
  return f;
}

uint16_t clattn__f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u; /* NaN, as c10::BFloat16 */
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float clattn__bf16_to_f32(uint16_t b) {
  const uint32_t x = (uint32_t)b << 16;
  float f;
  memcpy(&f, &x, sizeof f);
  return f;
}

float clattn__load_element(const void* p, clattn_dtype dtype, size_t i) {
  switch (dtype) {
    case CLATTN_DTYPE_F16:
      return clattn__f16_to_f32(((const uint16_t*)p)[i]);
    case CLATTN_DTYPE_BF16:
      return clattn__bf16_to_f32(((const uint16_t*)p)[i]);
    default:
      return ((const float*)p)[i];
  }
}

void clattn__store_element(void* p, clattn_dtype dtype, size_t i, float x) {
  switch (dtype) {
    case CLATTN_DTYPE_F16:
      ((uint16_t*)p)[i] = clattn__f32_to_f16(x);
      break;
    case CLATTN_DTYPE_BF16:
      ((uint16_t*)p)[i] = clattn__f32_to_bf16(x);
      break;
    default:
      ((float*)p)[i] = x;
      break;
  }
}

clattn_status clattn_convert(const void* src, clattn_dtype src_dtype, void* dst,
                             clattn_dtype dst_dtype, size_t count) {
  const size_t ssize = clattn__dtype_size(src_dtype), dsize = clattn__dtype_size(dst_dtype);
  if (!ssize || !dsize || (count && (!src || !dst))) return CLATTN_ERROR_INVALID_ARGUMENT;
  if (src_dtype == dst_dtype) {
    if (src != dst) memmove(dst, src, count * ssize);
    return CLATTN_SUCCESS;
  }
  /* Front to back: in place (equal sizes, f16 <-> bf16) each element is read before it is
   * written. */
  for (size_t i = 0; i < count; ++i) {
    clattn__store_element(dst, dst_dtype, i, clattn__load_element(src, src_dtype, i));
  }
  return CLATTN_SUCCESS;
}
