/* Token labels: a text file with one token a line. */
#ifndef CLATTN_TOOLS_MAPS_LABELS_H
#define CLATTN_TOOLS_MAPS_LABELS_H

#include <stddef.h>

/* Largest labels file read. */
#define CLATTN_MAPS_LABELS_MAX_BYTES ((size_t)16 << 20)

typedef struct clattn_maps_labels {
  char** items; /* count NUL-terminated tokens, pointing into one block */
  size_t count;
} clattn_maps_labels;

/* Reads path: lines end with "\n" (a "\r" before it is dropped); a last line without one
 * counts, an empty file has no token, and an empty line is an empty token. NUL bytes become
 * '?'. Returns 0, or -1 with a message naming path (missing, not a regular file, larger than
 * 16 MiB, out of memory). */
int clattn_maps_labels_read(const char* path, clattn_maps_labels* out, char* err, size_t err_size);

/* Frees the tokens; NULL or an empty set is a no-op. */
void clattn_maps_labels_free(clattn_maps_labels* labels);

#endif
