/* SPDX-License-Identifier: MIT */
/*
 * struct bfs: the one context of a mount (the only global state, handed to libfuse as
 * userdata), and struct remote, a configured remote with its provider instance.
 */
#ifndef BATCHFS_BFS_H
#define BATCHFS_BFS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"

struct conf;
struct poller;
struct provider;
struct provider_ops;
struct remote_conf;
struct store;

struct remote {
	const struct remote_conf *conf; /* name, intervals, keys */
	const struct provider_ops *ops;
	struct provider *prov; /* owned; thread-safe by contract */
	unsigned idx;	       /* position in bfs.remotes (inode numbers use it) */
};

struct bfs {
	struct conf *conf;
	struct store *store;
	struct spool spool;
	struct remote *remotes;
	size_t nremotes;
	struct poller *poller;
	char cache_dir[4096];
	int64_t mount_time; /* ms; mtime of the root and remote dirs */
	/*
	 * Serialises read-modify-write of batch rows (store_batch_get ... store_batch_put) between
	 * FUSE threads and pollers. Never held across network I/O. Lock order: before any
	 * store transaction.
	 */
	pthread_mutex_t lock;
};

/* The remote called name, or NULL. */
struct remote *bfs_remote(struct bfs *b, const char *name);

#endif
