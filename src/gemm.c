/* GEMM through CLBlast. This is the only file that includes CLBlast. */
/* The OpenCL version clattn.h targets, set before clblast_c.h includes CL/cl.h. */
#define CL_TARGET_OPENCL_VERSION 120
#include <clblast_c.h>
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

clattn_status clattn__gemm(clattn_context* ctx, cl_command_queue queue, const clattn__gemm_args* g,
                           cl_event* event) {
  CLBlastStatusCode code =
      CLBlastSgemm(CLBlastLayoutRowMajor, g->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo,
                   g->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo, g->m, g->n, g->k,
                   g->alpha, g->a, g->a_offset, g->lda, g->b, g->b_offset, g->ldb, g->beta, g->c,
                   g->c_offset, g->ldc, &queue, event);
  return code == CLBlastSuccess ? CLATTN_SUCCESS : gemm_fail(ctx, code, "CLBlastSgemm");
}

clattn_status clattn__gemm_strided_batched(clattn_context* ctx, cl_command_queue queue,
                                           const clattn__gemm_args* g, size_t batch,
                                           size_t a_stride, size_t b_stride, size_t c_stride,
                                           cl_event* event) {
  CLBlastStatusCode code = CLBlastSgemmStridedBatched(
      CLBlastLayoutRowMajor, g->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo,
      g->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo, g->m, g->n, g->k, g->alpha, g->a,
      g->a_offset, g->lda, a_stride, g->b, g->b_offset, g->ldb, b_stride, g->beta, g->c,
      g->c_offset, g->ldc, c_stride, batch, &queue, event);
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

/* CLBlast has no tuned GEMM parameters for PoCL's CPU devices, and its defaults (local-memory
 * tiles for GPUs, and its direct kernel up to a size that covers many projection shapes) run
 * the layer's projections at 4-6 GFLOP/s on two Zen 5 cores. Register tiles without local
 * memory run them far faster there: with AVX-512 (a native float vector of 16) 128x128x32
 * tiles of 16x16 outputs per work-item in float8 vectors, the best of a clattn-tune run on
 * those cores (128 GFLOP/s on the layer's projections at d_model 512, N=1024); with
 * narrower vector units, whose registers hold half as much, 64x64x16 tiles of 8x8 outputs.
 * Every shape from 128 up takes the tiled kernel. CLBlast keeps overrides per device for
 * the whole process; a failure leaves its defaults in place. A tuning file's entry, applied
 * after this, wins. */
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
  static const char* names[] = {"GEMMK", "KREG", "KWG", "KWI", "MDIMA", "MDIMC", "MWG", "NDIMB",
                                "NDIMC", "NWG",  "SA",  "SB",  "STRM",  "STRN",  "VWM", "VWN"};
  static const size_t wide[] = {0, 1, 32, 2, 8, 8, 128, 8, 8, 128, 0, 0, 0, 0, 8, 8};
  static const size_t narrow[] = {0, 1, 16, 2, 8, 8, 64, 8, 8, 64, 0, 0, 0, 0, 8, 8};
  const char* routine[] = {"XGEMM_MIN_INDIRECT_SIZE"};
  const size_t min_indirect = 128;
  if (clattn__gemm_override(ctx, "Xgemm", sizeof wide / sizeof wide[0], names,
                            width >= 16 ? wide : narrow) != CLATTN_SUCCESS ||
      clattn__gemm_override(ctx, "GemmRoutine", 1, routine, &min_indirect) != CLATTN_SUCCESS) {
    clattn__log("keeping CLBlast's default GEMM parameters on this device");
    return 0;
  }
  return 1;
}

void clattn__gemm_release_programs(void) { CLBlastClearCache(); }
