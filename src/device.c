/* Device choice (CLATTN_DEVICE selectors) and device capability queries. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001 /* cl_khr_icd: the loader found no platform */
#endif

#define MAX_PLATFORMS 32
#define MAX_DEVICES 64

static int contains_nocase(const char* haystack, const char* needle) {
  size_t n = strlen(needle);
  if (n == 0) return 0;
  for (const char* h = haystack; *h; ++h) {
    size_t i = 0;
    while (i < n && h[i] && tolower((unsigned char)h[i]) == tolower((unsigned char)needle[i])) ++i;
    if (i == n) return 1;
  }
  return 0;
}

static void get_string(cl_device_id device, cl_device_info param, char* out, size_t size) {
  out[0] = '\0';
  size_t got = 0;
  if (clGetDeviceInfo(device, param, size, out, &got) != CL_SUCCESS) {
    /* Too long for the field: read it whole, then truncate. */
    if (clGetDeviceInfo(device, param, 0, NULL, &got) == CL_SUCCESS && got > 0) {
      char* tmp = clattn__malloc(got);
      if (tmp && clGetDeviceInfo(device, param, got, tmp, NULL) == CL_SUCCESS) {
        strncpy(out, tmp, size - 1);
      }
      free(tmp);
    }
  }
  out[size - 1] = '\0';
}

clattn_status clattn_device_query(cl_device_id device, clattn_device_info* info) {
  if (!device || !info || info->struct_size != sizeof(clattn_device_info)) {
    return CLATTN_ERROR_INVALID_ARGUMENT;
  }
  clattn_device_info d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  cl_device_type type = 0;
  cl_int err = clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
  if (err != CL_SUCCESS) return CLATTN_ERROR_INVALID_ARGUMENT;
  d.type = (type & CL_DEVICE_TYPE_GPU)           ? CLATTN_DEVICE_TYPE_GPU
           : (type & CL_DEVICE_TYPE_ACCELERATOR) ? CLATTN_DEVICE_TYPE_ACCELERATOR
           : (type & CL_DEVICE_TYPE_CPU)         ? CLATTN_DEVICE_TYPE_CPU
                                                 : CLATTN_DEVICE_TYPE_OTHER;
  get_string(device, CL_DEVICE_NAME, d.name, sizeof d.name);
  get_string(device, CL_DEVICE_VENDOR, d.vendor, sizeof d.vendor);
  get_string(device, CL_DRIVER_VERSION, d.driver_version, sizeof d.driver_version);
  get_string(device, CL_DEVICE_VERSION, d.device_version, sizeof d.device_version);
  get_string(device, CL_DEVICE_OPENCL_C_VERSION, d.opencl_c_version, sizeof d.opencl_c_version);
  get_string(device, CL_DEVICE_EXTENSIONS, d.extensions, sizeof d.extensions);
  cl_platform_id platform = NULL;
  if (clGetDeviceInfo(device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL) == CL_SUCCESS) {
    clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof d.platform_name, d.platform_name, NULL);
    d.platform_name[sizeof d.platform_name - 1] = '\0';
  }
  cl_device_local_mem_type lmt = CL_LOCAL;
  clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof d.compute_units, &d.compute_units,
                  NULL);
  clGetDeviceInfo(device, CL_DEVICE_MAX_CLOCK_FREQUENCY, sizeof d.max_clock_mhz, &d.max_clock_mhz,
                  NULL);
  clGetDeviceInfo(device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof d.global_mem_size, &d.global_mem_size,
                  NULL);
  clGetDeviceInfo(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof d.max_mem_alloc_size,
                  &d.max_mem_alloc_size, NULL);
  clGetDeviceInfo(device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof d.local_mem_size, &d.local_mem_size,
                  NULL);
  clGetDeviceInfo(device, CL_DEVICE_LOCAL_MEM_TYPE, sizeof lmt, &lmt, NULL);
  d.local_mem_is_global = lmt == CL_GLOBAL;
  clGetDeviceInfo(device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof d.max_work_group_size,
                  &d.max_work_group_size, NULL);
  clGetDeviceInfo(device, CL_DEVICE_MAX_WORK_ITEM_SIZES, sizeof d.max_work_item_sizes,
                  d.max_work_item_sizes, NULL);
  d.has_fp16 = strstr(d.extensions, "cl_khr_fp16") != NULL;
  d.has_fp64 = strstr(d.extensions, "cl_khr_fp64") != NULL;
  *info = d;
  return CLATTN_SUCCESS;
}

static int type_rank(cl_device_type t) {
  if (t & CL_DEVICE_TYPE_GPU) return 0;
  if (t & CL_DEVICE_TYPE_ACCELERATOR) return 1;
  if (t & CL_DEVICE_TYPE_CPU) return 2;
  return 3;
}

/* Selectors that name a device type. */
static const struct {
  const char* name;
  cl_device_type type;
} kTypes[] = {{"gpu", CL_DEVICE_TYPE_GPU},
              {"cpu", CL_DEVICE_TYPE_CPU},
              {"accelerator", CL_DEVICE_TYPE_ACCELERATOR}};

/* Parses a selector without looking at any platform: "P:D" (decimal indices, each at most
 * UINT32_MAX), a type keyword, or a name substring. Pure, so it can be fuzzed. */
clattn_status clattn__device_spec_parse(const char* spec, clattn__device_spec* out) {
  if (!out) return CLATTN_ERROR_INVALID_ARGUMENT;
  memset(out, 0, sizeof *out);
  if (!spec || !*spec) {
    out->kind = CLATTN__DEVICE_SPEC_DEFAULT;
    return CLATTN_SUCCESS;
  }
  if (isdigit((unsigned char)spec[0]) && strchr(spec, ':')) {
    /* Starts like "P:D" ("12abc", with no colon, is a name): digits, a colon, digits, and
     * nothing else. */
    const char* s = spec;
    unsigned long long idx[2] = {0, 0};
    for (int part = 0; part < 2; ++part) {
      if (!isdigit((unsigned char)*s)) goto malformed;
      while (isdigit((unsigned char)*s)) {
        idx[part] = idx[part] * 10 + (unsigned long long)(*s - '0');
        if (idx[part] > UINT32_MAX) goto malformed;
        ++s;
      }
      if (part == 0 && *s++ != ':') goto malformed;
    }
    if (*s != '\0') goto malformed;
    out->kind = CLATTN__DEVICE_SPEC_INDEX;
    out->platform_index = (cl_uint)idx[0];
    out->device_index = (cl_uint)idx[1];
    return CLATTN_SUCCESS;
  malformed:
    return clattn__fail(NULL, CLATTN_ERROR_INVALID_ARGUMENT,
                        "malformed device selector \"%.200s\" (expected P:D or a name)", spec);
  }
  for (size_t i = 0; i < sizeof kTypes / sizeof kTypes[0]; ++i) {
    const char* a = spec;
    const char* b = kTypes[i].name;
    while (*a && *b && tolower((unsigned char)*a) == *b) ++a, ++b;
    if (!*a && !*b) {
      out->kind = CLATTN__DEVICE_SPEC_TYPE;
      out->type = kTypes[i].type;
      return CLATTN_SUCCESS;
    }
  }
  out->kind = CLATTN__DEVICE_SPEC_NAME;
  out->name = spec;
  return CLATTN_SUCCESS;
}

static int matches(cl_platform_id platform, cl_device_id device, const clattn__device_spec* sel) {
  if (sel->kind == CLATTN__DEVICE_SPEC_TYPE) {
    cl_device_type t = 0;
    clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof t, &t, NULL);
    return (t & sel->type) != 0;
  }
  const char* spec = sel->name;
  char buf[1024];
  const cl_device_info device_fields[] = {CL_DEVICE_NAME, CL_DEVICE_VENDOR};
  for (size_t i = 0; i < 2; ++i) {
    if (clGetDeviceInfo(device, device_fields[i], sizeof buf, buf, NULL) == CL_SUCCESS) {
      buf[sizeof buf - 1] = '\0';
      if (contains_nocase(buf, spec)) return 1;
    }
  }
  const cl_platform_info platform_fields[] = {CL_PLATFORM_NAME, CL_PLATFORM_VENDOR};
  for (size_t i = 0; i < 2; ++i) {
    if (clGetPlatformInfo(platform, platform_fields[i], sizeof buf, buf, NULL) == CL_SUCCESS) {
      buf[sizeof buf - 1] = '\0';
      if (contains_nocase(buf, spec)) return 1;
    }
  }
  return 0;
}

clattn_status clattn__device_select(const char* spec, cl_platform_id* out_platform,
                                    cl_device_id* out_device, cl_uint* out_pi, cl_uint* out_di) {
  if (!spec) spec = getenv("CLATTN_DEVICE");
  clattn__device_spec sel;
  clattn_status status = clattn__device_spec_parse(spec, &sel);
  if (status != CLATTN_SUCCESS) return status;

  cl_platform_id platforms[MAX_PLATFORMS];
  cl_uint np = 0;
  cl_int err = clGetPlatformIDs(MAX_PLATFORMS, platforms, &np);
  if (err == CL_PLATFORM_NOT_FOUND_KHR || (err == CL_SUCCESS && np == 0)) {
    return clattn__fail(NULL, CLATTN_ERROR_NO_DEVICE, "no OpenCL platform found");
  }
  if (err != CL_SUCCESS) return clattn__fail_cl(NULL, err, "clGetPlatformIDs", __FILE__, __LINE__);
  if (np > MAX_PLATFORMS) np = MAX_PLATFORMS;

  int best_rank = 99, any = 0;
  cl_platform_id best_p = NULL;
  cl_device_id best_d = NULL;
  cl_uint best_pi = 0, best_di = 0;
  for (cl_uint pi = 0; pi < np; ++pi) {
    cl_device_id devices[MAX_DEVICES];
    cl_uint nd = 0;
    if (clGetDeviceIDs(platforms[pi], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devices, &nd) !=
        CL_SUCCESS) {
      continue;
    }
    if (nd > MAX_DEVICES) nd = MAX_DEVICES;
    for (cl_uint di = 0; di < nd; ++di) {
      any = 1;
      int chosen = 0;
      if (sel.kind == CLATTN__DEVICE_SPEC_INDEX) {
        chosen = pi == sel.platform_index && di == sel.device_index;
      } else if (sel.kind != CLATTN__DEVICE_SPEC_DEFAULT) {
        chosen = matches(platforms[pi], devices[di], &sel);
      } else {
        cl_device_type t = 0;
        clGetDeviceInfo(devices[di], CL_DEVICE_TYPE, sizeof t, &t, NULL);
        int rank = type_rank(t);
        if (rank < best_rank) {
          best_rank = rank;
          best_p = platforms[pi];
          best_d = devices[di];
          best_pi = pi;
          best_di = di;
        }
      }
      if (chosen) {
        best_p = platforms[pi];
        best_d = devices[di];
        best_pi = pi;
        best_di = di;
        goto found;
      }
    }
  }
  if (!any) return clattn__fail(NULL, CLATTN_ERROR_NO_DEVICE, "no OpenCL device found");
  if (sel.kind != CLATTN__DEVICE_SPEC_DEFAULT) {
    return clattn__fail(NULL, CLATTN_ERROR_DEVICE_NOT_FOUND, "no OpenCL device matches \"%.200s\"",
                        spec);
  }
found:
  if (out_platform) *out_platform = best_p;
  if (out_device) *out_device = best_d;
  if (out_pi) *out_pi = best_pi;
  if (out_di) *out_di = best_di;
  return CLATTN_SUCCESS;
}

clattn_status clattn_device_select(const char* spec, cl_uint* platform_index,
                                   cl_uint* device_index) {
  return clattn__device_select(spec, NULL, NULL, platform_index, device_index);
}
