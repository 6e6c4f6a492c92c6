/* The registry of kernel variants: every variant clattn can run, one entry each. */
#include <stddef.h>
#include <strings.h>

#include "internal.h"

typedef struct variant_names {
  clattn_variant id;
  const char* name;
  const char* short_name;
} variant_names;

static const variant_names kNames[] = {
    {CLATTN_VARIANT_AUTO, "auto", "auto"},
    {CLATTN_VARIANT_TILED_LOCAL, "tiled_local", "tiled"},
    {CLATTN_VARIANT_REGISTER_BLOCKED, "register_blocked", "regblock"},
};

const char* clattn_variant_name(clattn_variant variant) {
  for (size_t i = 0; i < sizeof kNames / sizeof kNames[0]; ++i) {
    if (kNames[i].id == variant) return kNames[i].name;
  }
  return NULL;
}

clattn_status clattn_variant_from_name(const char* name, clattn_variant* variant) {
  if (!name || !variant) return CLATTN_ERROR_INVALID_ARGUMENT;
  for (size_t i = 0; i < sizeof kNames / sizeof kNames[0]; ++i) {
    if (strcasecmp(name, kNames[i].name) == 0 || strcasecmp(name, kNames[i].short_name) == 0) {
      *variant = kNames[i].id;
      return CLATTN_SUCCESS;
    }
  }
  return CLATTN_ERROR_INVALID_ARGUMENT;
}
