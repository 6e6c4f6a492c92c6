/* Fuzz target for the tuning-file parser: any bytes must give a table or a clean error,
 * never a crash, a leak or an out-of-range entry; a parsed table must serialise and parse
 * back to the same number of entries. */
#include <stdint.h>
#include <stdlib.h>

#include "tuning/tuning.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  clattn__tuning_table* table = NULL;
  clattn_status status = clattn__tuning_parse((const char*)data, size, &table);
  if (status != CLATTN_SUCCESS) {
    if (table) abort(); /* a failed parse hands nothing out */
    return 0;
  }
  for (size_t i = 0; i < table->count; ++i) {
    const clattn_tuning_entry* e = &table->entries[i];
    if (e->kind == CLATTN_TUNING_ATTENTION &&
        (e->head_dim < 1 || e->head_dim > CLATTN__MAX_HEAD_DIM || e->config.block_m < 1)) {
      abort();
    }
    if (e->param_count > CLATTN_TUNING_MAX_PARAMS) abort();
  }
  char* text = NULL;
  if (clattn__tuning_serialize(table, &text) == CLATTN_SUCCESS) {
    clattn__tuning_table* again = NULL;
    size_t len = 0;
    while (text[len]) ++len;
    if (clattn__tuning_parse(text, len, &again) != CLATTN_SUCCESS || again->count != table->count) {
      abort();
    }
    clattn__tuning_table_destroy(again);
    free(text);
  }
  clattn__tuning_table_destroy(table);
  return 0;
}
