/* SPDX-License-Identifier: MIT */
/*
 * Draft file data on disk under <cache>/spool/<file id>: what a user writes into a batch
 * directory goes straight to disk, never to RAM. Spool files are mode 0600.
 */
#ifndef BATCHFS_SPOOL_H
#define BATCHFS_SPOOL_H

#include <stddef.h>
#include <stdint.h>

struct bfs_err;

struct spool {
	char dir[4096];
};

/* Makes <cache>/spool (0700). Returns 0 or -errno. */
int spool_init(struct spool *sp, const char *cache_dir, struct bfs_err *err);
/* Writes the path of file id into out (size PATH_MAX). */
void spool_path(const struct spool *sp, int64_t id, char *out, size_t size);
/*
 * Writes the path of file id's translated copy into out (size PATH_MAX): the native lines a
 * requests.jsonl with prompt lines is submitted from (batch.c), removed with the file.
 */
void spool_native_path(const struct spool *sp, int64_t id, char *out, size_t size);
/* open(2)s the data of file id with flags (O_CREAT gives mode 0600). Returns an fd or -errno. */
int spool_open(const struct spool *sp, int64_t id, int flags);
/* Removes the data of file id and its translated copy; missing files are fine. */
int spool_remove(const struct spool *sp, int64_t id);

#endif
