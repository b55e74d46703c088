// SPDX-License-Identifier: MIT
/*
 * Draft file data on disk, one file per store_file id under <cache>/spool. What users write
 * into a batch directory lands here and nowhere else, so a 250 MB requests.jsonl never
 * touches RAM. Knows nothing of batches, states or providers.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "spool.h"

int spool_init(struct spool *sp, const char *cache_dir, struct bfs_err *err)
{
	if ((size_t)snprintf(sp->dir, sizeof(sp->dir), "%s/spool", cache_dir) >= sizeof(sp->dir)) {
		err_set(err, "cache directory path too long");
		return -ENAMETOOLONG;
	}
	if (mkdir(sp->dir, 0700) && errno != EEXIST) {
		int rc = -errno;

		err_set(err, "cannot create '%s': %s", sp->dir, strerror(errno));
		return rc;
	}
	return 0;
}

void spool_path(const struct spool *sp, int64_t id, char *out, size_t size)
{
	snprintf(out, size, "%s/%" PRId64, sp->dir, id);
}

void spool_native_path(const struct spool *sp, int64_t id, char *out, size_t size)
{
	snprintf(out, size, "%s/%" PRId64 ".native", sp->dir, id);
}

int spool_open(const struct spool *sp, int64_t id, int flags)
{
	char path[4200];
	int fd;

	spool_path(sp, id, path, sizeof(path));
	fd = open(path, flags | O_CLOEXEC, 0600);
	return fd < 0 ? -errno : fd;
}

int spool_remove(const struct spool *sp, int64_t id)
{
	char path[4200];

	spool_native_path(sp, id, path, sizeof(path));
	(void)unlink(path); /* a copy left behind only costs disk; the file is what counts */
	if (strlen(path) + 4 < sizeof(path)) {
		strcat(path, ".tmp"); /* one a crash cut short (batch.c writes it there first) */
		(void)unlink(path);
	}
	spool_path(sp, id, path, sizeof(path));
	if (unlink(path) && errno != ENOENT)
		return -errno;
	return 0;
}
