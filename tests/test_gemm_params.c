/* CLBlast's Xgemm parameter rules as src/gemm.c states them (clattn__xgemm_params_valid, an
 * internal of the static library): a valid set of each kernel passes, and a set breaking each
 * rule, one at a time, is refused with that rule named. No device is needed: the limits are a
 * made-up device's. */
#include <criterion/criterion.h>
#include <string.h>

#include "internal.h"

static clattn_device_info fake_device(void) {
  clattn_device_info info = CLATTN_DEVICE_INFO_INIT;
  info.max_work_group_size = 256;
  info.max_work_item_sizes[0] = info.max_work_item_sizes[1] = info.max_work_item_sizes[2] = 256;
  info.local_mem_size = 16384; /* exactly what the valid kernel-0 set takes */
  return info;
}

/* Kernel 0: 64x64 tiles of 8x8 threads, vectors of 4, KWG 32, local memory for A and B. */
static void kernel0(size_t* p) {
  memset(p, 0, CLATTN__XGEMM_PARAM_COUNT * sizeof *p);
  p[CLATTN__XGEMM_GEMMK] = 0;
  p[CLATTN__XGEMM_KREG] = 1;
  p[CLATTN__XGEMM_KWG] = 32;
  p[CLATTN__XGEMM_KWI] = 2;
  p[CLATTN__XGEMM_MDIMA] = p[CLATTN__XGEMM_MDIMC] = 8;
  p[CLATTN__XGEMM_NDIMB] = p[CLATTN__XGEMM_NDIMC] = 8;
  p[CLATTN__XGEMM_MWG] = p[CLATTN__XGEMM_NWG] = 64;
  p[CLATTN__XGEMM_VWM] = p[CLATTN__XGEMM_VWN] = 4;
  p[CLATTN__XGEMM_SA] = p[CLATTN__XGEMM_SB] = 1;
}

/* Kernel 1: 128x128 tiles of 8x8 threads, VWM 16, no local memory. */
static void kernel1(size_t* p) {
  memset(p, 0, CLATTN__XGEMM_PARAM_COUNT * sizeof *p);
  p[CLATTN__XGEMM_GEMMK] = 1;
  p[CLATTN__XGEMM_KREG] = 1;
  p[CLATTN__XGEMM_KWG] = p[CLATTN__XGEMM_KWI] = 1;
  p[CLATTN__XGEMM_MDIMA] = p[CLATTN__XGEMM_MDIMC] = 8;
  p[CLATTN__XGEMM_NDIMB] = p[CLATTN__XGEMM_NDIMC] = 8;
  p[CLATTN__XGEMM_MWG] = p[CLATTN__XGEMM_NWG] = 128;
  p[CLATTN__XGEMM_VWM] = 16;
  p[CLATTN__XGEMM_VWN] = 1;
}

typedef struct broken {
  int kernel;        /* the valid set it starts from */
  int param, param2; /* the parameters changed (param2 -1: one only) */
  size_t value, value2;
  const char* rule;      /* a fragment of the reason given */
  size_t max_group_size; /* the device's limit for this case (0: the fake device's) */
} broken;

static const broken kBroken[] = {
    {0, CLATTN__XGEMM_MDIMC, -1, 0, 0, "is 0", 0},
    {0, CLATTN__XGEMM_GEMMK, -1, 2, 0, "GEMMK, SA, SB, STRM and STRN are 0 or 1", 0},
    {0, CLATTN__XGEMM_SA, -1, 2, 0, "GEMMK, SA, SB, STRM and STRN are 0 or 1", 0},
    {0, CLATTN__XGEMM_VWM, -1, 3, 0, "vector widths", 0},
    {0, CLATTN__XGEMM_VWN, -1, 32, 0, "vector widths", 0},
    {0, CLATTN__XGEMM_KWI, -1, 3, 0, "not a multiple of KWI", 0},
    /* MWG 48 is no multiple of MDIMC*VWM = 32 (the wrong-result entry). */
    {0, CLATTN__XGEMM_MWG, -1, 48, 0, "not multiples of MDIMC*VWM", 0},
    {0, CLATTN__XGEMM_NWG, -1, 48, 0, "not multiples of MDIMC*VWM, NDIMC*VWN", 0},
    /* MDIMA 16: MWG 64 is a multiple of MDIMC*VWM but not of MDIMA*VWM. */
    {0, CLATTN__XGEMM_MDIMA, -1, 32, 0, "not multiples of MDIMA*VWM", 0},
    {0, CLATTN__XGEMM_KREG, -1, 2, 0, "KREG is 1 for GEMMK 0", 0},
    /* KWG 8 = 4 KWI: KDIMA = 64/4 = 16 does not divide it. */
    {0, CLATTN__XGEMM_MDIMA, CLATTN__XGEMM_KWG, 4, 8, "KDIMA", 0},
    {1, CLATTN__XGEMM_KREG, CLATTN__XGEMM_VWN, 2, 4, "not a multiple of VWN", 0},
    {1, CLATTN__XGEMM_MDIMA, -1, 4, 0, "GEMMK 1 needs MDIMA = MDIMC", 0},
    {1, CLATTN__XGEMM_SB, -1, 1, 0, "GEMMK 1 has no local memory", 0},
    {1, CLATTN__XGEMM_STRM, -1, 1, 0, "GEMMK 1 has no local memory", 0},
    {1, CLATTN__XGEMM_NWG, -1, 64, 0, "GEMMK 1 needs MWG = NWG", 0},
    /* 8x8 threads on a device whose work-groups hold 32. */
    {0, CLATTN__XGEMM_KWI, -1, 2, 0, "exceeds the device's limits", 32},
    /* 128-wide tiles of A and B, KWG 32, in local memory: 32 KiB > 16 KiB. */
    {0, CLATTN__XGEMM_MWG, CLATTN__XGEMM_NWG, 128, 128, "bytes of local memory exceed", 0},
};

Test(gemm_params, valid_sets_of_both_kernels_pass) {
  const clattn_device_info info = fake_device();
  size_t p[CLATTN__XGEMM_PARAM_COUNT];
  char why[256] = "";
  kernel0(p);
  cr_assert_eq(clattn__xgemm_params_valid(p, &info, why, sizeof why), 1, "kernel 0: %s", why);
  kernel1(p);
  cr_assert_eq(clattn__xgemm_params_valid(p, &info, why, sizeof why), 1, "kernel 1: %s", why);
  cr_assert_eq(clattn__xgemm_params_valid(p, &info, NULL, 0), 1, "why may be NULL");
}

Test(gemm_params, each_rule_broken_is_refused_and_named) {
  for (size_t i = 0; i < sizeof kBroken / sizeof kBroken[0]; ++i) {
    const broken* b = &kBroken[i];
    clattn_device_info info = fake_device();
    if (b->max_group_size) info.max_work_group_size = b->max_group_size;
    size_t p[CLATTN__XGEMM_PARAM_COUNT];
    if (b->kernel) {
      kernel1(p);
    } else {
      kernel0(p);
    }
    p[b->param] = b->value;
    if (b->param2 >= 0) p[b->param2] = b->value2;
    char why[256] = "";
    cr_expect_eq(clattn__xgemm_params_valid(p, &info, why, sizeof why), 0,
                 "case %zu (%s=%zu) passed", i, clattn__xgemm_param_names[b->param], b->value);
    cr_expect(strstr(why, b->rule) != NULL, "case %zu: \"%s\" does not say \"%s\"", i, why,
              b->rule);
    cr_expect_eq(clattn__xgemm_params_valid(p, &info, NULL, 0), 0, "case %zu, why NULL", i);
  }
}
