/* SPDX-License-Identifier: MIT */
/*
 * The life of a batch between the files and the provider: commit (validate + submit exactly
 * once), cancel, refresh, results ingest, crash reconciliation and discovery of batches made
 * elsewhere. Called by fs (commit, cancel, refresh: the only fs paths allowed to reach a
 * provider) and by the poller. Every function records what the user must know in the batch's
 * status, and returns 0 or -errno with the reason in err.
 */
#ifndef BATCHFS_BATCH_H
#define BATCHFS_BATCH_H

#include <stdbool.h>
#include <stdint.h>

struct bfs;
struct bfs_err;
struct remote;

/*
 * The commit point for file_id (requests.jsonl of batch_id): claims the batch under its draft
 * lock (the caller must not hold it), validates the whole spool file, splits it into parts
 * that fit the remote's limits and submits each exactly once. An empty file leaves a draft
 * (returns 0). Invalid -> state rejected, -EINVAL, nothing sent; a part refused or a network
 * failure -> failed (the part named), -EIO; success -> 0 with every part's id stored. Blocks
 * on the network; never kicks the poller (the caller does).
 */
int batch_commit(struct bfs *b, struct remote *r, int64_t batch_id, int64_t file_id,
		 struct bfs_err *err);
/*
 * The commit point in two steps, so the claim happens at the close() itself (local, fast,
 * under the draft lock) and the network part later on a worker: batch_claim returns 1 for an
 * empty file (a draft again: nothing to commit), 0 once claimed (the state is submitting and
 * batch_commit_claimed or batch_unclaim must follow), or -errno (-EACCES: not writable).
 */
int batch_claim(struct bfs *b, int64_t batch_id, int64_t file_id, struct bfs_err *err);
int batch_commit_claimed(struct bfs *b, struct remote *r, int64_t batch_id, int64_t file_id,
			 struct bfs_err *err);
/* Gives a claim back unsubmitted (the commit will not run: unmounting): a draft saying msg. */
void batch_unclaim(struct bfs *b, int64_t batch_id, const char *msg);
/* Records on a batch not submitted why its requests.jsonl was not (e.g. its writer was
 * killed): the state stays, status shows msg. Local only. */
int batch_note_unsubmitted(struct bfs *b, int64_t batch_id, const char *msg);
/*
 * Asks the provider to cancel batch_id. -EINVAL for a batch never submitted. Where a cancel
 * costs the work already done (provider_ops.cancel_warning: Vertex writes no results for a
 * cancelled job) it is refused with -EBUSY and the warning in status, unless the remote sets
 * cancel_confirm = off or batch_cancel_confirmed() (`cancel!`) is used.
 */
int batch_cancel(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err);
int batch_cancel_confirmed(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err);
/*
 * `echo resubmit > ctl`: sends the parts of batch_id that failed before running a request
 * (validation, quota; created or refused) again, as new parts, exactly once; a batch of
 * which nothing was created is committed again from its requests.jsonl. -EINVAL when no
 * part qualifies (the reason in err).
 */
int batch_resubmit(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err);
/* Polls batch_id once now (or reconciles an interrupted submission) and stores the state. */
int batch_refresh(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err);
/* Downloads every result of an ended part into the store (one transaction). */
int batch_fetch_results(struct bfs *b, struct remote *r, int64_t part_id, struct bfs_err *err);
/* The poller's look at a due part: resumes an interrupted commit, polls, or fetches results. */
int batch_visit(struct bfs *b, struct remote *r, int64_t part_id, struct bfs_err *err);
/* True while this process is submitting batch_id (a commit, or a resumed one). */
bool batch_is_in_flight(struct bfs *b, int64_t batch_id);
/*
 * Lists the provider's batches and adds those not known here as foreign batches. Unless full,
 * the listing stops at the first page whose batches are all known and unchanged (the pages
 * after it are older).
 */
int batch_discover(struct bfs *b, struct remote *r, bool full, struct bfs_err *err);
/* At start: every part left in `submitting` by an earlier run is made due for
 * reconciliation (or its commit resumed), and every unfinished one for polling. */
int batch_resume_all(struct bfs *b);

#endif
