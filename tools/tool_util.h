/* Helpers shared by the clattn command-line tools. */
#ifndef CLATTN_TOOLS_TOOL_UTIL_H
#define CLATTN_TOOLS_TOOL_UTIL_H

#include <stddef.h>
#include <stdio.h>

#include "clattn/clattn.h"

/* Writes s as a JSON string literal (quotes included); NULL as "". Bytes >= 0x80 pass
 * through, so UTF-8 input stays UTF-8. */
void tool_json_string(FILE* f, const char* s);

/* "CPU", "GPU", "ACCELERATOR" or "OTHER". */
const char* tool_device_type_name(clattn_device_type type);

/* Milliseconds on a monotonic clock. */
double tool_now_ms(void);

/* Median and minimum of n values (NaN when n is 0); v is left as it is. */
double tool_median(const double* v, size_t n);
double tool_min(const double* v, size_t n);

/* Writes v with 6 significant digits, or null when it is not finite (JSON has no NaN). */
void tool_json_number(FILE* f, double v);

/* Query-key pairs a mask leaves visible in one (batch, head): all Nq·Nkv, or for causal
 * masks the sum over i of clamp(i + Nkv - Nq + 1, 0, Nkv) (bottom-right alignment). */
double tool_visible_pairs(size_t seq_q, size_t seq_kv, int causal);

#endif
