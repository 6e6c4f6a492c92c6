/* How the tools name what they learn about a device (see device.h). */
#include "common/device.h"

const char* clattn_tool_device_type_name(clattn_device_type type) {
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
