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
struct worker;

/* Draft locks: one of BFS_DRAFT_LOCKS mutexes per batch (striped by row id). */
#define BFS_DRAFT_LOCKS 64

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
	struct worker *worker; /* commits and ctl actions, off the FUSE threads */
	char cache_dir[4096];
	int64_t mount_time; /* ms; mtime of the root and remote dirs */
	/*
	 * Serialises read-modify-write of batch rows (store_batch_get ... store_batch_put) between
	 * FUSE threads and pollers. Never held across network I/O. Lock order: before any
	 * store transaction.
	 */
	pthread_mutex_t lock;
	/*
	 * The draft rule (one lock for every change of a draft and for the commit point): a
	 * write, truncate, create, rename or unlink in a batch directory checks that the batch
	 * is writable and acts while holding bfs_draft_lock(b, batch_id); the commit claims the
	 * batch (state submitting) under the same lock, so once claimed nothing changes the
	 * file. Lock order: a draft lock, then bfs.lock, then a store transaction. Never held
	 * across network I/O.
	 */
	pthread_mutex_t draft_locks[BFS_DRAFT_LOCKS];
};

/* The draft lock of batch_id (see struct bfs). */
pthread_mutex_t *bfs_draft_lock(struct bfs *b, int64_t batch_id);
/* Initialises / destroys the locks of b. */
void bfs_locks_init(struct bfs *b);
void bfs_locks_release(struct bfs *b);

/* The remote called name, or NULL. */
struct remote *bfs_remote(struct bfs *b, const char *name);

#endif
