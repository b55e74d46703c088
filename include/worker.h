/* SPDX-License-Identifier: MIT */
/*
 * Commits and ctl actions, off the FUSE threads: one thread per remote runs that remote's
 * jobs one at a time, in queue order (so creates of one remote are serialised). A FUSE op
 * that needs one (flush or rename onto requests.jsonl, a write to ctl) copies what it needs
 * from the request into a job, queues it and returns without replying; the job's done
 * callback replies, from the worker thread (libfuse allows it). A job holds no pointer into
 * a file handle: release may free the handle while the job waits.
 */
#ifndef BATCHFS_WORKER_H
#define BATCHFS_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "caller.h"

struct bfs;
struct bfs_err;
struct remote;
struct worker;

enum worker_kind {
	WORKER_NONE,   /* nothing to do (the op answers at once) */
	WORKER_COMMIT, /* batch_commit(batch_id, file_id), or the killed-writer note */
	WORKER_CANCEL, /* batch_cancel(batch_id) */
	WORKER_REFRESH /* batch_refresh(batch_id) */
};

/* One job: a small struct, copied into the queue. */
struct worker_job {
	enum worker_kind kind;
	struct remote *r; /* picks the queue */
	int64_t batch_id;
	int64_t file_id; /* COMMIT: requests.jsonl */
	/* COMMIT: the closing writer, when /proc told (a writer dying of a signal leaves a
	 * draft that says why instead of submitting half a file). */
	bool closer_known;
	struct caller_info closer;
	bool claimed;	/* COMMIT: set by worker_queue once the batch is claimed */
	bool confirmed; /* CANCEL: `cancel!`, the loss of completed work accepted */
	/* Called once on the worker thread with 0 or -errno (-EIO when unmounting first). */
	void (*done)(void *ctx, int rc);
	void *ctx;
};

/* Starts one thread per remote of b. Returns 0 or -errno (reason in err). */
int worker_start(struct worker **out, struct bfs *b, struct bfs_err *err);
/*
 * Copies job to the end of its remote's queue. 0: done will be called exactly once; -errno
 * (-EIO while stopping, -ENOMEM): it will not, the caller answers.
 */
int worker_queue(struct worker *w, const struct worker_job *job);
/*
 * Finishes the job each thread is running, fails the queued ones with -EIO (unmounting),
 * joins the threads and frees w. No worker_queue() may run during or after it. NULL-safe.
 */
void worker_stop(struct worker *w);

#endif
