/* SPDX-License-Identifier: MIT */
/*
 * The SQLite cache: batches, draft files, request order and results. WAL mode, file mode
 * 0600, schema versioned with PRAGMA user_version. Each thread gets its own connection (made
 * on first use); every function here may be called from any thread. Records come out as
 * copies: nothing returned points into the database. Only this module speaks SQLite; its
 * codes become -errno here (SQLITE_BUSY -EBUSY, SQLITE_CONSTRAINT -EEXIST, SQLITE_FULL -ENOSPC,
 * the rest -EIO).
 */
#ifndef BATCHFS_STORE_H
#define BATCHFS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "provider.h"
#include "result.h"
#include "usage.h"
#include "state.h"

struct bfs_err;
struct store;

#define STORE_NAME_MAX 256

/* The longest cost estimate kept with a batch (price_estimate_json() of at most 24 models). */
#define STORE_COST_MAX 8192

/*
 * One batch directory. Times in ms since the epoch, 0 = null. Once the directory has parts,
 * its provider view (state, provider_state, counts, results, error, times, pid, identity,
 * cancel_requested) is the aggregate of its parts, kept by this module in the transaction
 * of every part change (docs/semantics.md "Parts"); before that, it is the directory's own
 * state (draft, rejected, submitting, failed).
 */
struct store_batch {
	int64_t id; /* rowid, never reused */
	char remote[64];
	char name[STORE_NAME_MAX]; /* the directory name; for a foreign batch = pid */
	bool foreign;		   /* made elsewhere: shown as <pid>/ */
	char pid[PROVIDER_ID_MAX]; /* the first part's provider id, "" until one is known */
	enum batch_state state;
	char provider_state[PROVIDER_WORD_MAX];
	struct batch_counts counts;
	enum results_state results;
	char error[1024]; /* "" = null */
	long error_line;
	int error_attempt; /* > 0 while an HTTP call is being retried */
	int64_t created_at, ended_at, expires_at, updated_at;
	int64_t dir_mtime; /* mkdir time, then last change of the directory */
	bool cancel_requested;
	bool results_wanted;	   /* foreign batch: someone looked, fetch its results */
	char identity[64];	   /* a part's identity while its creation is unsettled, else "" */
	int64_t nrequests, nbytes; /* of the submitted requests.jsonl */
	char endpoint[256], model[256];	     /* what validation learnt (OpenAI/Azure) */
	int64_t results_count, results_size; /* once results are ready */
	int nparts;			     /* parts (provider batches, or to be) */
	int nparts_sent;		     /* of which known at the provider (a pid) */
	char cost[STORE_COST_MAX];	     /* the estimate's JSON (price.h), "" = none */
};

/*
 * One part of a batch directory: one provider batch (to be) made of the whole lines
 * [first_line, last_line] of requests.jsonl, bytes [off, off + len). A batch made elsewhere
 * is one part. A part's provider id belongs to no other part (a unique index).
 */
struct store_part {
	int64_t id;
	int64_t batch_id;
	int idx; /* 0-based, in file order */
	char remote[64];
	char pid[PROVIDER_ID_MAX]; /* "" until known */
	enum batch_state state;	   /* submitting until the provider knows it */
	char provider_state[PROVIDER_WORD_MAX];
	struct batch_counts counts;
	enum results_state results;
	char error[1024];
	long error_line;
	int error_attempt;
	int64_t created_at, ended_at, expires_at, updated_at;
	bool cancel_requested;
	char identity[64]; /* "" until the intent to create it is recorded */
	int64_t intent_at;
	int64_t first_line, last_line, off, len, nrequests;
	int64_t payload; /* see store_part_plan; 0 for parts made before schema 6 */
	char ref[PROVIDER_REF_MAX];
	int64_t next_poll_at; /* poller: when to look at it again; 0 = never */
	int64_t results_count;
	int resubmits; /* times it was sent again after failing before running (resubmit) */
};

/* The plan of one part, made at the commit point. */
struct store_part_plan {
	int64_t first_line, last_line, off, len, nrequests;
	int64_t payload; /* bytes of its request lines without leading blanks and line ends */
};

/* One regular file inside a batch directory (requests.jsonl and any user file). Its data is
 * the spool file of the same id. */
struct store_file {
	int64_t id;
	int64_t batch_id;
	char name[STORE_NAME_MAX];
	uint32_t mode; /* permission bits */
	int64_t size;
	int64_t mtime_ns;
};

/* One result. */
struct store_result {
	int64_t id;
	int64_t batch_id;
	char fname[STORE_NAME_MAX]; /* escaped custom_id + ".json" */
	int64_t size;		    /* line length + 1 (the newline) */
	int64_t mtime;		    /* the batch's ended_at (ms) */
};

/* Opens (creating it mode 0600, migrating it) the cache database in dir. */
/*
 * Refuses a cache that was damaged or emptied (cache.db of 0 bytes, unreadable, without
 * tables, or missing while results/ or spool/ hold files): -EUCLEAN with the reason. With
 * rebuild, it is set aside (cache.db.damaged-TIME) so store_open() starts a new one, which
 * discovery fills with what the providers still know.
 */
int store_check(const char *dir, bool rebuild, struct bfs_err *err);
int store_open(struct store **out, const char *dir, struct bfs_err *err);
/* Closes every thread's connection. No other thread may use st any more. */
void store_free(struct store *st);

/* Batches */
/* Creates a draft named name in remote; -EEXIST when the name or a pid of that remote
 * already uses it. Sets *id. */
int store_batch_create(struct store *st, const char *remote, const char *name, int64_t now,
		       int64_t *id);
/* Adds a batch made elsewhere as a directory of one part (state from pb); -EEXIST when the
 * pid is already owned or names a directory; with recent, -EBUSY while a part of remote has
 * an unsettled create (it may be this very batch). Sets *id and *part_id. */
int store_batch_add_foreign(struct store *st, const char *remote, const struct provider_batch *pb,
			    bool recent, int64_t now, int64_t *id, int64_t *part_id);
int store_batch_get(struct store *st, int64_t id, struct store_batch *out);
/* Finds a batch of remote by directory name (a local name, or the pid of a foreign batch);
 * -ENOENT when none. */
int store_batch_by_name(struct store *st, const char *remote, const char *name,
			struct store_batch *out);
/* Finds the batch of remote that has a part of provider id pid (local or foreign); -ENOENT
 * when none. */
int store_batch_by_pid(struct store *st, const char *remote, const char *pid,
		       struct store_batch *out);
/*
 * Guarded changes of a directory's own state (no parts at the provider). Each names the state
 * it expects and returns -ESTALE (nothing written) when the row is in another.
 * store_batch_claim: the commit point's claim: a local batch in draft, rejected or failed
 * with nothing possibly at the provider becomes submitting, its old (never created) parts are
 * dropped; -EACCES when it cannot be claimed.
 */
int store_batch_claim(struct store *st, int64_t id);
/*
 * True when every part of a local batch ended and it failed at the provider before any
 * request ran (validation, quota): requests.jsonl may be written again (the claim retires
 * those parts) or resubmitted as it is. Pure.
 */
bool store_batch_unrun_failure(const struct store_batch *row);
/*
 * Resubmit: every part of local batch id that failed before running (with or without a
 * provider id) becomes "not sent" again (submitting, no identity, resubmits + 1); their
 * provider batches stay as tombstones. -ENOENT when there is no such part.
 */
int store_batch_resubmit(struct store *st, int64_t id);
/* The state of a batch with no part at the provider: draft/rejected/failed after a claim
 * (expect submitting), or a note (state unchanged: pass the current). Drops its parts when
 * drop_parts. msg NULL clears the error. */
int store_batch_set_state(struct store *st, int64_t id, enum batch_state expect,
			  enum batch_state state, const char *msg, long line, bool drop_parts);
/*
 * Records the cost estimate of a batch being committed (state submitting), "" to clear it.
 * Returns 0, -ESTALE when the batch is not submitting, -E2BIG past STORE_COST_MAX, -EIO.
 */
int store_batch_set_cost(struct store *st, int64_t id, const char *cost_json);
/* A note on a batch not submitted (its state stays): only while no part exists. */
int store_batch_note(struct store *st, int64_t id, const char *msg);
/* A foreign batch was looked at: fetch its results (results_wanted), its ended parts now. */
int store_batch_want_results(struct store *st, int64_t id);
/* Deletes a batch and its files, requests and results rows (spool data is the caller's). */
int store_batch_delete(struct store *st, int64_t id);
/*
 * Forgets an ended batch on this machine (rmdir): a tombstone per provider id of its parts,
 * so discovery never brings it back, then store_batch_delete() (results files too) in one
 * transaction. -EBUSY, with the reason in err, while a part is not ended at the provider or
 * nothing of a local batch was sent. Nothing is done at the provider.
 */
int store_batch_forget(struct store *st, int64_t id, int64_t now, struct bfs_err *err);
typedef int (*store_batch_fn)(void *ctx, const struct store_batch *b);
/* Calls fn for the batches of remote with id > after, in id order, at most limit of them. */
int store_batch_list(struct store *st, const char *remote, int64_t after, int limit,
		     store_batch_fn fn, void *ctx);

/* Parts */
/*
 * Replaces the parts of a claimed batch (state submitting, nothing at the provider) by n new
 * ones in state submitting without identity, and records what validation learnt. One
 * transaction.
 */
int store_parts_create(struct store *st, int64_t batch_id, const char *remote,
		       const struct store_part_plan *plans, size_t n, const char *endpoint,
		       const char *model, int64_t nrequests, int64_t nbytes);
int store_part_get(struct store *st, int64_t id, struct store_part *out);
typedef int (*store_part_fn)(void *ctx, const struct store_part *p);
/* The parts of batch_id in file order. */
int store_part_list(struct store *st, int64_t batch_id, store_part_fn fn, void *ctx);
/* The same as one malloc'd array (*out, *n; the caller frees *out). Few rows: parts. */
int store_parts_load(struct store *st, int64_t batch_id, struct store_part **out, size_t *n);
/* The part of remote whose provider id is pid; -ENOENT when none. */
int store_part_by_pid(struct store *st, const char *remote, const char *pid,
		      struct store_part *out);
/* Calls fn for the parts of remote that have a provider id and id > after, in id order, at
 * most limit of them (<remote>/.by-id/). */
int store_part_list_remote(struct store *st, const char *remote, int64_t after, int limit,
			   store_part_fn fn, void *ctx);
/* True when pid is the provider id of a part of remote, or of a batch forgotten here
 * (provider_owned_fn's question). */
bool store_pid_is_owned(struct store *st, const char *remote, const char *pid);
/* Calls fn for every part of remote that the poller must look at: next_poll_at in (0, now]. */
int store_part_due(struct store *st, const char *remote, int64_t now, store_part_fn fn, void *ctx);
/* Earliest next_poll_at > 0 of remote's parts, 0 when none. */
int64_t store_part_next_due(struct store *st, const char *remote);
/*
 * Guarded part changes (compare-and-set: each names the state it expects and returns
 * -ESTALE, writing nothing, when the part is in another). Each also brings the directory's
 * aggregate up to date in the same transaction.
 * store_part_intent: records identity and intent_at before the first request that could
 * create it (expects submitting or queued, no identity yet; a queued part becomes
 * submitting in the same step).
 */
int store_part_intent(struct store *st, int64_t id, const char *identity, int64_t intent_at);
/*
 * The provider's view of a part (p's pid, state, provider_state, counts, times, ref, error,
 * next_poll_at and results): -EEXIST when p->pid belongs to another part. A results state
 * already ready is never taken back.
 */
int store_part_apply(struct store *st, const struct store_part *p, enum batch_state expect);
/* Certainly not created: failed with msg, identity forgotten, results unavailable. */
int store_part_fail(struct store *st, int64_t id, enum batch_state expect, const char *msg);
/* The state stays; error (msg, attempt) and, when next_poll_at >= 0, the schedule change. */
int store_part_note(struct store *st, int64_t id, const char *msg, int attempt,
		    int64_t next_poll_at);
/* results: expects one of the states in expect_mask (1 << RESULTS_x); msg NULL clears. */
int store_part_set_results(struct store *st, int64_t id, unsigned expect_mask,
			   enum results_state results, const char *msg, int64_t next_poll_at);
/*
 * A results download or ingest failed: pending again with msg, looked at again after
 * base_ms doubled for each failure in a row (at most max_ms); a success resets the count.
 * The attempts-th failure in a row makes the results unavailable instead, msg saying so.
 * Expects results downloading.
 */
int store_part_fetch_failed(struct store *st, int64_t id, const char *msg, int64_t base_ms,
			    int64_t max_ms, int attempts);
/*
 * A refresh: the results of an ended part that are not in (waiting after failures, or given
 * up) are downloaded again at once, with a new count of attempts. 0 when there was nothing
 * to retry, 1 when it was scheduled.
 */
int store_part_results_retry(struct store *st, int64_t id);
int store_part_cancel_requested(struct store *st, int64_t id);
/* A part whose create certainly never happened goes back to "not sent" (identity forgotten;
 * expects submitting without an id). */
int store_part_unsend(struct store *st, int64_t id);
/* Sets next_poll_at = next if it still is expect (what the caller saw: a kick that came
 * meanwhile is never lost). Only schedules. */
int store_part_schedule(struct store *st, int64_t id, int64_t expect, int64_t next);
/*
 * The job slots of a remote, for its max_concurrent_jobs (batch.c's queue): *active counts
 * the parts other than part_id that are, or may be, running at the provider (an id and a
 * state not ended, or a create under way), *ahead the queued parts older than part_id.
 */
int store_remote_slots(struct store *st, const char *remote, int64_t part_id, int64_t *active,
		       int64_t *ahead);
/* True when some part of this cache was submitted with identity (provider_batch.identity). */
bool store_identity_is_ours(struct store *st, const char *identity);
/* At start: makes every part that still has work (submitting, unfinished, results to fetch)
 * due now, a results download cut by a crash pending again, and a batch claimed but never
 * split into parts failed with msg (nothing was sent; requests.jsonl writable again). */
int store_parts_resume(struct store *st, const char *msg);

/* Draft files */
int store_file_create(struct store *st, int64_t batch_id, const char *name, uint32_t mode,
		      int64_t mtime_ns, int64_t *id);
int store_file_get(struct store *st, int64_t id, struct store_file *out);
int store_file_by_name(struct store *st, int64_t batch_id, const char *name,
		       struct store_file *out);
/* Writes size, mode and mtime back. */
int store_file_put(struct store *st, const struct store_file *f);
/* Renames id to newname in its batch, deleting the row of a file that had that name; that
 * file's id goes to *replaced (0 when none) so the caller can drop its spool data. */
int store_file_rename(struct store *st, int64_t id, const char *newname, int64_t *replaced);
int store_file_delete(struct store *st, int64_t id);
typedef int (*store_file_fn)(void *ctx, const struct store_file *f);
/* Files of batch_id with id > after, in id order, at most limit (limit <= 0: all). */
int store_file_list(struct store *st, int64_t batch_id, int64_t after, int limit, store_file_fn fn,
		    void *ctx);

/*
 * Request order, written while a requests.jsonl is checked (intake.h), which may take as
 * long as its writer does: rows go in in transactions of STORE_REQS_CHUNK, never one held
 * while idle (store_reqs_pause()). A list not ended with commit is removed. The calls may come
 * from different threads, but only with no transaction open (after a pause).
 */
struct store_reqs;
/* Starts replacing the request list of batch_id: the old one goes. */
int store_reqs_begin(struct store *st, int64_t batch_id, struct store_reqs **out);
/* Adds the next request. -EEXIST when custom_id is already there: *dup_line gets that
 * earlier line. */
int store_reqs_add(struct store_reqs *r, const char *custom_id, size_t len, long line,
		   long *dup_line);
/* Commits the rows added so far (the writer is slow: the store is not held meanwhile). */
int store_reqs_pause(struct store_reqs *r);
/* Commits the list (commit true) or removes it, and frees r. NULL-safe. */
int store_reqs_end(struct store_reqs *r, bool commit);

/*
 * Results ingest, per part: begin creates the part's results file, add appends a line to it
 * (no SQLite transaction is open meanwhile: a download may take long), commit indexes every
 * line in one transaction and puts the fsync'd file in place just before it commits.
 */
struct store_ingest;
#define STORE_INGEST_MSG 900 /* the part's error is 1024 with room for a "part K of N" */
/* Reads a result line's outcome, text and usage (provider_ops.result_parse). */
typedef int (*store_parse_fn)(const char *line, size_t len, struct result_info *out);
int store_ingest_begin(struct store *st, int64_t part_id, struct store_ingest **out);
/* Lines added from now on are read with parse: their outcome, text and usage are kept with
 * them (text/, retry.jsonl, status.usage); without it they are unknown. */
void store_ingest_set_parse(struct store_ingest *in, store_parse_fn parse);
/* Adds one result line (without terminator), line lineno of the provider's file. A repeated
 * custom_id keeps the first line; the later one is named in the part's error as lost. */
int store_ingest_add(struct store_ingest *in, const char *custom_id, const char *line, size_t len,
		     long lineno);
/* Notes a result line that cannot be kept (not JSON, no custom_id): named in the error, the
 * part's results "incomplete" (see store_ingest_commit). */
void store_ingest_bad(struct store_ingest *in, long lineno, const char *why);
int64_t store_ingest_bad_count(const struct store_ingest *in);
/* Lines added since begin or the last reset. */
int64_t store_ingest_count(const struct store_ingest *in);
/* Forgets the lines added so far (a download that starts over). */
int store_ingest_reset(struct store_ingest *in);
/*
 * Ends a part's ingest: results whose custom_id is not among the part's requests (when the
 * requests are known) are dropped and, with the lines that could not be kept (bad, repeated),
 * named in *stray_msg (size STORE_INGEST_MSG, "" when none; *stray counts them all); the part
 * becomes results ready, incomplete when a line could not be kept, unavailable when no line
 * could; once every part of the directory is settled the results are put in
 * request order across parts (unknown ids last, in arrival order) with their results.jsonl
 * offsets, and the directory's results are ready. Commits and frees in.
 */
int store_ingest_commit(struct store_ingest *in, int64_t *count, int64_t *stray, char *stray_msg);
/* Rolls back and frees in. NULL-safe. */
void store_ingest_abort(struct store_ingest *in);

/* Result reads */
int store_result_by_name(struct store *st, int64_t batch_id, const char *fname,
			 struct store_result *out);
int store_result_get(struct store *st, int64_t id, struct store_result *out);
typedef int (*store_result_fn)(void *ctx, const struct store_result *r);
/* Results of batch_id with id > after, in id order, at most limit. */
int store_result_list(struct store *st, int64_t batch_id, int64_t after, int limit,
		      store_result_fn fn, void *ctx);
/* Copies bytes [off, off+size) of result id's file (line + "\n") into dst; returns the count. */
long store_result_read(struct store *st, int64_t id, int64_t off, size_t size, char *dst);
/* Copies bytes [off, off+size) of batch_id's results.jsonl into dst; returns the count. */
long store_results_jsonl_read(struct store *st, int64_t batch_id, int64_t off, size_t size,
			      char *dst);
/* Where bytes of a file lie in the store's data files (a reply by splice, not by copy). */
struct store_span {
	int fd;	     /* the calling thread's: open until its next store call */
	int64_t off; /* in fd */
	size_t len;
};
/*
 * Where bytes [off, off+size) of batch_id's results.jsonl lie: at most max spans into sp
 * (rows that lie end to end in a part's data file make one span), returns their count (0 at
 * the end) and *total their bytes, the count store_results_jsonl_read() would copy. -EXDEV
 * when they cannot be told so (a row of an older cache keeps its bytes in the database, more
 * than max spans, or too many parts for the thread's open descriptors): copy instead.
 */
int store_results_jsonl_spans(struct store *st, int64_t batch_id, int64_t off, size_t size,
			      struct store_span *sp, int max, size_t *total);

/* What the results say (kept at ingest, schema v7) */
/*
 * The usage sums of batch_id's succeeded results, per model (at most max into out, *n of
 * them). *known is false when a ready part was ingested before batchfs kept usage (or there
 * are more than max models): its sums would be short.
 */
int store_usage_get(struct store *st, int64_t batch_id, struct bfs_usage *out, size_t max,
		    size_t *n, bool *known);
/* text/: succeeded results with text, as struct store_result with the name "<escaped>.txt"
 * and size the text's bytes + 1 (a newline). */
int store_text_by_name(struct store *st, int64_t batch_id, const char *fname,
		       struct store_result *out);
int store_text_get(struct store *st, int64_t id, struct store_result *out);
int store_text_list(struct store *st, int64_t batch_id, int64_t after, int limit,
		    store_result_fn fn, void *ctx);
/* Copies bytes [off, off+size) of result id's text + "\n" into dst; returns the count. */
long store_text_read(struct store *st, int64_t id, int64_t off, size_t size, char *dst);
/*
 * retry.jsonl: 0 when every ready part of batch_id kept its results' outcomes, -ENODATA when
 * one was ingested before batchfs kept them. Its line count is the batch's requests less the
 * succeeded results (store_usage_get's sums).
 */
int store_retry_known(struct store *st, int64_t batch_id);
/* The line numbers (> after, ascending, at most max) of requests whose result is not
 * succeeded (errored, canceled, expired or missing). */
int store_retry_lines(struct store *st, int64_t batch_id, int64_t after, int64_t *lines, size_t max,
		      size_t *n);

/*
 * A number that changes whenever another thread's connection commits a change (SQLite's
 * data_version of the calling thread's connection): a cheap "has the store changed?" for
 * code that waits on it. -1 on failure.
 */
int64_t store_data_version(struct store *st);

/*
 * A mark of the store's state as the calling thread's connection sees it: two marks taken by
 * one thread are equal only if no connection committed a change in between (data_version
 * counts the other connections' commits, sqlite3_total_changes64() this one's changes). For
 * caches of what is rendered from the store; a mark means nothing to another thread.
 * 0 or -errno.
 */
struct store_mark {
	int64_t version;
	int64_t changes;
};
int store_mark_get(struct store *st, struct store_mark *out);

#endif
