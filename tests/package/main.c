/* Smallest consumer of an installed clattn: creates a context, runs one attention on the
 * host API and checks a property that needs no reference (V constant along the keys makes
 * every output row equal to that constant); asks for the tuning file's path through the
 * installed clattn_tuning.h. Exits 0 with "SKIP" when there is no device. */
#include <clattn/clattn.h>
#include <clattn/clattn_tuning.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define BATCH 1
#define HEADS 2
#define SEQ 5
#define DIM 8
#define N (BATCH * HEADS * SEQ * DIM)

int main(void) {
  int major = 0, minor = 0, patch = 0;
  clattn_version(&major, &minor, &patch);
  if (major != CLATTN_VERSION_MAJOR || minor != CLATTN_VERSION_MINOR ||
      patch != CLATTN_VERSION_PATCH) {
    fprintf(stderr, "version mismatch: header %s, library %d.%d.%d\n", CLATTN_VERSION_STRING, major,
            minor, patch);
    return 1;
  }

  /* No path at all (no CLATTN_TUNING_FILE, XDG_CACHE_HOME or HOME) is a clean status. */
  size_t path_len = 0;
  clattn_status st = clattn_tuning_file_path(NULL, 0, &path_len);
  if (st != CLATTN_SUCCESS && st != CLATTN_ERROR_TUNING_FILE) {
    fprintf(stderr, "clattn_tuning_file_path: %s\n", clattn_status_name(st));
    return 1;
  }

  clattn_context* ctx = NULL;
  st = clattn_context_create(NULL, &ctx);
  if (st == CLATTN_ERROR_NO_DEVICE) {
    printf("SKIP: %s\n", clattn_status_string(st));
    return 0;
  }
  if (st != CLATTN_SUCCESS) {
    fprintf(stderr, "clattn_context_create: %s\n", clattn_status_name(st));
    return 1;
  }

  static float q[N], k[N], v[N], o[N];
  for (int i = 0; i < N; ++i) {
    q[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
    k[i] = (float)((i * 5) % 13) / 13.0f - 0.5f;
    v[i] = (float)(i % DIM) + 1.0f; /* the same for every key */
    o[i] = NAN;
  }

  clattn_attention_desc desc = CLATTN_ATTENTION_DESC_INIT;
  desc.batch = BATCH;
  desc.heads_q = HEADS;
  desc.heads_kv = HEADS;
  desc.seq_q = SEQ;
  desc.seq_kv = SEQ;
  desc.head_dim = DIM;
  desc.causal = 1;

  int rc = 0;
  st = clattn_attention_host(ctx, &desc, q, k, v, o, NULL, NULL, NULL);
  if (st != CLATTN_SUCCESS) {
    char msg[1024];
    clattn_context_get_last_error(ctx, msg, sizeof msg, NULL);
    fprintf(stderr, "clattn_attention_host: %s: %s\n", clattn_status_name(st), msg);
    rc = 1;
  }
  for (int i = 0; rc == 0 && i < N; ++i) {
    if (!(fabsf(o[i] - v[i]) <= 1e-4f)) {
      fprintf(stderr, "o[%d] = %g, expected %g\n", i, (double)o[i], (double)v[i]);
      rc = 1;
    }
  }
  clattn_context_destroy(ctx);
  if (rc == 0) printf("OK clattn %s\n", CLATTN_VERSION_STRING);
  return rc;
}
