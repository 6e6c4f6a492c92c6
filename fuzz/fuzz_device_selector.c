/* Fuzz target for the CLATTN_DEVICE selector parser (clattn__device_spec_parse): any text
 * must parse or be rejected with CLATTN_ERROR_INVALID_ARGUMENT, and what it parses to must
 * agree with the documented grammar. A disagreement traps. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CHECK(cond)                                                \
  do {                                                             \
    if (!(cond)) {                                                 \
      fprintf(stderr, "fuzz_device_selector: %s failed\n", #cond); \
      abort();                                                     \
    }                                                              \
  } while (0)

static int is_digit(char c) { return c >= '0' && c <= '9'; }

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  char* spec = malloc(size + 1);
  if (!spec) return 0;
  memcpy(spec, data, size);
  spec[size] = '\0'; /* text up to the first NUL, as getenv would give it */
  clattn__device_spec sel;
  clattn_status st = clattn__device_spec_parse(spec, &sel);
  if (st != CLATTN_SUCCESS) {
    /* Only a selector that starts like "P:D" can be malformed. */
    CHECK(st == CLATTN_ERROR_INVALID_ARGUMENT);
    CHECK(is_digit(spec[0]));
    CHECK(strchr(spec, ':') != NULL);
    char msg[2048];
    clattn_context_get_last_error(NULL, msg, sizeof msg, NULL);
    CHECK(strstr(msg, "malformed device selector") != NULL);
  } else {
    switch (sel.kind) {
      case CLATTN__DEVICE_SPEC_DEFAULT:
        CHECK(spec[0] == '\0');
        break;
      case CLATTN__DEVICE_SPEC_INDEX: {
        /* Printing the indices back and parsing again gives the same indices. */
        char again[32];
        snprintf(again, sizeof again, "%u:%u", (unsigned)sel.platform_index,
                 (unsigned)sel.device_index);
        clattn__device_spec sel2;
        CHECK(clattn__device_spec_parse(again, &sel2) == CLATTN_SUCCESS);
        CHECK(sel2.kind == CLATTN__DEVICE_SPEC_INDEX);
        CHECK(sel2.platform_index == sel.platform_index);
        CHECK(sel2.device_index == sel.device_index);
        CHECK(is_digit(spec[0]) && strchr(spec, ':') != NULL);
        break;
      }
      case CLATTN__DEVICE_SPEC_TYPE:
        CHECK(sel.type == CL_DEVICE_TYPE_GPU || sel.type == CL_DEVICE_TYPE_CPU ||
              sel.type == CL_DEVICE_TYPE_ACCELERATOR);
        CHECK(strlen(spec) == 3 || strlen(spec) == 11);
        break;
      case CLATTN__DEVICE_SPEC_NAME:
        CHECK(sel.name == spec);
        CHECK(spec[0] != '\0');
        /* A name that starts with a digit has no colon (else it is P:D or malformed). */
        CHECK(!is_digit(spec[0]) || strchr(spec, ':') == NULL);
        break;
      default:
        CHECK(0);
    }
  }
  free(spec);
  return 0;
}
