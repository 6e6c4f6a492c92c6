/* Output files written whole or not at all: the bytes go to a temporary file beside the
 * destination (<path>.tmp.XXXXXX), which replaces it only once complete, so a failure never
 * leaves a half-written picture (nor removes the one there). */
#ifndef CLATTN_TOOLS_MAPS_OUTFILE_H
#define CLATTN_TOOLS_MAPS_OUTFILE_H

#include <stddef.h>
#include <stdio.h>

typedef struct clattn_maps_outfile {
  FILE* f;        /* write here between open and commit */
  char* path;     /* the destination */
  char* tmp_path; /* the temporary file */
} clattn_maps_outfile;

/* Creates the temporary file for path. Refused (-1, a message in err naming the path): an
 * empty path, a destination that exists and is not a regular file (a directory, device,
 * FIFO or symbolic link), a directory that does not exist or cannot be written. */
int clattn_maps_outfile_open(clattn_maps_outfile* out, const char* path, char* err,
                             size_t err_size);

/* Flushes the data to disk, gives the file the permissions of a newly created one (0666
 * less the umask) and renames it over the destination. Returns 0, or -1 with a message (the
 * temporary file removed). Either way the outfile is closed. */
int clattn_maps_outfile_commit(clattn_maps_outfile* out, char* err, size_t err_size);

/* Closes and removes the temporary file; a closed or never-opened (zeroed) outfile is a no-op. */
void clattn_maps_outfile_abort(clattn_maps_outfile* out);

#endif
