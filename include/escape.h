/* SPDX-License-Identifier: MIT */
/*
 * custom_id <-> file name under results/ (docs/semantics.md "results"): every byte outside
 * [A-Za-z0-9_.-], and a leading '.', becomes %XX (upper-case hex); an escaped name longer than
 * ESCAPE_NAME_LIMIT bytes is cut (never inside a %XX) and ends in '~' plus 16 hex digits of the
 * SHA-256 of the raw custom_id, so the result stays within ESCAPE_NAME_LIMIT. The ".json"
 * suffix is added by the caller.
 */
#ifndef BATCHFS_ESCAPE_H
#define BATCHFS_ESCAPE_H

#include <stdbool.h>
#include <stddef.h>

#define ESCAPE_NAME_LIMIT 240
#define ESCAPE_NAME_SIZE  (ESCAPE_NAME_LIMIT + 1)

/* Escapes id[0..len) into out (NUL-terminated). Returns the name's length (> 0), or -EINVAL
 * for an empty id. Pure. */
int escape_name(const char *id, size_t len, char out[ESCAPE_NAME_SIZE]);
/* Reverses escape_name() for names that were not cut. Writes at most outsz-1 bytes plus a NUL
 * (ids may contain NUL bytes, so the length is returned). Returns the id's length, -EINVAL for
 * a name escape_name() cannot produce, -ENAMETOOLONG for a cut name (the id is not
 * recoverable from it), -ERANGE when outsz is too small. */
int unescape_name(const char *name, char *out, size_t outsz);
/* True when name is one escape_name() could have produced. */
bool escape_is_valid(const char *name);

#endif
