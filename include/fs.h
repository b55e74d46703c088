/* SPDX-License-Identifier: MIT */
/*
 * The FUSE layer (low-level API): the tree of docs/semantics.md "The tree". Read paths are answered
 * from the store only; the commit point and ctl are the only operations that reach a provider,
 * as jobs of the worker (worker.h), never on a FUSE thread.
 */
#ifndef BATCHFS_FS_H
#define BATCHFS_FS_H

#include <stdbool.h>

struct bfs;
struct fuse_args;

/*
 * Mounts b at mountpoint with args (FUSE options), calls start(b) (detach from the terminal
 * unless in the foreground, open the store, start the pollers and b->worker: SQLite and threads
 * do not survive a fork, so the detach comes first), then serves until unmounted or signalled,
 * stops b->worker (its jobs answer requests of this session) and unmounts. single: one thread.
 * Returns 0 or -errno.
 */
int fs_main(struct bfs *b, struct fuse_args *args, const char *mountpoint, bool single,
	    int (*start)(struct bfs *b));

#endif
