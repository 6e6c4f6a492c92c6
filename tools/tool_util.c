/* Helpers shared by the clattn command-line tools. */
#include "tool_util.h"

void tool_json_string(FILE* f, const char* s) {
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

const char* tool_device_type_name(clattn_device_type type) {
  switch (type) {
    case CLATTN_DEVICE_TYPE_CPU:
      return "CPU";
    case CLATTN_DEVICE_TYPE_GPU:
      return "GPU";
    case CLATTN_DEVICE_TYPE_ACCELERATOR:
      return "ACCELERATOR";
    default:
      return "OTHER";
  }
}
