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

#include "jsonl.h"
#include "spool.h"

struct conf;
struct follow;
struct poller;
struct provider;
struct provider_ops;
struct remote_conf;
struct store;
struct worker;

/* Draft locks: one of BFS_DRAFT_LOCKS mutexes per batch (striped by row id). */
#define BFS_DRAFT_LOCKS 64
/* Batches with a commit (or a resumed one) in flight in this process, at most. */
#define BFS_INFLIGHT_MAX 256

struct remote {
	const struct remote_conf *conf; /* name, intervals, keys */
	const struct provider_ops *ops;
	struct provider *prov;	    /* owned; thread-safe by contract */
	unsigned idx;		    /* position in bfs.remotes (inode numbers use it) */
	struct jsonl_limits limits; /* per batch: the provider's, lowered by the config */
	/*
	 * Held across each create of a part and each look for a lost one (batch.c): a remote
	 * has one create in flight at a time, so an answer that is lost has a single candidate
	 * where the provider keeps no identity (Anthropic). Taken after no other lock.
	 */
	pthread_mutex_t create_lock;
};

struct bfs {
	struct conf *conf;
	struct store *store;
	struct spool spool;
	struct remote *remotes;
	size_t nremotes;
	struct poller *poller;
	struct worker *worker; /* commits and ctl actions, off the FUSE threads */
	struct follow *follow; /* checks of requests.jsonl as it is written (follow.h) */
	char cache_dir[4096];
	int64_t mount_time; /* ms; mtime of the root and remote dirs */
	/* The owner and permission bits every inode shows (-o uid=, gid=, umask=; tree.c). */
	unsigned uid, gid, umask;
	/*
	 * Serialises the making and removal of batch directories (mkdir, rmdir). Row changes
	 * need no lock of ours: each is one guarded store transaction (store.h). Never held
	 * across network I/O. Lock order: after a draft lock, before any store transaction.
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
	/*
	 * The registry of submissions in flight in this process (batch.c): a refresh or the
	 * poller leaves such a batch to its commit, and reconciliation runs only for commits
	 * that died with an earlier process. Under inflight_lock (a leaf lock).
	 */
	pthread_mutex_t inflight_lock;
	int64_t inflight[BFS_INFLIGHT_MAX];
	size_t ninflight;
};

/* The draft lock of batch_id (see struct bfs). */
pthread_mutex_t *bfs_draft_lock(struct bfs *b, int64_t batch_id);
/* Initialises / destroys the locks of b. */
void bfs_locks_init(struct bfs *b);
void bfs_locks_release(struct bfs *b);

/* The remote called name, or NULL. */
struct remote *bfs_remote(struct bfs *b, const char *name);

#endif
