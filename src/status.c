/* Status names and messages, generated from the one list in clattn.h. */
#include "internal.h"

const char* clattn_status_name(clattn_status status) {
  switch (status) {
#define CLATTN__STATUS_NAME(name, value, message) \
  case name:                                      \
    return #name;
    CLATTN_STATUS_MAP(CLATTN__STATUS_NAME)
#undef CLATTN__STATUS_NAME
  }
  return "CLATTN_UNKNOWN_STATUS";
}

const char* clattn_status_string(clattn_status status) {
  switch (status) {
#define CLATTN__STATUS_MESSAGE(name, value, message) \
  case name:                                         \
    return message;
    CLATTN_STATUS_MAP(CLATTN__STATUS_MESSAGE)
#undef CLATTN__STATUS_MESSAGE
  }
  return "unknown status";
}

clattn_status clattn_version(int* major, int* minor, int* patch) {
  if (major) *major = CLATTN_VERSION_MAJOR;
  if (minor) *minor = CLATTN_VERSION_MINOR;
  if (patch) *patch = CLATTN_VERSION_PATCH;
  return CLATTN_SUCCESS;
}
