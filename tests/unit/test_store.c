// SPDX-License-Identifier: MIT
/*
 * Unit tests: the SQLite cache against a temporary directory (no FUSE, no network): opening
 * and migrating, batch rows and their guarded changes, parts and the directory's aggregate,
 * one owner per provider id, compare-and-set part updates, per-part results ingest and the
 * order of results.jsonl across parts.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "escape.h"
#include "log.h"
#include "result.h"
#include "store.h"
#include "tap.h"
#include "timefmt.h"

#define REMOTE "r1"

static char tmpdir[PATH_MAX];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *dir)
{
	(void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The ids of a batch's parts, in file order. */
struct ids {
	int64_t v[16];
	int n;
};

static int collect_id(void *ctx, const struct store_part *p)
{
	struct ids *ids = ctx;

	if (ids->n < 16)
		ids->v[ids->n++] = p->id;
	return 0;
}

static int part_ids(struct store *st, int64_t batch_id, struct ids *ids)
{
	memset(ids, 0, sizeof(*ids));
	return store_part_list(st, batch_id, collect_id, ids);
}

/* A draft claimed and split into n parts of the given lines (plans[i] line ranges). */
static int64_t make_parts(struct store *st, const char *name, const struct store_part_plan *plans,
			  size_t n, struct ids *ids)
{
	int64_t id = 0, nreq = 0, nbytes = 0;

	for (size_t i = 0; i < n; i++) {
		nreq += plans[i].nrequests;
		nbytes += plans[i].len;
	}
	if (store_batch_create(st, REMOTE, name, timefmt_now_ms(), &id) ||
	    store_batch_claim(st, id) ||
	    store_parts_create(st, id, REMOTE, plans, n, "", "", nreq, nbytes) ||
	    part_ids(st, id, ids) || ids->n != (int)n)
		return 0;
	return id;
}

/* Applies a provider's view to a part: pid, state, counts; results left as they are. */
static int apply(struct store *st, int64_t part_id, enum batch_state expect, const char *pid,
		 enum batch_state state, const struct batch_counts *counts)
{
	struct store_part p;
	int rc = store_part_get(st, part_id, &p);

	if (rc)
		return rc;
	snprintf(p.pid, sizeof(p.pid), "%s", pid);
	p.state = state;
	snprintf(p.provider_state, sizeof(p.provider_state), "%s", state_name(state));
	if (counts)
		p.counts = *counts;
	if (state_is_terminal(state) && !p.ended_at)
		p.ended_at = timefmt_now_ms();
	return store_part_apply(st, &p, expect);
}

static enum batch_state batch_state_of(struct store *st, int64_t id)
{
	struct store_batch b;

	return store_batch_get(st, id, &b) ? (enum batch_state) - 1 : b.state;
}

static enum batch_state part_state_of(struct store *st, int64_t id)
{
	struct store_part p;

	return store_part_get(st, id, &p) ? (enum batch_state) - 1 : p.state;
}

/* The v1 schema as batchfs 0.1 made it (src/store.c schema_v1), to test the migration. */
static const char *const v1_schema =
	"CREATE TABLE batches ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" remote TEXT NOT NULL, name TEXT NOT NULL, is_foreign INTEGER NOT NULL DEFAULT 0,"
	" pid TEXT NOT NULL DEFAULT '', state TEXT NOT NULL,"
	" provider_state TEXT NOT NULL DEFAULT '',"
	" total INTEGER NOT NULL DEFAULT 0, processing INTEGER NOT NULL DEFAULT 0,"
	" succeeded INTEGER NOT NULL DEFAULT 0, errored INTEGER NOT NULL DEFAULT 0,"
	" canceled INTEGER NOT NULL DEFAULT 0, expired INTEGER NOT NULL DEFAULT 0,"
	" results TEXT NOT NULL DEFAULT 'pending', error TEXT NOT NULL DEFAULT '',"
	" error_line INTEGER NOT NULL DEFAULT 0, error_attempt INTEGER NOT NULL DEFAULT 0,"
	" created_at INTEGER NOT NULL DEFAULT 0, ended_at INTEGER NOT NULL DEFAULT 0,"
	" expires_at INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL DEFAULT 0,"
	" dir_mtime INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,"
	" results_wanted INTEGER NOT NULL DEFAULT 0, identity TEXT NOT NULL DEFAULT '',"
	" intent_at INTEGER NOT NULL DEFAULT 0, nrequests INTEGER NOT NULL DEFAULT 0,"
	" nbytes INTEGER NOT NULL DEFAULT 0, endpoint TEXT NOT NULL DEFAULT '',"
	" model TEXT NOT NULL DEFAULT '', ref TEXT NOT NULL DEFAULT '',"
	" next_poll_at INTEGER NOT NULL DEFAULT 0, results_count INTEGER NOT NULL DEFAULT 0,"
	" results_size INTEGER NOT NULL DEFAULT 0,"
	" UNIQUE (remote, name));"
	"CREATE INDEX batches_pid ON batches (remote, pid);"
	"CREATE TABLE files ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT, batch_id INTEGER NOT NULL, name TEXT NOT NULL,"
	" mode INTEGER NOT NULL, size INTEGER NOT NULL DEFAULT 0, mtime_ns INTEGER NOT NULL,"
	" UNIQUE (batch_id, name));"
	"CREATE TABLE requests ("
	" batch_id INTEGER NOT NULL, custom_id BLOB NOT NULL, seq INTEGER NOT NULL,"
	" line INTEGER NOT NULL, PRIMARY KEY (batch_id, custom_id)) WITHOUT ROWID;"
	"CREATE TABLE results ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT, batch_id INTEGER NOT NULL,"
	" custom_id BLOB NOT NULL, fname TEXT NOT NULL, seq INTEGER, off INTEGER,"
	" line BLOB NOT NULL, UNIQUE (batch_id, custom_id));"
	"CREATE INDEX results_fname ON results (batch_id, fname);"
	"CREATE INDEX results_batch ON results (batch_id, id);"
	"CREATE INDEX batches_remote ON batches (remote, id);"
	"CREATE INDEX results_off ON results (batch_id, off);"
	/* a submitted batch with one result, a draft, and a v1 bug: two rows, one pid */
	"INSERT INTO batches (id, remote, name, pid, state, total, results, identity)"
	" VALUES (1, 'r1', 'old', 'pb-old', 'completed', 2, 'ready', 'bfs-x-1');"
	"INSERT INTO batches (id, remote, name, state) VALUES (2, 'r1', 'draft', 'draft');"
	"INSERT INTO batches (id, remote, name, pid, state) VALUES (3, 'r1', 'dup', 'pb-old',"
	" 'in_progress');"
	/* (batchfs has always bound custom_id as a blob) */
	"INSERT INTO results (batch_id, custom_id, fname, seq, off, line) VALUES (1, x'61',"
	" 'a.json', 0, 0, 'x');"
	"INSERT INTO results (batch_id, custom_id, fname, seq, off, line) VALUES (3, x'62',"
	" 'b.json', 0, 0, 'y');"
	"PRAGMA user_version = 1;";

/*
 * Bytes [off, off + size) of results.jsonl as store_results_jsonl_spans() describes them,
 * read from its spans into dst (at most max spans); the count, or -errno.
 */
static long read_spans(struct store *st, int64_t id, int64_t off, size_t size, int max, char *dst)
{
	struct store_span sp[16];
	size_t total = 0, done = 0;
	int n = store_results_jsonl_spans(st, id, off, size, sp, max, &total);

	for (int i = 0; i < n; i++) {
		if (pread(sp[i].fd, dst + done, sp[i].len, sp[i].off) != (ssize_t)sp[i].len)
			return -EIO;
		done += sp[i].len;
	}
	if (n < 0)
		return n;
	return done == total && total <= size ? (long)done : -EPROTO;
}

static int db_exec(const char *path, const char *sql, int *version)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_open(path, &db);

	if (rc == SQLITE_OK && sql)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	if (rc == SQLITE_OK && version) {
		rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);
		if (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
			*version = sqlite3_column_int(s, 0);
		sqlite3_finalize(s);
	}
	sqlite3_close(db);
	return rc;
}

static void test_open(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	struct store_batch b;
	struct store *st = NULL;
	char dir[PATH_MAX], path[PATH_MAX + 16];
	struct stat sb;
	int64_t id = 0;
	int version = -1;
	mode_t old;

	snprintf(dir, sizeof(dir), "%s/open", tmpdir);
	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/cache.db", dir);
	old = umask(0); /* SQLite alone would make it 0644 */
	is_int(store_open(&st, dir, &err), 0, "open creates the cache");
	umask(old);
	ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "cache.db is mode 0600 (%o)",
	   (unsigned)(sb.st_mode & 0777));
	is_int(store_batch_create(st, REMOTE, "kept", 1000, &id), 0, "a batch in the new cache");
	store_free(st);
	st = NULL;
	is_int(db_exec(path, NULL, &version), SQLITE_OK, "the cache is an SQLite database");
	is_int(version, 11, "schema version 11");

	chmod(path, 0644);
	is_int(store_open(&st, dir, &err), 0, "reopen");
	ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600,
	   "reopening makes a laxer cache.db 0600 again");
	is_int(store_batch_by_name(st, REMOTE, "kept", &b), 0, "the batch survives a reopen");
	is_int(b.id, id, "same id");
	is_int(b.dir_mtime, 1000, "its mkdir time");
	store_free(st);
	st = NULL;

	/* A cache from a newer batchfs is refused, not clobbered. */
	is_int(db_exec(path, "PRAGMA user_version = 99", NULL), SQLITE_OK, "mark it schema 99");
	err_clear(&err);
	is_int(store_open(&st, dir, &err), -EPROTO, "a newer schema is refused");
	ok(strstr(err.msg, "newer") != NULL, "and says why: %s", err.msg);

	/* v1 -> v2: each submitted batch becomes its part 0; a row sharing a pid is failed. */
	snprintf(dir, sizeof(dir), "%s/v1", tmpdir);
	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/cache.db", dir);
	is_int(db_exec(path, v1_schema, NULL), SQLITE_OK, "a v1 cache");
	st = NULL;
	err_clear(&err);
	is_int(store_open(&st, dir, &err), 0, "a v1 cache is migrated: %s", err.msg);
	if (!st)
		return;
	is_int(store_batch_get(st, 1, &b), 0, "the submitted batch");
	is_int(b.nparts, 1, "has one part");
	is_int(b.nparts_sent, 1, "which is at the provider");
	is_str(b.pid, "pb-old", "with its pid");
	ok(store_pid_is_owned(st, REMOTE, "pb-old"), "its pid is owned by a part");
	is_int(store_batch_by_pid(st, REMOTE, "pb-old", &b), 0, "by_pid finds it");
	is_int(b.id, 1, "the older row owns the pid");
	is_int(store_batch_get(st, 3, &b), 0, "the row that shared the pid");
	is_int(b.state, BATCH_FAILED, "is failed");
	is_int(b.nparts, 0, "owns no part");
	ok(strstr(b.error, "older directory") != NULL, "and says why");
	is_int(store_batch_get(st, 2, &b), 0, "the draft");
	is_int(b.state, BATCH_DRAFT, "is still a draft");
	is_int(b.nparts, 0, "without parts");
	{
		/* v2 -> v3: a result kept in its row (not in a results file) still reads. */
		struct store_result res;
		char buf[8];

		is_int(store_result_by_name(st, 1, "a.json", &res), 0, "the old result");
		is_int(res.size, 2, "its size: line and newline");
		is_int(store_result_read(st, res.id, 0, sizeof(buf), buf), 2, "reads 2 bytes");
		ok(!memcmp(buf, "x\n", 2), "byte for byte");
		is_int(store_results_jsonl_read(st, 1, 0, sizeof(buf), buf), 2,
		       "results.jsonl of the old batch");
		ok(!memcmp(buf, "x\n", 2), "byte for byte too");
		is_int(read_spans(st, 1, 0, sizeof(buf), 16, buf), -EXDEV,
		       "no spans for a row kept in the database: copy instead");
	}
	is_int(db_exec(path, NULL, &version), SQLITE_OK, "read the version");
	is_int(version, 11, "now schema version 11");
	{
		struct store_batch ob;

		is_int(store_batch_get(st, 1, &ob), 0, "the old batch after the migration");
		is_str(ob.cost, "", "has no cost estimate (schema 5)");
	}
	store_free(st);
	st = NULL;
	is_int(store_open(&st, dir, &err), 0, "a migrated cache opens again");
	store_free(st);
}

static void test_batches(struct store *st)
{
	struct store_batch b;
	int64_t id = 0, id2 = 0, other = 0;

	is_int(store_batch_create(st, REMOTE, "alpha", 5000, &id), 0, "create a draft");
	ok(id > 0, "it has an id");
	is_int(store_batch_create(st, REMOTE, "alpha", 5000, &id2), -EEXIST, "name taken");
	is_int(store_batch_create(st, "r2", "alpha", 5000, &other), 0,
	       "the same name in another remote");
	ok(other != id, "is another batch");
	is_int(store_batch_by_name(st, REMOTE, "alpha", &b), 0, "by_name");
	is_int(b.id, id, "finds the batch");
	is_str(b.name, "alpha", "its name");
	is_str(b.remote, REMOTE, "its remote");
	is_int(b.state, BATCH_DRAFT, "a draft");
	ok(!b.foreign && !b.pid[0] && !b.nparts, "local, no pid, no parts");
	is_int(store_batch_by_name(st, REMOTE, "beta", &b), -ENOENT, "an unknown name");
	is_int(store_batch_by_pid(st, REMOTE, "alpha", &b), -ENOENT, "a name is not a pid");

	/* claim: the commit point */
	is_int(store_batch_claim(st, id), 0, "claim a draft");
	is_int(batch_state_of(st, id), BATCH_SUBMITTING, "draft -> submitting");
	is_int(store_batch_claim(st, id), -EACCES, "a second claim is refused");
	is_int(store_batch_set_state(st, id, BATCH_DRAFT, BATCH_REJECTED, "x", 3, false), -ESTALE,
	       "set_state expecting the wrong state");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.state, BATCH_SUBMITTING, "nothing changed: still submitting");
	is_str(b.error, "", "no error written");
	is_int(b.error_line, 0, "no line written");
	is_int(store_batch_note(st, id, "note"), -ESTALE, "no note on a batch being submitted");

	is_int(store_batch_set_state(st, id, BATCH_SUBMITTING, BATCH_REJECTED, "line 3: bad", 3,
				     false),
	       0, "submitting -> rejected");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.state, BATCH_REJECTED, "rejected");
	is_str(b.error, "line 3: bad", "with the reason");
	is_int(b.error_line, 3, "and the line");
	is_int(store_batch_note(st, id, "writer killed"), 0, "a note on a rejected batch");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.state, BATCH_REJECTED, "a note keeps the state");
	is_str(b.error, "writer killed", "and replaces the error");
	is_int(store_batch_claim(st, id), 0, "a rejected batch can be claimed again");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_str(b.error, "", "the claim clears the error");
	is_int(store_batch_set_state(st, id, BATCH_SUBMITTING, BATCH_DRAFT, NULL, 0, true), 0,
	       "back to draft");
	is_int(store_batch_delete(st, id), 0, "delete");
	is_int(store_batch_get(st, id, &b), -ENOENT, "gone");
	is_int(store_batch_create(st, REMOTE, "alpha", 5000, &id2), 0, "its name is free again");
	ok(id2 > id, "row ids are never reused");
}

static void test_parts_owner(struct store *st)
{
	static const struct store_part_plan plans[3] = {
		{1, 2, 0, 20, 2, 0},
		{3, 4, 20, 20, 2, 0},
		{5, 7, 40, 30, 3, 0},
	};
	struct provider_batch pb;
	struct store_batch b;
	struct store_part p;
	struct ids ids;
	int64_t id, fid = 0, fpart = 0;

	memset(&pb, 0, sizeof(pb));
	pb.state = BATCH_IN_PROGRESS;
	id = make_parts(st, "parts", plans, 3, &ids);
	ok(id > 0, "a claimed batch split into 3 parts");
	if (!id)
		return;
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.nparts, 3, "nparts 3");
	is_int(b.nparts_sent, 0, "none sent");
	is_int(b.state, BATCH_SUBMITTING, "state submitting");
	is_int(b.counts.total, 7, "total: the requests of every part");
	is_int(b.nrequests, 7, "nrequests recorded");
	is_int(b.nbytes, 70, "nbytes recorded");
	is_str(b.pid, "", "no pid yet");
	is_int(store_part_get(st, ids.v[2], &p), 0, "part 2");
	is_int(p.idx, 2, "idx 2");
	ok(p.first_line == 5 && p.last_line == 7 && p.off == 40 && p.len == 30 && p.nrequests == 3,
	   "the plan is kept");
	is_int(p.state, BATCH_SUBMITTING, "a part starts submitting");
	is_int(store_batch_claim(st, id), -EACCES, "a split batch is not claimed again");
	is_int(store_parts_create(st, id, REMOTE, plans, 3, "", "", 7, 70), 0,
	       "re-planning a batch with nothing at the provider");
	is_int(part_ids(st, id, &ids), 0, "list");
	is_int(ids.n, 3, "still 3 parts");

	is_int(store_part_intent(st, ids.v[0], "bfs-test-0", 1234), 0, "part_intent");
	is_int(store_part_intent(st, ids.v[0], "bfs-test-again", 1235), -ESTALE,
	       "a second intent is refused");
	is_int(store_part_get(st, ids.v[0], &p), 0, "get");
	is_str(p.identity, "bfs-test-0", "identity kept");
	is_int(p.intent_at, 1234, "intent_at kept");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_str(b.identity, "bfs-test-0", "the directory shows the unsettled identity");
	ok(store_identity_is_ours(st, "bfs-test-0"), "identity_is_ours");
	ok(!store_identity_is_ours(st, "bfs-nope"), "not ours");
	/* A recent foreign batch waits while a create of the remote is unsettled. */
	snprintf(pb.id, sizeof(pb.id), "pb-foreign");
	is_int(store_batch_add_foreign(st, REMOTE, &pb, true, 1, &fid, &fpart), -EBUSY,
	       "recent foreign batch while an intent is unsettled: -EBUSY");
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &fid, &fpart), 0,
	       "an old one is added");
	is_int(store_batch_by_name(st, REMOTE, "pb-foreign", &b), 0, "named by its pid");
	ok(b.foreign && b.nparts == 1 && b.nparts_sent == 1, "foreign, one part, sent");
	is_str(b.pid, "pb-foreign", "its pid");
	is_int(store_batch_claim(st, fid), -EACCES, "a foreign batch is never claimed");
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &fid, &fpart), -EEXIST,
	       "added twice: -EEXIST");

	is_int(store_parts_create(st, id, REMOTE, plans, 3, "", "", 7, 70), -EACCES,
	       "no re-planning once a part may be at the provider");
	is_int(store_batch_set_state(st, id, BATCH_SUBMITTING, BATCH_FAILED, "x", 0, true), -EACCES,
	       "parts that may be at the provider are never dropped");

	is_int(apply(st, ids.v[0], BATCH_SUBMITTING, "pb-1", BATCH_IN_PROGRESS, NULL), 0,
	       "apply pid pb-1 to part 0");
	is_int(part_state_of(st, ids.v[0]), BATCH_IN_PROGRESS, "part 0 in_progress");
	is_int(apply(st, ids.v[1], BATCH_SUBMITTING, "pb-1", BATCH_IN_PROGRESS, NULL), -EEXIST,
	       "the same pid on part 1: -EEXIST (one owner per provider id)");
	is_int(store_part_get(st, ids.v[1], &p), 0, "get part 1");
	ok(!p.pid[0] && p.state == BATCH_SUBMITTING, "part 1 unchanged");
	is_int(apply(st, ids.v[0], BATCH_IN_PROGRESS, "pb-other", BATCH_IN_PROGRESS, NULL), -ESTALE,
	       "a part's pid never changes");

	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "pb-1");
	pb.state = BATCH_IN_PROGRESS;
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &fid, &fpart), -EEXIST,
	       "a foreign add of an owned pid: -EEXIST");
	is_int(store_batch_by_name(st, REMOTE, "pb-1", &b), -ENOENT, "no directory pb-1");
	is_int(store_batch_create(st, REMOTE, "pb-1", 1, &fid), -EEXIST,
	       "a local directory cannot take an owned pid's name");
	ok(store_pid_is_owned(st, REMOTE, "pb-1"), "pb-1 is owned");
	ok(!store_pid_is_owned(st, REMOTE, "pb-2"), "pb-2 is not");
	ok(!store_pid_is_owned(st, "r2", "pb-1"), "pb-1 of another remote is not");
	is_int(store_batch_by_pid(st, REMOTE, "pb-1", &b), 0, "by_pid");
	is_int(b.id, id, "finds the directory");

	/* compare-and-set: a stale poll never rolls a part back */
	is_int(apply(st, ids.v[0], BATCH_IN_PROGRESS, "pb-1", BATCH_COMPLETED, NULL), 0,
	       "part 0 completes");
	is_int(apply(st, ids.v[0], BATCH_IN_PROGRESS, "pb-1", BATCH_IN_PROGRESS, NULL), -ESTALE,
	       "a stale poll (expects in_progress) on a completed part: -ESTALE");
	is_int(part_state_of(st, ids.v[0]), BATCH_COMPLETED, "the completed state is kept");
	is_int(store_part_fail(st, ids.v[0], BATCH_COMPLETED, "x"), -ESTALE,
	       "a part with a pid is never failed as not created");
	is_int(store_part_unsend(st, ids.v[0]), -ESTALE, "nor unsent");

	is_int(store_part_note(st, ids.v[0], "a note", 2, -1), 0, "part_note");
	is_int(store_part_get(st, ids.v[0], &p), 0, "get");
	is_int(p.state, BATCH_COMPLETED, "note keeps the state");
	is_str(p.pid, "pb-1", "and the pid");
	is_str(p.error, "a note", "error text changed");
	is_int(p.error_attempt, 2, "with the attempt");
	is_int(p.next_poll_at, 0, "next_poll_at -1: schedule unchanged");
	is_int(store_part_note(st, ids.v[0], NULL, 0, 777), 0, "note clearing the error");
	is_int(store_part_get(st, ids.v[0], &p), 0, "get");
	is_str(p.error, "", "error cleared");
	is_int(p.next_poll_at, 777, "schedule set");

	/* schedule: only when it still is what the caller saw */
	is_int(store_part_schedule(st, ids.v[0], 776, 5), 0, "schedule with a stale expect");
	is_int(store_part_get(st, ids.v[0], &p), 0, "get");
	is_int(p.next_poll_at, 777, "a stale schedule changes nothing");
	is_int(p.state, BATCH_COMPLETED, "nor the state");
	is_int(store_part_schedule(st, ids.v[0], 777, 5), 0, "schedule with the current value");
	is_int(store_part_get(st, ids.v[0], &p), 0, "get");
	is_int(p.next_poll_at, 5, "rescheduled");
	is_int(store_part_next_due(st, REMOTE), 5, "next_due is the earliest");
	{
		struct ids due;

		memset(&due, 0, sizeof(due));
		is_int(store_part_due(st, REMOTE, 4, collect_id, &due), 0, "due at 4");
		is_int(due.n, 0, "nothing due before 5");
		is_int(store_part_due(st, REMOTE, 5, collect_id, &due), 0, "due at 5");
		ok(due.n == 1 && due.v[0] == ids.v[0], "part 0 is due at 5");
	}
}

static void test_aggregate(struct store *st)
{
	static const struct store_part_plan plans[3] = {
		{1, 2, 0, 20, 2, 0},
		{3, 4, 20, 20, 2, 0},
		{5, 7, 40, 30, 3, 0},
	};
	struct batch_counts c0 = {2, 1, 1, 0, 0, 0}, c1 = {2, 0, 1, 1, 0, 0},
			    c2 = {3, 3, 0, 0, 0, 0};
	struct store_batch b;
	struct ids ids;
	int64_t id;

	/* running: the least advanced state of the running parts */
	id = make_parts(st, "agg-run", plans, 3, &ids);
	ok(id > 0, "batch agg-run");
	if (!id)
		return;
	is_int(apply(st, ids.v[1], BATCH_SUBMITTING, "pa-1", BATCH_COMPLETED, &c1), 0,
	       "part 1 first: completed");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_str(b.pid, "pa-1", "directory pid: the first part that has one");
	is_int(b.state, BATCH_SUBMITTING, "submitting while parts are being sent");
	is_int(b.nparts_sent, 1, "one sent");
	is_int(apply(st, ids.v[0], BATCH_SUBMITTING, "pa-0", BATCH_IN_PROGRESS, &c0), 0,
	       "part 0: in_progress");
	is_int(apply(st, ids.v[2], BATCH_SUBMITTING, "pa-2", BATCH_VALIDATING, &c2), 0,
	       "part 2: validating");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_str(b.pid, "pa-0", "directory pid = the first part's id");
	is_int(b.nparts_sent, 3, "three sent");
	is_int(b.state, BATCH_VALIDATING, "the least advanced running state (validating)");
	is_int(b.counts.total, 7, "total summed");
	is_int(b.counts.processing, 4, "processing summed");
	is_int(b.counts.succeeded, 2, "succeeded summed");
	is_int(b.counts.errored, 1, "errored summed");
	is_int(b.ended_at, 0, "no ended_at while parts run");
	ok(strstr(b.provider_state, "in_progress") && strstr(b.provider_state, "completed") &&
		   strstr(b.provider_state, "validating"),
	   "provider_state lists the parts' words: %s", b.provider_state);
	is_int(apply(st, ids.v[2], BATCH_VALIDATING, "pa-2", BATCH_IN_PROGRESS, &c2), 0,
	       "part 2: in_progress");
	is_int(batch_state_of(st, id), BATCH_IN_PROGRESS, "in_progress while any part runs");
	is_int(apply(st, ids.v[0], BATCH_IN_PROGRESS, "pa-0", BATCH_COMPLETED, &c0), 0,
	       "part 0 completes");
	is_int(batch_state_of(st, id), BATCH_IN_PROGRESS, "still in_progress (part 2 runs)");
	is_int(store_part_cancel_requested(st, ids.v[2]), 0, "cancel requested on part 2");
	is_int(store_batch_get(st, id, &b), 0, "get");
	ok(b.cancel_requested, "the directory shows the cancel");
	is_int(apply(st, ids.v[2], BATCH_IN_PROGRESS, "pa-2", BATCH_COMPLETED, &c2), 0,
	       "part 2 completes");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.state, BATCH_COMPLETED, "completed when all completed");
	ok(b.ended_at > 0, "ended_at once all ended");
	is_int(b.results, RESULTS_PENDING, "results pending: none settled");

	/* results: ready only once every part is settled and at least one is ready */
	is_int(store_part_set_results(st, ids.v[0], 1u << RESULTS_PENDING, RESULTS_UNAVAILABLE,
				      "gone", 0),
	       0, "part 0 results unavailable");
	is_int(store_part_set_results(st, ids.v[0], 1u << RESULTS_PENDING, RESULTS_READY, NULL, 0),
	       -ESTALE, "set_results with the wrong expected state");
	is_int(store_part_set_results(st, ids.v[1], 1u << RESULTS_PENDING, RESULTS_DOWNLOADING,
				      NULL, 0),
	       0, "part 1 downloading");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.results, RESULTS_DOWNLOADING, "directory downloading");
	is_int(store_part_set_results(st, ids.v[1], 1u << RESULTS_DOWNLOADING, RESULTS_UNAVAILABLE,
				      NULL, 0),
	       0, "part 1 unavailable");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.results, RESULTS_PENDING, "pending while part 2 is unsettled");
	{
		struct store_ingest *in = NULL;
		int64_t count = -1, stray = -1;
		char msg[512];

		is_int(store_ingest_begin(st, ids.v[2], &in), 0,
		       "ingest part 2 (no requests known)");
		if (in) {
			is_int(store_ingest_add(in, "x", "{\"x\":1}", 7, 1), 0, "add a result");
			is_int(store_ingest_commit(in, &count, &stray, msg), 0, "commit");
		}
		is_int(count, 1, "one result");
		is_int(stray, 0, "no stray (requests unknown: nothing to check)");
	}
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.results, RESULTS_READY, "ready: all settled, one ready");
	is_int(b.results_count, 1, "results_count");
	is_int(b.results_size, 8, "results_size = line + newline");

	/* every part settled, none ready: unavailable */
	id = make_parts(st, "agg-none", plans, 2, &ids);
	ok(id > 0, "batch agg-none");
	if (!id)
		return;
	is_int(apply(st, ids.v[0], BATCH_SUBMITTING, "pn-0", BATCH_EXPIRED, &c0), 0, "expired");
	is_int(apply(st, ids.v[1], BATCH_SUBMITTING, "pn-1", BATCH_COMPLETED, &c1), 0, "completed");
	is_int(batch_state_of(st, id), BATCH_EXPIRED, "an expired part: expired");
	is_int(store_part_set_results(st, ids.v[0], 1u << RESULTS_PENDING, RESULTS_UNAVAILABLE,
				      NULL, 0),
	       0, "unavailable");
	is_int(store_part_set_results(st, ids.v[1], 1u << RESULTS_PENDING, RESULTS_UNAVAILABLE,
				      NULL, 0),
	       0, "unavailable");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.results, RESULTS_UNAVAILABLE, "all settled, none ready: unavailable");

	/* a part that failed to submit: failed at once, even while others run */
	id = make_parts(st, "agg-fail", plans, 3, &ids);
	ok(id > 0, "batch agg-fail");
	if (!id)
		return;
	is_int(apply(st, ids.v[0], BATCH_SUBMITTING, "pf-0", BATCH_IN_PROGRESS, &c0), 0,
	       "part 0 in_progress");
	is_int(store_part_note(st, ids.v[0], "slow", 0, -1), 0, "a note on part 0");
	is_int(store_part_fail(st, ids.v[1], BATCH_SUBMITTING, "refused: too big"), 0,
	       "part 1 failed to submit");
	is_int(store_part_fail(st, ids.v[2], BATCH_SUBMITTING, "not submitted"), 0,
	       "part 2 not submitted");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.state, BATCH_FAILED, "failed while part 0 still runs");
	ok(!strncmp(b.error, "part 2 of 3 (lines 3-4): refused: too big", 41),
	   "the error names the failed part and its lines: %s", b.error);
	ok(strstr(b.error, "1 part(s) of it exist at the provider") != NULL,
	   "and says a part exists at the provider");
	is_str(b.pid, "pf-0", "pid of the part that exists");
	is_int(b.results, RESULTS_PENDING, "results pending (part 0 unsettled)");
	is_int(b.nparts_sent, 1, "one sent");
	is_int(store_batch_claim(st, id), -EACCES, "not claimable while a part exists");
}

/* Reads all of results.jsonl in chunks of step bytes. */
static long read_jsonl(struct store *st, int64_t id, size_t step, char *dst, size_t size)
{
	size_t done = 0;

	while (done < size) {
		size_t k = step < size - done ? step : size - done;
		long n = store_results_jsonl_read(st, id, (int64_t)done, k, dst + done);

		if (n < 0)
			return n;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (long)done;
}

static int count_result(void *ctx, const struct store_result *r)
{
	(void)r;
	(*(int *)ctx)++;
	return 0;
}

static void test_ingest(struct store *st)
{
	static const struct store_part_plan plans[2] = {
		{1, 2, 0, 20, 2, 0}, {3, 5, 20, 30, 2, 0}, /* line 4 is blank */
	};
	static const char *const cids[4] = {"q1", "q2", "q3", "q5"};
	static const long lines[4] = {1, 2, 3, 5};
	static const char *const out[4] = {"{\"id\":\"q1\",\"r\":\"one\"}",
					   "{\"id\":\"q2\",\"r\":\"two, longer\"}",
					   "{\"id\":\"q3\",\"r\":3}", "{\"id\":\"q5\"}"};
	char want[512] = "", got[512], msg[512];
	struct store_ingest *in = NULL;
	struct store_reqs *rq = NULL;
	struct store_result res;
	struct store_batch b;
	struct store_part p;
	struct ids ids;
	int64_t id, count = -1, stray = -1;
	long dup = 0, n;
	int nres;

	id = make_parts(st, "ingest", plans, 2, &ids);
	ok(id > 0, "batch ingest with 2 parts");
	if (!id)
		return;
	is_int(store_reqs_begin(st, id, &rq), 0, "reqs_begin");
	for (int i = 0; i < 4 && rq; i++)
		is_int(store_reqs_add(rq, cids[i], strlen(cids[i]), lines[i], &dup), 0,
		       "request %s on line %ld", cids[i], lines[i]);
	if (rq) {
		is_int(store_reqs_add(rq, "q2", 2, 9, &dup), -EEXIST, "a duplicate custom_id");
		is_int(dup, 2, "names the earlier line");
		is_int(store_reqs_end(rq, true), 0, "reqs_end commit");
	}
	for (int i = 0; i < 4; i++) {
		strcat(want, out[i]);
		strcat(want, "\n");
	}
	is_int(apply(st, ids.v[0], BATCH_SUBMITTING, "pi-0", BATCH_COMPLETED, NULL), 0,
	       "part 0 completed");
	is_int(apply(st, ids.v[1], BATCH_SUBMITTING, "pi-1", BATCH_COMPLETED, NULL), 0,
	       "part 1 completed");

	/* An aborted ingest leaves nothing. */
	is_int(store_ingest_begin(st, ids.v[0], &in), 0, "ingest_begin part 0");
	if (in) {
		is_int(store_ingest_add(in, "q1", out[0], strlen(out[0]), 1), 0, "add q1");
		store_ingest_abort(in);
	}
	in = NULL;
	is_int(store_result_by_name(st, id, "q1.json", &res), -ENOENT, "abort leaves no result");
	is_int(store_part_get(st, ids.v[0], &p), 0, "get");
	is_int(p.results, RESULTS_PENDING, "abort leaves the part pending");
	store_ingest_abort(NULL); /* NULL-safe */

	/* Part 1 first, its lines out of order, with strays. */
	is_int(store_ingest_begin(st, ids.v[1], &in), 0, "ingest_begin part 1");
	if (in) {
		is_int(store_ingest_add(in, "q5", out[3], strlen(out[3]), 1), 0, "add q5");
		is_int(store_ingest_add(in, "q3", out[2], strlen(out[2]), 1), 0, "add q3");
		is_int(store_ingest_add(in, "q1", "{\"stolen\":1}", 12, 1), 0,
		       "q1 (a request of part 0)");
		is_int(store_ingest_add(in, "zz", "{\"zz\":1}", 8, 1), 0, "zz (nobody's)");
		is_int(store_ingest_commit(in, &count, &stray, msg), 0, "commit part 1");
		is_int(count, 2, "count: what is stored");
		is_int(stray, 2, "two strays");
		ok(strstr(msg, "2 result(s)") && strstr(msg, "'q1'"),
		   "stray message counts them and names the first: %s", msg);
	}
	in = NULL;
	is_int(store_part_get(st, ids.v[1], &p), 0, "get part 1");
	is_int(p.results, RESULTS_READY, "part 1 ready");
	ok(strstr(p.error, "2 result(s)") != NULL, "the part's error tells of the strays");
	is_int(store_result_by_name(st, id, "zz.json", &res), -ENOENT, "a stray is not stored");
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.results, RESULTS_PENDING, "directory pending: part 0 unsettled");
	is_int(store_results_jsonl_read(st, id, 0, sizeof(got), got), 0,
	       "no results.jsonl before the directory is ready");
	is_int(store_result_by_name(st, id, "q1.json", &res), -ENOENT,
	       "part 0's request did not come from part 1");

	is_int(store_ingest_begin(st, ids.v[0], &in), 0, "ingest_begin part 0");
	if (in) {
		is_int(store_ingest_add(in, "q2", "partial", 7, 1), 0, "add q2 (a first try)");
		is_int(store_ingest_reset(in), 0, "reset: the download starts over");
		is_int(store_ingest_add(in, "q2", out[1], strlen(out[1]), 1), 0, "add q2");
		is_int(store_ingest_add(in, "q1", out[0], strlen(out[0]), 1), 0, "add q1");
		is_int(store_ingest_commit(in, &count, &stray, msg), 0, "commit part 0");
		is_int(count, 2, "two results");
		is_int(stray, 0, "no stray");
		is_str(msg, "", "no stray message");
	}
	in = NULL;
	is_int(store_batch_get(st, id, &b), 0, "get");
	is_int(b.results, RESULTS_READY, "directory ready once both parts are settled");
	is_int(b.results_count, 4, "4 results");
	is_int(b.results_size, (long long)strlen(want), "results_size = results.jsonl's size");
	memset(got, 0, sizeof(got));
	n = store_results_jsonl_read(st, id, 0, sizeof(got), got);
	is_int(n, (long long)strlen(want), "results.jsonl read whole");
	ok(n >= 0 && (size_t)n == strlen(want) && !memcmp(got, want, (size_t)n),
	   "results.jsonl in request order across parts, byte-exact");
	for (size_t step = 1; step <= 13; step += 3) {
		memset(got, 0, sizeof(got));
		n = read_jsonl(st, id, step, got, sizeof(got));
		ok(n >= 0 && (size_t)n == strlen(want) && !memcmp(got, want, (size_t)n),
		   "results.jsonl read in chunks of %zu", step);
	}
	is_int(store_results_jsonl_read(st, id, (int64_t)strlen(want), 10, got), 0,
	       "a read at the end returns 0");
	/* The same bytes told as spans of the data files, at every offset and size. */
	{
		size_t len = strlen(want);
		bool same = true;

		for (size_t off = 0; off <= len && same; off++) {
			for (size_t k = 1; k <= len + 1 - off && same; k++) {
				memset(got, 0, sizeof(got));
				n = read_spans(st, id, (int64_t)off, k, 16, got);
				same = n == (long)(k < len - off ? k : len - off) &&
				       !memcmp(got, want + off, (size_t)n);
			}
		}
		ok(same, "results.jsonl as spans: every offset and size, byte-exact");
		is_int(read_spans(st, id, (int64_t)len, 10, 16, got), 0, "no span past the end");
		/* Both parts came out of order (q2 before q1, q5 before q3): four spans. */
		is_int(read_spans(st, id, 0, sizeof(got), 3, got), -EXDEV,
		       "more spans than asked for: -EXDEV (copy instead)");
		n = read_spans(st, id, 0, sizeof(got), 4, got);
		ok(n == (long)len && !memcmp(got, want, len), "four spans: the whole file");
	}
	is_int(store_result_by_name(st, id, "q3.json", &res), 0, "q3.json");
	is_int(res.size, (long long)strlen(out[2]) + 1, "its size: line + newline");
	n = store_result_read(st, res.id, 0, sizeof(got), got);
	ok(n == (long)strlen(out[2]) + 1 && !memcmp(got, out[2], strlen(out[2])) &&
		   got[n - 1] == '\n',
	   "q3.json is the provider's line plus a newline");
	n = store_result_read(st, res.id, 3, 4, got);
	ok(n == 4 && !memcmp(got, out[2] + 3, 4), "a slice of q3.json");
	is_int(store_result_by_name(st, id, "q5.json", &res), 0, "q5.json");
	is_int(res.size, (long long)strlen(out[3]) + 1, "q5 holds the replacing line");
	nres = 0;
	is_int(store_result_list(st, id, 0, 100, count_result, &nres), 0, "result_list");
	is_int(nres, 4, "4 result files");
	is_int(store_ingest_begin(st, ids.v[0], &in), 0, "ingest part 0 again");
	if (in) {
		is_int(store_ingest_add(in, "q1", "{}", 2, 1), 0, "add");
		is_int(store_ingest_commit(in, &count, &stray, msg), -ESTALE,
		       "a part already ready is not ingested twice");
	}
	in = NULL;
	is_int(store_result_by_name(st, id, "q1.json", &res), 0, "q1.json");
	is_int(res.size, (long long)strlen(out[0]) + 1, "q1 kept");
}

/*
 * Schema v11: a part whose rows came in request order reads results.jsonl straight from its
 * data file (one span for the whole stretch), a part in order with a stray line between its
 * rows, or out of order, through its rows' map; names are found by the id they escape, a cut
 * one by itself.
 */
static void test_ingest_direct(struct store *st)
{
	static const struct store_part_plan plans[3] = {
		{1, 3, 0, 30, 3, 0},
		{4, 5, 30, 20, 2, 0},
		{6, 7, 50, 20, 2, 0},
	};
	char cut_id[301], cut[ESCAPE_NAME_SIZE + 5], want[4096] = "", got[4096];
	const char *cids[7] = {"d1", "d 2", NULL, "m1", "m2", "o1", "o2"};
	const char *order[3][3] = {{"d1", "d 2", NULL}, {"m1", "m2", NULL}, {"o2", "o1", NULL}};
	struct store_ingest *in = NULL;
	struct store_reqs *rq = NULL;
	struct store_result res;
	struct store_span sp[16];
	size_t total = 0, first;
	struct ids ids;
	int64_t id, count, stray;
	long dup = 0, n;
	char msg[512];

	memset(cut_id, 'x', 300);
	cut_id[300] = '\0';
	cids[2] = order[0][2] = cut_id;
	id = make_parts(st, "direct", plans, 3, &ids);
	ok(id > 0, "batch direct with 3 parts");
	if (!id)
		return;
	is_int(store_reqs_begin(st, id, &rq), 0, "reqs_begin");
	for (int i = 0; i < 7 && rq; i++)
		is_int(store_reqs_add(rq, cids[i], strlen(cids[i]), i + 1, &dup), 0, "request %d",
		       i + 1);
	if (rq)
		is_int(store_reqs_end(rq, true), 0, "reqs_end");
	for (int i = 0; i < 7; i++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "{\"id\":\"%.8s\",%d}\n",
			 cids[i], i);
	for (int k = 0; k < 3; k++) {
		char pid[8];

		snprintf(pid, sizeof(pid), "pd-%d", k);
		is_int(apply(st, ids.v[k], BATCH_SUBMITTING, pid, BATCH_COMPLETED, NULL), 0,
		       "part %d completed", k);
		is_int(store_ingest_begin(st, ids.v[k], &in), 0, "ingest_begin part %d", k);
		for (int j = 0; j < 3 && in && order[k][j]; j++) {
			int i = 0;
			char line[64];

			while (strcmp(cids[i], order[k][j]))
				i++;
			snprintf(line, sizeof(line), "{\"id\":\"%.8s\",%d}", cids[i], i);
			is_int(store_ingest_add(in, cids[i], line, strlen(line), j + 1), 0,
			       "part %d: %.8s", k, cids[i]);
			/* a line of another batch between m1 and m2: in order, not in place */
			if (k == 1 && j == 0)
				is_int(store_ingest_add(in, "nobody", "{}", 2, 2), 0, "a stray");
		}
		if (in)
			is_int(store_ingest_commit(in, &count, &stray, msg), 0, "commit part %d",
			       k);
		in = NULL;
	}
	n = store_results_jsonl_read(st, id, 0, sizeof(got), got);
	ok(n == (long)strlen(want) && !memcmp(got, want, strlen(want)),
	   "results.jsonl of a direct, a mapped and an out-of-order part, byte-exact");
	first = (size_t)(strstr(want, "{\"id\":\"m1") - want);
	n = store_results_jsonl_spans(st, id, 0, sizeof(got), sp, 16, &total);
	is_int(n, 5, "spans: 1 for the part in order, 2 for each of the others");
	ok(n == 5 && sp[0].off == 0 && sp[0].len == first && total == strlen(want),
	   "the first, its whole stretch from its data file's start");
	{
		size_t len = strlen(want);
		bool same = true;

		for (size_t off = 0; off <= len && same; off++) {
			for (size_t k = 1; k <= len + 1 - off && same; k += 7) {
				memset(got, 0, sizeof(got));
				n = read_spans(st, id, (int64_t)off, k, 16, got);
				same = n == (long)(k < len - off ? k : len - off) &&
				       !memcmp(got, want + off, (size_t)n);
				if (same) {
					n = store_results_jsonl_read(st, id, (int64_t)off, k, got);
					same = n == (long)(k < len - off ? k : len - off) &&
					       !memcmp(got, want + off, (size_t)n);
				}
			}
		}
		ok(same, "spans and reads at every offset, byte-exact");
	}
	is_int(store_result_by_name(st, id, "d%202.json", &res), 0, "an escaped name");
	n = store_result_read(st, res.id, 0, sizeof(got), got);
	ok(n > 0 && !memcmp(got, "{\"id\":\"d 2\",1}\n", (size_t)n), "reads its line");
	is_int(store_result_by_name(st, id, "d 2.json", &res), -ENOENT,
	       "a name escape_name() never makes");
	is_int(store_result_by_name(st, id, "d%2.json", &res), -ENOENT, "a broken escape");
	is_int(store_result_by_name(st, id, "d1", &res), -ENOENT, "no .json");
	n = escape_name(cut_id, strlen(cut_id), cut);
	ok(n > 0 && strchr(cut, '~'), "a 300-byte id has a cut name");
	strcat(cut, ".json");
	is_int(store_result_by_name(st, id, cut, &res), 0, "found by its cut name");
	n = store_result_read(st, res.id, 0, sizeof(got), got);
	ok(n > 10 && !memcmp(got, "{\"id\":\"xxxxxxxx\",2}\n", (size_t)n), "its line");
	cut[strlen(cut) - 6] ^= 1; /* another hash */
	is_int(store_result_by_name(st, id, cut, &res), -ENOENT, "another cut name: none");
	is_int(store_result_by_name(st, id, "m2.json", &res), 0, "m2 after the stray");
	is_int(store_result_by_name(st, id, "nobody.json", &res), -ENOENT, "the stray is not");
}

/*
 * The ingest finds requests a window at a time in file order (req_find): past the window's
 * end, past a result that never came, and out of order, every result still finds its own.
 */
static void test_ingest_window(struct store *st)
{
	enum {
		N = 2500,
		GONE = 1500,
		SWAP = 2000
	};
	static const struct store_part_plan plan = {1, N, 0, N * 10, N, 0};
	struct store_ingest *in = NULL;
	struct store_reqs *rq = NULL;
	struct store_result res;
	struct ids ids;
	int64_t id, count = 0, stray = -1;
	char cid[16], line[32], msg[512], *want, *got;
	size_t wlen = 0;
	long dup = 0, n;
	bool added = true;

	want = calloc(N, 32);
	got = calloc(N, 32);
	id = make_parts(st, "window", &plan, 1, &ids);
	ok(id > 0 && want && got, "batch window");
	if (!id || !want || !got)
		goto out;
	is_int(store_reqs_begin(st, id, &rq), 0, "reqs_begin");
	for (int i = 0; i < N && rq; i++) {
		snprintf(cid, sizeof(cid), "w%d", i);
		if (store_reqs_add(rq, cid, strlen(cid), i + 1, &dup))
			added = false;
	}
	ok(added, "%d requests", N);
	if (rq)
		is_int(store_reqs_end(rq, true), 0, "reqs_end");
	is_int(apply(st, ids.v[0], BATCH_SUBMITTING, "pw-0", BATCH_COMPLETED, NULL), 0,
	       "completed");
	is_int(store_ingest_begin(st, ids.v[0], &in), 0, "ingest_begin");
	for (int j = 0; j < N && in; j++) {
		int i = j == SWAP ? SWAP + 1 : j == SWAP + 1 ? SWAP : j;

		if (i == GONE)
			continue;
		snprintf(cid, sizeof(cid), "w%d", i);
		snprintf(line, sizeof(line), "{\"w\":%d}", i);
		if (store_ingest_add(in, cid, line, strlen(line), j + 1))
			added = false;
	}
	ok(added, "results in order but for one missing and one pair swapped");
	if (in)
		is_int(store_ingest_commit(in, &count, &stray, msg), 0, "commit");
	is_int(count, N - 1, "every result stored");
	is_int(stray, 0, "none taken for a stray");
	for (int i = 0; i < N; i++)
		if (i != GONE)
			wlen += (size_t)sprintf(want + wlen, "{\"w\":%d}\n", i);
	n = store_results_jsonl_read(st, id, 0, (size_t)N * 32, got);
	ok(n == (long)wlen && !memcmp(got, want, wlen), "results.jsonl in request order");
	is_int(store_result_by_name(st, id, "w2400.json", &res), 0, "a result past the windows");
	is_int(store_result_by_name(st, id, "w1500.json", &res), -ENOENT, "the missing one");
out:
	free(want);
	free(got);
}

/* Bad and repeated result lines: the others are kept, the part is incomplete, each named. */
static void test_ingest_bad(struct store *st)
{
	struct provider_batch pb;
	struct store_ingest *in = NULL;
	struct store_result res;
	struct store_batch b;
	struct store_part p;
	char msg[STORE_INGEST_MSG] = "", why[32];
	int64_t fid = 0, fpart = 0, count = 0, stray = 0;

	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "pb-bad");
	pb.state = BATCH_COMPLETED;
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &fid, &fpart), 0,
	       "a foreign one");
	is_int(store_ingest_begin(st, fpart, &in), 0, "ingest_begin");
	if (in) {
		is_int(store_ingest_add(in, "a", "{\"a\":1}", 7, 1), 0, "a, line 1");
		is_int(store_ingest_add(in, "a", "{\"a\":2}", 7, 2), 0, "a again, line 2");
		store_ingest_bad(in, 3, "not strict JSON");
		is_int(store_ingest_add(in, "b", "{\"b\":1}", 7, 4), 0, "b, line 4");
		for (int i = 0; i < 40; i++) {
			snprintf(why, sizeof(why), "bad %d", i);
			store_ingest_bad(in, 5 + i, why);
		}
		is_int(store_ingest_bad_count(in), 41, "41 bad lines noted");
		is_int(store_ingest_commit(in, &count, &stray, msg), 0, "commit");
		is_int(count, 2, "a and b kept");
		is_int(stray, 42, "42 lines lost: one repeated, 41 bad");
		ok(strstr(msg,
			  "42 result lines could not be kept: line 2: custom_id 'a' repeats an "
			  "earlier line; line 3: not strict JSON; line 5: bad 0") == msg,
		   "named in line order, both lists merged: %s", msg);
		ok(strstr(msg, "more") && strlen(msg) < STORE_INGEST_MSG, "bounded, with a count");
	}
	is_int(store_part_get(st, fpart, &p), 0, "get part");
	is_int(p.results, RESULTS_INCOMPLETE, "the part is incomplete, not ready");
	is_int(store_batch_get(st, fid, &b), 0, "get batch");
	is_int(b.results, RESULTS_INCOMPLETE, "and so is its directory");
	ok(results_are_in(b.results), "whose results show");
	is_int(store_result_by_name(st, fid, "a.json", &res), 0, "a.json");
	is_int(res.size, 8, "holds the first line of a");
}

/* Reads all of text/<name> in reads of step bytes; compares with want + "\n". */
static void text_check(struct store *st, int64_t batch_id, const char *name, const char *want,
		       size_t wlen, size_t step, const char *what)
{
	struct store_result r;
	char *got = malloc(wlen + 2);
	size_t n = 0;
	long k = 1;

	is_int(store_text_by_name(st, batch_id, name, &r), 0, "%s: found", what);
	is_int(r.size, (int64_t)wlen + 1, "%s: size is the text's + 1", what);
	while (got && k > 0 && n < wlen + 2) {
		k = store_text_read(st, r.id, (int64_t)n, step < wlen + 2 - n ? step : wlen + 2 - n,
				    got + n);
		n += k > 0 ? (size_t)k : 0;
	}
	ok(got && n == wlen + 1 && !memcmp(got, want, wlen) && got[wlen] == '\n',
	   "%s: read in steps of %zu (%zu bytes)", what, step, n);
	free(got);
}

/* Texts kept in their line (plain, escaped, past a read chunk) or in the row (two blocks, a
 * \u0000), read back in any steps and at any offset. */
static void test_ingest_text(struct store *st)
{
	static const char plain[] = "{\"custom_id\":\"p\",\"result\":{\"type\":\"succeeded\","
				    "\"message\":{\"content\":[{\"type\":\"text\",\"text\":"
				    "\"hello\"}]}}}";
	static const char two[] = "{\"custom_id\":\"t\",\"result\":{\"type\":\"succeeded\","
				  "\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"one \"},"
				  "{\"type\":\"text\",\"text\":\"two\"}]}}}";
	static const char nul[] = "{\"custom_id\":\"z\",\"result\":{\"type\":\"succeeded\","
				  "\"message\":{\"content\":[{\"type\":\"text\",\"text\":"
				  "\"ab\\u0000cd\"}]}}}";
	static const char unit[] = "x\\n\\\"\\\\\\u00e9\\ud83d\\ude00/";
	static const char unit_dec[] = "x\n\"\\\xc3\xa9\xf0\x9f\x98\x80/";
	const size_t reps = 9000; /* escaped: over 200 KB, several read chunks */
	struct provider_batch pb;
	struct store_ingest *in = NULL;
	char msg[STORE_INGEST_MSG] = "";
	int64_t fid = 0, fpart = 0, count = 0, stray = 0;
	size_t ul = strlen(unit), dl = strlen(unit_dec), ll = 0;
	char *esc = malloc(reps * ul + 256), *dec = malloc(reps * dl + 1);
	struct store_result r;
	char buf[64];
	bool bad = false;

	if (!esc || !dec) {
		free(esc);
		free(dec);
		return;
	}
	ll = (size_t)sprintf(esc, "{\"custom_id\":\"e\",\"result\":{\"type\":\"succeeded\","
				  "\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"");
	for (size_t i = 0; i < reps; i++) {
		memcpy(esc + ll + i * ul, unit, ul);
		memcpy(dec + i * dl, unit_dec, dl);
	}
	ll += reps * ul;
	ll += (size_t)sprintf(esc + ll, "\"}]}}}");
	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "pb-text");
	pb.state = BATCH_COMPLETED;
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &fid, &fpart), 0,
	       "a foreign batch for texts");
	is_int(store_ingest_begin(st, fpart, &in), 0, "ingest_begin");
	if (in) {
		store_ingest_set_parse(in, result_parse_anthropic);
		is_int(store_ingest_add(in, "p", plain, sizeof(plain) - 1, 1), 0, "plain text");
		is_int(store_ingest_add(in, "e", esc, ll, 2), 0, "escaped text");
		is_int(store_ingest_add(in, "t", two, sizeof(two) - 1, 3), 0, "two blocks");
		is_int(store_ingest_add(in, "z", nul, sizeof(nul) - 1, 4), 0, "a \\u0000");
		is_int(store_ingest_commit(in, &count, &stray, msg), 0, "commit");
		is_int(count, 4, "four results");
	}
	text_check(st, fid, "p.txt", "hello", 5, 4096, "plain");
	text_check(st, fid, "p.txt", "hello", 5, 1, "plain");
	text_check(st, fid, "t.txt", "one two", 7, 3, "two blocks (in the row)");
	text_check(st, fid, "z.txt", "ab", 2, 4096, "cut at \\u0000 as before");
	text_check(st, fid, "e.txt", dec, reps * dl, 131072, "escaped");
	text_check(st, fid, "e.txt", dec, reps * dl, 4093, "escaped");
	text_check(st, fid, "e.txt", dec, reps * dl, 1, "escaped");
	is_int(store_text_by_name(st, fid, "e.txt", &r), 0, "escaped again");
	for (size_t off = reps * dl + 1; off-- > 0 && !bad; off = off > 77777 ? off - 77776 : 0) {
		size_t want = reps * dl - off < 40 ? reps * dl - off : 40;
		long k = store_text_read(st, r.id, (int64_t)off, 40, buf);

		bad = k != (long)(want + (want < 40)) || memcmp(buf, dec + off, want);
	}
	ok(!bad, "escaped: read at offsets going backwards");
	is_int(store_text_read(st, r.id, 18, 40, buf), 40, "an offset inside an emoji's bytes");
	ok(!memcmp(buf, dec + 18, 40), "reads the right bytes");
	free(esc);
	free(dec);
}

/* One succeeded Anthropic result line of model m with the given usage. */
static size_t usage_line(char *out, size_t size, const char *id, const char *m, int in, int out_t)
{
	return (size_t)snprintf(out, size,
				"{\"custom_id\":\"%s\",\"result\":{\"type\":\"succeeded\","
				"\"message\":{\"model\":\"%s\",\"content\":[{\"type\":\"text\","
				"\"text\":\"x\"}],\"usage\":{\"input_tokens\":%d,"
				"\"output_tokens\":%d}}}}",
				id, m, in, out_t);
}

/*
 * The usage sums the indexer adds up (a few models) and the ones the commit sums in SQL (more
 * models than it keeps) say the same: repeated custom_ids, errored results and the rows of a
 * download that started over count for nothing.
 */
static void test_ingest_usage(struct store *st, int models, const char *tag)
{
	static const char err_line[] = "{\"custom_id\":\"e\",\"result\":{\"type\":\"errored\","
				       "\"error\":{\"type\":\"error\",\"error\":{\"type\":"
				       "\"invalid_request_error\",\"message\":\"no\"}}}}";
	struct provider_batch pb;
	struct store_ingest *in = NULL;
	struct bfs_usage u[16];
	int64_t fid = 0, fpart = 0, count = 0, stray = 0;
	char line[512], id[32], m[32], msg[STORE_INGEST_MSG] = "";
	size_t n = 0, len;
	bool known = false, same = true;

	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "pb-usage-%s", tag);
	pb.state = BATCH_COMPLETED;
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &fid, &fpart), 0,
	       "a foreign batch for usage");
	is_int(store_ingest_begin(st, fpart, &in), 0, "ingest_begin");
	if (!in)
		return;
	store_ingest_set_parse(in, result_parse_anthropic);
	/* A first download that is abandoned (more lines than a chunk: some are indexed before it
	 * is): none of it counts. */
	for (int i = 0; i < 5000 && same; i++) {
		snprintf(id, sizeof(id), "gone%d", i);
		len = usage_line(line, sizeof(line), id, "m-gone", 1000, 1000);
		same = !store_ingest_add(in, id, line, len, i + 1);
	}
	ok(same, "the lines of a first download");
	is_int(store_ingest_reset(in), 0, "the download starts over");
	for (int i = 0; i < 3 * models; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		snprintf(m, sizeof(m), "m%02d", i % models);
		len = usage_line(line, sizeof(line), id, m, i + 1, 2 * i + 1);
		is_int(store_ingest_add(in, id, line, len, i + 1), 0, "a result");
	}
	len = usage_line(line, sizeof(line), "r0", "m00", 5000, 5000);
	is_int(store_ingest_add(in, "r0", line, len, 3 * models + 1), 0, "r0 again");
	is_int(store_ingest_add(in, "e", err_line, sizeof(err_line) - 1, 3 * models + 2), 0,
	       "an errored result");
	is_int(store_ingest_commit(in, &count, &stray, msg), 0, "commit");
	is_int(count, 3 * models + 1, "every custom_id once");
	is_int(store_usage_get(st, fid, u, 16, &n, &known), 0, "usage_get");
	ok(known, "usage known");
	is_int((long)n, models, "one sum per model");
	for (size_t k = 0; k < n && same; k++) {
		int j = atoi(u[k].model + 1), in_t = 0, out_t = 0;

		for (int i = j; i < 3 * models; i += models) {
			in_t += i + 1;
			out_t += 2 * i + 1;
		}
		same = u[k].results == 3 && u[k].input_tokens == (uint64_t)in_t &&
		       u[k].output_tokens == (uint64_t)out_t;
	}
	ok(same, "the sums of each model");
}

static void test_resume(struct store *st)
{
	static const struct store_part_plan plan = {1, 1, 0, 10, 1, 0};
	struct store_file f;
	struct store_batch b;
	struct store_part p;
	struct ids ids;
	int64_t claimed = 0, fid = 0, id;

	is_int(store_batch_create(st, REMOTE, "crashed", 1, &claimed), 0, "a batch");
	is_int(store_file_create(st, claimed, "requests.jsonl", 0444, 1, &fid), 0,
	       "its requests.jsonl");
	is_int(store_batch_claim(st, claimed), 0, "claimed, never split (a crash)");
	id = make_parts(st, "running", &plan, 1, &ids);
	ok(id > 0, "a running batch");
	if (!id)
		return;
	is_int(apply(st, ids.v[0], BATCH_SUBMITTING, "pr-0", BATCH_IN_PROGRESS, NULL), 0,
	       "in_progress");
	is_int(store_parts_resume(st, "interrupted"), 0, "parts_resume");
	is_int(store_batch_get(st, claimed, &b), 0, "get");
	is_int(b.state, BATCH_FAILED, "a claimed batch with no parts is failed");
	is_str(b.error, "interrupted", "with the message");
	is_int(store_file_by_name(st, claimed, "requests.jsonl", &f), 0, "requests.jsonl");
	is_int(f.mode, 0644, "writable again");
	is_int(store_part_get(st, ids.v[0], &p), 0, "get");
	is_int(p.next_poll_at, 1, "an unfinished part is due now");
}

/* rmdir of an ended batch: forgotten here, a tombstone keeps it from coming back. */
static void test_forget(struct store *st)
{
	struct bfs_err err = BFS_ERR_INIT;
	struct provider_batch pb;
	struct store_batch b;
	struct store_part p;
	int64_t id, part;

	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "pb-forget");
	pb.state = BATCH_IN_PROGRESS;
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &id, &part), 0,
	       "a foreign batch, running");
	is_int(store_batch_forget(st, id, 5, &err), -EBUSY, "a running batch is not forgotten");
	ok(strstr(err.msg, "in_progress") != NULL, "and the reason says so: %s", err.msg);
	is_int(store_batch_get(st, id, &b), 0, "it is still there");
	is_int(store_part_by_pid(st, REMOTE, "pb-forget", &p), 0, "part_by_pid");
	is_int(p.id, part, "finds its part");
	is_int(apply(st, part, BATCH_IN_PROGRESS, "pb-forget", BATCH_COMPLETED, NULL), 0,
	       "it ends");
	err_clear(&err);
	is_int(store_batch_forget(st, id, 5, &err), 0, "an ended batch is forgotten: %s", err.msg);
	is_int(store_batch_get(st, id, &b), -ENOENT, "its row is gone");
	is_int(store_part_get(st, part, &p), -ENOENT, "and its part");
	ok(store_pid_is_owned(st, REMOTE, "pb-forget"), "its pid is never a candidate again");
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &id, &part), -EEXIST,
	       "discovery cannot add it back");
	ok(!store_pid_is_owned(st, "r2", "pb-forget"), "the tombstone is per remote");
	is_int(store_batch_create(st, REMOTE, "local-draft", 1, &id), 0, "a draft");
	is_int(store_batch_forget(st, id, 5, &err), -EBUSY,
	       "a draft is not forgotten (rmdir "
	       "deletes it)");
}

/*
 * A foreign batch looked at while the poller applies the provider's view it read before the
 * look: the view's "not wanted, nothing due" must not undo the look (its results would never
 * be fetched, the flake of test_86's batch made elsewhere).
 */
static void test_want_race(struct store *st)
{
	struct provider_batch pb;
	struct store_batch b;
	struct store_part p;
	int64_t id, part;

	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "pb-wanted");
	pb.state = BATCH_IN_PROGRESS;
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &id, &part), 0,
	       "a foreign batch, running");
	is_int(store_part_get(st, part, &p), 0, "its part, as the poller read it");
	is_int(store_batch_want_results(st, id), 0, "then someone looks inside");
	p.state = BATCH_COMPLETED;
	p.results = RESULTS_PENDING;
	p.next_poll_at = 0; /* what the poller decides from its stale "not wanted" */
	p.ended_at = 2;
	is_int(store_part_apply(st, &p, BATCH_IN_PROGRESS), 0, "the poller applies its view");
	is_int(store_part_get(st, part, &p), 0, "get");
	ok(p.next_poll_at > 0, "its results are due all the same (next_poll_at %" PRId64 ")",
	   p.next_poll_at);
	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "pb-unwanted");
	pb.state = BATCH_IN_PROGRESS;
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &id, &part), 0,
	       "another foreign batch, never looked at");
	is_int(store_part_get(st, part, &p), 0, "its part");
	p.state = BATCH_COMPLETED;
	p.next_poll_at = 0;
	is_int(store_part_apply(st, &p, BATCH_IN_PROGRESS), 0, "ends");
	is_int(store_part_get(st, part, &p), 0, "get");
	is_int(p.next_poll_at, 0, "nothing fetched for a batch nobody looked at");

	/* Listed with its results archived: a look before the poller applies the listing
	 * fetches nothing (it used to: one GET of results answered 404). */
	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "pb-archived");
	pb.state = BATCH_COMPLETED;
	pb.results_gone = true;
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &id, &part), 0,
	       "a foreign batch, ended, its results archived");
	is_int(store_batch_want_results(st, id), 0, "someone looks inside at once");
	is_int(store_part_get(st, part, &p), 0, "its part");
	is_int(p.results, RESULTS_UNAVAILABLE, "its results are unavailable from the start");
	is_int(p.next_poll_at, 0, "and not due");

	/* Listed running: its counts show before the poller applies the listing. */
	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "pb-counted");
	snprintf(pb.provider_state, sizeof(pb.provider_state), "in_progress");
	pb.state = BATCH_IN_PROGRESS;
	pb.counts.total = 7;
	pb.counts.processing = 5;
	pb.counts.succeeded = 2;
	is_int(store_batch_add_foreign(st, REMOTE, &pb, false, 1, &id, &part), 0,
	       "a foreign batch, running, 7 requests");
	is_int(store_part_get(st, part, &p), 0, "its part");
	is_int(p.counts.total, 7, "its total from the start");
	is_int(p.counts.succeeded, 2, "its succeeded");
	is_int(p.counts.processing, 5, "its processing");
	ok(!strcmp(p.provider_state, "in_progress"), "its provider state");
	is_int(store_batch_get(st, id, &b), 0, "the batch");
	is_int(b.counts.total, 7, "the batch's total, summed from its part");
}

/* Resubmit (issue 13): parts that failed before running go back to "not sent". */
static void test_resubmit(struct store *st)
{
	static const struct store_part_plan plans[2] = {
		{1, 1, 0, 10, 1, 0},
		{2, 2, 10, 10, 1, 0},
	};
	struct batch_counts ran = {.total = 1, .succeeded = 1};
	struct store_batch b;
	struct store_part p;
	struct ids ids;
	int64_t id;

	id = make_parts(st, "resubmit", plans, 2, &ids);
	ok(id > 0, "a batch of 2 parts");
	if (!id)
		return;
	is_int(store_batch_resubmit(st, id), -ENOENT, "nothing failed: nothing to resubmit");
	is_int(apply(st, ids.v[0], BATCH_SUBMITTING, "rs-1", BATCH_COMPLETED, &ran), 0,
	       "part 1 ran");
	is_int(apply(st, ids.v[1], BATCH_SUBMITTING, "rs-2", BATCH_FAILED, NULL), 0,
	       "part 2 failed before running");
	is_int(store_batch_get(st, id, &b), 0, "get");
	ok(!store_batch_unrun_failure(&b), "a part ran: not rewritable");
	is_int(store_batch_resubmit(st, id), 0, "resubmit");
	is_int(store_part_get(st, ids.v[1], &p), 0, "part 2");
	ok(p.state == BATCH_SUBMITTING && !p.pid[0] && !p.identity[0] && p.resubmits == 1,
	   "part 2 is not sent again, counted");
	ok(store_pid_is_owned(st, REMOTE, "rs-2"), "its old batch is a tombstone");
	is_int(store_part_get(st, ids.v[0], &p), 0, "part 1");
	ok(p.state == BATCH_COMPLETED && !strcmp(p.pid, "rs-1") && !p.resubmits,
	   "part 1 untouched");
	is_int(store_batch_resubmit(st, id), -ENOENT, "resubmitting again: nothing failed");

	id = make_parts(st, "rewrite", plans, 1, &ids);
	ok(id > 0, "a batch of 1 part");
	if (!id)
		return;
	is_int(apply(st, ids.v[0], BATCH_SUBMITTING, "rw-1", BATCH_FAILED, NULL), 0,
	       "it failed before running");
	is_int(store_batch_get(st, id, &b), 0, "get");
	ok(store_batch_unrun_failure(&b), "rewritable");
	is_int(store_batch_claim(st, id), 0, "a new requests.jsonl claims it");
	ok(store_pid_is_owned(st, REMOTE, "rw-1"), "the failed batch is a tombstone");
	is_int(store_batch_get(st, id, &b), 0, "get");
	ok(b.state == BATCH_SUBMITTING && !b.nparts && !b.pid[0], "claimed, its parts gone");
}

struct noter {
	struct store *st;
	int64_t id;
	int rc;
};

static void *note_main(void *arg)
{
	struct noter *n = arg;

	n->rc = store_batch_note(n->st, n->id, "from another thread");
	return NULL;
}

static bool marks_equal(const struct store_mark *a, const struct store_mark *b)
{
	return a->version == b->version && a->changes == b->changes;
}

/*
 * The mark the status memo is keyed by moves with every commit, this thread's or another's;
 * a batch row read again (which a connection remembers while no commit happened) is new.
 */
static void test_mark(struct store *st)
{
	struct store_mark m0, m1, m2, m3;
	struct noter n = {.st = st};
	struct store_batch b;
	pthread_t t;

	is_int(store_batch_create(st, REMOTE, "marked", timefmt_now_ms(), &n.id), 0, "create");
	is_int(store_batch_get(st, n.id, &b), 0, "read the row");
	is_int(store_batch_get(st, n.id, &b), 0, "and again (remembered)");
	is_str(b.error, "", "no note yet");
	is_int(store_mark_get(st, &m0), 0, "mark");
	is_int(store_mark_get(st, &m1), 0, "mark again");
	ok(marks_equal(&m0, &m1), "no commit: the same mark");
	is_int(store_batch_note(st, n.id, "from this thread"), 0, "a change on this thread");
	is_int(store_mark_get(st, &m2), 0, "mark after it");
	ok(!marks_equal(&m1, &m2), "this thread's commit moves the mark");
	is_int(store_batch_get(st, n.id, &b), 0, "read the row");
	is_str(b.error, "from this thread", "this thread's change is in it");
	ok(!pthread_create(&t, NULL, note_main, &n) && !pthread_join(t, NULL) && !n.rc,
	   "a change on another thread");
	is_int(store_mark_get(st, &m3), 0, "mark after it");
	ok(!marks_equal(&m2, &m3), "another connection's commit moves the mark");
	is_int(store_batch_get(st, n.id, &b), 0, "read the row");
	is_str(b.error, "from another thread", "another connection's change is in it");
}

int main(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	struct store *st = NULL;
	const char *tmp = getenv("TMPDIR");

	log_init(NULL, true, LOG_CRIT, NULL);
	snprintf(tmpdir, sizeof(tmpdir), "%s/bfs-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(tmpdir)) {
		printf("Bail out! mkdtemp: %s\n", strerror(errno));
		return 1;
	}
	test_open();
	is_int(store_open(&st, tmpdir, &err), 0, "open the test cache");
	if (st) {
		test_batches(st);
		test_parts_owner(st);
		test_aggregate(st);
		test_ingest(st);
		test_ingest_direct(st);
		test_ingest_window(st);
		test_ingest_bad(st);
		test_ingest_text(st);
		test_ingest_usage(st, 3, "few");
		test_ingest_usage(st, 12, "many");
		test_resume(st);
		test_forget(st);
		test_want_race(st);
		test_resubmit(st);
		test_mark(st);
		store_free(st);
	}
	rm_tree(tmpdir);
	return tap_done();
}
