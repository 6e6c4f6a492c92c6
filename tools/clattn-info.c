/* clattn-info: lists the OpenCL platforms and devices clattn can see, with the capabilities
 * clattn records for each, and marks the device clattn would pick.
 *
 * Exit status: 0 when a device is selected, 1 when there is no OpenCL platform or device
 * (or an OpenCL call fails), 2 when the selector (CLATTN_DEVICE or --device) matches none
 * or is malformed. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn_tuning.h"
#include "common/device.h"
#include "common/flags.h"
#include "common/json.h"

#define MAX_PLATFORMS 64
#define MAX_DEVICES 64
#define WRAP_COLUMN 100

typedef struct device_entry {
  cl_device_id id;
  clattn_status status; /* of clattn_device_query */
  clattn_device_info info;
} device_entry;

typedef struct platform_entry {
  char name[256];
  char vendor[256];
  char version[256];
  cl_uint num_devices;
  device_entry* devices;
} platform_entry;

/* What clattn_device_select said, and why. */
typedef struct selection {
  clattn_status status;
  cl_uint platform;
  cl_uint device;
  const char* spec;   /* the selector given, NULL for the default rule */
  const char* source; /* "--device", "CLATTN_DEVICE" or "default" */
} selection;

#define DEFAULT_RULE "first GPU, else first accelerator, else first CPU"
static const char kDefaultRule[] = DEFAULT_RULE;

/* The tuning file, read once; each device lists the entries for it. */
typedef struct tuning_state {
  char path[4096];
  clattn_status status;
  char message[1024];
  clattn_tuning_table* table;
  size_t count;
} tuning_state;

static tuning_state g_tuning;

static void tuning_load(void) {
  if (clattn_tuning_file_path(g_tuning.path, sizeof g_tuning.path, NULL) != CLATTN_SUCCESS) {
    g_tuning.path[0] = '\0';
  }
  g_tuning.status =
      clattn_tuning_table_load(g_tuning.path[0] ? g_tuning.path : NULL, &g_tuning.table);
  if (g_tuning.status != CLATTN_SUCCESS) {
    clattn_context_get_last_error(NULL, g_tuning.message, sizeof g_tuning.message, NULL);
  }
  if (g_tuning.table) clattn_tuning_table_count(g_tuning.table, &g_tuning.count);
}

/* "D=64 N=1024..2047 causal" or "GEMM m=1024 k=512", and the config or parameters. */
static void tuning_entry_text(const clattn_tuning_entry* e, char* shape, size_t shape_size,
                              char* config, size_t config_size) {
  if (e->kind == CLATTN_TUNING_GEMM) {
    snprintf(shape, shape_size, "GEMM m=%zu n=%zu,%zu k=%zu", e->gemm_m, 3 * e->gemm_k, e->gemm_k,
             e->gemm_k);
    snprintf(config, config_size, "CLBlast %s, %zu parameters", e->kernel, e->param_count);
    return;
  }
  unsigned long long lo = 1ull << e->seq_bucket, hi = (2ull << e->seq_bucket) - 1;
  if (e->seq_q_bucket != e->seq_bucket) {
    unsigned long long qlo = 1ull << e->seq_q_bucket, qhi = (2ull << e->seq_q_bucket) - 1;
    snprintf(shape, shape_size, "D=%zu Nq=%llu..%llu N=%llu..%llu%s", e->head_dim, qlo, qhi, lo, hi,
             e->causal ? " causal" : "");
  } else {
    snprintf(shape, shape_size, "D=%zu N=%llu..%llu%s", e->head_dim, lo, hi,
             e->causal ? " causal" : "");
  }
  if (clattn_attention_config_describe(&e->config, config, config_size, NULL) != CLATTN_SUCCESS) {
    snprintf(config, config_size, "unknown variant %d", (int)e->config.variant);
  }
}

static const char* tuning_level_name(int level, int current) {
  if (!current) return "stale or beyond limits, ignored";
  return level == CLATTN_CONFIG_SOURCE_TUNED ? "this driver" : "another driver";
}

static void print_tuning_text(const device_entry* dev) {
  printf("    %-19s%s", "tuning file", g_tuning.path[0] ? g_tuning.path : "(no path)");
  if (g_tuning.status != CLATTN_SUCCESS) {
    printf(" (ignored: %s)\n", g_tuning.message);
    return;
  }
  size_t shown = 0;
  for (size_t i = 0; i < g_tuning.count; ++i) {
    clattn_tuning_entry e = CLATTN_TUNING_ENTRY_INIT;
    int level = 0, current = 0;
    if (clattn_tuning_table_get(g_tuning.table, i, &e) != CLATTN_SUCCESS ||
        clattn_tuning_entry_match(&e, dev->id, &level, &current) != CLATTN_SUCCESS || !level) {
      continue;
    }
    if (shown++ == 0) putchar('\n');
    char shape[128], config[128];
    tuning_entry_text(&e, shape, sizeof shape, config, sizeof config);
    printf("      %-30s %-44s %.3f ms (default %.3f), %s\n", shape, config, e.time_ms,
           e.default_time_ms, tuning_level_name(level, current));
  }
  if (!shown) printf(" (no entries for this device)\n");
}

static void json_tuning(const device_entry* dev) {
  printf(",\"tuning\":{\"file\":");
  clattn_tool_json_string(stdout, g_tuning.path);
  printf(",\"status\":");
  clattn_tool_json_string(stdout, clattn_status_name(g_tuning.status));
  printf(",\"message\":");
  clattn_tool_json_string(stdout, g_tuning.message);
  printf(",\"entries\":[");
  size_t shown = 0;
  for (size_t i = 0; g_tuning.status == CLATTN_SUCCESS && i < g_tuning.count; ++i) {
    clattn_tuning_entry e = CLATTN_TUNING_ENTRY_INIT;
    int level = 0, current = 0;
    if (clattn_tuning_table_get(g_tuning.table, i, &e) != CLATTN_SUCCESS ||
        clattn_tuning_entry_match(&e, dev->id, &level, &current) != CLATTN_SUCCESS || !level) {
      continue;
    }
    char shape[128], config[128];
    tuning_entry_text(&e, shape, sizeof shape, config, sizeof config);
    printf("%s{\"kind\":\"%s\",\"shape\":", shown++ ? "," : "",
           e.kind == CLATTN_TUNING_GEMM ? "gemm" : "attention");
    clattn_tool_json_string(stdout, shape);
    printf(",\"config\":");
    clattn_tool_json_string(stdout, config);
    printf(",\"time_ms\":%.4f,\"default_time_ms\":%.4f,\"same_driver\":%s,\"usable\":%s}",
           e.time_ms, e.default_time_ms, level == CLATTN_CONFIG_SOURCE_TUNED ? "true" : "false",
           current ? "true" : "false");
  }
  printf("]}");
}

/* "15.6 GiB" style, in buf. */
static const char* format_bytes(char* buf, size_t size, cl_ulong bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = (double)bytes;
  size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < sizeof(kUnits) / sizeof(kUnits[0])) {
    value /= 1024.0;
    ++unit;
  }
  if (unit == 0) {
    snprintf(buf, size, "%llu B", (unsigned long long)bytes);
  } else {
    snprintf(buf, size, "%.1f %s", value, kUnits[unit]);
  }
  return buf;
}

/* Trims trailing blanks that some drivers leave in their strings. */
static void trim_right(char* s) {
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t')) s[--n] = '\0';
}

static void platform_string(cl_platform_id platform, cl_platform_info param, char* buf,
                            size_t size) {
  buf[0] = '\0';
  if (clGetPlatformInfo(platform, param, size, buf, NULL) != CL_SUCCESS) {
    snprintf(buf, size, "(unknown)");
  }
  buf[size - 1] = '\0';
  trim_right(buf);
}

/* Prints the space-separated extension list, wrapped under a hanging indent. */
static void print_wrapped_words(const char* label, const char* words, int indent) {
  int column = printf("%*s%-19s", indent, "", label);
  int line_start = column;
  int first_on_line = 1;
  const char* p = words;
  while (*p) {
    while (*p == ' ') ++p;
    if (!*p) break;
    const char* end = p;
    while (*end && *end != ' ') ++end;
    int len = (int)(end - p);
    if (!first_on_line && column + 1 + len > WRAP_COLUMN) {
      printf("\n%*s", line_start, "");
      column = line_start;
      first_on_line = 1;
    }
    if (!first_on_line) {
      putchar(' ');
      ++column;
    }
    printf("%.*s", len, p);
    column += len;
    first_on_line = 0;
    p = end;
  }
  if (first_on_line && column == line_start) printf("(none)");
  putchar('\n');
}

static void print_device_text(const platform_entry* pl, cl_uint p, cl_uint d, int selected) {
  const device_entry* dev = &pl->devices[d];
  const clattn_device_info* in = &dev->info;
  char b1[64], b2[64];
  printf("%c Device %u:%u  %s\n", selected ? '*' : ' ', p, d,
         dev->status == CLATTN_SUCCESS ? in->name : "(query failed)");
  if (dev->status != CLATTN_SUCCESS) {
    printf("    clattn_device_query: %s (%s)\n", clattn_status_name(dev->status),
           clattn_status_string(dev->status));
    return;
  }
  printf("    %-19s%s\n", "type", clattn_tool_device_type_name(in->type));
  printf("    %-19s%s\n", "vendor", in->vendor);
  printf("    %-19s%s\n", "driver version", in->driver_version);
  printf("    %-19s%s\n", "device version", in->device_version);
  printf("    %-19s%s\n", "OpenCL C version", in->opencl_c_version);
  printf("    %-19s%u\n", "compute units", in->compute_units);
  if (in->max_clock_mhz > 0) {
    printf("    %-19s%u MHz\n", "max clock", in->max_clock_mhz);
  } else {
    printf("    %-19s%s\n", "max clock", "(not reported)");
  }
  printf("    %-19s%s\n", "global memory", format_bytes(b1, sizeof b1, in->global_mem_size));
  printf("    %-19s%s%s\n", "local memory", format_bytes(b2, sizeof b2, in->local_mem_size),
         in->local_mem_is_global ? " (emulated in global memory)" : "");
  printf("    %-19s%s\n", "max alloc", format_bytes(b1, sizeof b1, in->max_mem_alloc_size));
  printf("    %-19s%zu (item sizes %zu x %zu x %zu)\n", "max work-group", in->max_work_group_size,
         in->max_work_item_sizes[0], in->max_work_item_sizes[1], in->max_work_item_sizes[2]);
  printf("    %-19s%s / %s\n", "fp16 / fp64", in->has_fp16 ? "yes" : "no",
         in->has_fp64 ? "yes" : "no");
  print_wrapped_words("extensions", in->extensions, 4);
  print_tuning_text(dev);
}

static void print_selection_text(const selection* sel, int have_devices) {
  if (sel->status == CLATTN_SUCCESS) {
    if (sel->spec) {
      printf("* = the device clattn picks (%s%s\"%s\")\n", sel->source,
             strcmp(sel->source, "--device") == 0 ? " " : "=", sel->spec);
    } else {
      printf("* = the device clattn picks (default rule: %s; CLATTN_DEVICE is unset)\n",
             kDefaultRule);
    }
  } else if (sel->status == CLATTN_ERROR_NO_DEVICE || !have_devices) {
    printf("No OpenCL device found on any platform: clattn has nothing to run on.\n");
  } else if (sel->status == CLATTN_ERROR_INVALID_ARGUMENT) {
    printf(
        "No device selected: malformed device selector %s=\"%s\" (expected P:D or a name) [%s]\n",
        sel->source, sel->spec ? sel->spec : "", clattn_status_name(sel->status));
  } else {
    printf("No device selected: %s", clattn_status_string(sel->status));
    if (sel->spec) printf(" (%s=\"%s\")", sel->source, sel->spec);
    printf(" [%s]\n", clattn_status_name(sel->status));
  }
}

static void json_device(const platform_entry* pl, cl_uint p, cl_uint d, int selected) {
  const device_entry* dev = &pl->devices[d];
  const clattn_device_info* in = &dev->info;
  printf("{\"index\":\"%u:%u\",\"platform_index\":%u,\"device_index\":%u,\"selected\":%s", p, d, p,
         d, selected ? "true" : "false");
  if (dev->status != CLATTN_SUCCESS) {
    printf(",\"query_status\":");
    clattn_tool_json_string(stdout, clattn_status_name(dev->status));
    printf("}");
    return;
  }
  printf(",\"name\":");
  clattn_tool_json_string(stdout, in->name);
  printf(",\"type\":");
  clattn_tool_json_string(stdout, clattn_tool_device_type_name(in->type));
  printf(",\"vendor\":");
  clattn_tool_json_string(stdout, in->vendor);
  printf(",\"driver_version\":");
  clattn_tool_json_string(stdout, in->driver_version);
  printf(",\"device_version\":");
  clattn_tool_json_string(stdout, in->device_version);
  printf(",\"opencl_c_version\":");
  clattn_tool_json_string(stdout, in->opencl_c_version);
  printf(",\"compute_units\":%u,\"max_clock_mhz\":%u", in->compute_units, in->max_clock_mhz);
  printf(",\"global_mem_size\":%llu,\"local_mem_size\":%llu,\"local_mem_is_global\":%s",
         (unsigned long long)in->global_mem_size, (unsigned long long)in->local_mem_size,
         in->local_mem_is_global ? "true" : "false");
  printf(",\"max_mem_alloc_size\":%llu,\"max_work_group_size\":%zu",
         (unsigned long long)in->max_mem_alloc_size, in->max_work_group_size);
  printf(",\"max_work_item_sizes\":[%zu,%zu,%zu]", in->max_work_item_sizes[0],
         in->max_work_item_sizes[1], in->max_work_item_sizes[2]);
  printf(",\"fp16\":%s,\"fp64\":%s", in->has_fp16 ? "true" : "false",
         in->has_fp64 ? "true" : "false");
  printf(",\"extensions\":[");
  int first = 1;
  const char* s = in->extensions;
  while (*s) {
    while (*s == ' ') ++s;
    if (!*s) break;
    const char* end = s;
    while (*end && *end != ' ') ++end;
    char word[256];
    size_t len = (size_t)(end - s);
    if (len >= sizeof word) len = sizeof word - 1;
    memcpy(word, s, len);
    word[len] = '\0';
    if (!first) putchar(',');
    clattn_tool_json_string(stdout, word);
    first = 0;
    s = end;
  }
  printf("]");
  json_tuning(dev);
  printf("}");
}

static void print_json(const platform_entry* platforms, cl_uint num_platforms, const selection* sel,
                       const char* error) {
  int major = 0, minor = 0, patch = 0;
  clattn_version(&major, &minor, &patch);
  printf("{\"clattn_version\":\"%d.%d.%d\",\"platforms\":[", major, minor, patch);
  for (cl_uint p = 0; p < num_platforms; ++p) {
    const platform_entry* pl = &platforms[p];
    if (p) putchar(',');
    printf("{\"index\":%u,\"name\":", p);
    clattn_tool_json_string(stdout, pl->name);
    printf(",\"vendor\":");
    clattn_tool_json_string(stdout, pl->vendor);
    printf(",\"version\":");
    clattn_tool_json_string(stdout, pl->version);
    printf(",\"devices\":[");
    for (cl_uint d = 0; d < pl->num_devices; ++d) {
      if (d) putchar(',');
      json_device(pl, p, d,
                  sel->status == CLATTN_SUCCESS && sel->platform == p && sel->device == d);
    }
    printf("]}");
  }
  printf("],\"selection\":{\"status\":");
  clattn_tool_json_string(stdout, clattn_status_name(sel->status));
  printf(",\"message\":");
  clattn_tool_json_string(stdout, sel->status == CLATTN_ERROR_INVALID_ARGUMENT
                                      ? "malformed device selector (expected P:D or a name)"
                                      : clattn_status_string(sel->status));
  printf(",\"source\":");
  clattn_tool_json_string(stdout, sel->source);
  printf(",\"spec\":");
  if (sel->spec) {
    clattn_tool_json_string(stdout, sel->spec);
  } else {
    printf("null");
  }
  if (sel->status == CLATTN_SUCCESS) {
    printf(",\"platform_index\":%u,\"device_index\":%u,\"index\":\"%u:%u\"", sel->platform,
           sel->device, sel->platform, sel->device);
  }
  printf(",\"reason\":");
  if (sel->status != CLATTN_SUCCESS) {
    printf("null");
  } else if (sel->spec) {
    char reason[512];
    snprintf(reason, sizeof reason, "%s=%s", sel->source, sel->spec);
    clattn_tool_json_string(stdout, reason);
  } else {
    char reason[256];
    snprintf(reason, sizeof reason, "default rule (%s)", kDefaultRule);
    clattn_tool_json_string(stdout, reason);
  }
  printf("}");
  if (error) {
    printf(",\"error\":");
    clattn_tool_json_string(stdout, error);
  }
  printf("}\n");
}

int main(int argc, char** argv) {
  int json = 0;
  const char* device_arg = NULL;
  const clattn_flag flags[] = {
      CLATTN_FLAG_DEF_SET("--json", &json, "print one JSON object instead of text"),
      CLATTN_FLAG_DEF_STRING("--device", &device_arg, "SPEC",
                             "show what SPEC would select instead of CLATTN_DEVICE"),
      CLATTN_FLAG_DEF_END,
  };
  const clattn_flag_spec spec = {
      .tool = "clattn-info",
      .usage =
          "usage: clattn-info [--json] [--device SPEC]\n"
          "\n"
          "Lists every OpenCL platform and device with the capabilities clattn records, and\n"
          "marks with '*' the device clattn would pick.\n"
          "\n",
      .notes =
          "\n"
          "Device selectors: \"P:D\" (platform and device index as listed), gpu, cpu or\n"
          "accelerator (the first device of that type), or a case-insensitive substring\n"
          "of the device name or vendor or of the platform name or vendor.\n"
          "Without one, CLATTN_DEVICE is used, else the default rule (" DEFAULT_RULE
          ").\n"
          "\n"
          "Exit status: 0 ok, 1 no OpenCL platform or device, 2 selector matches nothing.\n",
      .flags = flags,
      .help_column = 17,
  };
  const clattn_flags_result parsed = clattn_flags_parse(&spec, argc, argv);
  if (parsed != CLATTN_FLAGS_OK) {
    if (parsed == CLATTN_FLAGS_EXIT) return 0;
    fputc('\n', stderr);
    clattn_flags_print_help(&spec, stderr);
    return 2;
  }

  int exit_code = 0;
  cl_platform_id ids[MAX_PLATFORMS];
  platform_entry platforms[MAX_PLATFORMS];
  cl_uint num_platforms = 0;
  memset(platforms, 0, sizeof platforms);

  selection sel = {CLATTN_SUCCESS, 0, 0, NULL, "default"};
  const char* env = getenv("CLATTN_DEVICE");
  if (device_arg) {
    sel.spec = device_arg;
    sel.source = "--device";
  } else if (env && env[0]) {
    sel.spec = env;
    sel.source = "CLATTN_DEVICE";
  }

  cl_int err = clGetPlatformIDs(MAX_PLATFORMS, ids, &num_platforms);
  if (err != CL_SUCCESS || num_platforms == 0) {
    /* The ICD loader answers CL_PLATFORM_NOT_FOUND_KHR (-1001) when no driver is installed. */
    char message[256];
    snprintf(message, sizeof message,
             "no OpenCL platform found (clGetPlatformIDs returned %d); install an OpenCL "
             "driver (for CPUs: pocl-opencl-icd) and check /etc/OpenCL/vendors/",
             (int)err);
    sel.status = CLATTN_ERROR_NO_DEVICE;
    if (json) {
      print_json(platforms, 0, &sel, message);
    } else {
      printf("clattn-info: %s\n", message);
    }
    return 1;
  }
  if (num_platforms > MAX_PLATFORMS) num_platforms = MAX_PLATFORMS;

  cl_uint total_devices = 0;
  for (cl_uint p = 0; p < num_platforms; ++p) {
    platform_entry* pl = &platforms[p];
    platform_string(ids[p], CL_PLATFORM_NAME, pl->name, sizeof pl->name);
    platform_string(ids[p], CL_PLATFORM_VENDOR, pl->vendor, sizeof pl->vendor);
    platform_string(ids[p], CL_PLATFORM_VERSION, pl->version, sizeof pl->version);
    cl_device_id dev_ids[MAX_DEVICES];
    cl_uint n = 0;
    /* CL_DEVICE_NOT_FOUND just means an empty platform. */
    if (clGetDeviceIDs(ids[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, dev_ids, &n) != CL_SUCCESS) n = 0;
    if (n > MAX_DEVICES) n = MAX_DEVICES;
    if (n == 0) continue;
    pl->devices = calloc(n, sizeof *pl->devices);
    if (!pl->devices) {
      fprintf(stderr, "clattn-info: out of memory\n");
      exit_code = 1;
      goto cleanup;
    }
    pl->num_devices = n;
    for (cl_uint d = 0; d < n; ++d) {
      device_entry* dev = &pl->devices[d];
      dev->id = dev_ids[d];
      dev->info.struct_size = sizeof dev->info;
      dev->status = clattn_device_query(dev_ids[d], &dev->info);
      trim_right(dev->info.name);
      trim_right(dev->info.driver_version);
      trim_right(dev->info.opencl_c_version);
    }
    total_devices += n;
  }

  tuning_load();
  sel.status = clattn_device_select(sel.spec, &sel.platform, &sel.device);
  if (sel.status == CLATTN_SUCCESS) {
    exit_code = 0;
  } else if (sel.status == CLATTN_ERROR_NO_DEVICE || total_devices == 0) {
    exit_code = 1;
  } else {
    exit_code = 2; /* DEVICE_NOT_FOUND or a malformed selector */
  }

  if (json) {
    print_json(platforms, num_platforms, &sel,
               total_devices == 0 ? "no OpenCL device on any platform" : NULL);
    goto cleanup;
  }

  int major = 0, minor = 0, patch = 0;
  clattn_version(&major, &minor, &patch);
  printf("clattn %d.%d.%d: %u OpenCL platform%s, %u device%s\n", major, minor, patch, num_platforms,
         num_platforms == 1 ? "" : "s", total_devices, total_devices == 1 ? "" : "s");
  for (cl_uint p = 0; p < num_platforms; ++p) {
    const platform_entry* pl = &platforms[p];
    printf("\nPlatform %u: %s\n", p, pl->name);
    printf("    %-19s%s\n", "vendor", pl->vendor);
    printf("    %-19s%s\n", "version", pl->version);
    if (pl->num_devices == 0) printf("    (no devices)\n");
    for (cl_uint d = 0; d < pl->num_devices; ++d) {
      putchar('\n');
      print_device_text(pl, p, d,
                        sel.status == CLATTN_SUCCESS && sel.platform == p && sel.device == d);
    }
  }
  putchar('\n');
  print_selection_text(&sel, total_devices > 0);

cleanup:
  clattn_tuning_table_destroy(g_tuning.table);
  for (cl_uint p = 0; p < num_platforms; ++p) free(platforms[p].devices);
  return exit_code;
}
