/* clattn-maps: draws attention maps, the probabilities each head gives every
 * key for every query, as one PNG grid (and an SVG with a value on every cell).
 * By default it runs the multi-head attention layer
 * (clattn_mha_forward_weights_host) on x and weights from .npy files in
 * PyTorch's names, or random ones; with --core, the attention core
 * (clattn_attention_host with the LSE, then clattn_attention_probs_host) on Q
 * and K from files, random, or the --identity demo.
 *
 * Exit status: 0 pictures written, 1 a file that cannot be read or written or a
 * clattn error, 2 a bad command line (values, combinations, label counts, sizes
 * beyond the limits). */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"
#include "common/flags.h"
#include "common/problem.h"
#include "maps/grid.h"
#include "maps/labels.h"
#include "maps/npy.h"
#include "maps/outfile.h"
#include "maps/png_writer.h"
#include "maps/svg_writer.h"

#define TOOL "clattn-maps"

/* Largest probability block one call returns (batch x seq x seq_kv floats per
 * head in the core, batch x heads x seq x seq_kv in the layer): 2^28 floats, 1
 * GiB. */
#define MAX_PROBS_FLOATS ((size_t)1 << 28)
/* Largest input tensor made or read: 2^28 floats. */
#define MAX_INPUT_FLOATS ((size_t)1 << 28)

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

typedef struct options {
  int core;
  const char* device;
  const char* output;
  const char* svg;
  const char* labels;
  const char* kv_labels;
  const char* title;
  size_t batch_index;
  clattn_flag_size_list heads_to_draw;
  int mean;
  int range; /* 0: max, 1: fixed */
  size_t cell, columns, tick_every;
  uint64_t seed;
  int causal;
  clattn_flag_size_list kv_length;
  /* Shapes: 0 = not given (from the files, else the defaults). */
  size_t batch, heads, kv_heads, seq, seq_kv, head_dim, d_model;
  /* Core. */
  const char *q, *k, *v;
  int layout; /* 0: bhnd, 1: bnhd */
  double scale;
  int identity;
  /* Layer. */
  const char *x, *weights;
  int bias;
} options;

static const char* const kRanges[] = {"max", "fixed", "log", NULL};
static const char* const kLayouts[] = {"bhnd", "bnhd", NULL};

static const char kCoreUsage[] =
    "usage: clattn-maps --core [options]\n"
    "\n"
    "Core mode (clattn-maps --help without --core describes the layer mode).\n"
    "Runs the attention core on Q and K (files, random in [-2, 2], or --identity)\n"
    "with clattn_attention_host and its LSE, recomputes each head's probabilities\n"
    "with clattn_attention_probs_host and draws them as one PNG grid.\n"
    "\n";

static const char kLayerUsage[] =
    "usage: clattn-maps [options]          the multi-head attention layer\n"
    "       clattn-maps --core [options]   the attention core (--core --help)\n"
    "\n"
    "Runs the layer (PyTorch's nn.MultiheadAttention, batch_first, self-attention)\n"
    "on x with clattn_mha_forward_weights_host and draws each head's attention\n"
    "weights (query rows, key columns) as one PNG grid with a colour scale.\n"
    "Without files, x is random in [-1, 1], the weights in +-1/sqrt(fan_in) and\n"
    "the biases in +-0.1.\n"
    "\n";

static const char kNotes[] =
    "\n"
    "Input files are .npy (float32 or float64; leading dimensions of 1 may be left\n"
    "out) or raw float32, whose shape comes from the shape flags. Labels: one\n"
    "token a line, as many lines as the sequence has tokens. Outputs are written\n"
    "whole or not at all.\n"
    "Exit status: 0 written, 1 a file or clattn error, 2 usage (values, label counts,\n"
    "sizes).\n";

#if defined(__GNUC__)
static void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
#endif

/* A message on stderr, starting with the tool's name. */
static void fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, TOOL ": ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---------------------------------------------------------------- command line
 */

static size_t append_flags(clattn_flag* dst, size_t n, const clattn_flag* src, size_t count) {
  for (size_t i = 0; i < count; ++i) dst[n++] = src[i];
  return n;
}

static clattn_flags_result parse_options(int argc, char** argv, options* o) {
  const clattn_flag common[] = {
      CLATTN_FLAG_DEF_STRING("--device", &o->device, "SPEC",
                             "\"P:D\" or a name substring (default: CLATTN_DEVICE, else\n"
                             "first GPU, accelerator, CPU)"),
      CLATTN_FLAG_DEF_STRING("--output", &o->output, "FILE",
                             "the PNG to write (attention-maps.png)"),
      CLATTN_FLAG_DEF_STRING("--svg", &o->svg, "FILE",
                             "also an SVG: every cell a rect whose tooltip says\n"
                             "\"q i, k j: value\" (at most 131072 cells in all)"),
      CLATTN_FLAG_DEF_STRING("--labels", &o->labels, "FILE",
                             "query tokens, one a line (also the keys' when\n"
                             "seq-kv = seq and --kv-labels is not given)"),
      CLATTN_FLAG_DEF_STRING("--kv-labels", &o->kv_labels, "FILE", "key tokens, one a line"),
      CLATTN_FLAG_DEF_STRING("--title", &o->title, "TEXT",
                             "the picture's title line (default: what was run)"),
      CLATTN_FLAG_DEF_SIZE("--batch-index", &o->batch_index,
                           "the sequence of the batch to draw (0)"),
      {.name = "--heads-to-draw",
       .kind = CLATTN_FLAG_SIZE_LIST,
       .ptr = &o->heads_to_draw,
       .arg = "LIST",
       .help = "heads to draw, comma-separated (all)"},
      CLATTN_FLAG_DEF_SET("--mean", &o->mean, "add a panel of the mean over all heads"),
      {.name = "--range",
       .kind = CLATTN_FLAG_CHOICE,
       .ptr = &o->range,
       .choices = kRanges,
       .help = "colour scale: 0..the largest value drawn (max, the\n"
               "default), 0..1 (fixed), or the 4 decades below the\n"
               "largest value (log)"},
      {.name = "--cell",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->cell,
       .arg = "N",
       .max = CLATTN_MAPS_CELL_MAX,
       .help = "pixels per cell, 1..64 (0: from the size; above 1024\n"
               "tokens a pixel shows the largest of a bin of cells)"},
      CLATTN_FLAG_DEF_SIZE("--columns", &o->columns,
                           "panels per row (0: from the picture's shape)"),
      CLATTN_FLAG_DEF_SIZE("--tick-every", &o->tick_every, "axis tick every N tokens (0: chosen)"),
      CLATTN_FLAG_DEF_UINT64("--seed", &o->seed, "generator seed of random inputs (1)"),
      CLATTN_FLAG_DEF_SET("--causal", &o->causal, "causal mask, bottom-right aligned"),
      {.name = "--kv-length",
       .kind = CLATTN_FLAG_SIZE_LIST,
       .ptr = &o->kv_length,
       .arg = "LIST",
       .help = "valid keys of each sequence (one for all, or one per\n"
               "sequence); later keys are masked (none)"},
      {.name = "--batch",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->batch,
       .arg = "N",
       .min = 1,
       .max = 65536,
       .help = "batch size (from the input, else 1)"},
      {.name = "--heads",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->heads,
       .arg = "N",
       .min = 1,
       .max = 4096,
       .help = "(query) heads (from the input, else 4)"},
      {.name = "--kv-heads",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->kv_heads,
       .arg = "N",
       .min = 1,
       .max = 4096,
       .help = "key/value heads, divides --heads (= heads)"},
      {.name = "--seq",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->seq,
       .arg = "N",
       .min = 1,
       .max = 1 << 20,
       .help = "tokens (queries) of a sequence (from the input, else 32)"},
      {.name = "--head-dim",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->head_dim,
       .arg = "N",
       .min = 1,
       .max = 256,
       .help = "head dimension (core: from the input, else 16;\n"
               "layer: d-model / heads)"},
      CLATTN_FLAG_DEF_SET("--core", &o->core, NULL), /* main has chosen the mode */
  };
  const clattn_flag core_only[] = {
      CLATTN_FLAG_DEF_STRING("--q", &o->q, "FILE",
                             "queries [batch, heads, seq, head-dim] (random without)"),
      CLATTN_FLAG_DEF_STRING("--k", &o->k, "FILE",
                             "keys [batch, kv-heads, seq-kv, head-dim] (random without)"),
      CLATTN_FLAG_DEF_STRING("--v", &o->v, "FILE",
                             "values, as keys (zeros without: V changes the output,\n"
                             "never the maps)"),
      {.name = "--seq-kv",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->seq_kv,
       .arg = "N",
       .min = 1,
       .max = 1 << 20,
       .help = "keys of a sequence (from the input, else = seq)"},
      {.name = "--layout",
       .kind = CLATTN_FLAG_CHOICE,
       .ptr = &o->layout,
       .choices = kLayouts,
       .help = "the files' layout: [batch, heads, seq, dim] (bhnd)\n"
               "or [batch, seq, heads, dim] (bnhd)"},
      {.name = "--scale",
       .kind = CLATTN_FLAG_DOUBLE,
       .ptr = &o->scale,
       .arg = "X",
       .help = "score scale (1/sqrt(head-dim))"},
      CLATTN_FLAG_DEF_SET("--identity", &o->identity,
                          "demo input: one-hot Q and K rows, so that query i of\n"
                          "head h matches key i - g only (g its kv head): a bright\n"
                          "diagonal, shifted g keys left in kv head g's heads"),
  };
  const clattn_flag layer_only[] = {
      CLATTN_FLAG_DEF_STRING("--x", &o->x, "FILE",
                             "the input x [batch, seq, d-model] (random without)"),
      CLATTN_FLAG_DEF_STRING("--weights", &o->weights, "DIR",
                             "nn.MultiheadAttention's state_dict as DIR/<name>.npy:\n"
                             "in_proj_weight (or q_proj_weight, k_proj_weight and\n"
                             "v_proj_weight), in_proj_bias, out_proj.weight,\n"
                             "out_proj.bias (biases optional; random without DIR)"),
      {.name = "--d-model",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &o->d_model,
       .arg = "N",
       .min = 1,
       .max = 65536,
       .help = "model width E (from the input, else 64)"},
      CLATTN_FLAG_DEF_CLEAR("--no-bias", &o->bias, "random weights without biases"),
  };
  clattn_flag flags[64];
  size_t n = append_flags(flags, 0, common, sizeof common / sizeof common[0]);
  if (o->core) {
    n = append_flags(flags, n, core_only, sizeof core_only / sizeof core_only[0]);
  } else {
    n = append_flags(flags, n, layer_only, sizeof layer_only / sizeof layer_only[0]);
  }
  flags[n] = (clattn_flag)CLATTN_FLAG_DEF_END;
  const clattn_flag_spec spec = {
      .tool = TOOL,
      .usage = o->core ? kCoreUsage : kLayerUsage,
      .notes = kNotes,
      .flags = flags,
      .unknown_hint = o->core ? NULL : " (options of the attention core need --core)",
      .help_column = 26,
  };
  return clattn_flags_parse(&spec, argc, argv);
}

/* ---------------------------------------------------------------- inputs */

/* Checks that a shape flag given on the command line agrees with what a file
 * says. */
static int agree(const char* flag, size_t* value, size_t from_file, const char* path) {
  if (*value && *value != from_file) {
    fail("%s %zu, but %s has %zu there", flag, *value, path, from_file);
    return -1;
  }
  *value = from_file;
  return 0;
}

/* Reads a Q- or K-shaped tensor: .npy of [B, H, N, D] (bhnd) or [B, N, H, D]
 * (bnhd), with leading 1s optional, filling the shape values not yet known; raw
 * files need them all. Returns 0, EXIT_RUNTIME or EXIT_USAGE. */
static int read_qk(const char* path, int bnhd, size_t* b, size_t* h, size_t* n, size_t* d,
                   clattn_maps_array* out, const char* const names[4]) {
  char err[1024];
  const size_t raw[4] = {*b ? *b : 1, bnhd ? *n : *h, bnhd ? *h : *n, *d};
  const int raw_ok = raw[1] && raw[2] && raw[3];
  if (clattn_maps_array_read(path, raw_ok ? raw : NULL, 4, out, err, sizeof err) != 0) {
    fail("%s%s", err, raw_ok ? "" : " (a raw file needs its shape on the command line)");
    return EXIT_RUNTIME;
  }
  if (out->ndim < 2 || out->ndim > 4) {
    char s[160];
    fail("%s has shape %s; expected [batch, heads, seq, head-dim] or fewer leading dims", path,
         clattn_maps_shape_string(out->shape, out->ndim, s, sizeof s));
    return EXIT_USAGE;
  }
  size_t dims[4] = {1, 1, 1, 1};
  memcpy(dims + (4 - out->ndim), out->shape, out->ndim * sizeof dims[0]);
  const size_t fh = bnhd ? dims[2] : dims[1], fn = bnhd ? dims[1] : dims[2];
  if (agree(names[0], b, dims[0], path) || agree(names[1], h, fh, path) ||
      agree(names[2], n, fn, path) || agree(names[3], d, dims[3], path)) {
    return EXIT_USAGE;
  }
  return 0;
}

/* The --identity demo: Q[b, h, i] = a·e(i mod D), K[b, g, j] = a·e((j + g) mod
 * D), with a² · scale = 12, so a query's score is 12 on its matching key and 0
 * elsewhere. */
static void fill_identity(float* t, size_t batch, size_t heads, size_t seq, size_t dim, int bnhd,
                          int is_key, float a) {
  for (size_t b = 0; b < batch; ++b) {
    for (size_t h = 0; h < heads; ++h) {
      for (size_t i = 0; i < seq; ++i) {
        float* row = t + (bnhd ? ((b * seq + i) * heads + h) : ((b * heads + h) * seq + i)) * dim;
        for (size_t c = 0; c < dim; ++c) row[c] = 0.0f;
        row[(i + (is_key ? h : 0)) % dim] = a;
      }
    }
  }
}

/* ---------------------------------------------------------------- clattn
 * errors */

static void report_clattn(clattn_context* ctx, const char* what, clattn_status st) {
  char detail[4096] = "";
  clattn_context_get_last_error(ctx, detail, sizeof detail, NULL);
  fail("%s failed: %s (%s)%s%s", what, clattn_status_name(st), clattn_status_string(st),
       detail[0] ? "\n  last error: " : "", detail);
}

/* ---------------------------------------------------------------- the run */

/* One run: its sizes and inputs (prepared before anything runs), then the maps
 * to draw. */
typedef struct problem {
  size_t batch, heads, kv_heads, seq, seq_kv, head_dim, d_model;
  int32_t* kv_lengths; /* batch entries, or NULL */
  size_t drawn[4096];  /* heads to draw */
  size_t n_drawn;
  /* Core: q, k, v as the descriptor addresses them. Layer: x and the packed
   * weights. */
  clattn_attention_desc desc;
  float *q, *k, *v;
  float *x, *w_in, *b_in, *w_out, *b_out;
  float* maps; /* drawn maps, panels x seq x seq_kv */
  size_t panels;
  char** titles;
  char title[512];
} problem;

static void problem_free(problem* pb) {
  free(pb->kv_lengths);
  free(pb->q);
  free(pb->k);
  free(pb->v);
  free(pb->x);
  free(pb->w_in);
  free(pb->b_in);
  free(pb->w_out);
  free(pb->b_out);
  free(pb->maps);
  if (pb->titles) {
    for (size_t p = 0; p < pb->panels; ++p) free(pb->titles[p]);
  }
  free(pb->titles);
}

/* Which heads to draw: the list given, or all. */
static int heads_drawn(const options* o, size_t heads, size_t* list, size_t* count) {
  if (o->heads_to_draw.n == 0) {
    for (size_t h = 0; h < heads && h < 4096; ++h) list[h] = h;
    *count = heads;
    return 0;
  }
  for (size_t i = 0; i < o->heads_to_draw.n; ++i) {
    if (o->heads_to_draw.v[i] >= heads) {
      fail("--heads-to-draw: head %zu does not exist (%zu heads: 0..%zu)", o->heads_to_draw.v[i],
           heads, heads - 1);
      return EXIT_USAGE;
    }
    list[i] = o->heads_to_draw.v[i];
  }
  *count = o->heads_to_draw.n;
  return 0;
}

/* --kv-length into per-sequence lengths (NULL when not given). */
static int make_kv_lengths(const options* o, problem* pb) {
  if (o->kv_length.n == 0) return 0;
  if (o->kv_length.n != 1 && o->kv_length.n != pb->batch) {
    fail("--kv-length takes one length, or one per sequence (%zu), got %zu", pb->batch,
         o->kv_length.n);
    return EXIT_USAGE;
  }
  pb->kv_lengths = malloc(pb->batch * sizeof *pb->kv_lengths);
  if (!pb->kv_lengths) {
    fail("out of memory");
    return EXIT_RUNTIME;
  }
  for (size_t b = 0; b < pb->batch; ++b) {
    const size_t len = o->kv_length.v[o->kv_length.n == 1 ? 0 : b];
    if (len > pb->seq_kv) {
      fail("--kv-length %zu is longer than the %zu keys of a sequence", len, pb->seq_kv);
      return EXIT_USAGE;
    }
    pb->kv_lengths[b] = (int32_t)len;
  }
  return 0;
}

static int alloc_panels(problem* pb, size_t panels) {
  pb->panels = panels;
  pb->maps = calloc(panels * pb->seq * pb->seq_kv, sizeof *pb->maps);
  pb->titles = calloc(panels, sizeof *pb->titles);
  if (!pb->maps || !pb->titles) return -1;
  for (size_t p = 0; p < panels; ++p) {
    pb->titles[p] = malloc(48);
    if (!pb->titles[p]) return -1;
  }
  return 0;
}

/* Appends ", kv_length 5" or ", kv_lengths 5,7,..." to the title. */
static void title_kv_lengths(const options* o, problem* pb) {
  if (!pb->kv_lengths) return;
  const size_t len = strlen(pb->title);
  snprintf(pb->title + len, sizeof pb->title - len, ", kv_length %d",
           (int)pb->kv_lengths[o->batch_index]);
}

/* Titles of the drawn heads' panels (and the mean's, last). */
static void panel_titles(const options* o, problem* pb) {
  const size_t group = pb->heads / pb->kv_heads;
  for (size_t i = 0; i < pb->n_drawn; ++i) {
    if (group == 1) {
      snprintf(pb->titles[i], 48, "head %zu", pb->drawn[i]);
    } else {
      snprintf(pb->titles[i], 48, "head %zu (kv %zu)", pb->drawn[i], pb->drawn[i] / group);
    }
  }
  if (o->mean) snprintf(pb->titles[pb->n_drawn], 48, "mean of %zu heads", pb->heads);
}

/* What every mode checks once the sizes are known; makes the panels. */
static int prepare_common(const options* o, problem* pb) {
  if (o->batch_index >= pb->batch) {
    fail("--batch-index %zu: the batch has %zu sequence%s", o->batch_index, pb->batch,
         pb->batch == 1 ? "" : "s");
    return EXIT_USAGE;
  }
  int rc = make_kv_lengths(o, pb);
  if (rc == 0) rc = heads_drawn(o, pb->heads, pb->drawn, &pb->n_drawn);
  if (rc != 0) return rc;
  if (alloc_panels(pb, pb->n_drawn + (o->mean ? 1 : 0)) != 0) {
    fail("out of memory");
    return EXIT_RUNTIME;
  }
  panel_titles(o, pb);
  return 0;
}

/* Core mode, before the run: the shapes from the files and flags, the inputs.
 */
static int prepare_core(const options* o, problem* pb) {
  int rc = EXIT_RUNTIME;
  clattn_maps_array qa = {0}, ka = {0}, va = {0};
  const int bnhd = o->layout == 1;
  static const char* const kQNames[4] = {"--batch", "--heads", "--seq", "--head-dim"};
  static const char* const kKNames[4] = {"--batch", "--kv-heads", "--seq-kv", "--head-dim"};
  size_t b = o->batch, h = o->heads, hkv = o->kv_heads, n = o->seq, nkv = o->seq_kv,
         d = o->head_dim;
  if (o->identity && (o->q || o->k)) {
    fail("--identity makes Q and K: drop --q and --k");
    return EXIT_USAGE;
  }
  if (o->q && (rc = read_qk(o->q, bnhd, &b, &h, &n, &d, &qa, kQNames)) != 0) goto cleanup;
  if (o->k && (rc = read_qk(o->k, bnhd, &b, &hkv, &nkv, &d, &ka, kKNames)) != 0) goto cleanup;
  if (!b) b = 1;
  if (!h) h = 4;
  if (!n) n = 32;
  if (!d) d = 16;
  if (!hkv) hkv = h;
  if (!nkv) nkv = n;
  if (o->v) {
    size_t vb = b, vh = hkv, vn = nkv, vd = d;
    if ((rc = read_qk(o->v, bnhd, &vb, &vh, &vn, &vd, &va, kKNames)) != 0) goto cleanup;
  }
  rc = EXIT_USAGE;
  pb->batch = b, pb->heads = h, pb->kv_heads = hkv, pb->seq = n, pb->seq_kv = nkv;
  pb->head_dim = d;
  if (h % hkv != 0) {
    fail("%zu query heads are not a multiple of %zu key/value heads", h, hkv);
    goto cleanup;
  }
  if ((double)b * (double)h * (double)n * (double)d > (double)MAX_INPUT_FLOATS ||
      (double)b * (double)hkv * (double)nkv * (double)d > (double)MAX_INPUT_FLOATS) {
    fail("inputs of %zu x %zu x %zu x %zu are above the limit of %zu elements", b, h, n, d,
         MAX_INPUT_FLOATS);
    goto cleanup;
  }
  if ((double)b * (double)n * (double)nkv > (double)MAX_PROBS_FLOATS) {
    fail("a head's probabilities (%zu x %zu x %zu) are above the limit of %zu elements", b, n, nkv,
         MAX_PROBS_FLOATS);
    goto cleanup;
  }
  if ((rc = prepare_common(o, pb)) != 0) goto cleanup;

  rc = EXIT_RUNTIME;
  clattn_attention_desc desc = CLATTN_ATTENTION_DESC_INIT;
  desc.batch = b;
  desc.heads_q = h;
  desc.heads_kv = hkv;
  desc.seq_q = n;
  desc.seq_kv = nkv;
  desc.head_dim = d;
  desc.scale = (float)o->scale;
  desc.causal = o->causal;
  desc.layout = bnhd ? CLATTN_LAYOUT_BNHD : CLATTN_LAYOUT_BHND;
  pb->desc = desc;
  const size_t q_count = b * h * n * d, kv_count = b * hkv * nkv * d;
  uint64_t state = clattn_tool_rng_state(o->seed);
  pb->q = qa.data ? qa.data : clattn_tool_random_floats(q_count, 2.0f, &state);
  pb->k = ka.data ? ka.data : clattn_tool_random_floats(kv_count, 2.0f, &state);
  pb->v = va.data ? va.data : calloc(kv_count, sizeof *pb->v);
  qa.data = ka.data = va.data = NULL; /* the problem's now */
  if (!pb->q || !pb->k || !pb->v) {
    fail("out of memory");
    goto cleanup;
  }
  if (o->identity) {
    const double scale = o->scale > 0 ? o->scale : 1.0 / sqrt((double)d);
    const float a = (float)sqrt(12.0 / scale);
    fill_identity(pb->q, b, h, n, d, bnhd, 0, a);
    fill_identity(pb->k, b, hkv, nkv, d, bnhd, 1, a);
  }
  snprintf(pb->title, sizeof pb->title,
           "clattn core: sequence %zu of %zu, Hq=%zu Hkv=%zu, Nq=%zu Nkv=%zu, D=%zu%s, %s",
           o->batch_index, b, h, hkv, n, nkv, d, o->causal ? ", causal" : "",
           o->identity ? "identity inputs"
           : o->q      ? "Q and K from files"
                       : "random Q and K");
  title_kv_lengths(o, pb);
  rc = 0;
cleanup:
  clattn_maps_array_free(&qa);
  clattn_maps_array_free(&ka);
  clattn_maps_array_free(&va);
  return rc;
}

/* Core mode: the fused call with its LSE, then each head's probabilities from
 * it. */
static int execute_core(const options* o, problem* pb, clattn_context* ctx) {
  int rc = EXIT_RUNTIME;
  const size_t b = pb->batch, h = pb->heads, n = pb->seq, nkv = pb->seq_kv;
  float* out = malloc(b * h * n * pb->head_dim * sizeof *out);
  float* lse = malloc(b * h * n * sizeof *lse);
  float* p = malloc(b * n * nkv * sizeof *p);
  if (!out || !lse || !p) {
    fail("out of memory");
    goto cleanup;
  }
  clattn_status st =
      clattn_attention_host(ctx, &pb->desc, pb->q, pb->k, pb->v, out, lse, pb->kv_lengths, NULL);
  if (st != CLATTN_SUCCESS) {
    report_clattn(ctx, "clattn_attention_host", st);
    goto cleanup;
  }
  /* One head at a time, [batch, 1, seq, seq_kv]; the mean sums every head's. */
  float* mean = o->mean ? pb->maps + pb->n_drawn * n * nkv : NULL;
  const size_t first = o->batch_index * n * nkv;
  for (size_t head = 0; head < h; ++head) {
    int wanted = mean != NULL;
    for (size_t i = 0; i < pb->n_drawn; ++i) wanted |= pb->drawn[i] == head;
    if (!wanted) continue;
    clattn_probs_block block = CLATTN_PROBS_BLOCK_INIT;
    block.head_begin = head;
    block.heads = 1;
    st = clattn_attention_probs_host(ctx, &pb->desc, pb->q, pb->k, lse, pb->kv_lengths, &block, p);
    if (st != CLATTN_SUCCESS) {
      report_clattn(ctx, "clattn_attention_probs_host", st);
      goto cleanup;
    }
    for (size_t i = 0; i < pb->n_drawn; ++i) {
      if (pb->drawn[i] == head) memcpy(pb->maps + i * n * nkv, p + first, n * nkv * sizeof *p);
    }
    if (mean) {
      for (size_t e = 0; e < n * nkv; ++e) mean[e] += p[first + e] / (float)h;
    }
  }
  rc = 0;
cleanup:
  free(out);
  free(lse);
  free(p);
  return rc;
}

/* Reads DIR/name; a missing optional file leaves *out empty and returns 0. */
static int read_weight(const char* dir, const char* name, int optional, clattn_maps_array* out) {
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(path, "rb");
  if (!f && optional) return 0;
  if (f) fclose(f);
  if (clattn_maps_array_read(path, NULL, 0, out, err, sizeof err) != 0) {
    fail("%s", err);
    return EXIT_RUNTIME;
  }
  return 0;
}

/* The packed input projection: DIR/in_proj_weight.npy, or PyTorch's separate
 * q_proj_weight.npy, k_proj_weight.npy and v_proj_weight.npy stacked into it.
 */
static int read_in_proj(const char* dir, clattn_maps_array* out) {
  char path[4096];
  snprintf(path, sizeof path, "%s/in_proj_weight.npy", dir);
  FILE* f = fopen(path, "rb");
  snprintf(path, sizeof path, "%s/q_proj_weight.npy", dir);
  FILE* fq = f ? NULL : fopen(path, "rb");
  if (f) fclose(f);
  if (!fq) return read_weight(dir, "in_proj_weight.npy", 0, out);
  fclose(fq);
  static const char* const kNames[3] = {"q_proj_weight.npy", "k_proj_weight.npy",
                                        "v_proj_weight.npy"};
  clattn_maps_array parts[3] = {{0}};
  int rc = 0;
  size_t rows = 0;
  for (int i = 0; i < 3 && rc == 0; ++i) {
    rc = read_weight(dir, kNames[i], 0, &parts[i]);
    if (rc == 0 && (parts[i].ndim != 2 || parts[i].shape[1] != parts[0].shape[1])) {
      fail(
          "%s/%s is not a matrix of %zu columns like q_proj_weight.npy (self-attention needs "
          "kdim = vdim = d_model)",
          dir, kNames[i], parts[0].shape[1]);
      rc = EXIT_USAGE;
    }
    if (rc == 0) rows += parts[i].shape[0];
  }
  if (rc == 0) {
    const size_t cols = parts[0].shape[1];
    out->data = malloc(rows * cols * sizeof *out->data);
    if (!out->data) {
      fail("out of memory");
      rc = EXIT_RUNTIME;
    } else {
      size_t at = 0;
      for (int i = 0; i < 3; ++i) {
        memcpy(out->data + at, parts[i].data, parts[i].count * sizeof *out->data);
        at += parts[i].count;
      }
      out->ndim = 2;
      out->shape[0] = rows;
      out->shape[1] = cols;
      out->count = rows * cols;
    }
  }
  for (int i = 0; i < 3; ++i) clattn_maps_array_free(&parts[i]);
  return rc;
}

static int check_weight_shape(const clattn_maps_array* a, const char* name, size_t d0, size_t d1) {
  const size_t want[2] = {d0, d1};
  if (!clattn_maps_array_has_shape(a, want, d1 ? 2 : 1)) {
    char s[160], w[160];
    fail("%s has shape %s; this layer needs %s", name,
         clattn_maps_shape_string(a->shape, a->ndim, s, sizeof s),
         clattn_maps_shape_string(want, d1 ? 2 : 1, w, sizeof w));
    return EXIT_USAGE;
  }
  return 0;
}

/* Layer mode, before the run: the sizes from x, the weights and the flags; the
 * inputs. */
static int prepare_layer(const options* o, problem* pb) {
  int rc = EXIT_RUNTIME;
  clattn_maps_array xa = {0}, w_in = {0}, b_in = {0}, w_out = {0}, b_out = {0};
  size_t b = o->batch, h = o->heads, hkv = o->kv_heads, n = o->seq, e = o->d_model;
  size_t d = o->head_dim;

  if (o->weights) {
    if (!h) {
      fail("--weights needs --heads: the weights do not tell how many heads share them");
      return EXIT_USAGE;
    }
    if ((rc = read_in_proj(o->weights, &w_in)) ||
        (rc = read_weight(o->weights, "in_proj_bias.npy", 1, &b_in)) ||
        (rc = read_weight(o->weights, "out_proj.weight.npy", 0, &w_out)) ||
        (rc = read_weight(o->weights, "out_proj.bias.npy", 1, &b_out))) {
      goto cleanup;
    }
    rc = EXIT_USAGE;
    if (w_in.ndim != 2) {
      fail("the input projection of %s is not a matrix", o->weights);
      goto cleanup;
    }
    if (agree("--d-model", &e, w_in.shape[1], o->weights)) goto cleanup;
  }
  if (o->x) {
    size_t raw[3] = {b ? b : 1, n, e};
    char err[1024];
    if (clattn_maps_array_read(o->x, n && e ? raw : NULL, 3, &xa, err, sizeof err) != 0) {
      fail("%s%s", err, n && e ? "" : " (a raw file needs --seq and --d-model)");
      rc = EXIT_RUNTIME;
      goto cleanup;
    }
    rc = EXIT_USAGE;
    if (xa.ndim < 2 || xa.ndim > 3) {
      char s[160];
      fail("%s has shape %s; expected [batch, seq, d-model] or [seq, d-model]", o->x,
           clattn_maps_shape_string(xa.shape, xa.ndim, s, sizeof s));
      goto cleanup;
    }
    const size_t fb = xa.ndim == 3 ? xa.shape[0] : 1;
    if (agree("--batch", &b, fb, o->x) || agree("--seq", &n, xa.shape[xa.ndim - 2], o->x) ||
        agree("--d-model", &e, xa.shape[xa.ndim - 1], o->x)) {
      goto cleanup;
    }
  }
  rc = EXIT_USAGE;
  if (!b) b = 1;
  if (!h) h = 4;
  if (!n) n = 32;
  if (!e) e = 64;
  if (!hkv) hkv = h;
  if (!d) {
    if (e % h != 0) {
      fail("d-model %zu is not divisible by %zu heads (give --head-dim)", e, h);
      goto cleanup;
    }
    d = e / h;
  }
  if (h % hkv != 0) {
    fail("%zu heads are not a multiple of %zu key/value heads", h, hkv);
    goto cleanup;
  }
  pb->batch = b, pb->heads = h, pb->kv_heads = hkv, pb->seq = n, pb->seq_kv = n;
  pb->head_dim = d, pb->d_model = e;
  const size_t hd = h * d, kvd = hkv * d;
  if ((double)b * (double)n * (double)e > (double)MAX_INPUT_FLOATS ||
      (double)(hd + 2 * kvd) * (double)e > (double)MAX_INPUT_FLOATS) {
    fail("x or the weights would be above the limit of %zu elements", MAX_INPUT_FLOATS);
    goto cleanup;
  }
  if ((double)b * (double)h * (double)n * (double)n > (double)MAX_PROBS_FLOATS) {
    fail("the attention weights (%zu x %zu x %zu x %zu) are above the limit of %zu elements", b, h,
         n, n, MAX_PROBS_FLOATS);
    goto cleanup;
  }
  if (o->weights) {
    char name[4200];
    snprintf(name, sizeof name, "the input projection of %s", o->weights);
    if ((rc = check_weight_shape(&w_in, name, hd + 2 * kvd, e))) goto cleanup;
    snprintf(name, sizeof name, "%s/out_proj.weight.npy", o->weights);
    if ((rc = check_weight_shape(&w_out, name, e, hd))) goto cleanup;
    snprintf(name, sizeof name, "%s/in_proj_bias.npy", o->weights);
    if (b_in.data && (rc = check_weight_shape(&b_in, name, hd + 2 * kvd, 0))) goto cleanup;
    snprintf(name, sizeof name, "%s/out_proj.bias.npy", o->weights);
    if (b_out.data && (rc = check_weight_shape(&b_out, name, e, 0))) goto cleanup;
  }
  if ((rc = prepare_common(o, pb)) != 0) goto cleanup;

  rc = EXIT_RUNTIME;
  uint64_t state = clattn_tool_rng_state(o->seed);
  if (o->weights) {
    pb->w_in = w_in.data, pb->b_in = b_in.data, pb->w_out = w_out.data, pb->b_out = b_out.data;
    w_in.data = b_in.data = w_out.data = b_out.data = NULL;
  } else {
    pb->w_in = clattn_tool_random_floats((hd + 2 * kvd) * e, 1.0f / sqrtf((float)e), &state);
    pb->w_out = clattn_tool_random_floats(e * hd, 1.0f / sqrtf((float)hd), &state);
    if (o->bias) {
      pb->b_in = clattn_tool_random_floats(hd + 2 * kvd, 0.1f, &state);
      pb->b_out = clattn_tool_random_floats(e, 0.1f, &state);
    }
  }
  pb->x = xa.data ? xa.data : clattn_tool_random_floats(b * n * e, 1.0f, &state);
  xa.data = NULL;
  if (!pb->w_in || !pb->w_out || (!o->weights && o->bias && (!pb->b_in || !pb->b_out)) || !pb->x) {
    fail("out of memory");
    goto cleanup;
  }
  snprintf(pb->title, sizeof pb->title,
           "clattn layer: sequence %zu of %zu, %zu tokens, d_model %zu, %zu heads%s%s, %s, %s",
           o->batch_index, b, n, e, h, hkv != h ? " (GQA)" : "", o->causal ? ", causal" : "",
           o->weights ? "weights from files" : "random weights",
           o->x ? "x from a file" : "random x");
  title_kv_lengths(o, pb);
  rc = 0;
cleanup:
  clattn_maps_array_free(&xa);
  clattn_maps_array_free(&w_in);
  clattn_maps_array_free(&b_in);
  clattn_maps_array_free(&w_out);
  clattn_maps_array_free(&b_out);
  return rc;
}

/* Layer mode: one forward that also returns the weights (and their mean over
 * heads). */
static int execute_layer(const options* o, problem* pb, clattn_context* ctx) {
  int rc = EXIT_RUNTIME;
  clattn_mha* mha = NULL;
  const size_t b = pb->batch, h = pb->heads, n = pb->seq, e = pb->d_model;
  float* y = malloc(b * n * e * sizeof *y);
  float* weights = malloc(b * h * n * n * sizeof *weights);
  float* mean = o->mean ? malloc(b * n * n * sizeof *mean) : NULL;
  if (!y || !weights || (o->mean && !mean)) {
    fail("out of memory");
    goto cleanup;
  }
  clattn_mha_desc desc = CLATTN_MHA_DESC_INIT;
  desc.d_model = e;
  desc.heads = h;
  desc.heads_kv = pb->kv_heads;
  desc.head_dim = pb->head_dim;
  clattn_mha_weights w = CLATTN_MHA_WEIGHTS_INIT;
  w.in_proj_weight.host = pb->w_in;
  w.in_proj_bias.host = pb->b_in;
  w.out_proj_weight.host = pb->w_out;
  w.out_proj_bias.host = pb->b_out;
  clattn_status st = clattn_mha_create(ctx, &desc, &w, &mha);
  if (st != CLATTN_SUCCESS) {
    report_clattn(ctx, "clattn_mha_create", st);
    goto cleanup;
  }
  clattn_mha_forward_desc fwd = CLATTN_MHA_FORWARD_DESC_INIT;
  fwd.batch = b;
  fwd.seq = n;
  fwd.causal = o->causal;
  st = clattn_mha_forward_weights_host(mha, &fwd, pb->x, NULL, NULL, y, pb->kv_lengths, weights,
                                       mean);
  if (st != CLATTN_SUCCESS) {
    report_clattn(ctx, "clattn_mha_forward_weights_host", st);
    goto cleanup;
  }
  const size_t bi = o->batch_index;
  for (size_t i = 0; i < pb->n_drawn; ++i) {
    memcpy(pb->maps + i * n * n, weights + (bi * h + pb->drawn[i]) * n * n,
           n * n * sizeof *weights);
  }
  if (mean) memcpy(pb->maps + pb->n_drawn * n * n, mean + bi * n * n, n * n * sizeof *mean);
  rc = 0;
cleanup:
  clattn_mha_destroy(mha);
  free(y);
  free(weights);
  free(mean);
  return rc;
}

/* ---------------------------------------------------------------- main */

/* Reads a labels file that must hold `count` tokens. */
static int read_labels(const char* flag, const char* path, size_t count, const char* what,
                       clattn_maps_labels* out) {
  char err[1024];
  if (clattn_maps_labels_read(path, out, err, sizeof err) != 0) {
    fail("%s", err);
    return EXIT_RUNTIME;
  }
  if (out->count != count) {
    fail("%s %s has %zu line%s, but the %s %zu: one token a line", flag, path, out->count,
         out->count == 1 ? "" : "s", what, count);
    return EXIT_USAGE;
  }
  return 0;
}

/* The command line, for the PNG's Description chunk. */
static void command_line(int argc, char** argv, char* buf, size_t size) {
  size_t len = 0;
  buf[0] = '\0';
  for (int i = 0; i < argc && len + 1 < size; ++i) {
    const int n = snprintf(buf + len, size - len, "%s%s", i ? " " : "", i ? argv[i] : TOOL);
    if (n < 0) break;
    len += (size_t)n;
  }
}

int main(int argc, char** argv) {
  options o = {.output = "attention-maps.png", .seed = 1, .bias = 1};
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--core") == 0) o.core = 1;
  }
  const clattn_flags_result parsed = parse_options(argc, argv, &o);
  if (parsed != CLATTN_FLAGS_OK) {
    if (parsed == CLATTN_FLAGS_EXIT) return 0;
    fprintf(stderr, "(clattn-maps --help lists the options)\n");
    return EXIT_USAGE;
  }

  int rc = 0;
  problem pb;
  memset(&pb, 0, sizeof pb);
  clattn_maps_labels row_labels = {0}, col_labels = {0};
  clattn_maps_outfile png_out = {0}, svg_out = {0};
  clattn_maps_layout layout = {0};
  clattn_maps_image img = {0};
  clattn_context* ctx = NULL;
  const float** values = NULL;
  char err[1024];

  /* Everything the command line can get wrong is checked before the run: the
   * shapes (from the files), the labels, the picture's size, and that the
   * outputs can be written. */
  if (o.svg && strcmp(o.svg, o.output) == 0) {
    fail("--svg and --output name the same file");
    return EXIT_USAGE;
  }
  rc = o.core ? prepare_core(&o, &pb) : prepare_layer(&o, &pb);
  if (rc != 0) goto cleanup;
  if (o.labels && (rc = read_labels("--labels", o.labels, pb.seq, "sequence has", &row_labels))) {
    goto cleanup;
  }
  if (o.kv_labels &&
      (rc = read_labels("--kv-labels", o.kv_labels, pb.seq_kv, "keys number", &col_labels))) {
    goto cleanup;
  }
  const char* const* cols = o.kv_labels ? (const char* const*)col_labels.items
                            : (o.labels && pb.seq_kv == pb.seq)
                                ? (const char* const*)row_labels.items
                                : NULL;
  values = malloc(pb.panels * sizeof *values);
  if (!values) {
    fail("out of memory");
    rc = EXIT_RUNTIME;
    goto cleanup;
  }
  for (size_t p = 0; p < pb.panels; ++p) values[p] = pb.maps + p * pb.seq * pb.seq_kv;
  clattn_maps_grid g = {.panels = pb.panels,
                        .values = NULL, /* the size first, before the run */
                        .titles = (const char* const*)pb.titles,
                        .rows = pb.seq,
                        .cols = pb.seq_kv,
                        .row_labels = o.labels ? (const char* const*)row_labels.items : NULL,
                        .col_labels = cols,
                        .range = (clattn_maps_range)o.range,
                        .cell = o.cell,
                        .columns = o.columns,
                        .tick_every = o.tick_every,
                        .title = o.title ? o.title : pb.title,
                        .value_name = o.core ? "attention probability" : "attention weight"};
  if (clattn_maps_layout_compute(&g, &layout, err, sizeof err) != 0 ||
      (o.svg && clattn_maps_svg_check(&g, err, sizeof err) != 0)) {
    fail("%s", err);
    rc = EXIT_USAGE;
    goto cleanup;
  }
  clattn_maps_layout_free(&layout);
  rc = EXIT_RUNTIME;
  if (clattn_maps_outfile_open(&png_out, o.output, err, sizeof err) != 0 ||
      (o.svg && clattn_maps_outfile_open(&svg_out, o.svg, err, sizeof err) != 0)) {
    fail("%s", err);
    goto cleanup;
  }

  clattn_context_options copt = CLATTN_CONTEXT_OPTIONS_INIT;
  copt.device = o.device;
  const clattn_status st = clattn_context_create(&copt, &ctx);
  if (st != CLATTN_SUCCESS) {
    report_clattn(NULL, "clattn_context_create", st);
    goto cleanup;
  }
  if ((o.core ? execute_core(&o, &pb, ctx) : execute_layer(&o, &pb, ctx)) != 0) goto cleanup;
  g.values = values;
  if (clattn_maps_layout_compute(&g, &layout, err, sizeof err) != 0) {
    fail("%s", err);
    goto cleanup;
  }
  char description[2048];
  command_line(argc, argv, description, sizeof description);
  if (clattn_maps_render(&g, &layout, &img, err, sizeof err) != 0 ||
      clattn_maps_png_write_stream(png_out.f, &img, description, err, sizeof err) != 0 ||
      (o.svg && clattn_maps_svg_write_stream(svg_out.f, &g, &layout, err, sizeof err) != 0)) {
    fail("%s", err);
    goto cleanup;
  }
  if (clattn_maps_outfile_commit(&png_out, err, sizeof err) != 0) {
    fail("%s", err);
    goto cleanup;
  }
  printf("%s: %zu x %zu pixels, %zu map%s of %zu x %zu (largest value %.4g)\n", o.output,
         layout.width, layout.height, pb.panels, pb.panels == 1 ? "" : "s", pb.seq, pb.seq_kv,
         layout.max_value);
  if (o.svg) {
    if (clattn_maps_outfile_commit(&svg_out, err, sizeof err) != 0) {
      fail("%s", err);
      goto cleanup;
    }
    printf("%s: the same as SVG, a tooltip on every cell\n", o.svg);
  }
  if (layout.nan_count) {
    fprintf(stderr, TOOL ": warning: %zu NaN values (drawn in red)\n", layout.nan_count);
  }
  rc = 0;
cleanup:
  clattn_context_destroy(ctx);
  free(values);
  clattn_maps_outfile_abort(&png_out);
  clattn_maps_outfile_abort(&svg_out);
  clattn_maps_image_free(&img);
  clattn_maps_layout_free(&layout);
  clattn_maps_labels_free(&row_labels);
  clattn_maps_labels_free(&col_labels);
  problem_free(&pb);
  return rc;
}
