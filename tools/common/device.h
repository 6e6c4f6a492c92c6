/* How the tools name what they learn about a device. */
#ifndef CLATTN_TOOLS_COMMON_DEVICE_H
#define CLATTN_TOOLS_COMMON_DEVICE_H

#include "clattn/clattn.h"

/* "CPU", "GPU", "ACCELERATOR" or "OTHER". */
const char* clattn_tool_device_type_name(clattn_device_type type);

#endif
