/* Helpers shared by the clattn command-line tools. */
#ifndef CLATTN_TOOLS_TOOL_UTIL_H
#define CLATTN_TOOLS_TOOL_UTIL_H

#include <stdio.h>

#include "clattn/clattn.h"

/* Writes s as a JSON string literal (quotes included); NULL as "". Bytes >= 0x80 pass
 * through, so UTF-8 input stays UTF-8. */
void tool_json_string(FILE* f, const char* s);

/* "CPU", "GPU", "ACCELERATOR" or "OTHER". */
const char* tool_device_type_name(clattn_device_type type);

#endif
