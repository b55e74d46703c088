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
#include "state.h"

struct bfs_err;
struct store;

#define STORE_NAME_MAX 256

/* One batch directory. Times in ms since the epoch, 0 = null. */
struct store_batch {
	int64_t id; /* rowid, never reused */
	char remote[64];
	char name[STORE_NAME_MAX]; /* the directory name; for a foreign batch = pid */
	bool foreign;		   /* made elsewhere: shown as <pid>/ */
	char pid[PROVIDER_ID_MAX]; /* provider's batch id, "" until known */
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
	bool results_wanted;		     /* foreign batch: someone looked, fetch its results */
	char identity[64];		     /* submission identity ("" before submit) */
	int64_t intent_at;		     /* when the submit intent was recorded */
	int64_t nrequests, nbytes;	     /* of the submitted requests.jsonl */
	char endpoint[256], model[256];	     /* what validation learnt (OpenAI/Azure) */
	char ref[PROVIDER_REF_MAX];	     /* provider-private, from provider_batch.ref */
	int64_t next_poll_at;		     /* poller: when to look at it again; 0 = never */
	int64_t results_count, results_size; /* once results are ready */
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
int store_open(struct store **out, const char *dir, struct bfs_err *err);
/* Closes every thread's connection. No other thread may use st any more. */
void store_free(struct store *st);

/* Batches */
/* Creates a draft named name in remote; -EEXIST when the name or a pid of that remote
 * already uses it. Sets *id. */
int store_batch_create(struct store *st, const char *remote, const char *name, int64_t now,
		       int64_t *id);
/* Adds a batch made elsewhere (state from pb); -EEXIST when the pid is already known. */
int store_batch_add_foreign(struct store *st, const char *remote, const struct provider_batch *pb,
			    int64_t now, int64_t *id);
int store_batch_get(struct store *st, int64_t id, struct store_batch *out);
/* Finds a batch of remote by directory name (a local name, or the pid of a foreign batch);
 * -ENOENT when none. */
int store_batch_by_name(struct store *st, const char *remote, const char *name,
			struct store_batch *out);
/* Finds a batch of remote by provider id (local or foreign); -ENOENT when none. */
int store_batch_by_pid(struct store *st, const char *remote, const char *pid,
		       struct store_batch *out);
/* Writes every mutable field of b back (by b->id). */
int store_batch_put(struct store *st, const struct store_batch *b);
/* Deletes a batch and its files, requests and results rows (spool data is the caller's). */
int store_batch_delete(struct store *st, int64_t id);
typedef int (*store_batch_fn)(void *ctx, const struct store_batch *b);
/* Calls fn for the batches of remote with id > after, in id order, at most limit of them. */
int store_batch_list(struct store *st, const char *remote, int64_t after, int limit,
		     store_batch_fn fn, void *ctx);
/* Calls fn for every batch of remote that the poller must look at: next_poll_at in (0, now]. */
int store_batch_due(struct store *st, const char *remote, int64_t now, store_batch_fn fn,
		    void *ctx);
/* Earliest next_poll_at > 0 of remote's batches, 0 when none. */
int64_t store_batch_next_due(struct store *st, const char *remote);

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

/* Request order, written while a requests.jsonl is validated. One transaction. */
struct store_reqs;
/* Starts replacing the request list of batch_id (BEGIN IMMEDIATE). */
int store_reqs_begin(struct store *st, int64_t batch_id, struct store_reqs **out);
/* Adds the next request. -EEXIST when custom_id is already there: *dup_line gets that
 * earlier line. */
int store_reqs_add(struct store_reqs *r, const char *custom_id, size_t len, long line,
		   long *dup_line);
/* Commits (commit true) or rolls back, and frees r. */
int store_reqs_end(struct store_reqs *r, bool commit);

/* Results ingest: one transaction per batch. */
struct store_ingest;
int store_ingest_begin(struct store *st, int64_t batch_id, struct store_ingest **out);
/* Adds one result line (without terminator). A repeated custom_id replaces the earlier line
 * (a retried download). */
int store_ingest_add(struct store_ingest *in, const char *custom_id, const char *line, size_t len);
/* Forgets the lines added so far (a download that starts over). */
int store_ingest_reset(struct store_ingest *in);
/* Orders the results as the requests were (unknown ids last, in arrival order), computes
 * results.jsonl offsets, writes count/size/results=ready into the batch, commits, frees in. */
int store_ingest_commit(struct store_ingest *in, int64_t *count, int64_t *size);
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

#endif
