/* JSON output of the tools: strings and numbers written the same way by every tool. */
#ifndef CLATTN_TOOLS_COMMON_JSON_H
#define CLATTN_TOOLS_COMMON_JSON_H

#include <stdio.h>

/* Writes s as a JSON string literal (quotes included); NULL as "". Bytes >= 0x80 pass
 * through, so UTF-8 input stays UTF-8. */
void clattn_tool_json_string(FILE* f, const char* s);

/* Writes v with 6 significant digits, or null when it is not finite (JSON has no NaN). */
void clattn_tool_json_number(FILE* f, double v);

#endif
