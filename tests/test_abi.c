/* Descriptor structs across versions: a program built against an older header passes its
 * older struct_size and owns only that many bytes; clattn reads no further and gives the
 * fields it does not know their defaults. Sizes beyond this version's are refused. */
#include <stddef.h>

#include "test_util.h"

/* clattn_attention_buffers as 0.1 published it: up to kv_lengths. */
#define BUFFERS_V0_1 offsetof(clattn_attention_buffers, workspace)

static cl_mem device_buffer(clattn_context* ctx, size_t bytes, const void* host) {
  cl_context cl_ctx = NULL;
  cr_assert_eq(clattn_context_get_cl(ctx, &cl_ctx, NULL, NULL), CLATTN_SUCCESS);
  cl_int err = CL_SUCCESS;
  cl_mem m =
      clCreateBuffer(cl_ctx, host ? CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE,
                     bytes, (void*)host, &err);
  cr_assert_eq(err, CL_SUCCESS, "clCreateBuffer: %d", err);
  return m;
}

/* An older program's buffers struct, in a heap block of exactly its size (so that a read
 * past it is caught by AddressSanitizer in the sanitizer build), runs and is right. */
Test(abi, buffers_of_the_older_size_run) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc d = test_desc(1, 2, 2, 33, 47, 16, 0);
  test_problem p;
  test_problem_init(&p, &d, 5);
  cl_mem q = device_buffer(ctx, p.nq * sizeof(float), p.q);
  cl_mem k = device_buffer(ctx, p.nk * sizeof(float), p.k);
  cl_mem v = device_buffer(ctx, p.nv * sizeof(float), p.v);
  cl_mem o = device_buffer(ctx, p.no * sizeof(float), NULL);
  const clattn_variant variants[] = {CLATTN_VARIANT_TILED_LOCAL, CLATTN_VARIANT_REGISTER_BLOCKED};
  for (size_t i = 0; i < 2; ++i) {
    clattn_attention_buffers full = CLATTN_ATTENTION_BUFFERS_INIT;
    full.struct_size = BUFFERS_V0_1;
    full.q = q;
    full.k = k;
    full.v = v;
    full.o = o;
    clattn_attention_buffers* old = malloc(BUFFERS_V0_1);
    cr_assert_not_null(old);
    memcpy(old, &full, BUFFERS_V0_1);
    const clattn_attention_config config = test_config(variants[i]);
    clattn_status st = clattn_attention(ctx, &d, old, &config, NULL, 0, NULL, NULL);
    free(old);
    cr_assert_eq(st, CLATTN_SUCCESS, "%s: %s (%s)", clattn_variant_name(variants[i]),
                 clattn_status_name(st), test_last_error(ctx));
    cl_command_queue queue = NULL;
    cr_assert_eq(clattn_context_get_cl(ctx, NULL, NULL, &queue), CLATTN_SUCCESS);
    cr_assert_eq(
        clEnqueueReadBuffer(queue, o, CL_TRUE, 0, p.no * sizeof(float), p.o, 0, NULL, NULL),
        CL_SUCCESS);
    test_check(&d, p.q, p.k, p.v, NULL, p.o, NULL, clattn_variant_name(variants[i]));
  }
  cl_mem mems[4] = {q, k, v, o};
  for (int i = 0; i < 4; ++i) clReleaseMemObject(mems[i]);
  test_problem_free(&p);
  clattn_context_destroy(ctx);
}

/* Sizes below the first published one, and above this version's, are refused with a
 * message naming the struct. */
Test(abi, sizes_out_of_range_are_refused) {
  clattn_context* ctx = test_context(NULL);
  clattn_attention_desc d = test_desc(1, 1, 1, 4, 4, 4, 0);
  size_t n = 0;
  d.struct_size = sizeof d + 8;
  cr_expect_eq(clattn_attention_tensor_size(&d, 'q', &n), CLATTN_ERROR_INVALID_ARGUMENT);
  d.struct_size = sizeof(size_t);
  cr_expect_eq(clattn_attention_tensor_size(&d, 'q', &n), CLATTN_ERROR_INVALID_ARGUMENT);
  d.struct_size = sizeof d;
  cr_expect_eq(clattn_attention_tensor_size(&d, 'q', &n), CLATTN_SUCCESS);

  cl_mem m = device_buffer(ctx, 64 * sizeof(float), NULL);
  clattn_attention_buffers b = CLATTN_ATTENTION_BUFFERS_INIT;
  b.q = b.k = b.v = b.o = m;
  const size_t bad[] = {BUFFERS_V0_1 - sizeof(size_t), sizeof b + sizeof(size_t)};
  for (int i = 0; i < 2; ++i) {
    b.struct_size = bad[i];
    clattn_status st = clattn_attention(ctx, &d, &b, NULL, NULL, 0, NULL, NULL);
    cr_expect_eq(st, CLATTN_ERROR_INVALID_ARGUMENT, "struct_size %zu: %s", bad[i],
                 clattn_status_name(st));
    cr_expect(strstr(test_last_error(ctx), "clattn_attention_buffers.struct_size") != NULL, "%s",
              test_last_error(ctx));
  }
  clattn_attention_config c = CLATTN_ATTENTION_CONFIG_INIT;
  c.struct_size = sizeof c + 4;
  clattn_attention_config used = CLATTN_ATTENTION_CONFIG_INIT;
  cr_expect_eq(clattn_attention_get_config(ctx, &d, &c, &used), CLATTN_ERROR_INVALID_ARGUMENT);
  clattn_context_options opt = CLATTN_CONTEXT_OPTIONS_INIT;
  opt.struct_size = sizeof opt + 8;
  clattn_context* other = NULL;
  cr_expect_eq(clattn_context_create(&opt, &other), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_expect_null(other);
  clReleaseMemObject(m);
  clattn_context_destroy(ctx);
}

/* Variant names and config descriptions come from the registry, for every variant. */
Test(abi, variant_names_round_trip) {
  const clattn_variant ids[] = {CLATTN_VARIANT_AUTO, CLATTN_VARIANT_TILED_LOCAL,
                                CLATTN_VARIANT_REGISTER_BLOCKED};
  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; ++i) {
    const char* name = clattn_variant_name(ids[i]);
    cr_assert_not_null(name);
    clattn_variant back = (clattn_variant)-1;
    cr_assert_eq(clattn_variant_from_name(name, &back), CLATTN_SUCCESS, "%s", name);
    cr_assert_eq(back, ids[i], "%s", name);
    clattn_attention_config c = test_config(ids[i]);
    char text[128];
    size_t needed = 0;
    cr_assert_eq(clattn_attention_config_describe(&c, text, sizeof text, &needed), CLATTN_SUCCESS);
    cr_assert(strncmp(text, name, strlen(name)) == 0, "\"%s\" does not start with %s", text, name);
    cr_assert_eq(needed, strlen(text) + 1);
  }
  clattn_variant v = CLATTN_VARIANT_AUTO;
  cr_assert_eq(clattn_variant_from_name("REGBLOCK", &v), CLATTN_SUCCESS);
  cr_assert_eq(v, CLATTN_VARIANT_REGISTER_BLOCKED);
  cr_assert_eq(clattn_variant_from_name("tiled", &v), CLATTN_SUCCESS);
  cr_assert_eq(v, CLATTN_VARIANT_TILED_LOCAL);
  cr_assert_eq(clattn_variant_from_name("tile", &v), CLATTN_ERROR_INVALID_ARGUMENT);
  cr_assert_eq(v, CLATTN_VARIANT_TILED_LOCAL, "a failed parse changed the output");
  cr_assert_null(clattn_variant_name((clattn_variant)99));
  clattn_attention_config bad = test_config((clattn_variant)99);
  cr_assert_eq(clattn_attention_config_describe(&bad, NULL, 0, NULL),
               CLATTN_ERROR_INVALID_ARGUMENT);
}

/* clattn_mha_desc as 0.2 published it, up to `scale`: its size without the trailing padding
 * and with it (sizeof in 0.2, which reaches over 0.3's `rope`; those bytes are the caller's
 * padding, set to garbage here, and must not be read as a style). Both make the layer 0.2
 * made, without rotary embeddings: the same y, bit for bit, as this version's descriptor. */
Test(abi, mha_desc_of_the_older_size) {
  clattn_context* ctx = test_context(NULL);
  enum { E = 32, H = 2, N = 5 };
  uint64_t state = 17;
  float w_in[3 * E * E], wo[E * E], x[N * E], y[N * E], y_now[N * E];
  clattn_ref_fill_uniform(w_in, 3 * E * E, -0.2f, 0.2f, &state);
  clattn_ref_fill_uniform(wo, E * E, -0.2f, 0.2f, &state);
  clattn_ref_fill_uniform(x, N * E, -1.0f, 1.0f, &state);
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = w_in;
  w.out_proj_weight.host = wo;
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = 1;
  fwd.seq = N;
  fwd.causal = 1;
  clattn_mha_desc now = CLATTN_MHA_DESC_INIT;
  now.d_model = E;
  now.heads = H;
  clattn_mha* mha = NULL;
  cr_assert_eq(clattn_mha_create(ctx, &now, &w, &mha), CLATTN_SUCCESS, "%s", test_last_error(ctx));
  cr_assert_eq(clattn_mha_forward_host(mha, &fwd, x, NULL, NULL, y_now, NULL), CLATTN_SUCCESS);
  clattn_mha_destroy(mha);
  const size_t sizes[2] = {offsetof(clattn_mha_desc, rope), offsetof(clattn_mha_desc, rope_dims)};
  for (int i = 0; i < 2; ++i) {
    unsigned char* old = malloc(sizes[i]);
    cr_assert_not_null(old);
    memset(old, 0xA5, sizes[i]);
    clattn_mha_desc d = now;
    d.struct_size = sizes[i];
    memcpy(old, &d, offsetof(clattn_mha_desc, rope));
    mha = NULL;
    clattn_status st = clattn_mha_create(ctx, (const clattn_mha_desc*)(const void*)old, &w, &mha);
    free(old);
    cr_assert_eq(st, CLATTN_SUCCESS, "struct_size %zu: %s (%s)", sizes[i], clattn_status_name(st),
                 test_last_error(ctx));
    cr_assert_eq(clattn_mha_forward_host(mha, &fwd, x, NULL, NULL, y, NULL), CLATTN_SUCCESS);
    clattn_mha_destroy(mha);
    cr_assert_eq(memcmp(y, y_now, sizeof y), 0, "struct_size %zu: another y", sizes[i]);
  }
  clattn_context_destroy(ctx);
}
