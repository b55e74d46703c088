/* SPDX-License-Identifier: MIT */
/*
 * Parked reads: a read that must wait for something the store will say later (the `wait`
 * file of a batch directory) is kept with its fuse_req_t instead of holding a FUSE worker
 * thread, and answered from the waiter's own thread once its check says so, or with EINTR
 * when the kernel interrupts it (the reader got a signal: Ctrl-C, `timeout`). The check reads
 * only the store: a parked read never makes a provider call.
 */
#ifndef BATCHFS_WAITER_H
#define BATCHFS_WAITER_H

#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct bfs;
struct buf;
struct waiter;

/*
 * Whether the read may be answered: 1 with the whole text to answer from in out, 0 to wait
 * longer, -errno to fail it. Called from the FUSE thread first, then from the waiter's.
 */
typedef int (*waiter_check_fn)(struct bfs *b, int64_t batch_id, struct buf *out);

int waiter_start(struct waiter **out, struct bfs *b);
/*
 * Parks req (a read of size bytes at off) until check(batch_id) is 1; then text (owned by
 * the file handle, which outlives the read: release cannot come while it is pending) gets
 * the answer and req its [off, off + size). 0, or -errno (the caller answers req).
 */
int waiter_park(struct waiter *w, fuse_req_t req, waiter_check_fn check, int64_t batch_id,
		size_t size, off_t off, struct buf *text);
/* Looks at every parked read now (the store changed). NULL-safe. */
void waiter_kick(struct waiter *w);
/* Answers every parked read EIO and ends the thread (before the session goes). NULL-safe. */
void waiter_stop(struct waiter *w);

#endif
