/* SPDX-License-Identifier: MIT */
/*
 * Validation that follows the writer: `cp`, `cat >`, `rsync` and editors write
 * requests.jsonl as one sequential stream, so a thread per draft checks it (intake.h) while
 * it is written, a few hundred kilobytes behind the writer, and the commit at close has only
 * the last bytes and the upload left. Any write out of sequence, a truncate, a rename or an
 * unlink makes the follower give up; the commit then checks the file in one pass, as it
 * would without it. A follower never decides anything: the commit does, under the draft
 * rule, once no write can change the file (draft.h).
 *
 * Lock order: called under a draft lock (follow_wrote, follow_cut); its own lock is a leaf.
 */
#ifndef BATCHFS_FOLLOW_H
#define BATCHFS_FOLLOW_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct bfs;
struct bfs_err;
struct follow;
struct intake;
struct provider_batch;
struct provider_stream;
struct provider_submit;
struct remote;

int follow_init(struct bfs *b);
/* Stops every follower (at unmount, before the store goes). NULL-safe. */
void follow_stop(struct bfs *b);

/*
 * n bytes were written at off to requests.jsonl (file file_id) of the draft batch_id, under
 * its draft lock. A write at 0 starts a follower; one at the end of what was written
 * extends it; any other ends it.
 */
void follow_wrote(struct bfs *b, int64_t batch_id, int64_t file_id, off_t off, size_t n);
/* What the follower of batch_id read is no longer the file (truncate, rename, unlink). */
void follow_cut(struct bfs *b, int64_t batch_id);
/*
 * At the commit point (no write can change the file now): the check of file_id, size bytes,
 * if a follower made it, in *out (the caller feeds what is left and finishes it); 0, or the
 * check's failure (-EINVAL with err: the file is invalid). -ENOENT: there is none to take
 * (check the file from its start). *left: the bytes it had not read yet when the commit
 * came. Any other follower of the batch is stopped and gone.
 */
int follow_take(struct bfs *b, int64_t batch_id, int64_t file_id, int64_t size, struct intake **out,
		int64_t *left, struct provider_stream **stream, struct bfs_err *err);
/*
 * A follower of a file on a remote that streams its creates (provider.h stream_*) starts the
 * create of the first part once some MiB are checked, and lets it send what it checked; the
 * body's end is held back. follow_take() hands it over in *stream (else NULL) when the check
 * followed every write and found no wrong line: what it sent is the file's start. The
 * commit then ends it with follow_stream_end() (the part's intent recorded before) or
 * abandons it with follow_stream_abort() (NULL-safe): either frees it.
 */
int follow_stream_end(struct bfs *b, const struct remote *r, struct provider_stream *st,
		      const struct provider_submit *s, struct provider_batch *out,
		      struct bfs_err *err);
void follow_stream_abort(struct bfs *b, const struct remote *r, struct provider_stream *st);
/* Stops and forgets the follower of batch_id, if any (a commit that cannot take it). */
void follow_drop(struct bfs *b, int64_t batch_id);

#endif
