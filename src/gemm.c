/* GEMM: clattn's own kernel (cl/gemm.cl) where the context runs it, CLBlast for the rest.
 * This is the only file that includes CLBlast: its calls, its parameter names and the rules
 * its kernels put on them, and clattn's default parameters. */
/* The OpenCL version clattn.h targets, set before clblast_c.h includes CL/cl.h. */
#define CL_TARGET_OPENCL_VERSION 120
#include <clblast_c.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Maps a CLBlast status to a clattn status and records a message. CLBlast's codes above
 * -1024 are OpenCL error codes. */
static clattn_status gemm_fail(const clattn_context* ctx, CLBlastStatusCode code,
                               const char* what) {
  if (code > -1000) {
    return clattn__fail_cl(ctx, (cl_int)code, what, __FILE__, __LINE__);
  }
  clattn_status status = CLATTN_ERROR_INTERNAL;
  switch (code) {
    case CLBlastInsufficientMemoryA:
    case CLBlastInsufficientMemoryB:
    case CLBlastInsufficientMemoryC:
    case CLBlastInsufficientMemoryTemp:
      status = CLATTN_ERROR_BUFFER_TOO_SMALL;
      break;
    case CLBlastInvalidMatrixA:
    case CLBlastInvalidMatrixB:
    case CLBlastInvalidMatrixC:
    case CLBlastInvalidDimension:
    case CLBlastInvalidLeadDimA:
    case CLBlastInvalidLeadDimB:
    case CLBlastInvalidLeadDimC:
    case CLBlastInvalidBatchCount:
      status = CLATTN_ERROR_INVALID_ARGUMENT;
      break;
    case CLBlastInvalidOverrideKernel:
    case CLBlastMissingOverrideParameter:
    case CLBlastInvalidLocalMemUsage:
      status = CLATTN_ERROR_INVALID_CONFIG;
      break;
    default:
      break;
  }
  return clattn__fail(ctx, status, "%s failed: CLBlast status %d", what, (int)code);
}

static CLBlastTranspose transpose(int t) { return t ? CLBlastTransposeYes : CLBlastTransposeNo; }

/* ------------------------------------------------------------ clattn's kernel */

/* cl/gemm.cl's block per work-item: OWN_ROWS rows x 16·OWN_NV columns, 16 float16
 * accumulators. On two Zen 5 cores (PoCL) it ran the layer's projection shapes (512 x 768 x
 * 768, 512 x 2304 x 768, 1024 x 512 x 512, 1024 x 1536 x 512) at 200-220 GFLOP/s, 88-95% of
 * the FMA peak measured beside it and 1.1-1.2x CLBlast's kernel 1 with clattn's parameters;
 * 4x6, 6x4, 8x3 and 10x2 blocks ran within noise of it, 16x1 5-10% slower. */
#define OWN_ROWS 8
#define OWN_NV 2
#define OWN_OPTIONS "-DROWS=8 -DNV=2"
#define OWN_BIAS 1       /* cl/gemm.cl's GEMM_BIAS */
#define OWN_ACCUMULATE 2 /* cl/gemm.cl's GEMM_ACCUMULATE */

/* The last element a row-major matrix of rows x cols at `offset` (leading dimension ld)
 * touches, plus one; SIZE_MAX on overflow. */
static size_t extent(size_t offset, size_t rows, size_t cols, size_t ld) {
  if (!rows || !cols) return offset;
  if (rows - 1 > (SIZE_MAX - offset - cols) / (ld ? ld : 1)) return SIZE_MAX;
  return offset + (rows - 1) * ld + cols;
}

/* 1 when clattn's kernel runs this GEMM: the context runs it, no transposition, alpha 1,
 * beta 0 or 1 (0 with a bias), and every index within 32 bits. */
static int own_runs(const clattn_context* ctx, const clattn__gemm_args* g) {
  if (!ctx->gemm_own || g->trans_a || g->trans_b || g->alpha != 1.0f) return 0;
  if (!(g->beta == 0.0f || (g->beta == 1.0f && !g->bias))) return 0;
  const size_t max = UINT32_MAX;
  return g->m && g->n && g->k && g->lda >= g->k && g->ldb >= g->n && g->ldc >= g->n &&
         extent(g->a_offset, g->m, g->k, g->lda) <= max &&
         extent(g->b_offset, g->k, g->n, g->ldb) <= max &&
         extent(g->c_offset, g->m, g->n, g->ldc) <= max && g->bias_offset <= max - g->n &&
         g->m / OWN_ROWS + 1 <= max;
}

static clattn_status own_gemm(clattn_context* ctx, cl_command_queue queue,
                              const clattn__gemm_args* g, cl_event* event) {
  clattn__op_kernel* op = NULL;
  clattn_status status = clattn__op_kernel_get(ctx, "gemm", OWN_OPTIONS, "clattn_gemm_nn", &op);
  if (status != CLATTN_SUCCESS) return status;
  /* Work-groups of one work-item, fixed for every call (left to the driver, the group
   * would follow the global size, and PoCL would compile the kernel again for each). */
  const size_t global[2] = {(g->m + OWN_ROWS - 1) / OWN_ROWS,
                            (g->n + 16 * OWN_NV - 1) / (16 * OWN_NV)};
  const size_t local[2] = {1, 1};
  const int flags = (g->bias ? OWN_BIAS : 0) | (g->beta == 1.0f ? OWN_ACCUMULATE : 0);
  cl_uint i = 0;
  cl_int err = CL_SUCCESS;
  cl_kernel kr = op->kernel;
  pthread_mutex_lock(&op->lock);
  clattn__arg_uint(kr, &i, g->m, &err);
  clattn__arg_uint(kr, &i, g->n, &err);
  clattn__arg_uint(kr, &i, g->k, &err);
  clattn__arg_mem(kr, &i, g->a, &err);
  clattn__arg_uint(kr, &i, g->a_offset, &err);
  clattn__arg_uint(kr, &i, g->lda, &err);
  clattn__arg_mem(kr, &i, g->b, &err);
  clattn__arg_uint(kr, &i, g->b_offset, &err);
  clattn__arg_uint(kr, &i, g->ldb, &err);
  clattn__arg_mem(kr, &i, g->c, &err);
  clattn__arg_uint(kr, &i, g->c_offset, &err);
  clattn__arg_uint(kr, &i, g->ldc, &err);
  clattn__arg_mem(kr, &i, g->bias, &err);
  clattn__arg_uint(kr, &i, g->bias_offset, &err);
  if (err == CL_SUCCESS) err = clSetKernelArg(kr, i, sizeof flags, &flags);
  if (err == CL_SUCCESS) {
    err = clEnqueueNDRangeKernel(queue, kr, 2, NULL, global, local, 0, NULL, event);
  }
  pthread_mutex_unlock(&op->lock);
  if (err != CL_SUCCESS) {
    return clattn__fail_cl(ctx, err, "clEnqueueNDRangeKernel (GEMM)", __FILE__, __LINE__);
  }
  return CLATTN_SUCCESS;
}

clattn_status clattn__gemm_choose(clattn_context* ctx) {
  ctx->gemm_own = ctx->info.type == CLATTN_DEVICE_TYPE_CPU;
  const char* env = getenv("CLATTN_GEMM");
  if (!env) env = "";
  if (!*env) {
    /* the default */
  } else if (strcmp(env, "clattn") == 0) {
    ctx->gemm_own = 1;
  } else if (strcmp(env, "clblast") == 0) {
    ctx->gemm_own = 0;
  } else {
    return clattn__fail(ctx, CLATTN_ERROR_INVALID_ARGUMENT,
                        "CLATTN_GEMM=\"%.64s\": the GEMM kernel is \"clattn\" or \"clblast\"", env);
  }
  clattn__log("GEMMs: %s",
              ctx->gemm_own ? "clattn's kernel (cl/gemm.cl), CLBlast for the rest" : "CLBlast");
  return CLATTN_SUCCESS;
}

/* ------------------------------------------------------------ CLBlast */

/* C's rows [0, rows) of `cols` floats at c_offset (leading dimension ldc) set to the bias
 * row, by buffer copies: one row, then doubling. */
static clattn_status bias_rows(clattn_context* ctx, cl_command_queue queue,
                               const clattn__gemm_args* g) {
  clattn_status status = CLATTN_SUCCESS;
  const size_t f = sizeof(float), row = g->n * f, at = g->c_offset * f;
  if (g->ldc != g->n) {
    /* Rows apart: one copy each (no caller of clattn's has such a C with a bias). */
    for (size_t r = 0; r < g->m; ++r) {
      CLATTN__CL_CHECK(ctx, clEnqueueCopyBuffer(queue, g->bias, g->c, g->bias_offset * f,
                                                at + r * g->ldc * f, row, 0, NULL, NULL));
    }
    return CLATTN_SUCCESS;
  }
  CLATTN__CL_CHECK(
      ctx, clEnqueueCopyBuffer(queue, g->bias, g->c, g->bias_offset * f, at, row, 0, NULL, NULL));
  for (size_t done = 1; done < g->m; done *= 2) {
    const size_t n = done < g->m - done ? done : g->m - done;
    /* The same buffer, regions apart: [0, done) rows to [done, done + n). */
    CLATTN__CL_CHECK(
        ctx, clEnqueueCopyBuffer(queue, g->c, g->c, at, at + done * row, n * row, 0, NULL, NULL));
  }
cleanup:
  return status;
}

clattn_status clattn__gemm_clblast(clattn_context* ctx, cl_command_queue queue,
                                   const clattn__gemm_args* g, cl_event* event) {
  float beta = g->beta;
  if (g->bias) {
    clattn_status status = bias_rows(ctx, queue, g);
    if (status != CLATTN_SUCCESS) return status;
    beta = 1.0f;
  }
  CLBlastStatusCode code;
  if (g->temp) {
    code = CLBlastSgemmWithTempBuffer(CLBlastLayoutRowMajor, transpose(g->trans_a),
                                      transpose(g->trans_b), g->m, g->n, g->k, g->alpha, g->a,
                                      g->a_offset, g->lda, g->b, g->b_offset, g->ldb, beta, g->c,
                                      g->c_offset, g->ldc, &queue, event, g->temp);
  } else {
    code = CLBlastSgemm(CLBlastLayoutRowMajor, transpose(g->trans_a), transpose(g->trans_b), g->m,
                        g->n, g->k, g->alpha, g->a, g->a_offset, g->lda, g->b, g->b_offset, g->ldb,
                        beta, g->c, g->c_offset, g->ldc, &queue, event);
  }
  return code == CLBlastSuccess ? CLATTN_SUCCESS : gemm_fail(ctx, code, "CLBlastSgemm");
}

clattn_status clattn__gemm(clattn_context* ctx, cl_command_queue queue, const clattn__gemm_args* g,
                           cl_event* event) {
  return own_runs(ctx, g) ? own_gemm(ctx, queue, g, event)
                          : clattn__gemm_clblast(ctx, queue, g, event);
}

clattn_status clattn__gemm_temp_size(clattn_context* ctx, const clattn__gemm_args* g,
                                     size_t* bytes) {
  cl_command_queue queue = ctx->queue; /* only its device matters */
  *bytes = 0;
  if (own_runs(ctx, g)) return CLATTN_SUCCESS;
  CLBlastStatusCode code = CLBlastSGemmTempBufferSize(
      CLBlastLayoutRowMajor, transpose(g->trans_a), transpose(g->trans_b), g->m, g->n, g->k,
      g->a_offset, g->lda, g->b_offset, g->ldb, g->c_offset, g->ldc, &queue, bytes);
  return code == CLBlastSuccess ? CLATTN_SUCCESS
                                : gemm_fail(ctx, code, "CLBlastSGemmTempBufferSize");
}

clattn_status clattn__gemm_strided_batched(clattn_context* ctx, cl_command_queue queue,
                                           const clattn__gemm_args* g, size_t batch,
                                           size_t a_stride, size_t b_stride, size_t c_stride,
                                           cl_event* event) {
  CLBlastStatusCode code = CLBlastSgemmStridedBatched(
      CLBlastLayoutRowMajor, transpose(g->trans_a), transpose(g->trans_b), g->m, g->n, g->k,
      g->alpha, g->a, g->a_offset, g->lda, a_stride, g->b, g->b_offset, g->ldb, b_stride, g->beta,
      g->c, g->c_offset, g->ldc, c_stride, batch, &queue, event);
  return code == CLBlastSuccess ? CLATTN_SUCCESS
                                : gemm_fail(ctx, code, "CLBlastSgemmStridedBatched");
}

clattn_status clattn__gemm_override(clattn_context* ctx, const char* kernel_name, size_t count,
                                    const char** names, const size_t* values) {
  CLBlastStatusCode code = CLBlastOverrideParameters(ctx->device, kernel_name,
                                                     CLBlastPrecisionSingle, count, names, values);
  return code == CLBlastSuccess ? CLATTN_SUCCESS
                                : gemm_fail(ctx, code, "CLBlastOverrideParameters");
}

/* ------------------------------------------------------------ Xgemm's parameters */

const char* const clattn__xgemm_param_names[CLATTN__XGEMM_PARAM_COUNT] = {
    "GEMMK", "KREG", "KWG", "KWI", "MDIMA", "MDIMC", "MWG", "NDIMB",
    "NDIMC", "NWG",  "SA",  "SB",  "STRM",  "STRN",  "VWM", "VWN"};

int clattn__xgemm_param_index(const char* name) {
  for (int i = 0; i < CLATTN__XGEMM_PARAM_COUNT; ++i) {
    if (strcmp(clattn__xgemm_param_names[i], name) == 0) return i;
  }
  return -1;
}

/* Records why a parameter set was refused (why may be NULL) and returns 0. */
static int refuse(char* why, size_t why_size, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(char* why, size_t why_size, const char* fmt, ...) {
  if (why && why_size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
  }
  return 0;
}

static int is_vector_width(size_t v) { return v == 1 || v == 2 || v == 4 || v == 8 || v == 16; }

/* The rules are CLBlast 1.5's: the kernel's own (src/kernels/level3/xgemm_part1.opencl: vector
 * types of 1..16 lanes, whole numbers of work per work-item and of loads per thread) and its
 * tuner's (src/tuning/kernels/xgemm.hpp: the same divisibility, KDIMA/KDIMB dividing KWG for
 * kernel 0; KREG a multiple of VWN and MDIMA = MDIMC, NDIMB = NDIMC for kernel 1), plus two
 * for kernel 1: its loads and stores index as SA = SB = STRM = STRN = 0 does, and with
 * MWG != NWG it computed wrong results (every element off, measured with CLBlast 1.5.3 on
 * PoCL at 512x2304x768 and three other projection shapes, 128x64 and 64x128 tiles), as its
 * tuner, which only runs square GEMMs, would not notice. */
int clattn__xgemm_params_valid(const size_t* p, const clattn_device_info* info, char* why,
                               size_t why_size) {
  const size_t gemmk = p[CLATTN__XGEMM_GEMMK], kreg = p[CLATTN__XGEMM_KREG],
               kwg = p[CLATTN__XGEMM_KWG], kwi = p[CLATTN__XGEMM_KWI],
               mdima = p[CLATTN__XGEMM_MDIMA], mdimc = p[CLATTN__XGEMM_MDIMC],
               mwg = p[CLATTN__XGEMM_MWG], ndimb = p[CLATTN__XGEMM_NDIMB],
               ndimc = p[CLATTN__XGEMM_NDIMC], nwg = p[CLATTN__XGEMM_NWG], sa = p[CLATTN__XGEMM_SA],
               sb = p[CLATTN__XGEMM_SB], strm = p[CLATTN__XGEMM_STRM], strn = p[CLATTN__XGEMM_STRN],
               vwm = p[CLATTN__XGEMM_VWM], vwn = p[CLATTN__XGEMM_VWN];
  if (!kreg || !kwg || !kwi || !mdima || !mdimc || !mwg || !ndimb || !ndimc || !nwg) {
    return refuse(why, why_size, "a tile, thread or unroll count is 0");
  }
  if (gemmk > 1 || sa > 1 || sb > 1 || strm > 1 || strn > 1) {
    return refuse(why, why_size, "GEMMK, SA, SB, STRM and STRN are 0 or 1");
  }
  if (!is_vector_width(vwm) || !is_vector_width(vwn)) {
    return refuse(why, why_size, "VWM %zu, VWN %zu: vector widths are 1, 2, 4, 8 or 16", vwm, vwn);
  }
  if (kwg % kwi) return refuse(why, why_size, "KWG %zu is not a multiple of KWI %zu", kwg, kwi);
  if (mwg % (mdimc * vwm) || nwg % (ndimc * vwn)) {
    return refuse(why, why_size, "MWG %zu, NWG %zu are not multiples of MDIMC*VWM, NDIMC*VWN", mwg,
                  nwg);
  }
  if (mwg % (mdima * vwm) || nwg % (ndimb * vwn)) {
    return refuse(why, why_size, "MWG %zu, NWG %zu are not multiples of MDIMA*VWM, NDIMB*VWN", mwg,
                  nwg);
  }
  const size_t threads = mdimc * ndimc;
  if (gemmk == 0) {
    if (kreg != 1) return refuse(why, why_size, "KREG is 1 for GEMMK 0");
    if (threads % mdima || threads % ndimb || kwg % (threads / mdima) || kwg % (threads / ndimb)) {
      return refuse(why, why_size,
                    "KWG %zu is not a multiple of KDIMA = MDIMC*NDIMC/MDIMA and KDIMB = "
                    "MDIMC*NDIMC/NDIMB",
                    kwg);
    }
  } else {
    if (kreg % vwn)
      return refuse(why, why_size, "KREG %zu is not a multiple of VWN %zu", kreg, vwn);
    if (mdima != mdimc || ndimb != ndimc) {
      return refuse(why, why_size, "GEMMK 1 needs MDIMA = MDIMC and NDIMB = NDIMC");
    }
    if (sa || sb || strm || strn) {
      return refuse(why, why_size, "GEMMK 1 has no local memory (SA, SB) or strides (STRM, STRN)");
    }
    if (mwg != nwg) return refuse(why, why_size, "GEMMK 1 needs MWG = NWG (%zu, %zu)", mwg, nwg);
  }
  if (threads > info->max_work_group_size || mdimc > info->max_work_item_sizes[0] ||
      ndimc > info->max_work_item_sizes[1]) {
    return refuse(why, why_size, "work-group %zux%zu exceeds the device's limits", mdimc, ndimc);
  }
  const size_t local = (sa * kwg * mwg + sb * kwg * nwg) * sizeof(float);
  if (local > info->local_mem_size) {
    return refuse(why, why_size, "%zu bytes of local memory exceed the device's %llu", local,
                  (unsigned long long)info->local_mem_size);
  }
  return 1;
}

/* ------------------------------------------------------------ clattn's defaults */

/* CLBlast has no tuned GEMM parameters for PoCL's CPU devices, and its defaults (local-memory
 * tiles for GPUs, and its direct kernel up to a size that covers many projection shapes) run
 * the layer's projections at 4-6 GFLOP/s on two Zen 5 cores.
 *
 * Xgemm: kernel 1 (GEMMK 1, 2D register tiles without local memory). In row-major layout
 * it reads A [m, k] and B [k, n] as they are and writes C [m, n] in place, so a GEMM whose
 * dimensions are multiples of the tiles, on buffers at offset 0, is that one kernel: kernel 0
 * transposes A and C (in and out) around itself in row-major layout. Where the native float
 * vector is 16 wide (AVX-512), 128x128 tiles of 8x8 work-items, each 16x16 outputs in float16
 * vectors along n, K unrolled by 1: 140-180 GFLOP/s on the layer's projection shapes on two
 * Skylake-AVX512 cores, 1.7-2.4x kernel 0's 128x128x32 tiles with their transposes; 256x256
 * tiles were up to 20% faster on the largest shapes but 3x slower where they pad much.
 * Narrower vector units, whose registers hold half as much: 64x64 tiles, 8x8 outputs in
 * float8 vectors (by analogy; not measured on such a CPU).
 *
 * XgemmDirect: never used at the layer's shapes (GEMMs from 32^3 up take Xgemm, which pads
 * and was faster than the direct kernel at every shape measured, 1x768x768 included), but
 * CLBlast asks for its program's binary after building it, which makes PoCL compile every
 * kernel of that program, the four direct ones (NN, NT, TN, TT) among them: work-groups of
 * one work-item computing one output compile in a fifth of the time of CLBlast's defaults
 * (about 0.45 s instead of 2.4 s each), and below 32^3, where they run, they took no longer
 * than 8x8 tiles (0.01-0.03 ms). The transposing copies, not used by kernel 1 either, get
 * small tiles for the same reason; the padding copies that kernel 1 does use keep CLBlast's.
 *
 * CLBlast keeps overrides per device for the whole process; a failure leaves its defaults in
 * place. A tuning file's entry, applied after this, wins. */
int clattn__gemm_device_defaults(clattn_context* ctx) {
  if (ctx->info.type != CLATTN_DEVICE_TYPE_CPU ||
      !strstr(ctx->info.platform_name, "Portable Computing Language")) {
    return 0;
  }
  cl_uint width = 0;
  if (clGetDeviceInfo(ctx->device, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT, sizeof width, &width,
                      NULL) != CL_SUCCESS) {
    width = 0;
  }
  size_t xgemm[CLATTN__XGEMM_PARAM_COUNT] = {0};
  xgemm[CLATTN__XGEMM_GEMMK] = 1;
  xgemm[CLATTN__XGEMM_KREG] = 1;
  xgemm[CLATTN__XGEMM_KWG] = 1;
  xgemm[CLATTN__XGEMM_KWI] = 1;
  xgemm[CLATTN__XGEMM_MDIMA] = xgemm[CLATTN__XGEMM_MDIMC] = 8;
  xgemm[CLATTN__XGEMM_NDIMB] = xgemm[CLATTN__XGEMM_NDIMC] = 8;
  xgemm[CLATTN__XGEMM_MWG] = xgemm[CLATTN__XGEMM_NWG] = width >= 16 ? 128 : 64;
  xgemm[CLATTN__XGEMM_VWM] = width >= 16 ? 16 : 8;
  xgemm[CLATTN__XGEMM_VWN] = 1;
  char why[160];
  if (!clattn__xgemm_params_valid(xgemm, &ctx->info, why, sizeof why)) {
    clattn__log("keeping CLBlast's default GEMM parameters on this device: %s", why);
    return 0;
  }
  static const char* direct_names[] = {"WGD",  "MDIMCD", "NDIMCD", "MDIMAD", "NDIMBD",
                                       "KWID", "VWMD",   "VWND",   "PADA",   "PADB"};
  static const size_t direct[] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
  static const char* transpose_names[] = {"TRA_DIM", "TRA_WPT", "TRA_PAD", "TRA_SHUFFLE"};
  static const size_t transpose_values[] = {8, 1, 0, 0};
  static const char* padtranspose_names[] = {"PADTRA_TILE", "PADTRA_WPT", "PADTRA_PAD"};
  static const size_t padtranspose_values[] = {8, 1, 0};
  const char* routine[] = {CLATTN__GEMM_MIN_INDIRECT_NAME};
  const size_t min_indirect = CLATTN__GEMM_MIN_INDIRECT;
  if (clattn__gemm_override(ctx, "Xgemm", CLATTN__XGEMM_PARAM_COUNT,
                            (const char**)clattn__xgemm_param_names, xgemm) != CLATTN_SUCCESS ||
      clattn__gemm_override(ctx, "XgemmDirect", 10, direct_names, direct) != CLATTN_SUCCESS ||
      clattn__gemm_override(ctx, "Transpose", 4, transpose_names, transpose_values) !=
          CLATTN_SUCCESS ||
      clattn__gemm_override(ctx, "Padtranspose", 3, padtranspose_names, padtranspose_values) !=
          CLATTN_SUCCESS ||
      clattn__gemm_override(ctx, "GemmRoutine", 1, routine, &min_indirect) != CLATTN_SUCCESS) {
    clattn__log("keeping CLBlast's default GEMM parameters on this device");
    return 0;
  }
  return 1;
}

void clattn__gemm_release_programs(void) { CLBlastClearCache(); }
