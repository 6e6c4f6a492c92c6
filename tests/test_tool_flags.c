/* The tools' command-line parser (tools/common/flags.c): every kind of value at and beyond
 * its limits, refused values never written, and messages that name the flag and the text.
 * No OpenCL device needed. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clattn/clattn.h"
#include "common/flags.h"

typedef struct values {
  int set, clear;
  size_t size, size_min1;
  unsigned u;
  uint64_t u64;
  int i, i_signed;
  double d, d_capped;
  const char* s;
  int choice, optional;
  unsigned set_of;
  clattn_flag_size_list list;
  clattn_variant variant;
  int size_given;
} values;

static const char* const kChoices[] = {"bhnd", "bnhd", NULL};
static const char* const kOptional[] = {"0", "1", "both", NULL};
static const char* const kImpls[] = {"fused", "unfused", "naive", NULL};

/* The parser's messages of the last parse(). */
static char* g_messages;
static size_t g_messages_size;

/* Parses the NULL-terminated arguments (after a program name) into v, which starts with
 * recognisable values; returns the parser's result. */
static clattn_flags_result parse_into(values* v, const char* const* args) {
  *v = (values){.clear = 1,
                .size = 7,
                .size_min1 = 7,
                .u = 7,
                .u64 = 7,
                .i = 7,
                .d = 7.0,
                .choice = 0,
                .optional = 2,
                .variant = CLATTN_VARIANT_AUTO};
  const clattn_flag flags[] = {
      {.name = "--set", .kind = CLATTN_FLAG_SET, .ptr = &v->set, .help = "a flag"},
      {.name = "--no-clear", .kind = CLATTN_FLAG_CLEAR, .ptr = &v->clear, .help = "clears"},
      {.name = "--size",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &v->size,
       .arg = "N",
       .help = "a size\nsecond line",
       .given = &v->size_given},
      {.name = "--size1",
       .kind = CLATTN_FLAG_SIZE,
       .ptr = &v->size_min1,
       .arg = "N",
       .help = "1..100",
       .min = 1,
       .max = 100},
      {.name = "--u", .kind = CLATTN_FLAG_UNSIGNED, .ptr = &v->u, .arg = "N", .help = "unsigned"},
      {.name = "--u64", .kind = CLATTN_FLAG_UINT64, .ptr = &v->u64, .arg = "N", .help = "64 bits"},
      {.name = "--i", .kind = CLATTN_FLAG_INT, .ptr = &v->i, .arg = "N", .help = "0..INT_MAX"},
      {.name = "--is",
       .kind = CLATTN_FLAG_INT,
       .ptr = &v->i_signed,
       .arg = "N",
       .help = "-10..10",
       .imin = -10,
       .imax = 10},
      {.name = "--d", .kind = CLATTN_FLAG_DOUBLE, .ptr = &v->d, .arg = "X", .help = "positive"},
      {.name = "--dc",
       .kind = CLATTN_FLAG_DOUBLE,
       .ptr = &v->d_capped,
       .arg = "X",
       .help = "(0, 5]",
       .dmax = 5.0},
      {.name = "--s", .kind = CLATTN_FLAG_STRING, .ptr = &v->s, .arg = "TEXT", .help = "text"},
      {.name = "--layout",
       .kind = CLATTN_FLAG_CHOICE,
       .ptr = &v->choice,
       .choices = kChoices,
       .help = "a choice"},
      {.name = "--causal",
       .kind = CLATTN_FLAG_CHOICE,
       .ptr = &v->optional,
       .choices = kOptional,
       .implicit = "1",
       .help = "an optional value"},
      {.name = "--impl",
       .kind = CLATTN_FLAG_CHOICE_SET,
       .ptr = &v->set_of,
       .choices = kImpls,
       .arg = "LIST",
       .help = "a set"},
      {.name = "--list",
       .kind = CLATTN_FLAG_SIZE_LIST,
       .ptr = &v->list,
       .arg = "LIST",
       .help = "sizes",
       .min = 1},
      {.name = "--variant",
       .kind = CLATTN_FLAG_CUSTOM,
       .ptr = &v->variant,
       .parse = clattn_flag_parse_variant,
       .arg = "auto|tiled|regblock",
       .help = "a variant"},
      {.name = "--hidden", .kind = CLATTN_FLAG_SET, .ptr = &v->set},
      {.name = NULL},
  };
  free(g_messages);
  g_messages = NULL;
  FILE* messages = open_memstream(&g_messages, &g_messages_size);
  cr_assert_not_null(messages);
  const clattn_flag_spec spec = {.tool = "tool", .flags = flags, .messages = messages};
  char* argv[64] = {"tool"};
  int argc = 1;
  for (; args[argc - 1]; ++argc) argv[argc] = (char*)args[argc - 1];
  const clattn_flags_result r = clattn_flags_parse(&spec, argc, argv);
  fclose(messages);
  return r;
}

#define ARGS(...) ((const char* const[]){__VA_ARGS__, NULL})

/* The parse is refused with a message that contains each of the fragments. */
static void expect_bad(values* v, const char* const* args, const char* fragment1,
                       const char* fragment2) {
  cr_assert_eq(parse_into(v, args), CLATTN_FLAGS_BAD, "%s %s: accepted", args[0],
               args[1] ? args[1] : "");
  cr_assert(strstr(g_messages, "tool: ") == g_messages, "message \"%s\"", g_messages);
  cr_assert(strstr(g_messages, fragment1) != NULL, "message \"%s\" lacks \"%s\"", g_messages,
            fragment1);
  if (fragment2) {
    cr_assert(strstr(g_messages, fragment2) != NULL, "message \"%s\" lacks \"%s\"", g_messages,
              fragment2);
  }
}

static void fini(void) {
  free(g_messages);
  g_messages = NULL;
}

TestSuite(tool_flags, .fini = fini);

Test(tool_flags, nothing_given_leaves_defaults) {
  values v;
  cr_assert_eq(parse_into(&v, (const char* const[]){NULL}), CLATTN_FLAGS_OK);
  cr_assert_eq(v.size, 7);
  cr_assert_eq(v.clear, 1);
  cr_assert_eq(v.size_given, 0);
  cr_assert_eq(v.optional, 2);
}

Test(tool_flags, every_kind_in_both_forms) {
  values v;
  cr_assert_eq(
      parse_into(&v, ARGS("--set", "--no-clear", "--size", "0", "--size1=100", "--u", "4294967295",
                          "--u64=18446744073709551615", "--i", "2147483647", "--is", "-10", "--d",
                          "1e9", "--dc=5", "--s", "", "--layout", "bnhd", "--impl", "naive,fused",
                          "--list", "1,64,1024", "--variant", "register_blocked")),
      CLATTN_FLAGS_OK, "%s", g_messages);
  cr_assert_eq(v.set, 1);
  cr_assert_eq(v.clear, 0);
  cr_assert_eq(v.size, 0);
  cr_assert_eq(v.size_given, 1);
  cr_assert_eq(v.size_min1, 100);
  cr_assert_eq(v.u, 4294967295u);
  cr_assert_eq(v.u64, UINT64_MAX);
  cr_assert_eq(v.i, 2147483647);
  cr_assert_eq(v.i_signed, -10);
  cr_assert_eq(v.d, 1e9);
  cr_assert_eq(v.d_capped, 5.0);
  cr_assert_str_eq(v.s, "");
  cr_assert_eq(v.choice, 1);
  cr_assert_eq(v.set_of, 5u);
  cr_assert_eq(v.list.n, 3);
  cr_assert_eq(v.list.v[2], 1024);
  cr_assert_eq(v.variant, CLATTN_VARIANT_REGISTER_BLOCKED);
}

/* A value that does not fit its destination is refused, not wrapped or clamped. */
Test(tool_flags, integers_out_of_range) {
  values v;
  expect_bad(&v, ARGS("--size", "99999999999999999999"), "--size", "'99999999999999999999'");
  cr_assert_eq(v.size, 7);
  expect_bad(&v, ARGS("--size", "18446744073709551616"), "--size takes 0..", NULL);
  expect_bad(&v, ARGS("--u", "4294967296"), "--u takes 0..4294967295", "'4294967296'");
  cr_assert_eq(v.u, 7);
  expect_bad(&v, ARGS("--u64", "18446744073709551616"), "--u64", "'18446744073709551616'");
  expect_bad(&v, ARGS("--size1", "0"), "--size1 takes 1..100", "'0'");
  expect_bad(&v, ARGS("--size1", "101"), "--size1 takes 1..100", "'101'");
  expect_bad(&v, ARGS("--i", "2147483648"), "--i takes 0..2147483647", NULL);
  expect_bad(&v, ARGS("--i", "-1"), "--i takes 0..", "'-1'");
  expect_bad(&v, ARGS("--is", "-11"), "--is takes -10..10", "'-11'");
  expect_bad(&v, ARGS("--is", "-99999999999999999999"), "--is takes -10..10", NULL);
}

/* strtoull would take all of these (and wrap "-1" to the largest value). */
Test(tool_flags, integers_malformed) {
  static const char* const bad[] = {"-1", "+1", " 1", "1 ", "0x10", "1e3", "", "1.0", "--"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; ++k) {
    values v;
    expect_bad(&v, ARGS("--size", bad[k]), "--size needs a non-negative integer", bad[k]);
    cr_assert_eq(v.size, 7);
  }
  values v;
  expect_bad(&v, ARGS("--is", "- 1"), "--is needs an integer", NULL);
}

Test(tool_flags, doubles) {
  static const char* const bad[] = {"inf", "nan", "0", "-1", "1e999", " 1", "0x1p3", "", "1e-400"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; ++k) {
    values v;
    expect_bad(&v, ARGS("--d", bad[k]), "--d needs a positive finite number", bad[k]);
    cr_assert_eq(v.d, 7.0);
  }
  values v;
  expect_bad(&v, ARGS("--dc", "5.5"), "--dc needs a number above 0 and up to 5", "'5.5'");
  cr_assert_eq(parse_into(&v, ARGS("--d", ".5")), CLATTN_FLAGS_OK);
  cr_assert_eq(v.d, 0.5);
}

Test(tool_flags, choices) {
  values v;
  expect_bad(&v, ARGS("--layout", "BHND"), "--layout takes bhnd|bnhd", "'BHND'");
  expect_bad(&v, ARGS("--variant", "fast"), "--variant takes auto|tiled|regblock", "'fast'");
  cr_assert_eq(parse_into(&v, ARGS("--variant", "tiled")), CLATTN_FLAGS_OK);
  cr_assert_eq(v.variant, CLATTN_VARIANT_TILED_LOCAL);
  expect_bad(&v, ARGS("--impl", "fused,bogus"), "'bogus' is not one of", "--impl");
  expect_bad(&v, ARGS("--impl", "fused,,naive"), "'' is not one of", NULL);
  expect_bad(&v, ARGS("--impl", ""), "'' is not one of", NULL);
  cr_assert_eq(v.set_of, 0u);
}

/* --causal alone, --causal VALUE when VALUE is a choice, --causal=VALUE. */
Test(tool_flags, optional_value) {
  values v;
  cr_assert_eq(parse_into(&v, ARGS("--causal")), CLATTN_FLAGS_OK);
  cr_assert_eq(v.optional, 1);
  cr_assert_eq(parse_into(&v, ARGS("--causal", "both", "--set")), CLATTN_FLAGS_OK);
  cr_assert_eq(v.optional, 2);
  cr_assert_eq(v.set, 1);
  cr_assert_eq(parse_into(&v, ARGS("--causal", "0")), CLATTN_FLAGS_OK);
  cr_assert_eq(v.optional, 0);
  cr_assert_eq(parse_into(&v, ARGS("--causal", "--set")), CLATTN_FLAGS_OK);
  cr_assert_eq(v.optional, 1);
  cr_assert_eq(v.set, 1);
  expect_bad(&v, ARGS("--causal", "2"), "unexpected argument '2'", NULL);
  expect_bad(&v, ARGS("--causal=2"), "--causal takes 0|1|both", "'2'");
}

Test(tool_flags, lists) {
  values v;
  expect_bad(&v, ARGS("--list", "1,,2"), "--list", "'' in '1,,2'");
  expect_bad(&v, ARGS("--list", "1,0"), "--list", "'0' in '1,0'");
  expect_bad(&v, ARGS("--list", "1,-2"), "--list", "'-2'");
  expect_bad(&v, ARGS("--list", "1,99999999999999999999"), "--list", "'99999999999999999999'");
  expect_bad(&v, ARGS("--list", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"),
             "--list takes at most 16 values", NULL);
  cr_assert_eq(v.list.n, 0);
  cr_assert_eq(parse_into(&v, ARGS("--list", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16")),
               CLATTN_FLAGS_OK);
  cr_assert_eq(v.list.n, 16);
}

Test(tool_flags, command_line_mistakes) {
  values v;
  expect_bad(&v, ARGS("--bogus"), "unknown flag '--bogus'", NULL);
  expect_bad(&v, ARGS("--bogus=3"), "unknown flag '--bogus'", NULL);
  expect_bad(&v, ARGS("--siz", "3"), "unknown flag '--siz'", NULL);
  expect_bad(&v, ARGS("--size", "3", "--size", "4"), "--size is given more than once", NULL);
  expect_bad(&v, ARGS("--set", "--set"), "--set is given more than once", NULL);
  expect_bad(&v, ARGS("--size"), "--size needs a value", NULL);
  expect_bad(&v, ARGS("--set=1"), "--set takes no value", "'1'");
  expect_bad(&v, ARGS("3"), "unexpected argument '3'", NULL);
  expect_bad(&v, ARGS("-s"), "unexpected argument '-s'", NULL);
  expect_bad(&v, ARGS("--"), "unexpected argument '--'", NULL);
  /* The next argument is the value, even when it looks like a flag. */
  expect_bad(&v, ARGS("--size", "--set"), "--size needs a non-negative integer", "'--set'");
}

Test(tool_flags, unknown_hint) {
  const clattn_flag flags[] = {{.name = NULL}};
  char* text = NULL;
  size_t size = 0;
  FILE* messages = open_memstream(&text, &size);
  const clattn_flag_spec spec = {
      .tool = "t", .flags = flags, .unknown_hint = " (add --core)", .messages = messages};
  char* argv[] = {"t", "--lse", NULL};
  cr_assert_eq(clattn_flags_parse(&spec, 2, argv), CLATTN_FLAGS_BAD);
  fclose(messages);
  cr_assert_str_eq(text, "t: unknown flag '--lse' (add --core)\n");
  free(text);
}

/* --help and --version are answered where they stand: after a bad argument, the argument
 * is refused first. */
Test(tool_flags, help_and_version, .init = cr_redirect_stdout) {
  values v;
  cr_assert_eq(parse_into(&v, ARGS("--size", "3", "--version", "--bogus")), CLATTN_FLAGS_EXIT);
  cr_assert_eq(parse_into(&v, ARGS("-h")), CLATTN_FLAGS_EXIT);
  expect_bad(&v, ARGS("--bogus", "--help"), "unknown flag '--bogus'", NULL);

  char* text = NULL;
  size_t size = 0;
  FILE* f = open_memstream(&text, &size);
  clattn_flags_print_version("clattn-x", f);
  fclose(f);
  char expected[64];
  snprintf(expected, sizeof expected, "clattn-x %s\n", CLATTN_VERSION_STRING);
  cr_assert_str_eq(text, expected);
  free(text);
}

Test(tool_flags, help_lists_the_table) {
  const clattn_flag flags[] = {
      {.name = "--seq", .kind = CLATTN_FLAG_SIZE, .arg = "N", .help = "length (1)\nmore"},
      {.name = "--layout", .kind = CLATTN_FLAG_CHOICE, .choices = kChoices, .help = "layout"},
      {.name = "--causal",
       .kind = CLATTN_FLAG_CHOICE,
       .choices = kOptional,
       .implicit = "1",
       .help = "masks"},
      {.name = "--a-very-long-flag-name", .kind = CLATTN_FLAG_SET, .help = "long"},
      {.name = "--internal", .kind = CLATTN_FLAG_SET},
      {.name = NULL},
  };
  const clattn_flag_spec spec = {.tool = "t",
                                 .usage = "usage: t\n\n",
                                 .notes = "\nExit status: 0.\n",
                                 .flags = flags,
                                 .help_column = 16};
  char* text = NULL;
  size_t size = 0;
  FILE* f = open_memstream(&text, &size);
  clattn_flags_print_help(&spec, f);
  fclose(f);
  cr_assert_str_eq(text,
                   "usage: t\n"
                   "\n"
                   "  --seq N       length (1)\n"
                   "                more\n"
                   "  --layout bhnd|bnhd  layout\n"
                   "  --causal [0|1|both]  masks\n"
                   "  --a-very-long-flag-name  long\n"
                   "  -h, --help    print this help\n"
                   "  --version     print the version\n"
                   "\n"
                   "Exit status: 0.\n");
  free(text);
}
