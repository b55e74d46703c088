/* SPDX-License-Identifier: MIT */
/*
 * The check of one requests.jsonl on its way to a provider: the strict line check of every
 * line (jsonl.h), prompt lines translated (prompt.h, into a translated copy of the file),
 * custom_ids recorded in request order with duplicates refused (in the store: disk, not
 * RAM), the cost estimate, and the plan of parts that fit the remote's per-batch limits.
 * Fed in any slices, in file order: from a full read at the commit point, or while the
 * writer writes (follow.h), so that only the upload is left for the close.
 */
#ifndef BATCHFS_INTAKE_H
#define BATCHFS_INTAKE_H

#include <stddef.h>
#include <stdint.h>

struct bfs;
struct bfs_err;
struct intake;
struct price_estimate;
struct remote;
struct store_part_plan;

/* What a finished check found. */
struct intake_result {
	const struct store_part_plan *parts;
	size_t nparts;
	const char *endpoint, *model; /* the values every line shares (jsonl_validator) */
	uint64_t count;		      /* requests */
	uint64_t nprompts;	      /* of them prompt lines */
	const struct price_estimate *est;
};

/*
 * Starts the check of the file file_id of batch batch_id, read through user_fd (not owned;
 * the translated copy reads the lines before the first prompt line through it). Forgets
 * the custom_ids of any earlier check of the batch. 0 or -errno with the reason in err.
 */
int intake_begin(struct bfs *b, const struct remote *r, int64_t batch_id, int64_t file_id,
		 int user_fd, struct intake **out, struct bfs_err *err);
/*
 * The next n bytes of the file. 0, or -EINVAL with the line and reason in err (the file is
 * invalid, whatever follows), or another -errno (the check could not go on: the cache).
 * Once it has failed, it keeps failing with the same answer.
 */
int intake_feed(struct intake *in, const char *data, size_t n, struct bfs_err *err);
/* Feeds the rest of the file from user_fd's offset from to its end. */
int intake_read(struct intake *in, int fd, int64_t from, struct bfs_err *err);
/* Holds nothing in the store until the next feed (the writer is slow); then the check may
 * go on on another thread. */
int intake_pause(struct intake *in);
/* Bytes fed so far. */
int64_t intake_fed(const struct intake *in);
/*
 * While it is fed: the bytes of the file's start that are whole lines checked so far and
 * belong to the first part of the plan, sent as they are (what a create streamed while the
 * file is written may send, provider.h stream_*). -1 once that cannot be said: the check
 * failed, or a prompt line was translated (the parts are sent from the translated copy).
 */
int64_t intake_sendable(const struct intake *in);
/*
 * The end of the file: the last line, the file-wide checks, the last part; the custom_ids
 * are committed. -EINVAL/-ENODATA: the file is invalid or empty (err says why).
 */
int intake_finish(struct intake *in, struct bfs_err *err);
/* What a finished check found; valid until intake_free(). */
void intake_result(const struct intake *in, struct intake_result *res);
/*
 * Makes the translated copy durable under its final name (or removes an older one when the
 * file has no prompt lines), before any part is recorded.
 */
int intake_keep_copy(struct intake *in);
/* fd (the user_fd of intake_begin()) is closed by intake_free(). */
void intake_adopt_fd(struct intake *in, int fd);
/*
 * Frees a check; one not finished forgets its custom_ids and its partial copy. NULL-safe.
 * Must run on a thread that may use the store.
 */
void intake_free(struct intake *in);

#endif
