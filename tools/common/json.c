/* JSON output of the tools (see json.h). */
#include "common/json.h"

#include <math.h>

void clattn_tool_json_string(FILE* f, const char* s) {
  fputc('"', f);
  for (const unsigned char* p = (const unsigned char*)(s ? s : ""); *p; ++p) {
    switch (*p) {
      case '"':
        fputs("\\\"", f);
        break;
      case '\\':
        fputs("\\\\", f);
        break;
      case '\n':
        fputs("\\n", f);
        break;
      case '\r':
        fputs("\\r", f);
        break;
      case '\t':
        fputs("\\t", f);
        break;
      default:
        if (*p < 0x20 || *p == 0x7f) {
          fprintf(f, "\\u%04x", (unsigned)*p);
        } else {
          fputc(*p, f);
        }
    }
  }
  fputc('"', f);
}

void clattn_tool_json_number(FILE* f, double v) {
  if (isfinite(v)) {
    fprintf(f, "%.6g", v);
  } else {
    fputs("null", f);
  }
}
