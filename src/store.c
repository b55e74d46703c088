// SPDX-License-Identifier: MIT
/*
 * The SQLite cache. Owns the schema and its migrations, one connection per thread (SQLite
 * connections must not be shared), and a cache of prepared statements per connection. Every
 * SQLITE_* code becomes a -errno in store_errno() and nowhere else. Must never call a
 * provider or know about FUSE.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "escape.h"
#include "jsonview.h"
#include "log.h"
#include "store.h"
#include "timefmt.h"

#define STORE_SCHEMA_VERSION 11
#define STORE_STMT_MAX	     128
#define STORE_DATA_FDS	     4
#define STORE_CKPT_PAGES     1000 /* SQLite's default wal_autocheckpoint */

/*
 * The results rows of part ?1, found through its batch's (results_list): no index by part
 * holds them all (results_part_map only the mapped ones, schema v11).
 */
#define PART_ROWS "batch_id = (SELECT batch_id FROM parts WHERE id = ?1) AND part_id = ?1"

struct store_conn {
	sqlite3 *db;
	struct store *st;
	struct {
		const char *sql; /* the static string it was made from: compared by address */
		sqlite3_stmt *stmt;
	} stmts[STORE_STMT_MAX];
	int nstmts;
	/*
	 * Parts' results data files kept open for reads (fd -1: free), least recently used
	 * replaced: a read spans several parts at their boundaries, and a spliced reply needs
	 * each of its descriptors open until the reply is sent (store_results_jsonl_spans).
	 */
	struct {
		int fd;
		int64_t part;
		uint64_t used;
	} rf[STORE_DATA_FDS];
	uint64_t rf_clock;
	int ckpt_pages;	   /* this connection's checkpoint threshold (its WAL hook runs them) */
	int64_t busy_from; /* when its current wait for a lock began (conn_busy) */
	/* Batch rows this connection read last, each valid while st->gen is the one it was read
	 * at: a reader's lookup, stat and open of a file then query the batch once. */
	struct {
		int64_t id;
		uint64_t gen;
		struct store_batch row;
	} rows[4];
	unsigned rows_next;
	/* Where this thread's last read of an escaped text in its line stopped: result id, and
	 * offsets in its escaped and decoded bytes (a sequential read decodes each byte once). */
	int64_t tcur_id, tcur_enc, tcur_dec;
	struct store_conn *next; /* in st->conns, protected by st->lock */
};

/*
 * Where a result's bytes are (its part's data file, offset, line length), by row id, as a
 * listing or a lookup by name found them: the open and read that follow need no query, where
 * the row itself would be a page of its own to read from disk when cold. Direct-mapped, a
 * fixed size; rows of ready parts only, which never change (and row ids are never reused).
 */
#define STORE_LOC_SLOTS 65536

struct store_loc {
	int64_t id, part_id, doff, len;
};

struct store {
	char path[PATH_MAX];
	char rdir[PATH_MAX];	/* results/: one write-once file per part */
	char reserve[PATH_MAX]; /* room kept back for the status writes of a full disk */
	pthread_key_t key;
	pthread_mutex_t lock; /* protects conns */
	struct store_conn *conns;
	pthread_mutex_t loc_lock;
	struct store_loc *loc; /* STORE_LOC_SLOTS, or NULL: every read queries */
	/*
	 * The commit generation: counted up by every connection's WAL hook, which SQLite runs
	 * after each commit has taken place (https://sqlite.org/c3ref/wal_hook.html). One
	 * daemon per cache (the flock of main.c), so no commit escapes it: what was read at
	 * generation g is still what the cache holds while gen == g. gen_off: some connection
	 * is not in WAL mode (no hook runs), so nothing is trusted to it.
	 */
	_Atomic uint64_t gen;
	atomic_bool gen_off;
	/*
	 * When a connection last waited for the write lock (conn_busy, monotonic us): the bulk
	 * writers (the request list as requests.jsonl is checked, an ingest's indexer) give way
	 * to it before their next transaction (bulk_yield).
	 */
	_Atomic int64_t busy_us;
};

struct store_reqs {
	struct store *st;
	struct store_conn *c; /* the connection of the open transaction, NULL: none */
	int64_t batch_id;
	int64_t seq;
	int64_t pending; /* rows in the open transaction */
	int rc;		 /* a failure that lost rows: every later call fails */
};

/* Rows of a request list per transaction: short enough for others to get the store. */
#define STORE_REQS_CHUNK 4096

static int store_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_NOTFOUND:
		return -ENOENT;
	case SQLITE_TOOBIG:
		return -EFBIG;
	default:
		return -EIO;
	}
}

static void conn_close(struct store_conn *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->nstmts; i++)
		sqlite3_finalize(c->stmts[i].stmt);
	sqlite3_close(c->db);
	for (int i = 0; i < STORE_DATA_FDS; i++)
		if (c->rf[i].fd >= 0)
			close(c->rf[i].fd);
	free(c);
}

/* Thread exit: the FUSE worker pool and pollers come and go, their connections with them. */
static void conn_destructor(void *p)
{
	struct store_conn *c = p;
	struct store *st = c->st;

	pthread_mutex_lock(&st->lock);
	for (struct store_conn **pp = &st->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&st->lock);
	conn_close(c);
}

static int conn_exec(struct store_conn *c, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		sqlite3_stmt *busy = NULL;

		log_err("cache: '%.60s' failed: %s (%d)", sql, msg ? msg : sqlite3_errstr(rc),
			sqlite3_extended_errcode(c->db));
		sqlite3_free(msg);
		/* A statement left stepping keeps a read snapshot open, which no busy wait can
		 * upgrade to a write once another connection has committed: name it. */
		while ((busy = sqlite3_next_stmt(c->db, busy)))
			if (sqlite3_stmt_busy(busy))
				log_err("cache: statement still active: %.200s", sqlite3_sql(busy));
	}
	return store_errno(rc);
}

/* ROLLBACK, if a transaction is still open: SQLite ends one itself on a full disk. */
static void conn_rollback(struct store_conn *c)
{
	if (!sqlite3_get_autocommit(c->db))
		(void)conn_exec(c, "ROLLBACK"); /* the caller reports the error that led here */
}

/*
 * After each commit on c: the generation moves on, and the WAL is checkpointed past this
 * connection's threshold, as SQLite's own hook does for PRAGMA wal_autocheckpoint (which
 * this hook replaces: a PRAGMA wal_autocheckpoint would put SQLite's back).
 */
static int conn_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct store_conn *c = arg;

	atomic_fetch_add_explicit(&c->st->gen, 1, memory_order_release);
	if (c->ckpt_pages > 0 && pages >= c->ckpt_pages)
		(void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	return SQLITE_OK;
}

static int64_t mono_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

#define STORE_BUSY_TIMEOUT_US (30 * 1000000) /* then SQLITE_BUSY: -EBUSY */
#define STORE_BUSY_POLL_US    250

/*
 * Waiting for a lock another connection holds: SQLite's own busy_timeout sleeps up to 100 ms
 * between tries, and a bulk writer that commits and begins again at once would win nearly
 * every time (a close() waited 0.19 s for its claim behind the request list of the file it
 * closed). This one tries every STORE_BUSY_POLL_US and says it waits (busy_us).
 */
static int conn_busy(void *arg, int n)
{
	struct store_conn *c = arg;
	int64_t now = mono_us();

	if (n == 0)
		c->busy_from = now;
	if (now - c->busy_from > STORE_BUSY_TIMEOUT_US)
		return 0;
	atomic_store_explicit(&c->st->busy_us, now, memory_order_relaxed);
	usleep(STORE_BUSY_POLL_US);
	return 1;
}

/*
 * Before a bulk writer's next transaction: while another connection waits for the write lock
 * (it said so within the last few polls), let it have it first, for up to 50 ms.
 */
static void bulk_yield(struct store *st)
{
	for (int i = 0; i < 200; i++) {
		int64_t at = atomic_load_explicit(&st->busy_us, memory_order_relaxed);

		if (!at || mono_us() - at > 4 * STORE_BUSY_POLL_US)
			return;
		usleep(STORE_BUSY_POLL_US);
	}
}

static bool conn_is_wal(struct store_conn *c)
{
	sqlite3_stmt *s = NULL;
	bool wal = false;

	if (sqlite3_prepare_v2(c->db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		wal = !sqlite3_stricmp((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	return wal;
}

static int conn_open(struct store *st, struct store_conn **out)
{
	struct store_conn *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	c->st = st;
	for (int i = 0; i < STORE_DATA_FDS; i++)
		c->rf[i].fd = -1;
	rc = sqlite3_open_v2(st->path, &c->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc != SQLITE_OK) {
		log_err("cannot open cache '%s': %s", st->path, sqlite3_errstr(rc));
		rc = store_errno(rc);
		conn_close(c);
		return rc ? rc : -EIO;
	}
	sqlite3_busy_handler(c->db, conn_busy, c);
	rc = conn_exec(c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
			  "PRAGMA foreign_keys=OFF; PRAGMA temp_store=FILE");
	if (rc) {
		conn_close(c);
		return rc;
	}
	c->ckpt_pages = STORE_CKPT_PAGES;
	sqlite3_wal_hook(c->db, conn_wal_hook, c); /* replaces SQLite's autocheckpoint hook */
	if (!conn_is_wal(c))
		atomic_store(&st->gen_off, true);
	*out = c;
	return 0;
}

/* The calling thread's connection, made on first use. NULL when it cannot be opened. */
static struct store_conn *conn_get(struct store *st)
{
	struct store_conn *c = pthread_getspecific(st->key);

	if (c)
		return c;
	if (conn_open(st, &c))
		return NULL;
	pthread_setspecific(st->key, c);
	pthread_mutex_lock(&st->lock);
	c->next = st->conns;
	st->conns = c;
	pthread_mutex_unlock(&st->lock);
	return c;
}

/* The generation a read may be remembered under; 0: not now (off, or inside a transaction,
 * whose reads may be its own uncommitted writes). */
static uint64_t conn_gen(struct store_conn *c)
{
	if (atomic_load_explicit(&c->st->gen_off, memory_order_relaxed) ||
	    !sqlite3_get_autocommit(c->db))
		return 0;
	return atomic_load_explicit(&c->st->gen, memory_order_acquire);
}

/* A reset prepared statement for sql (a string literal: cached by its address). */
static sqlite3_stmt *conn_stmt(struct store_conn *c, const char *sql)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	for (int i = 0; i < c->nstmts; i++) {
		if (c->stmts[i].sql == sql) {
			sqlite3_reset(c->stmts[i].stmt);
			sqlite3_clear_bindings(c->stmts[i].stmt);
			return c->stmts[i].stmt;
		}
	}
	rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
	if (rc != SQLITE_OK) {
		log_err("cache: cannot prepare '%.60s': %s", sql, sqlite3_errmsg(c->db));
		return NULL;
	}
	if (c->nstmts < STORE_STMT_MAX) {
		c->stmts[c->nstmts].sql = sql;
		c->stmts[c->nstmts].stmt = stmt;
		c->nstmts++;
	}
	/* A full cache is a bug (STORE_STMT_MAX too small); the statement still works once. */
	return stmt;
}

/* Ends a statement that was not cached (see conn_stmt) or resets a cached one. */
static void stmt_done(struct store_conn *c, sqlite3_stmt *stmt)
{
	for (int i = 0; i < c->nstmts; i++) {
		if (c->stmts[i].stmt == stmt) {
			sqlite3_reset(stmt);
			return;
		}
	}
	sqlite3_finalize(stmt);
}

static const char *const schema_v1 =
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
	"CREATE INDEX results_off ON results (batch_id, off);";

/*
 * v2: a batch directory owns parts (one provider batch each). A provider id belongs to one
 * part at most (the partial unique index), so no two directories can adopt the same batch.
 * The v1 provider view of each submitted batch becomes its part 0; rows that shared a
 * provider id with an older row (a v1 bug) keep no part and are failed with the reason.
 */
static const char *const schema_v2 =
	"CREATE TABLE parts ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT, batch_id INTEGER NOT NULL, idx INTEGER NOT NULL,"
	" remote TEXT NOT NULL, pid TEXT NOT NULL DEFAULT '', state TEXT NOT NULL,"
	" provider_state TEXT NOT NULL DEFAULT '',"
	" total INTEGER NOT NULL DEFAULT 0, processing INTEGER NOT NULL DEFAULT 0,"
	" succeeded INTEGER NOT NULL DEFAULT 0, errored INTEGER NOT NULL DEFAULT 0,"
	" canceled INTEGER NOT NULL DEFAULT 0, expired INTEGER NOT NULL DEFAULT 0,"
	" results TEXT NOT NULL DEFAULT 'pending', error TEXT NOT NULL DEFAULT '',"
	" error_line INTEGER NOT NULL DEFAULT 0, error_attempt INTEGER NOT NULL DEFAULT 0,"
	" created_at INTEGER NOT NULL DEFAULT 0, ended_at INTEGER NOT NULL DEFAULT 0,"
	" expires_at INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL DEFAULT 0,"
	" cancel_requested INTEGER NOT NULL DEFAULT 0, identity TEXT NOT NULL DEFAULT '',"
	" intent_at INTEGER NOT NULL DEFAULT 0, first_line INTEGER NOT NULL DEFAULT 1,"
	" last_line INTEGER NOT NULL DEFAULT 9223372036854775807,"
	" off INTEGER NOT NULL DEFAULT 0, len INTEGER NOT NULL DEFAULT 0,"
	" nrequests INTEGER NOT NULL DEFAULT 0, ref TEXT NOT NULL DEFAULT '',"
	" next_poll_at INTEGER NOT NULL DEFAULT 0, results_count INTEGER NOT NULL DEFAULT 0,"
	" UNIQUE (batch_id, idx));"
	"CREATE UNIQUE INDEX parts_pid ON parts (remote, pid) WHERE pid <> '';"
	"CREATE INDEX parts_due ON parts (remote, next_poll_at) WHERE next_poll_at > 0;"
	"ALTER TABLE batches ADD COLUMN nparts INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE batches ADD COLUMN nparts_sent INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE results ADD COLUMN part_id INTEGER NOT NULL DEFAULT 0;"
	"CREATE INDEX results_part ON results (part_id);"
	"INSERT OR IGNORE INTO parts (batch_id, idx, remote, pid, state, provider_state, total,"
	" processing, succeeded, errored, canceled, expired, results, error, error_line,"
	" created_at, ended_at, expires_at, updated_at, cancel_requested, identity, intent_at,"
	" len, nrequests, ref, next_poll_at, results_count)"
	" SELECT id, 0, remote, pid, state, provider_state, total, processing, succeeded,"
	" errored, canceled, expired, results, error, error_line, created_at, ended_at,"
	" expires_at, updated_at, cancel_requested, identity, intent_at, nbytes, nrequests, ref,"
	" next_poll_at, results_count FROM batches WHERE pid <> '' OR identity <> '' ORDER BY id;"
	"UPDATE batches SET nparts = 1, nparts_sent = (pid <> ''), next_poll_at = 0"
	" WHERE id IN (SELECT batch_id FROM parts);"
	"UPDATE batches SET state = 'failed', next_poll_at = 0, results = 'unavailable',"
	" error = 'this directory had adopted the provider batch of an older directory (a bug"
	" of batchfs before 0.2); it owns nothing at the provider' WHERE (pid <> '' OR"
	" identity <> '') AND id NOT IN (SELECT batch_id FROM parts);"
	"DELETE FROM results WHERE batch_id NOT IN (SELECT batch_id FROM parts);"
	"UPDATE results SET part_id = (SELECT p.id FROM parts p WHERE p.batch_id ="
	" results.batch_id AND p.idx = 0);";

/*
 * v3: result bodies live in one write-once file per part (results/<part id>.jsonl); a row
 * keeps its line's length and offset there (doff), and its offset in its part's stretch of
 * results.jsonl (off, computed at that part's ingest; a part's stretch starts at results_base,
 * set once every part is in: so the last part never rewrites the others' rows). Rows of older caches keep their bytes in
 * `line` (doff -1) and are read from there: nothing is moved, nothing lost.
 */
static const char *const schema_v3 =
	"ALTER TABLE results ADD COLUMN len INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE results ADD COLUMN doff INTEGER NOT NULL DEFAULT -1;"
	"UPDATE results SET len = length(line);"
	"ALTER TABLE parts ADD COLUMN fetch_failures INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE parts ADD COLUMN results_size INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE parts ADD COLUMN results_base INTEGER NOT NULL DEFAULT 0;"
	"DROP INDEX results_off;"
	"DROP INDEX results_part;" /* results_part_off serves part_id alone too */
	"CREATE INDEX results_part_off ON results (part_id, off);"
	"UPDATE results SET off = x.o FROM (SELECT id, sum(len + 1) OVER (PARTITION BY part_id"
	" ORDER BY seq ROWS UNBOUNDED PRECEDING) - len - 1 AS o FROM results) AS x"
	" WHERE results.id = x.id;"
	"UPDATE parts SET results_size = (SELECT coalesce(sum(r.len + 1), 0) FROM results r"
	" WHERE r.part_id = parts.id);"
	"UPDATE parts SET results_base = (SELECT coalesce(sum(q.results_size), 0) FROM parts q"
	" WHERE q.batch_id = parts.batch_id AND q.idx < parts.idx);";

/*
 * v4: a batch forgotten on this machine (rmdir of an ended batch) leaves a tombstone per
 * provider id, so discovery never brings it back and no reconciliation adopts it.
 */
static const char *const schema_v4 =
	"CREATE TABLE forgotten ("
	" remote TEXT NOT NULL, pid TEXT NOT NULL, forgotten_at INTEGER NOT NULL,"
	" PRIMARY KEY (remote, pid)) WITHOUT ROWID;";

/*
 * v7: what each result says (result.h), read once at ingest: its outcome (rtype, NULL for
 * rows ingested before v7: unknown), the assistant's text of a succeeded one, its usage; the
 * usage sums of each ready part (one row per model), so status never scans the results; and
 * requests by line, so retry.jsonl walks them in file order.
 */
static const char *const schema_v7 =
	"ALTER TABLE results ADD COLUMN rtype TEXT;"
	"ALTER TABLE results ADD COLUMN text BLOB;"
	"ALTER TABLE results ADD COLUMN model TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE results ADD COLUMN tok_in INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE results ADD COLUMN tok_out INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE results ADD COLUMN tok_cw INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE results ADD COLUMN tok_cr INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE parts ADD COLUMN usage_known INTEGER NOT NULL DEFAULT 0;"
	"CREATE TABLE usage ("
	" part_id INTEGER NOT NULL, batch_id INTEGER NOT NULL, model TEXT NOT NULL,"
	" results INTEGER NOT NULL, tok_in INTEGER NOT NULL, tok_out INTEGER NOT NULL,"
	" tok_cw INTEGER NOT NULL, tok_cr INTEGER NOT NULL, PRIMARY KEY (part_id, model));"
	"CREATE INDEX usage_batch ON usage (batch_id);"
	"CREATE INDEX requests_line ON requests (batch_id, line);";

/*
 * v9: the reads of results never touch a results row (about a page each with its text), only
 * indexes that hold what they need: listing and lookup by name carry size and place (a cold
 * `ls -l` or `cat` of every result read 4 KiB of table per result), and results.jsonl maps its
 * offsets to the data file from (part_id, off) alone (a cold cat read the whole table), and
 * a read by row id finds the place in results_loc (SQLite would pick the row itself).
 */
static const char *const schema_v9 =
	"DROP INDEX results_batch;"
	"DROP INDEX results_fname;"
	"DROP INDEX results_part_off;"
	"CREATE INDEX results_list ON results (batch_id, id, fname, len, part_id, doff);"
	"CREATE INDEX results_name ON results (batch_id, fname, len, part_id, doff);"
	"CREATE INDEX results_part_map ON results (part_id, off, len, doff);"
	"CREATE INDEX results_loc ON results (id, part_id, doff, len);";

/*
 * v10: a text that is one JSON string of its result line stays there: tpos is where its escaped
 * bytes (telen of them) start in the part's data file, tlen its decoded length, and text is
 * NULL. Written into SQLite, every text went to disk three times (WAL, then the database, a
 * page each), more than the results themselves; rows of older caches keep their text blob.
 */
static const char *const schema_v10 = "ALTER TABLE results ADD COLUMN tpos INTEGER;"
				      "ALTER TABLE results ADD COLUMN tlen INTEGER;"
				      "ALTER TABLE results ADD COLUMN telen INTEGER;";

/*
 * v11: each result row cost six B-tree inserts at ingest (the table and five indexes), most of
 * an ingest's CPU. Three go:
 *  - results_loc: since v10 a row is small (its text stays in the data file), so a read by row
 *    id reads the row itself.
 *  - results_name: a name is looked up by the custom_id it escapes (the UNIQUE index), and only
 *    a cut name (a '~' in it: escape.h) by itself, in results_cut.
 *  - results_part_map holds only rows whose part needs a map (mapped): a part whose rows came
 *    in request order, each at its own offset of results.jsonl in the data file (the common
 *    case), has results.jsonl as its data file's first results_size bytes (jsonl_direct). Rows
 *    of older caches stay mapped (the default), their parts not direct.
 * And requests_line carries seq: the ingest reads a part's requests in file order from it
 * alone, a window at a time, where it looked each result's request up (req_find).
 */
static const char *const schema_v11 =
	"ALTER TABLE parts ADD COLUMN jsonl_direct INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE results ADD COLUMN mapped INTEGER NOT NULL DEFAULT 1;"
	"DROP INDEX results_loc;"
	"DROP INDEX results_name;"
	"CREATE INDEX results_cut ON results (batch_id, fname) WHERE instr(fname, '~') > 0;"
	"DROP INDEX results_part_map;"
	"CREATE INDEX results_part_map ON results (part_id, off, len, doff) WHERE mapped;"
	"DROP INDEX requests_line;"
	"CREATE INDEX requests_line ON requests (batch_id, line, seq);";

/*
 * The schema steps: migrations[i] brings version i to i + 1 (a new version is one more
 * entry, and STORE_SCHEMA_VERSION with it).
 */
static const char *const migrations[] = {
	schema_v1,
	schema_v2,
	schema_v3,
	schema_v4,
	/* 5: the cost estimate of a submission (status.cost); older batches have none. */
	"ALTER TABLE batches ADD COLUMN cost TEXT NOT NULL DEFAULT ''",
	/* 6: the bytes of a part's request lines, known at planning (0: not known). */
	"ALTER TABLE parts ADD COLUMN payload INTEGER NOT NULL DEFAULT 0",
	schema_v7,
	/* 8: how many times a part that failed before running was sent again (resubmit). */
	"ALTER TABLE parts ADD COLUMN resubmits INTEGER NOT NULL DEFAULT 0",
	schema_v9,
	schema_v10,
	schema_v11,
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == STORE_SCHEMA_VERSION,
	       "one migration per schema version");

/* Brings the schema to STORE_SCHEMA_VERSION, one step per version, each in a transaction. */
static int store_migrate(struct store_conn *c, struct bfs_err *err)
{
	sqlite3_stmt *stmt = NULL;
	int version, rc;

	rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &stmt, NULL);
	if (rc != SQLITE_OK || sqlite3_step(stmt) != SQLITE_ROW) {
		sqlite3_finalize(stmt);
		err_set(err, "cannot read the cache's schema version: %s", sqlite3_errmsg(c->db));
		return -EIO;
	}
	version = sqlite3_column_int(stmt, 0);
	sqlite3_finalize(stmt);
	if (version < 0) {
		err_set(err, "the cache has no schema version batchfs knows (%d)", version);
		return -EPROTO;
	}
	if (version > STORE_SCHEMA_VERSION) {
		err_set(err, "the cache was made by a newer batchfs (schema %d, this one knows %d)",
			version, STORE_SCHEMA_VERSION);
		return -EPROTO;
	}
	/* Each step in its own transaction: a failure leaves the last version complete. */
	for (size_t i = (size_t)version; i < sizeof(migrations) / sizeof(migrations[0]); i++) {
		char done[64];

		snprintf(done, sizeof(done), "PRAGMA user_version = %zu; COMMIT", i + 1);
		rc = conn_exec(c, "BEGIN IMMEDIATE");
		if (!rc)
			rc = conn_exec(c, migrations[i]);
		if (!rc)
			rc = conn_exec(c, done);
		if (rc) {
			conn_rollback(c); /* the error above is the one to report */
			err_set(err, "cannot bring the cache schema to version %zu: %s", i + 1,
				sqlite3_errmsg(c->db));
			return rc;
		}
	}
	return 0;
}

/* True when dir holds at least one entry (besides . and ..). */
static bool dir_has_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool any = false;

	if (!d)
		return false;
	while (!any && (e = readdir(d)))
		any = strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return any;
}

/* Why the cache at path (its directory dir) cannot be trusted, or NULL. */
static const char *cache_damage(const char *dir, const char *path, char *why, size_t size)
{
	char sub[PATH_MAX];
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	struct stat st;
	int rc, tables = -1;

	if (stat(path, &st)) {
		if (errno != ENOENT)
			return NULL; /* store_open reports it */
		snprintf(sub, sizeof(sub), "%s/results", dir);
		if (dir_has_entries(sub)) {
			snprintf(why, size, "cache.db is missing but results/ holds result files");
			return why;
		}
		snprintf(sub, sizeof(sub), "%s/spool", dir);
		if (dir_has_entries(sub)) {
			snprintf(why, size, "cache.db is missing but spool/ holds request files");
			return why;
		}
		return NULL; /* a new cache */
	}
	if (st.st_size == 0) {
		/* SQLite would take it for a new database: the names of local batches, the
		 * drafts' files and every result would be forgotten without a word. */
		snprintf(sub, sizeof(sub), "%s/spool", dir);
		if (dir_has_entries(sub))
			snprintf(why, size, "cache.db is empty (0 bytes) but spool/ holds files");
		else
			snprintf(why, size, "cache.db is empty (0 bytes)");
		snprintf(sub, sizeof(sub), "%s/results", dir);
		return dir_has_entries(sub) || strstr(why, "spool") ? why : NULL;
	}
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &s, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		tables = sqlite3_column_int(s, 0);
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK)
		snprintf(why, size, "cache.db cannot be read: %s", sqlite3_errstr(rc));
	else if (tables == 0)
		snprintf(why, size, "cache.db holds no tables");
	sqlite3_finalize(s);
	sqlite3_close(db);
	return rc != SQLITE_OK || tables == 0 ? why : NULL;
}

int store_check(const char *dir, bool rebuild, struct bfs_err *err)
{
	static const char *const ext[] = {"", "-wal", "-shm"};
	char path[PATH_MAX], why[256], from[PATH_MAX + 8], to[PATH_MAX + 64];
	long now = (long)time(NULL);

	if ((size_t)snprintf(path, sizeof(path), "%s/cache.db", dir) >= sizeof(path))
		return -ENAMETOOLONG;
	if (!cache_damage(dir, path, why, sizeof(why)))
		return 0;
	if (!rebuild) {
		err_set(err,
			"the cache '%s' is damaged (%s): batchfs will not start on it, as a new "
			"one "
			"would lose the names of local batches and their files; start once with -o "
			"rebuild_cache to set it aside and rebuild what the providers still know",
			dir, why);
		return -EUCLEAN;
	}
	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		snprintf(from, sizeof(from), "%s%s", path, ext[i]);
		snprintf(to, sizeof(to), "%s.damaged-%ld%s", path, now, ext[i]);
		if (rename(from, to) && errno != ENOENT) {
			err_set(err, "cannot set the damaged cache aside: %s: %s", from,
				strerror(errno));
			return -errno;
		}
	}
	log_warn("cache '%s' was damaged (%s): set aside as cache.db.damaged-%ld; the batches the "
		 "providers still know come back as made elsewhere",
		 dir, why, now);
	return 0;
}

/*
 * A full cache disk must still take the status write that says so (and the backoff that
 * keeps a lasting failure from costing a download every poll): a WAL commit needs a few
 * pages. STORE_RESERVE_BYTES are kept allocated in <cache>/reserve while there is room; a
 * status write that meets ENOSPC frees them and tries once more. The reserve is filled
 * again at start and after each stored set of results (when the disk has room again).
 */
#define STORE_RESERVE_BYTES (512 * 1024)

static void reserve_fill(struct store *st)
{
	struct stat sb;
	int fd;

	if (!stat(st->reserve, &sb) && sb.st_blocks * 512 >= STORE_RESERVE_BYTES)
		return;
	fd = open(st->reserve, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (posix_fallocate(fd, 0, STORE_RESERVE_BYTES)) {
		close(fd);
		unlink(st->reserve); /* no room for it now: nothing half-kept */
		return;
	}
	close(fd);
}

/* Frees the reserve; true if there was one to free (a retry may then succeed). */
static bool reserve_release(struct store *st)
{
	if (unlink(st->reserve))
		return false;
	log_warn("cache: the disk is full; the space kept for status writes is used");
	return true;
}

int store_open(struct store **out, const char *dir, struct bfs_err *err)
{
	struct store *st = NULL;
	struct store_conn *c;
	int fd, rc;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	atomic_init(&st->gen, 1); /* 0 means "remember nothing" (conn_gen) */
	atomic_init(&st->gen_off, false);
	if ((size_t)snprintf(st->path, sizeof(st->path), "%s/cache.db", dir) >= sizeof(st->path) ||
	    (size_t)snprintf(st->rdir, sizeof(st->rdir), "%s/results", dir) >= sizeof(st->rdir) ||
	    (size_t)snprintf(st->reserve, sizeof(st->reserve), "%s/reserve", dir) >=
		    sizeof(st->reserve)) {
		err_set(err, "cache directory path too long");
		free(st);
		return -ENAMETOOLONG;
	}
	/* Create the file 0600 ourselves: SQLite would use the umask (keys never go in, but
	 * prompts and results are the user's data). The -wal/-shm files inherit its mode. */
	fd = open(st->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		err_set(err, "cannot open cache '%s': %s", st->path, strerror(errno));
		free(st);
		return rc;
	}
	(void)fchmod(fd, 0600); /* an older cache may have a laxer mode; best effort */
	close(fd);
	if (mkdir(st->rdir, 0700) && errno != EEXIST) {
		rc = -errno;
		err_set(err, "cannot create '%s': %s", st->rdir, strerror(errno));
		free(st);
		return rc;
	}
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->loc_lock, NULL);
	st->loc = calloc(STORE_LOC_SLOTS, sizeof(*st->loc));
	if (pthread_key_create(&st->key, conn_destructor)) {
		free(st);
		return -ENOMEM;
	}
	c = conn_get(st);
	if (!c) {
		err_set(err, "cannot open cache '%s'", st->path);
		store_free(st);
		return -EIO;
	}
	rc = store_migrate(c, err);
	if (rc) {
		store_free(st);
		return rc;
	}
	reserve_fill(st);
	*out = st;
	return 0;
}

void store_free(struct store *st)
{
	struct store_conn *c, *next;

	if (!st)
		return;
	pthread_setspecific(st->key, NULL);
	pthread_mutex_lock(&st->lock);
	for (c = st->conns; c; c = next) {
		next = c->next;
		conn_close(c);
	}
	st->conns = NULL;
	pthread_mutex_unlock(&st->lock);
	pthread_key_delete(st->key);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->loc_lock);
	free(st->loc);
	free(st);
}

/* Runs a statement that returns no rows. */
static int stmt_run(struct store_conn *c, sqlite3_stmt *stmt)
{
	int rc = sqlite3_step(stmt);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		if ((rc & 0xff) != SQLITE_CONSTRAINT)
			log_err("cache: %s", sqlite3_errmsg(c->db));
		stmt_done(c, stmt);
		return store_errno(rc) ? store_errno(rc) : -EIO;
	}
	stmt_done(c, stmt);
	return 0;
}

/* As snprintf(dst, size, "%s", s) (cut at size - 1 bytes), without the printf machinery: rows
 * of up to a dozen text columns are read for every stat and open of a batch's files. */
static void copy_text(char *dst, size_t size, sqlite3_stmt *stmt, int col)
{
	const char *s = (const char *)sqlite3_column_text(stmt, col);
	size_t n = s ? strnlen(s, size - 1) : 0;

	memcpy(dst, s ? s : "", n);
	dst[n] = '\0';
}

/* Batches */

#define BATCH_COLS                                                                                \
	"id, remote, name, is_foreign, pid, state, provider_state, total, processing, succeeded," \
	" errored, canceled, expired, results, error, error_line, error_attempt, created_at,"     \
	" ended_at, expires_at, updated_at, dir_mtime, cancel_requested, results_wanted,"         \
	" identity, nrequests, nbytes, endpoint, model, results_count, results_size, nparts,"     \
	" nparts_sent, cost"

/*
 * Columns both batches and parts have, in the same order: state, provider_state, the six
 * counts, results (first = the state's column).
 */
static void view_from_row(sqlite3_stmt *s, int first, enum batch_state *state, char *pstate,
			  size_t pstate_size, struct batch_counts *c, enum results_state *results)
{
	char word[32];

	copy_text(word, sizeof(word), s, first);
	if (state_parse(word, state))
		*state = BATCH_FAILED;
	copy_text(pstate, pstate_size, s, first + 1);
	c->total = sqlite3_column_int64(s, first + 2);
	c->processing = sqlite3_column_int64(s, first + 3);
	c->succeeded = sqlite3_column_int64(s, first + 4);
	c->errored = sqlite3_column_int64(s, first + 5);
	c->canceled = sqlite3_column_int64(s, first + 6);
	c->expired = sqlite3_column_int64(s, first + 7);
	copy_text(word, sizeof(word), s, first + 8);
	if (results_state_parse(word, results))
		*results = RESULTS_PENDING;
}

/* Binds the six counts to parameters first .. first + 5. */
static void bind_counts(sqlite3_stmt *s, int first, const struct batch_counts *c)
{
	sqlite3_bind_int64(s, first, c->total);
	sqlite3_bind_int64(s, first + 1, c->processing);
	sqlite3_bind_int64(s, first + 2, c->succeeded);
	sqlite3_bind_int64(s, first + 3, c->errored);
	sqlite3_bind_int64(s, first + 4, c->canceled);
	sqlite3_bind_int64(s, first + 5, c->expired);
}

static void batch_from_row(sqlite3_stmt *s, struct store_batch *b)
{
	memset(b, 0, sizeof(*b));
	b->id = sqlite3_column_int64(s, 0);
	copy_text(b->remote, sizeof(b->remote), s, 1);
	copy_text(b->name, sizeof(b->name), s, 2);
	b->foreign = sqlite3_column_int(s, 3);
	copy_text(b->pid, sizeof(b->pid), s, 4);
	view_from_row(s, 5, &b->state, b->provider_state, sizeof(b->provider_state), &b->counts,
		      &b->results);
	copy_text(b->error, sizeof(b->error), s, 14);
	b->error_line = sqlite3_column_int64(s, 15);
	b->error_attempt = sqlite3_column_int(s, 16);
	b->created_at = sqlite3_column_int64(s, 17);
	b->ended_at = sqlite3_column_int64(s, 18);
	b->expires_at = sqlite3_column_int64(s, 19);
	b->updated_at = sqlite3_column_int64(s, 20);
	b->dir_mtime = sqlite3_column_int64(s, 21);
	b->cancel_requested = sqlite3_column_int(s, 22);
	b->results_wanted = sqlite3_column_int(s, 23);
	copy_text(b->identity, sizeof(b->identity), s, 24);
	b->nrequests = sqlite3_column_int64(s, 25);
	b->nbytes = sqlite3_column_int64(s, 26);
	copy_text(b->endpoint, sizeof(b->endpoint), s, 27);
	copy_text(b->model, sizeof(b->model), s, 28);
	b->results_count = sqlite3_column_int64(s, 29);
	b->results_size = sqlite3_column_int64(s, 30);
	b->nparts = sqlite3_column_int(s, 31);
	b->nparts_sent = sqlite3_column_int(s, 32);
	copy_text(b->cost, sizeof(b->cost), s, 33);
}

/* Runs a query expected to return at most one batch. */
static int batch_query_one(struct store_conn *c, sqlite3_stmt *s, struct store_batch *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		batch_from_row(s, out);
		stmt_done(c, s);
		return 0;
	}
	stmt_done(c, s);
	if (rc == SQLITE_DONE)
		return -ENOENT;
	return store_errno(rc) ? store_errno(rc) : -EIO;
}

static int name_taken(struct store_conn *c, const char *remote, const char *name)
{
	static const char sql[] = "SELECT 1 FROM batches WHERE remote = ?1 AND name = ?2 UNION ALL"
				  " SELECT 1 FROM parts WHERE remote = ?1 AND pid = ?2 LIMIT 1";
	sqlite3_stmt *s = conn_stmt(c, sql);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	stmt_done(c, s);
	if (rc == SQLITE_ROW)
		return -EEXIST;
	return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Transactions: BEGIN IMMEDIATE, so a read-check-write inside is atomic among writers. */
static int txn_begin(struct store_conn *c)
{
	return conn_exec(c, "BEGIN IMMEDIATE");
}

/* Commits when rc is 0, else rolls back; returns rc or the commit's failure. */
static int txn_end(struct store_conn *c, int rc)
{
	if (rc) {
		conn_rollback(c); /* rc is the error to report */
		return rc;
	}
	rc = conn_exec(c, "COMMIT");
	if (rc)
		conn_rollback(c); /* the failed COMMIT is reported */
	return rc;
}

int store_batch_create(struct store *st, const char *remote, const char *name, int64_t now,
		       int64_t *id)
{
	static const char sql[] = "INSERT INTO batches (remote, name, state, updated_at, dir_mtime)"
				  " VALUES (?1, ?2, 'draft', ?3, ?3)";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	if (rc)
		return rc;
	rc = name_taken(c, remote, name);
	if (!rc && !(s = conn_stmt(c, sql)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, now);
		rc = stmt_run(c, s);
	}
	if (!rc)
		*id = sqlite3_last_insert_rowid(c->db);
	return txn_end(c, rc);
}

int store_batch_get(struct store *st, int64_t id, struct store_batch *out)
{
	static const char sql[] = "SELECT " BATCH_COLS " FROM batches WHERE id = ?1";
	struct store_conn *c = conn_get(st);
	uint64_t gen;
	unsigned slot;
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	gen = conn_gen(c); /* before the query: a commit during it leaves the row unremembered */
	for (slot = 0; gen && slot < 4; slot++) {
		if (c->rows[slot].gen == gen && c->rows[slot].id == id) {
			*out = c->rows[slot].row;
			return 0;
		}
	}
	if (!(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	rc = batch_query_one(c, s, out);
	if (!rc && gen) {
		slot = c->rows_next++ % 4;
		c->rows[slot].id = id;
		c->rows[slot].gen = gen;
		c->rows[slot].row = *out;
	}
	return rc;
}

static int batch_get_c(struct store_conn *c, int64_t id, struct store_batch *out)
{
	static const char sql[] = "SELECT " BATCH_COLS " FROM batches WHERE id = ?1";
	sqlite3_stmt *s = conn_stmt(c, sql);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return batch_query_one(c, s, out);
}

int store_batch_by_name(struct store *st, const char *remote, const char *name,
			struct store_batch *out)
{
	static const char sql[] =
		"SELECT " BATCH_COLS " FROM batches WHERE remote = ?1 AND name = ?2";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	return batch_query_one(c, s, out);
}

int store_batch_by_pid(struct store *st, const char *remote, const char *pid,
		       struct store_batch *out)
{
	static const char sql[] = "SELECT " BATCH_COLS " FROM batches WHERE id ="
				  " (SELECT batch_id FROM parts WHERE remote = ?1 AND pid = ?2"
				  " AND pid <> '')";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, pid, -1, SQLITE_STATIC);
	return batch_query_one(c, s, out);
}

/* Runs a one-row UPDATE; -ESTALE when it changed nothing (the expected state was not there). */
static int run_guarded(struct store_conn *c, sqlite3_stmt *s)
{
	int rc = stmt_run(c, s);

	if (!rc && sqlite3_changes(c->db) == 0)
		rc = -ESTALE;
	return rc;
}

static int delete_parts(struct store_conn *c, int64_t batch_id)
{
	static const char *const sqls[] = {
		"DELETE FROM results WHERE batch_id = ?1",
		"DELETE FROM parts WHERE batch_id = ?1",
		"UPDATE batches SET nparts = 0, nparts_sent = 0, pid = '', identity = '',"
		" results = 'pending', results_count = 0, results_size = 0, provider_state = '',"
		" total = 0, processing = 0, succeeded = 0, errored = 0, canceled = 0, expired = 0,"
		" cancel_requested = 0, created_at = 0, ended_at = 0, expires_at = 0 WHERE id = ?1",
	};
	int rc = 0;

	for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]) && !rc; i++) {
		sqlite3_stmt *s = conn_stmt(c, sqls[i]);

		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, batch_id);
		rc = stmt_run(c, s);
	}
	return rc;
}

/* A part that may exist at the provider: known, or its creation unsettled. */
static int parts_at_provider(struct store_conn *c, int64_t batch_id, int *n)
{
	static const char sql[] = "SELECT count(*) FROM parts WHERE batch_id = ?1 AND"
				  " (pid <> '' OR identity <> '')";
	sqlite3_stmt *s = conn_stmt(c, sql);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	rc = sqlite3_step(s);
	*n = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
	stmt_done(c, s);
	return rc == SQLITE_ROW ? 0 : -EIO;
}

/*
 * A part that failed before any request ran (validation, quota; or never created): what
 * resubmit sends again and a new requests.jsonl replaces. Its provider batch is kept as a
 * tombstone, so discovery never shows it as made elsewhere.
 */
#define UNRUN "state = 'failed' AND succeeded = 0 AND errored = 0"

static int aggregate(struct store_conn *c, int64_t batch_id);

static int tombstone_unrun(struct store_conn *c, int64_t batch_id)
{
	static const char sql[] = "INSERT OR IGNORE INTO forgotten (remote, pid, forgotten_at)"
				  " SELECT remote, pid, ?2 FROM parts WHERE batch_id = ?1 AND"
				  " pid <> '' AND " UNRUN;
	sqlite3_stmt *s = conn_stmt(c, sql);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_int64(s, 2, timefmt_now_ms());
	return stmt_run(c, s);
}

static int retire_unrun_parts(struct store_conn *c, int64_t batch_id)
{
	static const char sql[] =
		"UPDATE parts SET pid = '', identity = '' WHERE batch_id = ?1 AND pid <> ''"
		" AND " UNRUN;
	sqlite3_stmt *s;
	int rc = tombstone_unrun(c, batch_id);

	if (rc)
		return rc;
	s = conn_stmt(c, sql);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	return stmt_run(c, s);
}

int store_batch_claim(struct store *st, int64_t id)
{
	static const char sql[] =
		"UPDATE batches SET state = 'submitting', error = '',"
		" error_line = 0, error_attempt = 0, updated_at = ?2 WHERE id = ?1"
		" AND is_foreign = 0 AND state IN ('draft', 'rejected', 'failed',"
		" 'canceled')";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int n = 0, rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	if (rc)
		return rc;
	/* Parts that failed at the provider before running anything go with the old file. */
	rc = retire_unrun_parts(c, id);
	if (!rc)
		rc = parts_at_provider(c, id, &n);
	if (!rc && n)
		rc = -EACCES;
	if (!rc)
		rc = delete_parts(c, id);
	if (!rc && !(s = conn_stmt(c, sql)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_int64(s, 1, id);
		sqlite3_bind_int64(s, 2, timefmt_now_ms());
		rc = run_guarded(c, s);
		if (rc == -ESTALE)
			rc = -EACCES;
	}
	return txn_end(c, rc);
}

bool store_batch_unrun_failure(const struct store_batch *row)
{
	/* ended_at is set only once no part runs; identity only while a create is unsettled. */
	return !row->foreign && row->state == BATCH_FAILED && row->pid[0] && row->ended_at &&
	       !row->identity[0] && !row->counts.succeeded && !row->counts.errored;
}

int store_batch_resubmit(struct store *st, int64_t id)
{
	static const char sql[] =
		"UPDATE parts SET pid = '', state = 'submitting', provider_state = '', total = 0,"
		" processing = 0, succeeded = 0, errored = 0, canceled = 0, expired = 0,"
		" results = 'pending', error = '', error_line = 0, error_attempt = 0,"
		" created_at = 0, ended_at = 0, expires_at = 0, updated_at = ?2,"
		" cancel_requested = 0, identity = '', intent_at = 0, ref = '', next_poll_at = 0,"
		" results_count = 0, resubmits = resubmits + 1 WHERE batch_id = ?1 AND " UNRUN
		" AND batch_id IN (SELECT id FROM batches WHERE id = ?1 AND is_foreign = 0)";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	if (rc)
		return rc;
	rc = tombstone_unrun(c, id);
	if (!rc && !(s = conn_stmt(c, sql)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_int64(s, 1, id);
		sqlite3_bind_int64(s, 2, timefmt_now_ms());
		rc = stmt_run(c, s);
		if (!rc && sqlite3_changes(c->db) == 0)
			rc = -ENOENT; /* nothing failed before running */
	}
	if (!rc)
		rc = aggregate(c, id);
	return txn_end(c, rc);
}

int store_batch_set_state(struct store *st, int64_t id, enum batch_state expect,
			  enum batch_state state, const char *msg, long line, bool drop_parts)
{
	static const char sql[] =
		"UPDATE batches SET state = ?3, error = ?4, error_line = ?5,"
		" error_attempt = 0, updated_at = ?6 WHERE id = ?1 AND state = ?2";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int n = 0, rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	if (rc)
		return rc;
	if (drop_parts) {
		rc = parts_at_provider(c, id, &n);
		if (!rc && n)
			rc = -EACCES; /* never forget a part the provider may have */
		if (!rc)
			rc = delete_parts(c, id);
	}
	if (!rc && !(s = conn_stmt(c, sql)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_int64(s, 1, id);
		sqlite3_bind_text(s, 2, state_name(expect), -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, state_name(state), -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 4, msg ? msg : "", -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 5, line);
		sqlite3_bind_int64(s, 6, timefmt_now_ms());
		rc = run_guarded(c, s);
	}
	return txn_end(c, rc);
}

int store_batch_set_cost(struct store *st, int64_t id, const char *cost_json)
{
	static const char sql[] = "UPDATE batches SET cost = ?2 WHERE id = ?1 AND"
				  " state = 'submitting'";
	struct store_conn *c;
	sqlite3_stmt *s;

	if (strlen(cost_json) >= STORE_COST_MAX)
		return -E2BIG;
	c = conn_get(st);
	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, cost_json, -1, SQLITE_STATIC);
	return run_guarded(c, s);
}

int store_batch_note(struct store *st, int64_t id, const char *msg)
{
	static const char sql[] = "UPDATE batches SET error = ?2, error_line = 0,"
				  " error_attempt = 0, updated_at = ?3 WHERE id = ?1 AND nparts = 0"
				  " AND state <> 'submitting'";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, msg ? msg : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, timefmt_now_ms());
	return run_guarded(c, s);
}

int store_batch_want_results(struct store *st, int64_t id)
{
	static const char *const sqls[] = {
		"UPDATE batches SET results_wanted = 1 WHERE id = ?1 AND is_foreign = 1 AND"
		" results_wanted = 0 AND results = 'pending'",
		"UPDATE parts SET next_poll_at = 1 WHERE batch_id = ?1 AND results = 'pending' AND"
		" state IN ('completed', 'canceled', 'expired', 'failed') AND pid <> ''",
	};
	static const char needed[] = "SELECT 1 FROM batches WHERE id = ?1 AND is_foreign = 1 AND"
				     " results_wanted = 0 AND results = 'pending'";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	if (!c || !(s = conn_stmt(c, needed)))
		return -EIO;
	/* Every lookup asks: a read first, so the read path writes (and waits) only once. */
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	stmt_done(c, s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? 0 : -EIO;
	rc = txn_begin(c);
	for (size_t i = 0; i < 2 && !rc; i++) {
		s = conn_stmt(c, sqls[i]);
		if (!s) {
			rc = -EIO;
			break;
		}
		sqlite3_bind_int64(s, 1, id);
		rc = run_guarded(c, s);
		if (rc == -ESTALE && i == 0)
			rc = -EALREADY; /* already wanted (or not foreign): nothing to do */
		else if (rc == -ESTALE)
			rc = 0;
	}
	if (rc == -EALREADY) {
		(void)txn_end(c, rc);
		return 0;
	}
	return txn_end(c, rc);
}

static int results_path(const struct store *st, int64_t part_id, const char *ext, char *out,
			size_t size);

static void unlink_results(struct store_conn *c, int64_t batch_id)
{
	static const char sql[] = "SELECT id FROM parts WHERE batch_id = ?1";
	sqlite3_stmt *s = conn_stmt(c, sql);
	char path[PATH_MAX];

	if (!s)
		return;
	sqlite3_bind_int64(s, 1, batch_id);
	while (sqlite3_step(s) == SQLITE_ROW) {
		int64_t part = sqlite3_column_int64(s, 0);

		for (int i = 0; i < STORE_DATA_FDS; i++) {
			if (c->rf[i].fd >= 0 && c->rf[i].part == part) {
				close(c->rf[i].fd);
				c->rf[i].fd = -1;
			}
		}
		if (!results_path(c->st, part, "jsonl", path, sizeof(path)))
			(void)unlink(path); /* absent when the part had no results */
	}
	stmt_done(c, s);
}

/* Deletes every row of a batch, inside the caller's transaction. */
static int batch_delete_c(struct store_conn *c, int64_t id)
{
	static const char *const sqls[] = {
		"DELETE FROM results WHERE batch_id = ?1",  "DELETE FROM usage WHERE batch_id = ?1",
		"DELETE FROM requests WHERE batch_id = ?1", "DELETE FROM files WHERE batch_id = ?1",
		"DELETE FROM parts WHERE batch_id = ?1",    "DELETE FROM batches WHERE id = ?1",
	};
	int rc = 0;

	/* Its results files go first: the rows name them. A file left by a failed commit
	 * is only space; a row never points at a missing file. */
	unlink_results(c, id);
	for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]) && !rc; i++) {
		sqlite3_stmt *s = conn_stmt(c, sqls[i]);

		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, id);
		rc = stmt_run(c, s);
	}
	return rc;
}

int store_batch_delete(struct store *st, int64_t id)
{
	struct store_conn *c = conn_get(st);
	int rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	if (rc)
		return rc;
	return txn_end(c, batch_delete_c(c, id));
}

/*
 * Why batch id cannot be forgotten now ("" when it can), from its parts. A results download
 * running meanwhile is no reason: its ingest finds its part gone and rolls back.
 */
static int forget_refusal(struct store_conn *c, int64_t id, char *why, size_t size)
{
	static const char sql[] =
		"SELECT idx, state FROM parts WHERE batch_id = ?1 AND (state NOT IN"
		" ('completed', 'canceled', 'expired', 'failed') OR (pid = '' AND identity <> ''))"
		" ORDER BY idx LIMIT 1";
	sqlite3_stmt *s = conn_stmt(c, sql);
	int rc;

	why[0] = '\0';
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const char *state = (const char *)sqlite3_column_text(s, 1);

		snprintf(why, size,
			 "it is still %s at the provider (part %d); cancel it (echo cancel > ctl) "
			 "or wait until it ends",
			 state ? state : "running", sqlite3_column_int(s, 0) + 1);
	}
	stmt_done(c, s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -EIO;
}

int store_batch_forget(struct store *st, int64_t id, int64_t now, struct bfs_err *err)
{
	static const char tomb[] = "INSERT OR IGNORE INTO forgotten (remote, pid, forgotten_at)"
				   " SELECT remote, pid, ?2 FROM parts WHERE batch_id = ?1 AND"
				   " pid <> ''";
	struct store_conn *c = conn_get(st);
	struct store_batch row;
	char why[256];
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	if (rc)
		return rc;
	rc = batch_get_c(c, id, &row);
	if (!rc)
		rc = forget_refusal(c, id, why, sizeof(why));
	if (!rc && (why[0] || (!row.foreign && !row.nparts_sent))) {
		err_set(err, "'%s' cannot be removed: %s", row.name,
			why[0] ? why : "nothing of it is at the provider yet");
		rc = -EBUSY;
	}
	if (!rc && !(s = conn_stmt(c, tomb)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_int64(s, 1, id);
		sqlite3_bind_int64(s, 2, now);
		rc = stmt_run(c, s);
	}
	if (!rc)
		rc = batch_delete_c(c, id);
	return txn_end(c, rc);
}

static int batch_query_each(struct store_conn *c, sqlite3_stmt *s, store_batch_fn fn, void *ctx)
{
	struct store_batch b;
	int rc;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		batch_from_row(s, &b);
		rc = fn(ctx, &b);
		if (rc) {
			stmt_done(c, s);
			return rc;
		}
	}
	stmt_done(c, s);
	return rc == SQLITE_DONE ? 0 : (store_errno(rc) ? store_errno(rc) : -EIO);
}

int store_batch_list(struct store *st, const char *remote, int64_t after, int limit,
		     store_batch_fn fn, void *ctx)
{
	static const char sql[] = "SELECT " BATCH_COLS " FROM batches WHERE remote = ?1 AND id > ?2"
				  " ORDER BY id LIMIT ?3";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int(s, 3, limit);
	return batch_query_each(c, s, fn, ctx);
}

/* Parts */

#define PART_COLS                                                                               \
	"id, batch_id, idx, remote, pid, state, provider_state, total, processing, succeeded,"  \
	" errored, canceled, expired, results, error, error_line, error_attempt, created_at,"   \
	" ended_at, expires_at, updated_at, cancel_requested, identity, intent_at, first_line," \
	" last_line, off, len, nrequests, ref, next_poll_at, results_count, payload, resubmits"

static void part_from_row(sqlite3_stmt *s, struct store_part *p)
{
	memset(p, 0, sizeof(*p));
	p->id = sqlite3_column_int64(s, 0);
	p->batch_id = sqlite3_column_int64(s, 1);
	p->idx = sqlite3_column_int(s, 2);
	copy_text(p->remote, sizeof(p->remote), s, 3);
	copy_text(p->pid, sizeof(p->pid), s, 4);
	view_from_row(s, 5, &p->state, p->provider_state, sizeof(p->provider_state), &p->counts,
		      &p->results);
	copy_text(p->error, sizeof(p->error), s, 14);
	p->error_line = sqlite3_column_int64(s, 15);
	p->error_attempt = sqlite3_column_int(s, 16);
	p->created_at = sqlite3_column_int64(s, 17);
	p->ended_at = sqlite3_column_int64(s, 18);
	p->expires_at = sqlite3_column_int64(s, 19);
	p->updated_at = sqlite3_column_int64(s, 20);
	p->cancel_requested = sqlite3_column_int(s, 21);
	copy_text(p->identity, sizeof(p->identity), s, 22);
	p->intent_at = sqlite3_column_int64(s, 23);
	p->first_line = sqlite3_column_int64(s, 24);
	p->last_line = sqlite3_column_int64(s, 25);
	p->off = sqlite3_column_int64(s, 26);
	p->len = sqlite3_column_int64(s, 27);
	p->nrequests = sqlite3_column_int64(s, 28);
	copy_text(p->ref, sizeof(p->ref), s, 29);
	p->next_poll_at = sqlite3_column_int64(s, 30);
	p->results_count = sqlite3_column_int64(s, 31);
	p->payload = sqlite3_column_int64(s, 32);
	p->resubmits = sqlite3_column_int(s, 33);
}

static int part_query_each(struct store_conn *c, sqlite3_stmt *s, store_part_fn fn, void *ctx)
{
	struct store_part *p = malloc(sizeof(*p));
	int rc;

	if (!p) {
		stmt_done(c, s);
		return -ENOMEM;
	}
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		part_from_row(s, p);
		rc = fn(ctx, p);
		if (rc) {
			stmt_done(c, s);
			free(p);
			return rc;
		}
	}
	stmt_done(c, s);
	free(p);
	return rc == SQLITE_DONE ? 0 : (store_errno(rc) ? store_errno(rc) : -EIO);
}

static int part_get_c(struct store_conn *c, int64_t id, struct store_part *out)
{
	static const char sql[] = "SELECT " PART_COLS " FROM parts WHERE id = ?1";
	sqlite3_stmt *s = conn_stmt(c, sql);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		part_from_row(s, out);
	stmt_done(c, s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -ENOENT : -EIO;
}

int store_part_get(struct store *st, int64_t id, struct store_part *out)
{
	struct store_conn *c = conn_get(st);

	return c ? part_get_c(c, id, out) : -EIO;
}

static int part_list_c(struct store_conn *c, int64_t batch_id, store_part_fn fn, void *ctx)
{
	static const char sql[] = "SELECT " PART_COLS " FROM parts WHERE batch_id = ?1"
				  " ORDER BY idx";
	sqlite3_stmt *s = conn_stmt(c, sql);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	return part_query_each(c, s, fn, ctx);
}

int store_part_list(struct store *st, int64_t batch_id, store_part_fn fn, void *ctx)
{
	struct store_conn *c = conn_get(st);

	return c ? part_list_c(c, batch_id, fn, ctx) : -EIO;
}

int store_part_by_pid(struct store *st, const char *remote, const char *pid, struct store_part *out)
{
	static const char sql[] = "SELECT " PART_COLS " FROM parts WHERE remote = ?1 AND pid = ?2"
				  " AND pid <> ''";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, pid, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		part_from_row(s, out);
	stmt_done(c, s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -ENOENT : -EIO;
}

int store_part_list_remote(struct store *st, const char *remote, int64_t after, int limit,
			   store_part_fn fn, void *ctx)
{
	/* A range of the rowid, filtered: remotes' parts interleave, so no index is needed. */
	static const char sql[] = "SELECT " PART_COLS " FROM parts WHERE remote = ?1 AND"
				  " pid <> '' AND id > ?2 ORDER BY id LIMIT ?3";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int(s, 3, limit);
	return part_query_each(c, s, fn, ctx);
}

struct parts_buf {
	struct store_part *v;
	size_t n, alloc;
};

static int parts_collect(void *ctx, const struct store_part *p)
{
	struct parts_buf *a = ctx;

	if (a->n == a->alloc) {
		size_t na = a->alloc ? 2 * a->alloc : 4;
		struct store_part *v = realloc(a->v, na * sizeof(*v));

		if (!v)
			return -ENOMEM;
		a->v = v;
		a->alloc = na;
	}
	a->v[a->n++] = *p;
	return 0;
}

int store_parts_load(struct store *st, int64_t batch_id, struct store_part **out, size_t *n)
{
	struct parts_buf a = {0};
	int rc = store_part_list(st, batch_id, parts_collect, &a);

	if (rc) {
		free(a.v);
		return rc;
	}
	*out = a.v;
	*n = a.n;
	return 0;
}

bool store_pid_is_owned(struct store *st, const char *remote, const char *pid)
{
	/* A forgotten batch stays ours to ignore: never shown again, never adopted. */
	static const char sql[] = "SELECT 1 FROM parts WHERE remote = ?1 AND pid = ?2 UNION ALL"
				  " SELECT 1 FROM forgotten WHERE remote = ?1 AND pid = ?2";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	if (!pid[0])
		return false; /* no id: nothing to own */
	/* When the cache cannot answer, say owned: a candidate is never taken on a guess. */
	if (!c || !(s = conn_stmt(c, sql)))
		return true;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, pid, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	stmt_done(c, s);
	return rc != SQLITE_DONE;
}

int store_part_due(struct store *st, const char *remote, int64_t now, store_part_fn fn, void *ctx)
{
	static const char sql[] = "SELECT " PART_COLS " FROM parts WHERE remote = ?1 AND"
				  " next_poll_at > 0 AND next_poll_at <= ?2 ORDER BY next_poll_at";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, now);
	return part_query_each(c, s, fn, ctx);
}

int64_t store_part_next_due(struct store *st, const char *remote)
{
	static const char sql[] = "SELECT min(next_poll_at) FROM parts WHERE remote = ?1 AND"
				  " next_poll_at > 0";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int64_t v = 0;

	if (!c || !(s = conn_stmt(c, sql)))
		return 0;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	stmt_done(c, s);
	return v;
}

/*
 * The aggregate of a directory's parts (docs/semantics.md "Parts"): computed in C from the
 * parts, in the transaction of the change that called it.
 */
struct agg {
	int n, sent, running, settled, ready, downloading, incomplete;
	bool failed_unsent, cancel;
	int state_rank;				    /* the least advanced running state */
	bool any_failed, any_expired, any_canceled; /* among ended parts */
	struct batch_counts counts;
	int64_t created_at, ended_at, expires_at;
	char pid[PROVIDER_ID_MAX];
	char identity[64];
	char words[PROVIDER_WORD_MAX];
	const struct store_part *err_part; /* not kept past the callback: copied below */
	int err_idx;
	bool err_failed;
	char error[1024];
	long error_line;
	int error_attempt;
	int64_t err_first, err_last;
};

static const enum batch_state running_order[] = {
	BATCH_QUEUED,	   BATCH_SUBMITTING, BATCH_VALIDATING,
	BATCH_IN_PROGRESS, BATCH_FINALIZING, BATCH_CANCELING,
};

static int running_rank(enum batch_state s)
{
	for (size_t i = 0; i < sizeof(running_order) / sizeof(running_order[0]); i++)
		if (running_order[i] == s)
			return (int)i;
	return -1;
}

static void agg_words(struct agg *a, const char *w)
{
	size_t n = strlen(a->words), k = strlen(w);

	if (!*w || strstr(a->words, w))
		return;
	if (n + k + (n ? 2 : 0) >= sizeof(a->words))
		return; /* a short summary; each part's word is in parts[] */
	snprintf(a->words + n, sizeof(a->words) - n, "%s%s", n ? ", " : "", w);
}

static int agg_part(void *ctx, const struct store_part *p)
{
	struct agg *a = ctx;
	int rank = running_rank(p->state);
	bool failed_here = p->state == BATCH_FAILED;

	a->n++;
	a->sent += p->pid[0] != '\0';
	if (rank >= 0) {
		if (!a->running || rank < a->state_rank)
			a->state_rank = rank;
		a->running++;
	} else {
		a->any_failed |= p->state == BATCH_FAILED;
		a->any_expired |= p->state == BATCH_EXPIRED;
		a->any_canceled |= p->state == BATCH_CANCELED;
	}
	a->failed_unsent |= p->state == BATCH_FAILED && !p->pid[0];
	a->cancel |= p->cancel_requested;
	a->counts.total += p->counts.total;
	a->counts.processing += p->counts.processing;
	a->counts.succeeded += p->counts.succeeded;
	a->counts.errored += p->counts.errored;
	a->counts.canceled += p->counts.canceled;
	a->counts.expired += p->counts.expired;
	if (p->created_at && (!a->created_at || p->created_at < a->created_at))
		a->created_at = p->created_at;
	if (p->ended_at > a->ended_at)
		a->ended_at = p->ended_at;
	if (p->expires_at && (!a->expires_at || p->expires_at < a->expires_at))
		a->expires_at = p->expires_at;
	if (!a->pid[0] && p->pid[0])
		snprintf(a->pid, sizeof(a->pid), "%s", p->pid);
	if (!a->identity[0] && p->identity[0] && !p->pid[0])
		snprintf(a->identity, sizeof(a->identity), "%s", p->identity);
	agg_words(a, p->provider_state);
	if (results_are_in(p->results) || p->results == RESULTS_UNAVAILABLE)
		a->settled++;
	a->ready += results_are_in(p->results);
	a->incomplete += p->results == RESULTS_INCOMPLETE;
	a->downloading += p->results == RESULTS_DOWNLOADING;
	/* The error shown: a failed part's first, else the first part's that has one. */
	if (p->error[0] && (!a->error[0] || (failed_here && !a->err_failed))) {
		snprintf(a->error, sizeof(a->error), "%s", p->error);
		a->error_line = p->error_line;
		a->error_attempt = p->error_attempt;
		a->err_idx = p->idx;
		a->err_failed = failed_here;
		a->err_first = p->first_line;
		a->err_last = p->last_line;
	}
	return 0;
}

/*
 * Places each part's stretch of results.jsonl (results in request order within a part were
 * given their offsets at its ingest; parts follow each other in file order): a few rows.
 */
static int results_merge(struct store_conn *c, int64_t batch_id, int64_t *count, int64_t *size)
{
	static const char bases[] =
		"UPDATE parts SET results_base = (SELECT coalesce(sum(q.results_size), 0) FROM "
		"parts"
		" q WHERE q.batch_id = parts.batch_id AND q.idx < parts.idx) WHERE batch_id = ?1";
	static const char totals[] =
		"SELECT coalesce(sum(results_count), 0),"
		" coalesce(sum(results_size), 0) FROM parts WHERE batch_id = ?1"
		" AND results IN ('ready', 'incomplete')";
	sqlite3_stmt *s = conn_stmt(c, bases);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	rc = stmt_run(c, s);
	if (rc)
		return rc;
	s = conn_stmt(c, totals);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*count = sqlite3_column_int64(s, 0);
		*size = sqlite3_column_int64(s, 1);
	}
	stmt_done(c, s);
	return rc == SQLITE_ROW ? 0 : -EIO;
}

static int aggregate(struct store_conn *c, int64_t batch_id)
{
	static const char sql[] =
		"UPDATE batches SET state = ?2, provider_state = ?3, total = ?4, processing = ?5,"
		" succeeded = ?6, errored = ?7, canceled = ?8, expired = ?9, results = ?10,"
		" error = ?11, error_line = ?12, error_attempt = ?13, created_at = ?14,"
		" ended_at = ?15, expires_at = ?16, updated_at = ?17, pid = ?18, identity = ?19,"
		" cancel_requested = ?20, nparts = ?21, nparts_sent = ?22, results_count = ?23,"
		" results_size = ?24, results_wanted = CASE WHEN ?10 = 'unavailable' THEN 0 ELSE"
		" results_wanted END WHERE id = ?1";
	struct agg *a = calloc(1, sizeof(*a));
	struct store_batch *cur = malloc(sizeof(*cur));
	enum batch_state state;
	enum results_state results;
	int64_t count, size;
	char error[1100];
	sqlite3_stmt *s;
	int rc;

	if (!a || !cur) {
		rc = -ENOMEM;
		goto out;
	}
	rc = batch_get_c(c, batch_id, cur);
	if (!rc)
		rc = part_list_c(c, batch_id, agg_part, a);
	if (rc || !a->n)
		goto out; /* no parts: the directory keeps its own state */
	if (a->failed_unsent)
		state = BATCH_FAILED; /* a part could not be submitted: say so at once */
	else if (a->running)
		state = running_order[a->state_rank];
	else if (a->any_failed)
		state = BATCH_FAILED;
	else if (a->any_expired)
		state = BATCH_EXPIRED;
	else if (a->any_canceled)
		state = BATCH_CANCELED;
	else
		state = BATCH_COMPLETED;
	count = cur->results_count;
	size = cur->results_size;
	if (a->settled == a->n && a->ready) {
		results = a->incomplete ? RESULTS_INCOMPLETE : RESULTS_READY;
		if (!results_are_in(cur->results))
			rc = results_merge(c, batch_id, &count, &size);
		if (rc)
			goto out;
	} else if (a->settled == a->n) {
		results = RESULTS_UNAVAILABLE;
	} else {
		results = a->downloading ? RESULTS_DOWNLOADING : RESULTS_PENDING;
	}
	if (a->error[0] && a->n > 1 && a->err_last < INT64_MAX)
		snprintf(error, sizeof(error), "part %d of %d (lines %" PRId64 "-%" PRId64 "): %s",
			 a->err_idx + 1, a->n, a->err_first, a->err_last, a->error);
	else if (a->error[0] && a->n > 1)
		snprintf(error, sizeof(error), "part %d of %d: %s", a->err_idx + 1, a->n, a->error);
	else
		snprintf(error, sizeof(error), "%s", a->error);
	if (a->failed_unsent && a->sent) {
		size_t len = strlen(error);

		snprintf(error + len, sizeof(error) - len,
			 "; requests.jsonl cannot be written again while %d part(s) of it exist at "
			 "the provider",
			 a->sent);
	}
	s = conn_stmt(c, sql);
	if (!s) {
		rc = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_text(s, 2, state_name(state), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, a->words, -1, SQLITE_STATIC);
	bind_counts(s, 4, &a->counts);
	sqlite3_bind_text(s, 10, results_state_name(results), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 11, error, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 12, a->error_line);
	sqlite3_bind_int(s, 13, a->error_attempt);
	sqlite3_bind_int64(s, 14, a->created_at);
	sqlite3_bind_int64(s, 15, a->running ? 0 : a->ended_at);
	sqlite3_bind_int64(s, 16, a->expires_at);
	sqlite3_bind_int64(s, 17, timefmt_now_ms());
	sqlite3_bind_text(s, 18, a->pid, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 19, a->identity, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 20, a->cancel);
	sqlite3_bind_int(s, 21, a->n);
	sqlite3_bind_int(s, 22, a->sent);
	sqlite3_bind_int64(s, 23, count);
	sqlite3_bind_int64(s, 24, size);
	rc = stmt_run(c, s);
out:
	free(a);
	free(cur);
	return rc;
}

/* Runs a guarded part update s (bound by the caller) and the aggregate, in one transaction. */
static int part_change(struct store_conn *c, int64_t part_id, sqlite3_stmt *s)
{
	struct store_part p;
	int rc = run_guarded(c, s);

	if (!rc)
		rc = part_get_c(c, part_id, &p);
	if (!rc)
		rc = aggregate(c, p.batch_id);
	return rc;
}

/*
 * The start of a guarded part change: the calling thread's connection, an IMMEDIATE
 * transaction, and sql prepared for binding. End it with txn_end(c, part_change(c, id, s)).
 */
static int part_txn(struct store *st, const char *sql, struct store_conn **cp, sqlite3_stmt **sp)
{
	struct store_conn *c = conn_get(st);
	int rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	if (rc)
		return rc;
	*sp = conn_stmt(c, sql);
	if (!*sp)
		return txn_end(c, -EIO);
	*cp = c;
	return 0;
}

int store_parts_create(struct store *st, int64_t batch_id, const char *remote,
		       const struct store_part_plan *plans, size_t n, const char *endpoint,
		       const char *model, int64_t nrequests, int64_t nbytes)
{
	static const char ins[] =
		"INSERT INTO parts (batch_id, idx, remote, state, total, first_line, last_line, "
		"off,"
		" len, nrequests, updated_at, payload) VALUES (?1, ?2, ?3, 'submitting', ?4, ?5, "
		"?6,"
		" ?7, ?8, ?4, ?9, ?10)";
	static const char info[] = "UPDATE batches SET endpoint = ?2, model = ?3, nrequests = ?4,"
				   " nbytes = ?5 WHERE id = ?1 AND state = 'submitting'";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int n_at = 0, rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	if (rc)
		return rc;
	rc = parts_at_provider(c, batch_id, &n_at);
	if (!rc && n_at)
		rc = -EACCES;
	if (!rc)
		rc = delete_parts(c, batch_id);
	if (!rc && !(s = conn_stmt(c, info)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_int64(s, 1, batch_id);
		sqlite3_bind_text(s, 2, endpoint, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, model, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, nrequests);
		sqlite3_bind_int64(s, 5, nbytes);
		rc = run_guarded(c, s);
	}
	for (size_t i = 0; i < n && !rc; i++) {
		if (!(s = conn_stmt(c, ins))) {
			rc = -EIO;
			break;
		}
		sqlite3_bind_int64(s, 1, batch_id);
		sqlite3_bind_int(s, 2, (int)i);
		sqlite3_bind_text(s, 3, remote, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, plans[i].nrequests);
		sqlite3_bind_int64(s, 5, plans[i].first_line);
		sqlite3_bind_int64(s, 6, plans[i].last_line);
		sqlite3_bind_int64(s, 7, plans[i].off);
		sqlite3_bind_int64(s, 8, plans[i].len);
		sqlite3_bind_int64(s, 9, timefmt_now_ms());
		sqlite3_bind_int64(s, 10, plans[i].payload);
		rc = stmt_run(c, s);
	}
	if (!rc)
		rc = aggregate(c, batch_id);
	return txn_end(c, rc);
}

int store_part_intent(struct store *st, int64_t id, const char *identity, int64_t intent_at)
{
	/* A queued part leaves the queue in the same step: no crash can see it in between. */
	static const char sql[] = "UPDATE parts SET state = 'submitting', identity = ?2,"
				  " intent_at = ?3, error = '', error_line = 0, error_attempt = 0,"
				  " next_poll_at = 0, updated_at = ?4 WHERE id = ?1 AND state IN"
				  " ('submitting', 'queued') AND pid = '' AND identity = ''";
	struct store_conn *c;
	sqlite3_stmt *s;
	int rc = part_txn(st, sql, &c, &s);

	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, identity, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, intent_at);
	sqlite3_bind_int64(s, 4, timefmt_now_ms());
	return txn_end(c, part_change(c, id, s));
}

int store_part_apply(struct store *st, const struct store_part *p, enum batch_state expect)
{
	static const char sql[] =
		"UPDATE parts SET pid = ?3, state = ?4, provider_state = ?5, total = ?6,"
		" processing = ?7, succeeded = ?8, errored = ?9, canceled = ?10, expired = ?11,"
		" created_at = ?12, ended_at = ?13, expires_at = ?14, ref = ?15, error = ?16,"
		" error_line = ?17, error_attempt = 0, next_poll_at = CASE WHEN ?18 = 0 AND"
		" ?20 = 'pending' AND ?4 IN ('completed', 'canceled', 'expired', 'failed') AND"
		" (SELECT results_wanted FROM batches b WHERE b.id = parts.batch_id) = 1 THEN ?19"
		" ELSE ?18 END, updated_at = ?19,"
		" results = CASE WHEN results IN ('ready', 'incomplete') THEN results ELSE ?20 END"
		" WHERE id = ?1 AND state = ?2 AND (pid = '' OR pid = ?3)";
	struct store_conn *c;
	sqlite3_stmt *s;
	int rc = part_txn(st, sql, &c, &s);

	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, p->id);
	sqlite3_bind_text(s, 2, state_name(expect), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, p->pid, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, state_name(p->state), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, p->provider_state, -1, SQLITE_STATIC);
	bind_counts(s, 6, &p->counts);
	sqlite3_bind_int64(s, 12, p->created_at);
	sqlite3_bind_int64(s, 13, p->ended_at);
	sqlite3_bind_int64(s, 14, p->expires_at);
	sqlite3_bind_text(s, 15, p->ref, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 16, p->error, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 17, p->error_line);
	sqlite3_bind_int64(s, 18, p->next_poll_at);
	sqlite3_bind_int64(s, 19, timefmt_now_ms());
	sqlite3_bind_text(s, 20, results_state_name(p->results), -1, SQLITE_STATIC);
	return txn_end(c, part_change(c, p->id, s));
}

int store_part_fail(struct store *st, int64_t id, enum batch_state expect, const char *msg)
{
	static const char sql[] = "UPDATE parts SET state = 'failed', error = ?3, error_line = 0,"
				  " error_attempt = 0, identity = '', intent_at = 0,"
				  " next_poll_at = 0, results = 'unavailable', updated_at = ?4"
				  " WHERE id = ?1 AND state = ?2 AND pid = ''";
	struct store_conn *c;
	sqlite3_stmt *s;
	int rc = part_txn(st, sql, &c, &s);

	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, state_name(expect), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, msg ? msg : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, timefmt_now_ms());
	return txn_end(c, part_change(c, id, s));
}

int store_part_note(struct store *st, int64_t id, const char *msg, int attempt,
		    int64_t next_poll_at)
{
	static const char sql[] = "UPDATE parts SET error = ?2, error_line = 0, error_attempt = ?3,"
				  " next_poll_at = CASE WHEN ?4 >= 0 THEN ?4 ELSE next_poll_at END,"
				  " updated_at = ?5 WHERE id = ?1";
	struct store_conn *c;
	sqlite3_stmt *s;
	int rc = part_txn(st, sql, &c, &s);

	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, msg ? msg : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, attempt);
	sqlite3_bind_int64(s, 4, next_poll_at);
	sqlite3_bind_int64(s, 5, timefmt_now_ms());
	return txn_end(c, part_change(c, id, s));
}

static int ingest_drop_rows(struct store_conn *c, int64_t part_id);

static int set_results_once(struct store *st, int64_t id, unsigned expect_mask,
			    enum results_state results, const char *msg, int64_t next_poll_at)
{
	static const char sql[] =
		"UPDATE parts SET results = ?2, error = ?3, error_line = 0, error_attempt = 0,"
		" next_poll_at = CASE WHEN ?4 >= 0 THEN ?4 ELSE next_poll_at END, updated_at = ?5"
		" WHERE id = ?1 AND ((?6 >> CASE results WHEN 'pending' THEN 0 WHEN 'downloading'"
		" THEN 1 WHEN 'ready' THEN 2 WHEN 'incomplete' THEN 4 ELSE 3 END) & 1) = 1";
	struct store_conn *c;
	sqlite3_stmt *s;
	int rc = part_txn(st, sql, &c, &s);

	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, results_state_name(results), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, msg ? msg : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, next_poll_at);
	sqlite3_bind_int64(s, 5, timefmt_now_ms());
	sqlite3_bind_int64(s, 6, expect_mask);
	rc = part_change(c, id, s);
	/* A part without results shows no rows (a download cut off by a crash left some). */
	if (!rc && results == RESULTS_UNAVAILABLE)
		rc = ingest_drop_rows(c, id);
	return txn_end(c, rc);
}

int store_part_set_results(struct store *st, int64_t id, unsigned expect_mask,
			   enum results_state results, const char *msg, int64_t next_poll_at)
{
	int rc = set_results_once(st, id, expect_mask, results, msg, next_poll_at);

	if (rc == -ENOSPC && reserve_release(st))
		rc = set_results_once(st, id, expect_mask, results, msg, next_poll_at);
	return rc;
}

static int fetch_failed_once(struct store *st, int64_t id, const char *msg, int64_t base_ms,
			     int64_t max_ms, int attempts)
{
	static const char sql[] =
		"UPDATE parts SET results = CASE WHEN fetch_failures + 1 >= ?6 THEN 'unavailable'"
		" ELSE 'pending' END, error = CASE WHEN fetch_failures + 1 >= ?6 THEN ?2 || '; gave"
		" up after ' || (fetch_failures + 1) || ' failed downloads in a row (echo refresh >"
		" ctl tries again)' ELSE ?2 END, error_line = 0, error_attempt = 0,"
		" fetch_failures = fetch_failures + 1, updated_at = ?3,"
		" next_poll_at = CASE WHEN fetch_failures + 1 >= ?6 THEN 0 ELSE"
		" ?3 + min(?5, ?4 * (1 << min(fetch_failures, 20))) END"
		" WHERE id = ?1 AND results = 'downloading'";
	static const char gone[] = "DELETE FROM results WHERE " PART_ROWS " AND EXISTS (SELECT 1"
				   " FROM parts WHERE id = ?1 AND results = 'unavailable')";
	struct store_conn *c;
	sqlite3_stmt *s;
	int rc = part_txn(st, sql, &c, &s);

	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, msg ? msg : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, timefmt_now_ms());
	sqlite3_bind_int64(s, 4, base_ms > 0 ? base_ms : 1000);
	sqlite3_bind_int64(s, 5, max_ms);
	sqlite3_bind_int64(s, 6, attempts > 0 ? attempts : 1);
	rc = part_change(c, id, s);
	/* Given up: no rows of a half download stay (see store_part_set_results). */
	if (!rc && !(s = conn_stmt(c, gone)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_int64(s, 1, id);
		rc = stmt_run(c, s);
	}
	return txn_end(c, rc);
}

int store_part_fetch_failed(struct store *st, int64_t id, const char *msg, int64_t base_ms,
			    int64_t max_ms, int attempts)
{
	int rc = fetch_failed_once(st, id, msg, base_ms, max_ms, attempts);

	if (rc == -ENOSPC && reserve_release(st))
		rc = fetch_failed_once(st, id, msg, base_ms, max_ms, attempts);
	return rc;
}

int store_part_results_retry(struct store *st, int64_t id)
{
	static const char sql[] =
		"UPDATE parts SET results = 'pending', fetch_failures = 0, error = '',"
		" error_line = 0, error_attempt = 0, next_poll_at = 1, updated_at = ?2"
		" WHERE id = ?1 AND pid <> '' AND results IN ('pending', 'unavailable') AND"
		" state IN ('completed', 'canceled', 'expired', 'failed') AND (results = "
		"'unavailable'"
		" OR fetch_failures > 0)";
	struct store_conn *c;
	sqlite3_stmt *s;
	int rc = part_txn(st, sql, &c, &s);

	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, timefmt_now_ms());
	rc = part_change(c, id, s);
	rc = txn_end(c, rc);
	return rc == -ESTALE ? 0 : rc ? rc : 1;
}

int store_part_cancel_requested(struct store *st, int64_t id)
{
	static const char sql[] = "UPDATE parts SET cancel_requested = 1 WHERE id = ?1";
	struct store_conn *c;
	sqlite3_stmt *s;
	int rc = part_txn(st, sql, &c, &s);

	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, id);
	return txn_end(c, part_change(c, id, s));
}

int store_part_unsend(struct store *st, int64_t id)
{
	static const char sql[] = "UPDATE parts SET identity = '', intent_at = 0 WHERE id = ?1 AND"
				  " state = 'submitting' AND pid = ''";
	struct store_conn *c;
	sqlite3_stmt *s;
	int rc = part_txn(st, sql, &c, &s);

	if (rc)
		return rc;
	sqlite3_bind_int64(s, 1, id);
	return txn_end(c, part_change(c, id, s));
}

int store_part_schedule(struct store *st, int64_t id, int64_t expect, int64_t next)
{
	static const char sql[] = "UPDATE parts SET next_poll_at = ?3 WHERE id = ?1 AND"
				  " next_poll_at = ?2";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, expect);
	sqlite3_bind_int64(s, 3, next);
	return stmt_run(c, s);
}

int store_remote_slots(struct store *st, const char *remote, int64_t part_id, int64_t *active,
		       int64_t *ahead)
{
	static const char sql[] =
		"SELECT coalesce(sum(CASE WHEN state IN ('submitting', 'validating', 'in_progress',"
		" 'finalizing', 'canceling') AND (pid <> '' OR identity <> '') THEN 1 ELSE 0 END),"
		" 0), coalesce(sum(CASE WHEN state = 'queued' AND id < ?2 THEN 1 ELSE 0 END), 0)"
		" FROM parts WHERE remote = ?1 AND id <> ?2";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, part_id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*active = sqlite3_column_int64(s, 0);
		*ahead = sqlite3_column_int64(s, 1);
	}
	stmt_done(c, s);
	return rc == SQLITE_ROW ? 0 : -EIO;
}

bool store_identity_is_ours(struct store *st, const char *identity)
{
	static const char sql[] = "SELECT 1 FROM parts WHERE identity = ?1 LIMIT 1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	if (!c || !(s = conn_stmt(c, sql)))
		return true; /* cannot tell: do not show it twice */
	sqlite3_bind_text(s, 1, identity, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	stmt_done(c, s);
	return rc != SQLITE_DONE;
}

int store_parts_resume(struct store *st, const char *msg)
{
	static const char *const sqls[] = {
		"UPDATE files SET mode = 420 WHERE name = 'requests.jsonl' AND batch_id IN"
		" (SELECT id FROM batches WHERE state = 'submitting' AND nparts = 0)",
		"UPDATE batches SET state = 'failed', error = ?1, error_line = 0, error_attempt = 0"
		" WHERE state = 'submitting' AND nparts = 0",
		"UPDATE parts SET results = 'pending' WHERE results = 'downloading'",
		"UPDATE batches SET results = 'pending' WHERE results = 'downloading'",
		"UPDATE parts SET next_poll_at = 1 WHERE state IN ('queued', 'submitting', "
		"'validating',"
		" 'in_progress', 'finalizing', 'canceling') OR (pid <> '' AND results = 'pending'"
		" AND (SELECT is_foreign = 0 OR results_wanted = 1 FROM batches b WHERE b.id ="
		" parts.batch_id))",
	};
	struct store_conn *c = conn_get(st);
	int rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]) && !rc; i++) {
		sqlite3_stmt *s = conn_stmt(c, sqls[i]);

		if (s && sqlite3_bind_parameter_count(s) == 1)
			sqlite3_bind_text(s, 1, msg, -1, SQLITE_STATIC);
		rc = s ? stmt_run(c, s) : -EIO;
	}
	return txn_end(c, rc);
}

/* -EEXIST when pid of remote was forgotten here (a tombstone). */
static int is_forgotten(struct store_conn *c, const char *remote, const char *pid)
{
	static const char sql[] = "SELECT 1 FROM forgotten WHERE remote = ?1 AND pid = ?2";
	sqlite3_stmt *s = conn_stmt(c, sql);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, pid, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	stmt_done(c, s);
	if (rc == SQLITE_ROW)
		return -EEXIST;
	return rc == SQLITE_DONE ? 0 : -EIO;
}

int store_batch_add_foreign(struct store *st, const char *remote, const struct provider_batch *pb,
			    bool recent, int64_t now, int64_t *id, int64_t *part_id)
{
	static const char pending[] = "SELECT 1 FROM parts WHERE remote = ?1 AND"
				      " state = 'submitting' AND identity <> '' LIMIT 1";
	static const char sql[] = "INSERT INTO batches (remote, name, is_foreign, state,"
				  " updated_at, dir_mtime) VALUES (?1, ?2, 1, ?3, ?4, ?4)";
	/* The listing's view from the start (counts; results gone at the provider settled):
	 * a look at the batch in the moment before the poller applies the rest of it must
	 * neither show no requests nor fetch results that are gone. */
	static const char part[] =
		"INSERT INTO parts (batch_id, idx, remote, pid, state,"
		" updated_at, results, provider_state, total, processing,"
		" succeeded, errored, canceled, expired)"
		" VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
	static const char owned[] = "SELECT 1 FROM parts WHERE remote = ?1 AND pid = ?2";
	struct store_conn *c = conn_get(st);
	char name[PROVIDER_ID_MAX + 2];
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	rc = txn_begin(c);
	if (rc)
		return rc;
	snprintf(name, sizeof(name), "%s", pb->id);
	rc = name_taken(c, remote, name);
	if (rc == -EEXIST && (s = conn_stmt(c, owned))) {
		/* A local batch took the id as its name before the listing showed it: the batch
		 * still appears, as "<id>~" (never a name mkdir accepts, nor a provider id). */
		sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, pb->id, -1, SQLITE_STATIC);
		rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -EEXIST;
		stmt_done(c, s);
		if (!rc) {
			snprintf(name, sizeof(name), "%s~", pb->id);
			rc = name_taken(c, remote, name);
		}
	}
	if (!rc)
		rc = is_forgotten(c, remote, pb->id);
	if (!rc && recent) {
		if (!(s = conn_stmt(c, pending))) {
			rc = -EIO;
		} else {
			sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
			rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -EBUSY;
			stmt_done(c, s);
		}
	}
	if (!rc && !(s = conn_stmt(c, sql)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, state_name(pb->state), -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, now);
		rc = stmt_run(c, s);
	}
	if (!rc) {
		*id = sqlite3_last_insert_rowid(c->db);
		if (!(s = conn_stmt(c, part)))
			rc = -EIO;
	}
	if (!rc) {
		sqlite3_bind_int64(s, 1, *id);
		sqlite3_bind_text(s, 2, remote, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, pb->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 4, state_name(pb->state), -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 5, now);
		sqlite3_bind_text(s, 6,
				  results_state_name(pb->results_gone ? RESULTS_UNAVAILABLE
								      : RESULTS_PENDING),
				  -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 7, pb->provider_state, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 8, pb->counts.total);
		sqlite3_bind_int64(s, 9, pb->counts.processing);
		sqlite3_bind_int64(s, 10, pb->counts.succeeded);
		sqlite3_bind_int64(s, 11, pb->counts.errored);
		sqlite3_bind_int64(s, 12, pb->counts.canceled);
		sqlite3_bind_int64(s, 13, pb->counts.expired);
		rc = stmt_run(c, s);
	}
	if (!rc) {
		*part_id = sqlite3_last_insert_rowid(c->db);
		rc = aggregate(c, *id);
	}
	return txn_end(c, rc);
}

/* Files */

static void file_from_row(sqlite3_stmt *s, struct store_file *f)
{
	memset(f, 0, sizeof(*f));
	f->id = sqlite3_column_int64(s, 0);
	f->batch_id = sqlite3_column_int64(s, 1);
	copy_text(f->name, sizeof(f->name), s, 2);
	f->mode = (uint32_t)sqlite3_column_int(s, 3);
	f->size = sqlite3_column_int64(s, 4);
	f->mtime_ns = sqlite3_column_int64(s, 5);
}

static int file_query_one(struct store_conn *c, sqlite3_stmt *s, struct store_file *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		file_from_row(s, out);
		stmt_done(c, s);
		return 0;
	}
	stmt_done(c, s);
	return rc == SQLITE_DONE ? -ENOENT : -EIO;
}

int store_file_create(struct store *st, int64_t batch_id, const char *name, uint32_t mode,
		      int64_t mtime_ns, int64_t *id)
{
	static const char sql[] = "INSERT INTO files (batch_id, name, mode, size, mtime_ns)"
				  " VALUES (?1, ?2, ?3, 0, ?4)";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, (int)mode);
	sqlite3_bind_int64(s, 4, mtime_ns);
	rc = stmt_run(c, s);
	if (!rc)
		*id = sqlite3_last_insert_rowid(c->db);
	return rc;
}

int store_file_get(struct store *st, int64_t id, struct store_file *out)
{
	static const char sql[] = "SELECT id, batch_id, name, mode, size, mtime_ns FROM files"
				  " WHERE id = ?1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return file_query_one(c, s, out);
}

int store_file_by_name(struct store *st, int64_t batch_id, const char *name, struct store_file *out)
{
	static const char sql[] = "SELECT id, batch_id, name, mode, size, mtime_ns FROM files"
				  " WHERE batch_id = ?1 AND name = ?2";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	return file_query_one(c, s, out);
}

int store_file_put(struct store *st, const struct store_file *f)
{
	static const char sql[] = "UPDATE files SET mode = ?2, size = ?3, mtime_ns = ?4"
				  " WHERE id = ?1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, f->id);
	sqlite3_bind_int(s, 2, (int)f->mode);
	sqlite3_bind_int64(s, 3, f->size);
	sqlite3_bind_int64(s, 4, f->mtime_ns);
	return stmt_run(c, s);
}

int store_file_rename(struct store *st, int64_t id, const char *newname, int64_t *replaced)
{
	static const char find[] = "SELECT o.id FROM files f JOIN files o ON o.batch_id ="
				   " f.batch_id AND o.name = ?2 WHERE f.id = ?1 AND o.id <> ?1";
	static const char del[] = "DELETE FROM files WHERE id = ?1";
	static const char ren[] = "UPDATE files SET name = ?2 WHERE id = ?1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int64_t old = 0;
	int rc;

	if (!c)
		return -EIO;
	rc = conn_exec(c, "BEGIN IMMEDIATE");
	if (rc)
		return rc;
	if (!(s = conn_stmt(c, find))) {
		rc = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, newname, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		old = sqlite3_column_int64(s, 0);
	stmt_done(c, s);
	if (old) {
		if (!(s = conn_stmt(c, del))) {
			rc = -EIO;
			goto out;
		}
		sqlite3_bind_int64(s, 1, old);
		rc = stmt_run(c, s);
		if (rc)
			goto out;
	}
	if (!(s = conn_stmt(c, ren))) {
		rc = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, newname, -1, SQLITE_STATIC);
	rc = stmt_run(c, s);
out:
	if (rc) {
		conn_rollback(c); /* rc is the error to report */
		return rc;
	}
	rc = conn_exec(c, "COMMIT");
	if (!rc && replaced)
		*replaced = old;
	return rc;
}

int store_file_delete(struct store *st, int64_t id)
{
	static const char sql[] = "DELETE FROM files WHERE id = ?1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return stmt_run(c, s);
}

int store_file_list(struct store *st, int64_t batch_id, int64_t after, int limit, store_file_fn fn,
		    void *ctx)
{
	static const char sql[] = "SELECT id, batch_id, name, mode, size, mtime_ns FROM files"
				  " WHERE batch_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
	struct store_conn *c = conn_get(st);
	struct store_file f;
	sqlite3_stmt *s;
	int rc;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int(s, 3, limit > 0 ? limit : -1);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		file_from_row(s, &f);
		rc = fn(ctx, &f);
		if (rc) {
			stmt_done(c, s);
			return rc;
		}
	}
	stmt_done(c, s);
	return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Requests */

static int reqs_delete(struct store *st, int64_t batch_id)
{
	static const char sql[] = "DELETE FROM requests WHERE batch_id = ?1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	if (!(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	return stmt_run(c, s);
}

int store_reqs_begin(struct store *st, int64_t batch_id, struct store_reqs **out)
{
	struct store_reqs *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return -ENOMEM;
	rc = reqs_delete(st, batch_id);
	if (rc) {
		free(r);
		return rc;
	}
	r->st = st;
	r->batch_id = batch_id;
	*out = r;
	return 0;
}

/* Commits the open transaction, if any. */
static int reqs_commit(struct store_reqs *r)
{
	int rc;

	if (!r->c)
		return r->rc;
	rc = conn_exec(r->c, "COMMIT");
	if (rc) {
		conn_rollback(r->c); /* rows lost: the list is incomplete for good */
		r->rc = rc;
	}
	r->c = NULL;
	r->pending = 0;
	return rc;
}

int store_reqs_add(struct store_reqs *r, const char *custom_id, size_t len, long line,
		   long *dup_line)
{
	static const char ins[] = "INSERT INTO requests (batch_id, custom_id, seq, line)"
				  " VALUES (?1, ?2, ?3, ?4)";
	static const char dup[] =
		"SELECT line FROM requests WHERE batch_id = ?1 AND custom_id = ?2";
	sqlite3_stmt *s;
	int rc;

	if (r->rc)
		return r->rc;
	if (!r->c) {
		struct store_conn *c = conn_get(r->st);

		if (!c)
			return -EIO;
		bulk_yield(r->st);
		rc = conn_exec(c, "BEGIN IMMEDIATE");
		if (rc)
			return rc;
		r->c = c;
	}
	s = conn_stmt(r->c, ins);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, r->batch_id);
	sqlite3_bind_blob(s, 2, custom_id, (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, r->seq);
	sqlite3_bind_int64(s, 4, line);
	rc = stmt_run(r->c, s);
	if (rc == -EEXIST) {
		s = conn_stmt(r->c, dup);
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, r->batch_id);
		sqlite3_bind_blob(s, 2, custom_id, (int)len, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_ROW && dup_line)
			*dup_line = (long)sqlite3_column_int64(s, 0);
		stmt_done(r->c, s);
		return -EEXIST;
	}
	if (rc)
		return rc;
	r->seq++;
	if (++r->pending >= STORE_REQS_CHUNK)
		return reqs_commit(r);
	return 0;
}

int store_reqs_pause(struct store_reqs *r)
{
	return reqs_commit(r);
}

int store_reqs_end(struct store_reqs *r, bool commit)
{
	int rc;

	if (!r)
		return 0;
	rc = reqs_commit(r);
	if (!commit || rc) {
		/* Not a list to keep: none of it stays (best effort; a new begin clears it). */
		(void)reqs_delete(r->st, r->batch_id);
	}
	free(r);
	return commit ? rc : 0;
}

/* Results */

/*
 * A part's results are one write-once file, results/<part id>.jsonl beside cache.db: every
 * line as the provider sent it, plus "\n", in arrival order. SQLite keeps the index (custom_id,
 * file name, the line's offset in that file, its length, its place in request order and in
 * results.jsonl).
 *
 * The bytes and the rows are written while the download runs, side by side: the download
 * thread appends to the file (and starts its writeback every few MiB, so the fsync at the end
 * waits for little), and hands index records in chunks to an indexer thread of its own, which
 * puts them into SQLite in short transactions (one per chunk: the database is never locked for
 * as long as a transfer takes). Rows of a part that is not ready are never shown: a batch shows
 * results only once all its parts are settled, and a part that ends without results loses its
 * rows. The commit is then one short transaction: the offsets (already right when results
 * arrived in request order), the part's row, and the rename of the fsync'd file into place just
 * before it commits: a crash leaves either no results or all of them, and the bytes are written
 * once.
 */
#define STORE_RFILE_BUF	  (1 << 20)
#define INGEST_CHUNK_RECS 4096
#define INGEST_QUEUE_MAX  16
/* Writeback of the results file starts every this many bytes (see above). */
#define INGEST_WRITEBACK (8 << 20)

/*
 * Result lines that could not be kept (not JSON, no custom_id, a custom_id seen before): the
 * first INGEST_BAD_KEEP are named in the part's error (line in the provider's file and why),
 * the rest counted. One list per thread that finds them (download, indexer), merged at commit.
 */
#define INGEST_BAD_KEEP 20
#define INGEST_BAD_WHY	72

struct ingest_bad {
	int64_t n; /* every bad line */
	int kept;
	struct {
		int64_t line;
		char why[INGEST_BAD_WHY];
	} v[INGEST_BAD_KEEP];
};

/* Index records, each: u32 id length, u32 line length, i64 offset in the data file, i64 line
 * number in the provider's file, id. */
#define INGEST_REC_HDR (2 * sizeof(uint32_t) + 2 * sizeof(int64_t))

/*
 * The usage sums of the rows the indexer keeps, per model, added as each row goes in: the
 * commit then writes them instead of reading every row of the part back (a lookup of the
 * table per row, on the way to "ready"). More models than this, or a sum past INT64_MAX
 * (SQLite's sum() fails there), and the commit sums the rows in SQL as before.
 */
#define INGEST_MODELS 8

struct ingest_sum {
	char model[USAGE_MODEL_MAX];
	int64_t n, tok[4];
};

struct ingest_chunk {
	struct ingest_chunk *next;
	bool reset; /* first drop the rows indexed so far: the download started over */
	size_t used, size, nrecs;
	char buf[];
};

/*
 * The data file's writer. Whole buffers go out with O_DIRECT: the bytes are written once, to
 * the disk, without a page-cache copy that nobody reads before the part is ready (the reads
 * come later, and a cold read costs the same either way). On a VM whose freed memory goes back
 * to the host (virtio-balloon free page reporting), each new page-cache page is a host fault at
 * its first touch (1 to 5 s per GB measured, docs/design.md): 290 MB per part that the
 * buffered writes paid on the download's path. The buffer is aligned and its size a multiple
 * of any logical block size, so every direct write starts and ends aligned; the tail (less
 * than a buffer) goes through the page cache at the end, before the fsync. A file system that
 * refuses O_DIRECT (at the open or at a write) gets buffered writes, as before.
 */
#define RFILE_ALIGN 4096

struct rfile {
	int fd;
	bool direct; /* O_DIRECT is set on fd */
	bool want_direct;
	char *buf; /* STORE_RFILE_BUF bytes, RFILE_ALIGN-aligned */
	size_t used;
	int64_t off; /* of buf[0] in the file */
};

static int rfile_open(struct rfile *f, const char *path)
{
	int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;

	f->used = 0;
	f->off = 0;
	if (posix_memalign((void **)&f->buf, RFILE_ALIGN, STORE_RFILE_BUF)) {
		f->buf = NULL;
		f->fd = -1;
		return -ENOMEM;
	}
	f->fd = open(path, flags | O_DIRECT, 0666);
	f->direct = f->want_direct = f->fd >= 0;
	if (f->fd < 0 && errno == EINVAL)
		f->fd = open(path, flags, 0666);
	return f->fd < 0 ? -errno : 0;
}

static int rfile_set_direct(struct rfile *f, bool on)
{
	int fl = fcntl(f->fd, F_GETFL);

	if (fl < 0 || fcntl(f->fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT))
		return -errno;
	f->direct = on;
	return 0;
}

/* Writes buf[0, n) at f->off; what is left (n - done) moves to the buffer's start. */
static int rfile_write(struct rfile *f, size_t n)
{
	size_t done = 0;
	int rc = 0;

	while (done < n) {
		ssize_t w = pwrite(f->fd, f->buf + done, n - done, f->off + (int64_t)done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EINVAL && f->direct) {
			/* Alignment this file system wants and we cannot know: buffered from now. */
			f->want_direct = false;
			rc = rfile_set_direct(f, false);
			if (rc)
				break;
			continue;
		}
		if (w <= 0) {
			rc = w < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)w;
	}
	f->off += (int64_t)done;
	f->used = n - done;
	if (f->used)
		memmove(f->buf, f->buf + done, f->used);
	return rc;
}

static int rfile_put(struct rfile *f, const char *p, size_t n)
{
	int rc;

	while (n) {
		size_t k = STORE_RFILE_BUF - f->used < n ? STORE_RFILE_BUF - f->used : n;

		memcpy(f->buf + f->used, p, k);
		f->used += k;
		p += k;
		n -= k;
		if (f->used == STORE_RFILE_BUF) {
			rc = rfile_write(f, STORE_RFILE_BUF);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* Everything put so far is in the file. A direct write would need the tail padded: it goes
 * through the page cache, and direct writes resume only where the file's end is aligned. */
static int rfile_flush(struct rfile *f)
{
	int rc = 0;

	if (!f->used)
		return 0;
	if (f->direct)
		rc = rfile_set_direct(f, false);
	if (!rc)
		rc = rfile_write(f, f->used);
	if (!rc && f->want_direct && !(f->off % RFILE_ALIGN))
		rc = rfile_set_direct(f, true);
	return rc;
}

static int rfile_sync(struct rfile *f)
{
	int rc = rfile_flush(f);

	if (!rc && fsync(f->fd))
		rc = -errno;
	return rc;
}

static int rfile_truncate(struct rfile *f)
{
	f->used = 0;
	f->off = 0;
	if (ftruncate(f->fd, 0))
		return -errno;
	return f->want_direct && !f->direct ? rfile_set_direct(f, true) : 0;
}

static void rfile_close(struct rfile *f)
{
	if (f->fd >= 0)
		(void)close(f->fd);
	f->fd = -1;
	free(f->buf);
	f->buf = NULL;
}

/* A window of a part's requests in file order (req_find). */
#define INGEST_REQ_WINDOW 1024
struct ingest_req {
	size_t at, len; /* its custom_id in ids */
	int64_t seq, line;
};

struct ingest_reqs {
	struct ingest_req v[INGEST_REQ_WINDOW];
	int n, pos;
	bool end;     /* no more after these */
	int64_t line; /* the last one's line */
	char *ids;
	size_t ids_size;
};

struct store_ingest {
	struct store *st;
	struct store_conn *c; /* the download thread's */
	int64_t part_id, batch_id;
	int64_t first_line, last_line; /* the part's lines: its requests */
	bool has_requests;	       /* a local batch: results are checked against them */
	struct rfile data;	       /* results/<part>.tmp */
	int64_t doff;		       /* bytes written to data */
	int64_t synced;		       /* bytes of data whose writeback was started */
	int64_t added, count;
	struct ingest_bad dl_bad; /* lines the download thread could not take */
	struct ingest_chunk *cur; /* being filled by the download thread */
	bool in_txn, published;
	store_parse_fn parse; /* reads each line's outcome, text, usage (NULL: rtype unknown) */

	/* Shared with the indexer thread, under lock. */
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t more, room;
	struct ingest_chunk *head, *tail;
	int queued;
	bool done, busy;
	int rc; /* the indexer's first failure */

	/* The indexer's own (read by the download thread only after joining it). */
	bool indexed;	  /* rows may exist for this part */
	bool ordered;	  /* every row so far came in request order: off is right */
	bool direct;	  /* and lies at that same offset in the data file (jsonl_direct) */
	int64_t last_seq; /* of the last row indexed */
	int64_t run_off;  /* its end in the part's stretch of results.jsonl */
	struct ingest_reqs rw;
	int64_t stray;
	char stray_id[80];
	struct ingest_bad ix_bad; /* repeated custom_ids */
	struct ingest_sum sums[INGEST_MODELS];
	int nsums;
	bool sums_lost; /* the sums above do not cover every row: sum them in SQL */
};

static void bad_add(struct ingest_bad *bad, int64_t line, const char *why)
{
	if (bad->n++ >= INGEST_BAD_KEEP)
		return;
	bad->v[bad->kept].line = line;
	snprintf(bad->v[bad->kept].why, INGEST_BAD_WHY, "%s", why);
	bad->kept++;
}

/* At most max bytes of a custom_id for a message, never cut inside a UTF-8 sequence. */
static int id_cut(const char *id, size_t len, size_t max)
{
	if (len <= max)
		return (int)len;
	while (max && ((unsigned char)id[max] & 0xc0) == 0x80)
		max--;
	return (int)max;
}

/*
 * "N result line(s) could not be kept: line L: why; ..." in line order, both lists merged,
 * as many as fit in size (the part's error also carries the stray note and, with parts, a
 * prefix), then "and M more".
 */
static void bad_message(const struct ingest_bad *a, const struct ingest_bad *b, char *out,
			size_t size)
{
	int i = 0, j = 0, shown = 0;
	int64_t n = a->n + b->n;
	size_t used;

	used = (size_t)snprintf(out, size, "%" PRId64 " result line%s could not be kept:", n,
				n == 1 ? "" : "s");
	while ((i < a->kept || j < b->kept) && shown < INGEST_BAD_KEEP && used + 120 < size) {
		bool take_a = j >= b->kept || (i < a->kept && a->v[i].line <= b->v[j].line);
		int64_t line = take_a ? a->v[i].line : b->v[j].line;
		const char *why = take_a ? a->v[i++].why : b->v[j++].why;

		used += (size_t)snprintf(out + used, size - used, "%s line %" PRId64 ": %s",
					 shown ? ";" : "", line, why);
		shown++;
	}
	if (shown < n && used < size)
		snprintf(out + used, size - used, "; and %" PRId64 " more", n - shown);
}

static int results_path(const struct store *st, int64_t part_id, const char *ext, char *out,
			size_t size)
{
	int n = snprintf(out, size, "%s/%" PRId64 ".%s", st->rdir, part_id, ext);

	return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

static struct ingest_chunk *chunk_new(size_t size)
{
	struct ingest_chunk *k = malloc(sizeof(*k) + size);

	if (k) {
		memset(k, 0, sizeof(*k));
		k->size = size;
	}
	return k;
}

static void chunks_free(struct ingest_chunk *k)
{
	while (k) {
		struct ingest_chunk *next = k->next;

		free(k);
		k = next;
	}
}

/*
 * What the parser read of a line, carried in its index record after the custom_id (then the
 * model's bytes and the text's): the indexer thread stores it with the row.
 */
struct ingest_info {
	int32_t type; /* enum result_type; -1: not parsed (rtype NULL) */
	uint32_t model_len, text_len;
	uint32_t has_text;
	uint32_t span;	 /* the text is in the line (tpos, telen): none of its bytes follow */
	uint32_t telen;	 /* its escaped length there */
	int64_t tpos;	 /* where in the data file */
	uint64_t tok[4]; /* input, output, cache creation, cache read */
};

/* A succeeded row's usage into its model's sums (the row stores the same values). */
static void ingest_sum_add(struct store_ingest *in, const char *model,
			   const struct ingest_info *info)
{
	struct ingest_sum *u = NULL;

	if (in->sums_lost)
		return;
	for (int i = 0; i < in->nsums && !u; i++)
		if (strlen(in->sums[i].model) == info->model_len &&
		    !memcmp(in->sums[i].model, model, info->model_len))
			u = &in->sums[i];
	if (!u) {
		if (in->nsums == INGEST_MODELS || info->model_len >= USAGE_MODEL_MAX) {
			in->sums_lost = true;
			return;
		}
		u = &in->sums[in->nsums++];
		memset(u, 0, sizeof(*u));
		memcpy(u->model, model, info->model_len);
	}
	u->n++;
	for (int i = 0; i < 4; i++) {
		int64_t t = (int64_t)(info->tok[i] & INT64_MAX);

		if (u->tok[i] > INT64_MAX - t)
			in->sums_lost = true;
		else
			u->tok[i] += t;
	}
}

/* The next INGEST_REQ_WINDOW requests of the part in file order, after those of the last. */
static int req_window(struct store_ingest *in, struct store_conn *c)
{
	static const char sql[] = "SELECT custom_id, seq, line FROM requests WHERE batch_id = ?1"
				  " AND line > ?2 AND line <= ?3 ORDER BY line LIMIT ?4";
	struct ingest_reqs *w = &in->rw;
	sqlite3_stmt *s = conn_stmt(c, sql);
	size_t used = 0;
	int rc;

	if (!s)
		return -EIO;
	w->n = w->pos = 0;
	sqlite3_bind_int64(s, 1, in->batch_id);
	sqlite3_bind_int64(s, 2, w->line);
	sqlite3_bind_int64(s, 3, in->last_line);
	sqlite3_bind_int(s, 4, INGEST_REQ_WINDOW);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		size_t len = (size_t)sqlite3_column_bytes(s, 0);
		const void *id = sqlite3_column_blob(s, 0);

		if (used + len > w->ids_size) {
			size_t want = (used + len) * 2;
			char *p = realloc(w->ids, want);

			if (!p) {
				stmt_done(c, s);
				return -ENOMEM;
			}
			w->ids = p;
			w->ids_size = want;
		}
		if (len)
			memcpy(w->ids + used, id, len);
		w->v[w->n] = (struct ingest_req){used, len, sqlite3_column_int64(s, 1),
						 sqlite3_column_int64(s, 2)};
		w->line = w->v[w->n].line;
		used += len;
		w->n++;
	}
	stmt_done(c, s);
	if (rc != SQLITE_DONE)
		return -EIO;
	w->end = w->n < INGEST_REQ_WINDOW;
	return 0;
}

/*
 * The request of a result: the window's next one when it is that (an answer in request
 * order, the usual case: no lookup), else looked up. 1: found (*seq, *line), 0: none.
 */
static int req_find(struct store_ingest *in, struct store_conn *c, const char *id, size_t idlen,
		    int64_t *seq, int64_t *line)
{
	static const char sql[] = "SELECT seq, line FROM requests WHERE batch_id = ?1 AND"
				  " custom_id = ?2";
	struct ingest_reqs *w = &in->rw;
	sqlite3_stmt *s;
	int rc;

	if (w->pos == w->n && !w->end && (rc = req_window(in, c)))
		return rc;
	if (w->pos < w->n && w->v[w->pos].len == idlen &&
	    !memcmp(w->ids + w->v[w->pos].at, id, idlen)) {
		*seq = w->v[w->pos].seq;
		*line = w->v[w->pos].line;
		w->pos++;
		return 1;
	}
	if (!(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, in->batch_id);
	sqlite3_bind_blob(s, 2, id, (int)idlen, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*seq = sqlite3_column_int64(s, 0);
		*line = sqlite3_column_int64(s, 1);
	}
	stmt_done(c, s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? 0 : -EIO;
	/* Past a result that never came: the window goes on after this one. */
	while (w->pos < w->n && w->v[w->pos].line <= *line)
		w->pos++;
	return 1;
}

/* One index record into SQLite: only the part's own requests (when they are known). */
static int ingest_row(struct store_ingest *in, struct store_conn *c, const char *custom_id,
		      size_t idlen, int64_t doff, int64_t len, int64_t lineno,
		      const struct ingest_info *info, const char *model, const char *text)
{
	static const char sql[] =
		"INSERT OR IGNORE INTO results (batch_id, part_id, custom_id, fname, line, seq,"
		" len, doff, off, rtype, text, model, tok_in, tok_out, tok_cw, tok_cr, tpos, tlen,"
		" telen, mapped) VALUES (?1, ?2, ?3, ?4, x'', coalesce(?5, 4611686018427387904 +"
		" (SELECT coalesce(max(id), 0) + 1 FROM results)), ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
		" ?13, ?14, ?15, ?16, ?17, ?18, 0)";
	char name[ESCAPE_NAME_SIZE + 5], why[INGEST_BAD_WHY];
	bool known = false, was_ordered = in->ordered;
	int64_t seq = 0, was_seq = in->last_seq;
	sqlite3_stmt *s;
	int n, rc;

	if (in->has_requests) {
		/* A result of another batch never becomes a file here, whatever a provider or an
		 * adoption got wrong. */
		int64_t l = 0;

		rc = req_find(in, c, custom_id, idlen, &seq, &l);
		if (rc < 0)
			return rc;
		known = rc && l >= in->first_line && l <= in->last_line;
		if (!known) {
			if (!in->stray++)
				snprintf(in->stray_id, sizeof(in->stray_id), "%.*s",
					 (int)(idlen < 79 ? idlen : 79), custom_id);
			return 0;
		}
	}
	n = escape_name(custom_id, idlen, name);
	if (n < 0)
		return n;
	memcpy(name + n, ".json", 6);
	/*
	 * In request order, a row's offset in results.jsonl is the sum of those before it; else
	 * the commit computes them all. Rows of unknown ids (only a part without requests has
	 * them, and then all its rows are) are in arrival order.
	 */
	if (known && in->ordered && (!in->indexed || seq > in->last_seq))
		in->last_seq = seq;
	else if (known)
		in->ordered = false;
	s = conn_stmt(c, sql);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, in->batch_id);
	sqlite3_bind_int64(s, 2, in->part_id);
	sqlite3_bind_blob(s, 3, custom_id, (int)idlen, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, name, -1, SQLITE_STATIC);
	if (known)
		sqlite3_bind_int64(s, 5, seq);
	else
		sqlite3_bind_null(s, 5);
	sqlite3_bind_int64(s, 6, len);
	sqlite3_bind_int64(s, 7, doff);
	sqlite3_bind_int64(s, 8, in->run_off);
	if (info->type >= 0)
		sqlite3_bind_text(s, 9, result_type_name((enum result_type)info->type), -1,
				  SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 9);
	if (info->has_text && info->span) {
		sqlite3_bind_null(s, 10);
		sqlite3_bind_int64(s, 16, info->tpos);
		sqlite3_bind_int64(s, 17, info->text_len);
		sqlite3_bind_int64(s, 18, info->telen);
	} else if (info->has_text && info->text_len)
		sqlite3_bind_blob(s, 10, text, (int)info->text_len, SQLITE_STATIC);
	else if (info->has_text)
		sqlite3_bind_zeroblob(s, 10, 0); /* succeeded with no text: a file of "\n" */
	else
		sqlite3_bind_null(s, 10);
	sqlite3_bind_text(s, 11, model, (int)info->model_len, SQLITE_STATIC);
	for (int i = 0; i < 4; i++)
		sqlite3_bind_int64(s, 12 + i, (int64_t)(info->tok[i] & INT64_MAX));
	rc = stmt_run(c, s);
	if (rc)
		return rc;
	if (!sqlite3_changes(c->db)) {
		/* A custom_id seen before: the first line stays (one file per custom_id, and
		 * which of two answers is right cannot be told); this one is named as lost. */
		in->ordered = was_ordered;
		in->last_seq = was_seq;
		n = id_cut(custom_id, idlen, 24);
		snprintf(why, sizeof(why), "custom_id '%.*s%s' repeats an earlier line", n,
			 custom_id, (size_t)n < idlen ? "..." : "");
		bad_add(&in->ix_bad, lineno, why);
		return 0;
	}
	if (doff != in->run_off)
		in->direct = false;

	in->run_off += len + 1;
	in->indexed = true;
	if (info->type == RESULT_SUCCEEDED)
		ingest_sum_add(in, model, info);
	return 0;
}

/* The rows of a part that is not ready (a ready part's are never touched again). */
static int ingest_drop_rows(struct store_conn *c, int64_t part_id)
{
	static const char del[] = "DELETE FROM results WHERE " PART_ROWS " AND NOT EXISTS"
				  " (SELECT 1 FROM parts WHERE id = ?1 AND results IN ('ready',"
				  " 'incomplete'))";
	sqlite3_stmt *s = conn_stmt(c, del);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, part_id);
	return stmt_run(c, s);
}

/* One chunk of records into SQLite, in one transaction. */
static int ingest_chunk_index(struct store_ingest *in, struct store_conn *c,
			      const struct ingest_chunk *k)
{
	static const char live[] = "SELECT results FROM parts WHERE id = ?1";
	size_t pos = 0;
	sqlite3_stmt *s;
	int rc;

	bulk_yield(in->st);
	rc = txn_begin(c);

	/* A part made ready by another download, or forgotten meanwhile: hands off. */
	if (!rc && !(s = conn_stmt(c, live)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_int64(s, 1, in->part_id);
		rc = sqlite3_step(s);
		rc = rc != SQLITE_ROW						      ? -ESTALE
		     : !strcmp((const char *)sqlite3_column_text(s, 0), "ready")      ? -ESTALE
		     : !strcmp((const char *)sqlite3_column_text(s, 0), "incomplete") ? -ESTALE
										      : 0;
		stmt_done(c, s);
	}
	if (!rc && k->reset) {
		rc = ingest_drop_rows(c, in->part_id);
		in->indexed = false;
		in->ordered = true;
		in->direct = true;
		in->run_off = 0;
		in->rw.n = in->rw.pos = 0;
		in->rw.end = false;
		in->rw.line = in->first_line - 1;
		in->stray = 0;
		in->stray_id[0] = '\0';
		memset(&in->ix_bad, 0, sizeof(in->ix_bad));
		in->nsums = 0;
		in->sums_lost = false;
	}
	for (size_t i = 0; !rc && i < k->nrecs; i++) {
		struct ingest_info info;
		uint32_t hdr[2];
		int64_t doff, lineno;
		const char *id, *model, *text;

		memcpy(hdr, k->buf + pos, sizeof(hdr));
		memcpy(&doff, k->buf + pos + sizeof(hdr), sizeof(doff));
		memcpy(&lineno, k->buf + pos + sizeof(hdr) + sizeof(doff), sizeof(lineno));
		pos += INGEST_REC_HDR;
		id = k->buf + pos;
		pos += hdr[0];
		memcpy(&info, k->buf + pos, sizeof(info));
		pos += sizeof(info);
		model = k->buf + pos;
		text = model + info.model_len;
		pos += info.model_len + (info.span ? 0 : info.text_len);
		rc = ingest_row(in, c, id, hdr[0], doff, hdr[1], lineno, &info, model, text);
	}
	return txn_end(c, rc);
}

static void *ingest_indexer(void *arg)
{
	struct store_ingest *in = arg;
	struct store_conn *c = conn_get(in->st); /* closed when this thread ends */

	/*
	 * This connection's own settings, gone with it. A checkpoint at every 4 MB of WAL (the
	 * default) ran here every few chunks, and its fsyncs waited for the writeback of the data
	 * file beside it: the WAL of a whole 100k part now stays until the commit's checkpoint,
	 * after "ready" (and at most 64 MB of it on larger parts). The page cache holds the
	 * indexes' right edges and the requests being looked up (2 MB by default: reread).
	 */
	if (c)
		(void)conn_exec(c, "PRAGMA cache_size = -8192");
	if (c)
		c->ckpt_pages = 16384; /* its WAL hook checkpoints (conn_wal_hook) */
	pthread_mutex_lock(&in->lock);
	if (!c)
		in->rc = -EIO;
	for (;;) {
		struct ingest_chunk *k;
		int rc = 0;

		while (!in->head && !in->done)
			pthread_cond_wait(&in->more, &in->lock);
		k = in->head;
		if (!k)
			break; /* done, and nothing left */
		in->head = k->next;
		if (!in->head)
			in->tail = NULL;
		in->queued--;
		in->busy = true;
		pthread_cond_signal(&in->room);
		if (!in->rc) {
			pthread_mutex_unlock(&in->lock);
			rc = ingest_chunk_index(in, c, k);
			pthread_mutex_lock(&in->lock);
		}
		free(k);
		if (rc && !in->rc)
			in->rc = rc;
		in->busy = false;
		pthread_cond_signal(&in->room);
	}
	pthread_mutex_unlock(&in->lock);
	return NULL;
}

/* Hands the chunk being filled to the indexer (waiting while it is INGEST_QUEUE_MAX behind). */
static int ingest_send(struct store_ingest *in, bool reset)
{
	struct ingest_chunk *k = in->cur;
	int rc;

	if (!k && !reset)
		return 0;
	if (!k && !(k = chunk_new(0)))
		return -ENOMEM;
	in->cur = NULL;
	k->reset = k->reset || reset;
	pthread_mutex_lock(&in->lock);
	while (in->queued >= INGEST_QUEUE_MAX && !in->rc)
		pthread_cond_wait(&in->room, &in->lock);
	rc = in->rc;
	if (!rc) {
		if (in->tail)
			in->tail->next = k;
		else
			in->head = k;
		in->tail = k;
		in->queued++;
		k = NULL;
		pthread_cond_signal(&in->more);
	}
	pthread_mutex_unlock(&in->lock);
	free(k);
	return rc;
}

/* Waits for the indexer to finish every chunk sent and end; returns its first failure. */
static int ingest_join(struct store_ingest *in, bool drop_queued)
{
	int rc;

	if (!in->thread_started)
		return in->rc;
	pthread_mutex_lock(&in->lock);
	in->done = true;
	if (drop_queued && !in->rc)
		in->rc = -ECANCELED;
	pthread_cond_signal(&in->more);
	pthread_mutex_unlock(&in->lock);
	pthread_join(in->thread, NULL);
	in->thread_started = false;
	chunks_free(in->head);
	in->head = in->tail = NULL;
	rc = in->rc;
	return rc == -ECANCELED ? 0 : rc;
}

int store_ingest_begin(struct store *st, int64_t part_id, struct store_ingest **out)
{
	static const char known[] = "SELECT EXISTS (SELECT 1 FROM requests WHERE batch_id = ?1)";
	struct store_conn *c = conn_get(st);
	struct store_ingest *in;
	struct store_part p;
	char path[PATH_MAX];
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	rc = part_get_c(c, part_id, &p);
	if (rc)
		return rc;
	if (!(s = conn_stmt(c, known)))
		return -EIO;
	in = calloc(1, sizeof(*in));
	if (!in) {
		stmt_done(c, s);
		return -ENOMEM;
	}
	in->data.fd = -1;
	sqlite3_bind_int64(s, 1, p.batch_id);
	in->has_requests = sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0);
	stmt_done(c, s);
	in->st = st;
	in->c = c;
	in->part_id = part_id;
	in->batch_id = p.batch_id;
	in->first_line = p.first_line;
	in->last_line = p.last_line;
	in->ordered = true;
	in->direct = true;
	in->rw.line = p.first_line - 1;
	pthread_mutex_init(&in->lock, NULL);
	pthread_cond_init(&in->more, NULL);
	pthread_cond_init(&in->room, NULL);
	rc = results_path(st, part_id, "tmp", path, sizeof(path));
	if (!rc)
		rc = rfile_open(&in->data, path);
	if (!rc) {
		/* Rows an earlier attempt left (a crash during its download) go first. */
		rc = ingest_send(in, true);
	}
	if (!rc) {
		rc = -pthread_create(&in->thread, NULL, ingest_indexer, in);
		in->thread_started = !rc;
		if (!rc)
			(void)pthread_setname_np(in->thread, "bfs-index"); /* top -H, perf */
	}
	if (rc) {
		store_ingest_abort(in);
		return rc;
	}
	*out = in;
	return 0;
}

void store_ingest_set_parse(struct store_ingest *in, store_parse_fn parse)
{
	in->parse = parse;
}

/* The parser's reading of a line as a record's info; the text stays in r. */
static int ingest_parse(struct store_ingest *in, const char *line, size_t len,
			struct result_info *r, struct ingest_info *info)
{
	int rc;

	memset(info, 0, sizeof(*info));
	memset(r, 0, sizeof(*r));
	info->type = -1;
	if (!in->parse)
		return 0;
	rc = in->parse(line, len, r);
	if (rc)
		return rc;
	if (r->text_len > INT32_MAX) {
		result_info_release(r);
		return -E2BIG;
	}
	info->type = (int32_t)r->type;
	info->model_len = (uint32_t)strlen(r->usage.model);
	/* Every succeeded result has a text file (a tool call alone, a filtered answer: "\n"). */
	info->has_text = r->type == RESULT_SUCCEEDED;
	info->text_len = info->has_text && r->text ? (uint32_t)r->text_len : 0;
	/* Text that is one string of the line is read from the data file: not copied here. */
	info->span = info->has_text && r->text && r->text_span && r->text_elen <= UINT32_MAX;
	info->telen = info->span ? (uint32_t)r->text_elen : 0;
	info->tpos = info->span ? in->doff + (int64_t)r->text_at : 0;
	if (r->type == RESULT_SUCCEEDED) {
		info->tok[0] = r->usage.input_tokens;
		info->tok[1] = r->usage.output_tokens;
		info->tok[2] = r->usage.cache_creation_tokens;
		info->tok[3] = r->usage.cache_read_tokens;
	}
	return 0;
}

int store_ingest_add(struct store_ingest *in, const char *custom_id, const char *line, size_t len,
		     long lineno)
{
	uint32_t hdr[2];
	int64_t ln = lineno;
	struct ingest_info info;
	struct result_info r;
	size_t idlen = strlen(custom_id), need;
	struct ingest_chunk *k = in->cur;
	int rc;

	if (idlen > UINT32_MAX || len > UINT32_MAX || len > INT32_MAX)
		return -E2BIG;
	rc = ingest_parse(in, line, len, &r, &info);
	if (rc)
		return rc;
	need = INGEST_REC_HDR + idlen + sizeof(info) + info.model_len +
	       (info.span ? 0 : info.text_len);
	rc = rfile_put(&in->data, line, len);
	if (!rc)
		rc = rfile_put(&in->data, "\n", 1);
	if (rc)
		goto out;
	if (k && (k->nrecs >= INGEST_CHUNK_RECS || k->size - k->used < need)) {
		rc = ingest_send(in, false);
		if (rc)
			goto out;
		k = NULL;
	}
	if (!k) {
		k = chunk_new(need > 64 * INGEST_CHUNK_RECS ? need : 64 * INGEST_CHUNK_RECS);
		if (!k) {
			rc = -ENOMEM;
			goto out;
		}
		in->cur = k;
	}
	hdr[0] = (uint32_t)idlen;
	hdr[1] = (uint32_t)len;
	{
		char *at = k->buf + k->used;

		memcpy(at, hdr, sizeof(hdr));
		memcpy(at + sizeof(hdr), &in->doff, sizeof(in->doff));
		memcpy(at + sizeof(hdr) + sizeof(in->doff), &ln, sizeof(ln));
		at += INGEST_REC_HDR;
		memcpy(at, custom_id, idlen);
		at += idlen;
		memcpy(at, &info, sizeof(info));
		at += sizeof(info);
		memcpy(at, r.usage.model, info.model_len);
		at += info.model_len;
		if (info.text_len && !info.span)
			memcpy(at, r.text, info.text_len);
	}
	k->used += need;
	k->nrecs++;
	in->doff += (int64_t)len + 1;
	in->added++;
	if (!in->data.direct && in->doff - in->synced >= INGEST_WRITEBACK) {
		/* Only a hint to start writing (the fsync at the end reports failures); direct
		 * writes are at the disk already. */
		if (!rfile_flush(&in->data))
			(void)sync_file_range(in->data.fd, in->synced, in->doff - in->synced,
					      SYNC_FILE_RANGE_WRITE);
		in->synced = in->doff;
	}
out:
	result_info_release(&r);
	return rc;
}

int64_t store_ingest_count(const struct store_ingest *in)
{
	return in->added;
}

void store_ingest_bad(struct store_ingest *in, long lineno, const char *why)
{
	bad_add(&in->dl_bad, lineno, why);
}

int64_t store_ingest_bad_count(const struct store_ingest *in)
{
	return in->dl_bad.n;
}

int store_ingest_reset(struct store_ingest *in)
{
	int rc;

	free(in->cur); /* records of the abandoned download */
	in->cur = NULL;
	rc = rfile_truncate(&in->data);
	if (rc)
		return rc;
	in->doff = 0;
	in->synced = 0;
	in->added = 0;
	memset(&in->dl_bad, 0, sizeof(in->dl_bad));
	return ingest_send(in, true);
}

/* The data file, durable, then in place (a ready part's file is never rewritten after). */
static int data_publish(struct store_ingest *in)
{
	char tmp[PATH_MAX], final[PATH_MAX];
	int rc;

	rc = rfile_sync(&in->data);
	if (rc)
		return rc;
	rc = results_path(in->st, in->part_id, "tmp", tmp, sizeof(tmp));
	if (!rc)
		rc = results_path(in->st, in->part_id, "jsonl", final, sizeof(final));
	if (!rc && rename(tmp, final))
		rc = -errno;
	if (!rc)
		in->published = true;
	return rc;
}

/* The part's usage sums, per model, as the indexer added them up. */
static int ingest_usage_sums(struct store_ingest *in)
{
	static const char del[] = "DELETE FROM usage WHERE part_id = ?1";
	static const char add[] =
		"INSERT INTO usage (part_id, batch_id, model, results, tok_in, tok_out, tok_cw,"
		" tok_cr) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
	static const char known[] = "UPDATE parts SET usage_known = 1 WHERE id = ?1";
	sqlite3_stmt *s = conn_stmt(in->c, del);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, in->part_id);
	rc = stmt_run(in->c, s);
	for (int i = 0; !rc && i < in->nsums; i++) {
		const struct ingest_sum *u = &in->sums[i];

		if (!(s = conn_stmt(in->c, add)))
			return -EIO;
		sqlite3_bind_int64(s, 1, in->part_id);
		sqlite3_bind_int64(s, 2, in->batch_id);
		sqlite3_bind_text(s, 3, u->model, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, u->n);
		for (int j = 0; j < 4; j++)
			sqlite3_bind_int64(s, 5 + j, u->tok[j]);
		rc = stmt_run(in->c, s);
	}
	if (!rc && !(s = conn_stmt(in->c, known)))
		return -EIO;
	if (!rc) {
		sqlite3_bind_int64(s, 1, in->part_id);
		rc = stmt_run(in->c, s);
	}
	return rc;
}

/* The part's usage sums, per model, from the rows it keeps (status never scans them). */
static int ingest_usage(struct store_ingest *in)
{
	static const char *const sqls[] = {
		"DELETE FROM usage WHERE part_id = ?1",
		"INSERT INTO usage (part_id, batch_id, model, results, tok_in, tok_out, tok_cw,"
		" tok_cr) SELECT ?1, batch_id, model, count(*), sum(tok_in), sum(tok_out),"
		" sum(tok_cw), sum(tok_cr) FROM results WHERE " PART_ROWS " AND rtype = 'succeeded'"
		" GROUP BY batch_id, model",
		"UPDATE parts SET usage_known = 1 WHERE id = ?1",
	};
	int rc = 0;

	if (!in->sums_lost)
		return ingest_usage_sums(in);
	for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]) && !rc; i++) {
		sqlite3_stmt *s = conn_stmt(in->c, sqls[i]);

		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, in->part_id);
		rc = stmt_run(in->c, s);
	}
	return rc;
}

int store_ingest_commit(struct store_ingest *in, int64_t *count, int64_t *stray, char *stray_msg)
{
	static const char mark[] =
		"UPDATE parts SET results = ?5, results_count = ?2, results_size = ?6,"
		" error = ?3, error_line = 0, error_attempt = 0, next_poll_at = 0,"
		" fetch_failures = 0, updated_at = ?4, jsonl_direct = ?7 WHERE id = ?1 AND"
		" results NOT IN ('ready', 'incomplete')";
	static const char stored[] = "SELECT count(*), coalesce(sum(len + 1), 0) FROM results"
				     " WHERE " PART_ROWS;
	/* Offsets in the part's stretch of results.jsonl, in request order (unknown ids last,
	 * in arrival order): only this part's rows. */
	static const char offs[] =
		"UPDATE results SET off = x.o, mapped = 1 FROM (SELECT id, sum(len + 1) OVER (ORDER"
		" BY seq ROWS UNBOUNDED PRECEDING) - len - 1 AS o FROM results WHERE " PART_ROWS
		") AS x WHERE results.id = x.id";
	static const char map[] = "UPDATE results SET mapped = 1 WHERE " PART_ROWS;
	int64_t bytes = 0;
	char msg[STORE_INGEST_MSG] = "";
	const char *word;
	sqlite3_stmt *s = NULL;
	int rc;

	rc = ingest_send(in, false);
	/* The bytes are made durable before the transaction: a full disk shows here, and the
	 * abort then frees them before anything needs room in the database. The fsync runs while
	 * the indexer takes the last chunks. */
	if (!rc)
		rc = rfile_sync(&in->data);
	if (ingest_join(in, rc != 0) && !rc)
		rc = in->rc;
	if (!rc)
		rc = txn_begin(in->c);
	if (rc) {
		store_ingest_abort(in);
		return rc;
	}
	in->in_txn = true;
	if (in->dl_bad.n || in->ix_bad.n)
		bad_message(&in->dl_bad, &in->ix_bad, msg, sizeof(msg));
	if (in->stray)
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
			 "%s%" PRId64
			 " result(s) whose custom_id is not among the requests of this "
			 "part were left out (the first: '%.64s')",
			 msg[0] ? "; " : "", in->stray, in->stray_id);
	/* What is stored, not what arrived: a repeated custom_id replaced its earlier line. */
	if (!in->ordered || !in->direct) {
		if (!(s = conn_stmt(in->c, in->ordered ? map : offs)))
			rc = -EIO;
		if (!rc) {
			sqlite3_bind_int64(s, 1, in->part_id);
			rc = stmt_run(in->c, s);
		}
	}
	if (!rc && in->parse)
		rc = ingest_usage(in);
	if (!rc && !(s = conn_stmt(in->c, stored)))
		rc = -EIO;
	if (!rc) {
		sqlite3_bind_int64(s, 1, in->part_id);
		if (sqlite3_step(s) == SQLITE_ROW) {
			in->count = sqlite3_column_int64(s, 0);
			bytes = sqlite3_column_int64(s, 1);
		}
		stmt_done(in->c, s);
		if (!(s = conn_stmt(in->c, mark)))
			rc = -EIO;
	}
	if (!rc) {
		sqlite3_bind_int64(s, 1, in->part_id);
		sqlite3_bind_int64(s, 2, in->count);
		sqlite3_bind_text(s, 3, msg, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, timefmt_now_ms());
		/* None of its own results: the part has none to show (never an empty ready);
		 * lines lost: never "ready" for a set with a hole. */
		word = (in->stray || in->dl_bad.n || in->ix_bad.n) && !in->count ? "unavailable"
		       : in->dl_bad.n || in->ix_bad.n				 ? "incomplete"
										 : "ready";
		sqlite3_bind_text(s, 5, word, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 6, bytes);
		sqlite3_bind_int(s, 7, in->ordered && in->direct);
		rc = part_change(in->c, in->part_id, s);
	}
	if (!rc)
		rc = data_publish(in);
	if (rc) {
		store_ingest_abort(in);
		return rc;
	}
	rc = txn_end(in->c, 0);
	in->in_txn = false;
	if (!rc) {
		if (count)
			*count = in->count;
		if (stray)
			*stray = in->stray + in->dl_bad.n + in->ix_bad.n;
		if (stray_msg)
			snprintf(stray_msg, STORE_INGEST_MSG, "%s", msg);
		reserve_fill(in->st); /* the disk had room for these: keep some back again */
	} else {
		in->published =
			false; /* not ready: its rows go (the file is rewritten next time) */
	}
	store_ingest_abort(in); /* frees; keeps a published file and its rows */
	return rc;
}

void store_ingest_abort(struct store_ingest *in)
{
	char path[PATH_MAX];

	if (!in)
		return;
	if (in->in_txn)
		conn_rollback(in->c); /* nothing to do if it fails: the txn is gone */
	(void)ingest_join(in, true);
	free(in->cur);
	free(in->rw.ids);
	/* The bytes go first: on a full disk they are the room the writes below need. */
	rfile_close(&in->data);
	if (!in->published && !results_path(in->st, in->part_id, "tmp", path, sizeof(path)))
		(void)unlink(path); /* only space */
	/* The side file of index records of older versions. */
	if (!results_path(in->st, in->part_id, "idx", path, sizeof(path)))
		(void)unlink(path);
	/*
	 * Rows of an unfinished download stay for now: a part that is not ready shows none, the
	 * next download drops them first, and a part that becomes unavailable loses them then
	 * (store_part_set_results, store_part_fetch_failed). Writing nothing here keeps the room
	 * a full disk has left for the status update that says so.
	 */
	pthread_cond_destroy(&in->more);
	pthread_cond_destroy(&in->room);
	pthread_mutex_destroy(&in->lock);
	free(in);
}

static void result_from_row(sqlite3_stmt *s, struct store_result *r)
{
	memset(r, 0, sizeof(*r));
	r->id = sqlite3_column_int64(s, 0);
	r->batch_id = sqlite3_column_int64(s, 1);
	copy_text(r->fname, sizeof(r->fname), s, 2);
	r->size = sqlite3_column_int64(s, 3) + 1;
	r->mtime = sqlite3_column_int64(s, 4);
}

/*
 * The columns after RESULT_COLS: the row's place, and whether its part is ready (the rows of
 * a download still going may yet be dropped).
 */
#define RESULT_SEL                                                                \
	"SELECT r.id, r.batch_id, r.fname, r.len, b.ended_at, r.part_id, r.doff," \
	" p.results IN ('ready', 'incomplete')"
#define RESULT_JOIN " JOIN batches b ON b.id = r.batch_id LEFT JOIN parts p ON p.id = r.part_id"
#define RESULT_COLS RESULT_SEL " FROM results r" RESULT_JOIN

static void loc_put(struct store *st, sqlite3_stmt *s)
{
	struct store_loc l = {
		.id = sqlite3_column_int64(s, 0),
		.part_id = sqlite3_column_int64(s, 5),
		.doff = sqlite3_column_int64(s, 6),
		.len = sqlite3_column_int64(s, 3),
	};

	if (!st->loc || l.doff < 0 || !sqlite3_column_int(s, 7))
		return;
	pthread_mutex_lock(&st->loc_lock);
	st->loc[(uint64_t)l.id % STORE_LOC_SLOTS] = l;
	pthread_mutex_unlock(&st->loc_lock);
}

static bool loc_get(struct store *st, int64_t id, struct store_loc *out)
{
	if (!st->loc || id <= 0)
		return false;
	pthread_mutex_lock(&st->loc_lock);
	*out = st->loc[(uint64_t)id % STORE_LOC_SLOTS];
	pthread_mutex_unlock(&st->loc_lock);
	return out->id == id;
}

static int result_query_one(struct store_conn *c, sqlite3_stmt *s, struct store_result *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		result_from_row(s, out);
		loc_put(c->st, s);
		stmt_done(c, s);
		return 0;
	}
	stmt_done(c, s);
	return rc == SQLITE_DONE ? -ENOENT : -EIO;
}

/*
 * The statement that finds batch_id's row named fname (an escaped custom_id + ".json"): by
 * the custom_id it escapes (by_id: the UNIQUE index; the name is checked too), or for a cut
 * name, which no id can be read from, by the name itself (by_cut: results_cut). id holds the
 * bound id until the statement is done.
 */
static int name_stmt(struct store_conn *c, const char *by_id, const char *by_cut, int64_t batch_id,
		     const char *fname, char id[ESCAPE_NAME_SIZE], sqlite3_stmt **out)
{
	char esc[ESCAPE_NAME_SIZE];
	size_t n = strlen(fname);
	sqlite3_stmt *s;
	int k;

	if (n <= 5 || n - 5 >= sizeof(esc) || strcmp(fname + n - 5, ".json"))
		return -ENOENT;
	memcpy(esc, fname, n - 5);
	esc[n - 5] = '\0';
	k = unescape_name(esc, id, ESCAPE_NAME_SIZE);
	if (k < 0 && k != -ENAMETOOLONG)
		return -ENOENT; /* no name escape_name() makes */
	if (!(s = conn_stmt(c, k < 0 ? by_cut : by_id)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_text(s, 2, fname, -1, SQLITE_STATIC);
	if (k >= 0)
		sqlite3_bind_blob(s, 3, id, k, SQLITE_STATIC);
	*out = s;
	return 0;
}

/*
 * (results_cut is a partial index: the instr term lets it serve, and SQLite would rather scan
 * the covering results_list without being told)
 */
#define BY_NAME	 " WHERE r.batch_id = ?1 AND r.custom_id = ?3 AND r.fname = ?2"
#define CUT_FROM " FROM results r INDEXED BY results_cut"
#define BY_CUT	 " WHERE r.batch_id = ?1 AND r.fname = ?2 AND instr(r.fname, '~') > 0"

int store_result_by_name(struct store *st, int64_t batch_id, const char *fname,
			 struct store_result *out)
{
	static const char by_id[] = RESULT_COLS BY_NAME;
	static const char by_cut[] = RESULT_SEL CUT_FROM RESULT_JOIN BY_CUT;
	struct store_conn *c = conn_get(st);
	char id[ESCAPE_NAME_SIZE];
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	rc = name_stmt(c, by_id, by_cut, batch_id, fname, id, &s);
	return rc ? rc : result_query_one(c, s, out);
}

int store_result_get(struct store *st, int64_t id, struct store_result *out)
{
	static const char sql[] = RESULT_COLS " WHERE r.id = ?1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return result_query_one(c, s, out);
}

int store_result_list(struct store *st, int64_t batch_id, int64_t after, int limit,
		      store_result_fn fn, void *ctx)
{
	static const char sql[] =
		RESULT_COLS " WHERE r.batch_id = ?1 AND r.id > ?2 ORDER BY r.id LIMIT ?3";
	struct store_conn *c = conn_get(st);
	struct store_result r;
	sqlite3_stmt *s;
	int rc;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int(s, 3, limit);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		result_from_row(s, &r);
		loc_put(st, s);
		rc = fn(ctx, &r);
		if (rc) {
			stmt_done(c, s);
			return rc;
		}
	}
	stmt_done(c, s);
	return rc == SQLITE_DONE ? 0 : -EIO;
}

/*
 * The calling connection's descriptor of part_id's data file. It stays open until this
 * connection opens STORE_DATA_FDS other parts' files (least recently used goes first), so
 * descriptors of up to STORE_DATA_FDS parts taken in one call are all still open after it.
 */
static int data_fd(struct store_conn *c, int64_t part_id)
{
	char path[PATH_MAX];
	int v = 0;

	for (int i = 0; i < STORE_DATA_FDS; i++) {
		if (c->rf[i].fd >= 0 && c->rf[i].part == part_id) {
			c->rf[i].used = ++c->rf_clock;
			return c->rf[i].fd;
		}
		if (c->rf[i].fd < 0 || (c->rf[v].fd >= 0 && c->rf[i].used < c->rf[v].used))
			v = i;
	}
	if (results_path(c->st, part_id, "jsonl", path, sizeof(path)))
		return -ENAMETOOLONG;
	if (c->rf[v].fd >= 0)
		close(c->rf[v].fd);
	c->rf[v].fd = open(path, O_RDONLY | O_CLOEXEC);
	c->rf[v].part = part_id;
	c->rf[v].used = ++c->rf_clock;
	return c->rf[v].fd >= 0 ? c->rf[v].fd : -errno;
}

static long pread_full(int fd, char *dst, size_t n, int64_t off)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = pread(fd, dst + done, n - done, (off_t)(off + (int64_t)done));

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO; /* shorter than its index says: never hand out a hole */
		done += (size_t)k;
	}
	return (long)done;
}

/*
 * Copies bytes [off, off + size) of a result's file ("line\n") into dst: from its part's data
 * file (which holds the newline too), or, for a row of an older cache, from its blob with
 * incremental blob I/O (a multi-megabyte line is never loaded whole for a 4 KiB read).
 */
static long result_copy(struct store_conn *c, int64_t id, int64_t part_id, int64_t doff,
			int64_t len, int64_t off, size_t size, char *dst)
{
	sqlite3_blob *blob = NULL;
	size_t done = 0;
	int fd, rc;

	if (off >= len + 1)
		return 0;
	if (doff >= 0) {
		size_t n = (size_t)(len + 1 - off) < size ? (size_t)(len + 1 - off) : size;

		fd = data_fd(c, part_id);
		return fd < 0 ? fd : pread_full(fd, dst, n, doff + off);
	}
	if (off < len) {
		size_t n = (size_t)(len - off) < size ? (size_t)(len - off) : size;

		rc = sqlite3_blob_open(c->db, "main", "results", "line", id, 0, &blob);
		if (rc != SQLITE_OK)
			return store_errno(rc) ? store_errno(rc) : -EIO;
		rc = sqlite3_blob_read(blob, dst, (int)n, (int)off);
		sqlite3_blob_close(blob);
		if (rc != SQLITE_OK)
			return store_errno(rc) ? store_errno(rc) : -EIO;
		done = n;
	}
	if (done < size && off + (int64_t)done == len)
		dst[done++] = '\n';
	return (long)done;
}

long store_result_read(struct store *st, int64_t id, int64_t off, size_t size, char *dst)
{
	static const char sql[] = "SELECT part_id, doff, len FROM results WHERE id = ?1";
	struct store_conn *c = conn_get(st);
	int64_t part_id, doff, len;
	struct store_loc l;
	sqlite3_stmt *s;
	int rc;

	if (c && loc_get(st, id, &l))
		return result_copy(c, id, l.part_id, l.doff, l.len, off, size, dst);
	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		stmt_done(c, s);
		return rc == SQLITE_DONE ? -ENOENT : -EIO;
	}
	part_id = sqlite3_column_int64(s, 0);
	doff = sqlite3_column_int64(s, 1);
	len = sqlite3_column_int64(s, 2);
	stmt_done(c, s);
	return result_copy(c, id, part_id, doff, len, off, size, dst);
}

/*
 * The rows of part_id's stretch of results.jsonl from the one holding byte off, in order:
 * *out is the stepping statement of (id, off, len, doff) rows, or NULL past the end. The
 * caller ends it with stmt_done().
 */
static int part_rows_from(struct store_conn *c, int64_t part_id, int64_t off, sqlite3_stmt **out)
{
	/* (mapped: the terms that let results_part_map, a partial index, serve) */
	static const char first[] = "SELECT off FROM results WHERE part_id = ?1 AND off <= ?2"
				    " AND mapped ORDER BY off DESC LIMIT 1";
	static const char rows[] = "SELECT id, off, len, doff FROM results WHERE"
				   " part_id = ?1 AND off >= ?2 AND mapped ORDER BY off";
	sqlite3_stmt *s;
	int64_t start;
	int rc;

	*out = NULL;
	if (!(s = conn_stmt(c, first)))
		return -EIO;
	sqlite3_bind_int64(s, 1, part_id);
	sqlite3_bind_int64(s, 2, off);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		stmt_done(c, s);
		return rc == SQLITE_DONE ? 0 : -EIO;
	}
	start = sqlite3_column_int64(s, 0);
	stmt_done(c, s);
	if (!(s = conn_stmt(c, rows)))
		return -EIO;
	sqlite3_bind_int64(s, 1, part_id);
	sqlite3_bind_int64(s, 2, start);
	*out = s;
	return 0;
}

/* Bytes [off, off + size) of one part's stretch of results.jsonl; returns the count. */
static long part_jsonl_read(struct store_conn *c, int64_t part_id, int64_t off, size_t size,
			    char *dst)
{
	sqlite3_stmt *s;
	/* A run of rows that lie end to end in the data file: one pread for all of them. */
	int64_t run_doff = -1, run_len = 0;
	size_t done = 0, run_at = 0;
	long n;
	int rc = part_rows_from(c, part_id, off, &s);

	if (rc || !s)
		return rc;
	while (done < size && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 0);
		int64_t roff = sqlite3_column_int64(s, 1);
		int64_t len = sqlite3_column_int64(s, 2);
		int64_t doff = sqlite3_column_int64(s, 3);
		int64_t at = off + (int64_t)done - roff;
		size_t take =
			(size_t)(len + 1 - at) < size - done ? (size_t)(len + 1 - at) : size - done;

		if (doff < 0) {
			/* a row of an older cache: its bytes are in its blob */
			n = result_copy(c, id, part_id, doff, len, at, size - done, dst + done);
			if (n < 0)
				goto out;
			done += (size_t)n;
			continue;
		}
		if (run_len && doff + at == run_doff + run_len) {
			run_len += (int64_t)take; /* continues the run */
		} else {
			if (run_len) {
				int fd = data_fd(c, part_id);

				n = fd < 0 ? fd
					   : pread_full(fd, dst + run_at, (size_t)run_len,
							run_doff);
				if (n < 0)
					goto out;
			}
			run_doff = doff + at;
			run_len = (int64_t)take;
			run_at = done;
		}
		done += take;
	}
	n = (long)done;
	if (run_len) {
		int fd = data_fd(c, part_id);
		long k = fd < 0 ? fd : pread_full(fd, dst + run_at, (size_t)run_len, run_doff);

		if (k < 0)
			n = k;
	}
out:
	stmt_done(c, s);
	return n;
}

/* The part whose stretch of batch_id's results.jsonl holds byte at: 1, 0 past the end. */
struct jsonl_part {
	int64_t id, base, size;
	bool direct; /* its stretch is its data file's first size bytes (schema v11) */
};

static int jsonl_part_at(struct store_conn *c, int64_t batch_id, int64_t at, struct jsonl_part *p)
{
	/* Parts follow each other in file order. */
	static const char part[] = "SELECT p.id, p.results_base, p.results_size, p.jsonl_direct"
				   " FROM parts p JOIN batches b ON"
				   " b.id = p.batch_id WHERE p.batch_id = ?1 AND b.results"
				   " IN ('ready', 'incomplete') AND p.results IN ('ready',"
				   " 'incomplete') AND p.results_size > 0 AND"
				   " p.results_base + p.results_size > ?2 ORDER BY p.idx LIMIT 1";
	sqlite3_stmt *s = conn_stmt(c, part);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_int64(s, 2, at);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		p->id = sqlite3_column_int64(s, 0);
		p->base = sqlite3_column_int64(s, 1);
		p->size = sqlite3_column_int64(s, 2);
		p->direct = sqlite3_column_int(s, 3);
	}
	stmt_done(c, s);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : -EIO;
}

/* How many of size bytes from off a direct part's stretch has. */
static size_t direct_take(const struct jsonl_part *p, int64_t off, size_t size)
{
	return off >= p->size ? 0 : (size_t)(p->size - off) < size ? (size_t)(p->size - off) : size;
}

/* Bytes [off, off + size) of a direct part's stretch: those of its data file. */
static long direct_read(struct store_conn *c, const struct jsonl_part *p, int64_t off, size_t size,
			char *dst)
{
	size_t take = direct_take(p, off, size);
	int fd;

	if (!take)
		return 0;
	fd = data_fd(c, p->id);
	return fd < 0 ? fd : pread_full(fd, dst, take, off);
}

static long direct_spans(struct store_conn *c, const struct jsonl_part *p, int64_t off, size_t size,
			 struct store_span *sp, int max, int *n)
{
	size_t take = direct_take(p, off, size);
	int fd;

	if (!take)
		return 0;
	if (*n == max)
		return -EXDEV;
	fd = data_fd(c, p->id);
	if (fd < 0)
		return fd;
	sp[(*n)++] = (struct store_span){.fd = fd, .off = off, .len = take};
	return (long)take;
}

long store_results_jsonl_read(struct store *st, int64_t batch_id, int64_t off, size_t size,
			      char *dst)
{
	struct store_conn *c = conn_get(st);
	size_t done = 0;

	if (!c)
		return -EIO;
	while (done < size) {
		int64_t at = off + (int64_t)done;
		struct jsonl_part p;
		int rc = jsonl_part_at(c, batch_id, at, &p);
		long n;

		if (rc <= 0) {
			if (rc < 0)
				return rc;
			break; /* the end */
		}
		n = p.direct ? direct_read(c, &p, at - p.base, size - done, dst + done)
			     : part_jsonl_read(c, p.id, at - p.base, size - done, dst + done);
		if (n < 0)
			return n;
		if (n == 0)
			break; /* never loop on a part that gives nothing */
		done += (size_t)n;
	}
	return (long)done;
}

/*
 * Appends to sp[*n..max) where bytes [off, off + size) of one part's stretch of results.jsonl
 * lie in its data file, rows end to end in one span; returns the byte count, -EXDEV when a
 * row is in a blob or the spans would be more than max.
 */
static long part_jsonl_spans(struct store_conn *c, int64_t part_id, int64_t off, size_t size,
			     struct store_span *sp, int max, int *n)
{
	sqlite3_stmt *s;
	int first_span = *n, fd = -1;
	size_t done = 0;
	long ret;
	int rc = part_rows_from(c, part_id, off, &s);

	if (rc || !s)
		return rc;
	while (done < size && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t roff = sqlite3_column_int64(s, 1);
		int64_t len = sqlite3_column_int64(s, 2);
		int64_t doff = sqlite3_column_int64(s, 3);
		int64_t at = off + (int64_t)done - roff;
		size_t take;

		if (doff < 0) {
			ret = -EXDEV; /* a row of an older cache: its bytes are in its blob */
			goto out;
		}
		if (at < 0 || at > len) {
			ret = -EIO; /* rows that do not lie end to end: never a wrong byte */
			goto out;
		}
		take = (size_t)(len + 1 - at) < size - done ? (size_t)(len + 1 - at) : size - done;
		if (*n > first_span && sp[*n - 1].off + (int64_t)sp[*n - 1].len == doff + at) {
			sp[*n - 1].len += take; /* continues the span */
		} else {
			if (*n == max) {
				ret = -EXDEV;
				goto out;
			}
			if (fd < 0 && (fd = data_fd(c, part_id)) < 0) {
				ret = fd;
				goto out;
			}
			sp[*n] = (struct store_span){.fd = fd, .off = doff + at, .len = take};
			(*n)++;
		}
		done += take;
	}
	ret = done < size && rc != SQLITE_DONE && rc != SQLITE_ROW ? -EIO : (long)done;
out:
	stmt_done(c, s);
	return ret;
}

int store_results_jsonl_spans(struct store *st, int64_t batch_id, int64_t off, size_t size,
			      struct store_span *sp, int max, size_t *total)
{
	struct store_conn *c = conn_get(st);
	size_t done = 0;
	int n = 0, parts = 0;

	if (!c)
		return -EIO;
	while (done < size) {
		int64_t at = off + (int64_t)done;
		struct jsonl_part p;
		int rc = jsonl_part_at(c, batch_id, at, &p);
		long k;

		if (rc <= 0) {
			if (rc < 0)
				return rc;
			break; /* the end */
		}
		/* Past STORE_DATA_FDS parts, the first ones' descriptors would be closed. */
		if (++parts > STORE_DATA_FDS)
			return -EXDEV;
		k = p.direct ? direct_spans(c, &p, at - p.base, size - done, sp, max, &n)
			     : part_jsonl_spans(c, p.id, at - p.base, size - done, sp, max, &n);
		if (k < 0)
			return (int)k;
		if (k == 0)
			break; /* never loop on a part that gives nothing */
		done += (size_t)k;
	}
	*total = done;
	return n;
}

/* What the results say (schema v7) */

int store_usage_get(struct store *st, int64_t batch_id, struct bfs_usage *out, size_t max,
		    size_t *n, bool *known)
{
	static const char unknown[] = "SELECT count(*) FROM parts WHERE batch_id = ?1 AND"
				      " results IN ('ready', 'incomplete') AND usage_known = 0";
	static const char sums[] =
		"SELECT model, sum(results), sum(tok_in), sum(tok_out), sum(tok_cw), sum(tok_cr)"
		" FROM usage WHERE batch_id = ?1 GROUP BY model ORDER BY model";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	*n = 0;
	*known = false;
	if (!c || !(s = conn_stmt(c, unknown)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	rc = sqlite3_step(s);
	*known = rc == SQLITE_ROW && sqlite3_column_int64(s, 0) == 0;
	stmt_done(c, s);
	if (rc != SQLITE_ROW)
		return -EIO;
	if (!(s = conn_stmt(c, sums)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct bfs_usage *u;

		if (*n == max) {
			/* More models than a batch can have been priced for: say nothing. */
			*known = false;
			break;
		}
		u = &out[(*n)++];
		memset(u, 0, sizeof(*u));
		copy_text(u->model, sizeof(u->model), s, 0);
		u->results = (uint64_t)sqlite3_column_int64(s, 1);
		u->input_tokens = (uint64_t)sqlite3_column_int64(s, 2);
		u->output_tokens = (uint64_t)sqlite3_column_int64(s, 3);
		u->cache_creation_tokens = (uint64_t)sqlite3_column_int64(s, 4);
		u->cache_read_tokens = (uint64_t)sqlite3_column_int64(s, 5);
	}
	stmt_done(c, s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -EIO;
}

/* "x.json" (a results/ name) for "x.txt" (a text/ name); -ENOENT for any other name. */
static int text_to_json_name(const char *txt, char *out, size_t size)
{
	size_t n = strlen(txt);

	if (n < 5 || strcmp(txt + n - 4, ".txt") || n + 2 > size)
		return -ENOENT;
	memcpy(out, txt, n - 4);
	memcpy(out + n - 4, ".json", 6);
	return 0;
}

/* A text row: the result's name with .txt, its text's size plus the newline. */
static void text_from_row(sqlite3_stmt *s, struct store_result *r)
{
	size_t n;

	result_from_row(s, r);
	n = strlen(r->fname);
	if (n >= 5 && !strcmp(r->fname + n - 5, ".json"))
		memcpy(r->fname + n - 5, ".txt", 5);
}

#define TEXT_SEL   "SELECT r.id, r.batch_id, r.fname, coalesce(r.tlen, length(r.text)), b.ended_at"
#define TEXT_JOIN  " JOIN batches b ON b.id = r.batch_id"
#define TEXT_COLS  TEXT_SEL " FROM results r" TEXT_JOIN
#define TEXT_TERMS " AND r.rtype = 'succeeded' AND (r.text IS NOT NULL OR r.tpos IS NOT NULL)"

int store_text_by_name(struct store *st, int64_t batch_id, const char *fname,
		       struct store_result *out)
{
	static const char by_id[] = TEXT_COLS BY_NAME TEXT_TERMS;
	static const char by_cut[] = TEXT_SEL CUT_FROM TEXT_JOIN BY_CUT TEXT_TERMS;
	struct store_conn *c = conn_get(st);
	char name[STORE_NAME_MAX], id[ESCAPE_NAME_SIZE];
	sqlite3_stmt *s;
	int rc;

	if (text_to_json_name(fname, name, sizeof(name)))
		return -ENOENT;
	if (!c)
		return -EIO;
	rc = name_stmt(c, by_id, by_cut, batch_id, name, id, &s);
	if (rc)
		return rc;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		text_from_row(s, out);
	stmt_done(c, s);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
}

int store_text_get(struct store *st, int64_t id, struct store_result *out)
{
	static const char sql[] = TEXT_COLS " WHERE r.id = ?1 AND r.rtype = 'succeeded' AND"
					    " (r.text IS NOT NULL OR r.tpos IS NOT NULL)";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		text_from_row(s, out);
	stmt_done(c, s);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
}

int store_text_list(struct store *st, int64_t batch_id, int64_t after, int limit,
		    store_result_fn fn, void *ctx)
{
	static const char sql[] = TEXT_COLS " WHERE r.batch_id = ?1 AND r.id > ?2 AND"
					    " r.rtype = 'succeeded' AND"
					    " (r.text IS NOT NULL OR r.tpos IS NOT NULL)"
					    " ORDER BY r.id LIMIT ?3";
	struct store_conn *c = conn_get(st);
	struct store_result r;
	sqlite3_stmt *s;
	int rc, stop = 0;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int(s, 3, limit);
	while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		text_from_row(s, &r);
		stop = fn(ctx, &r);
	}
	stmt_done(c, s);
	if (stop)
		return stop;
	return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Escaped text bytes read per pread (+ room for the longest escape, a surrogate pair). */
#define TEXT_CHUNK 65536

/*
 * Bytes [off, off + size) of a text kept in its line, then "\n": as they are when the line
 * holds it unescaped (telen == tlen: every escape is longer than what it stands for), else
 * decoded from its start, or from where this thread's last read of it stopped.
 */
static long text_span_read(struct store_conn *c, int64_t id, int64_t part, int64_t tpos,
			   int64_t tlen, int64_t telen, int64_t off, size_t size, char *dst)
{
	int64_t enc = 0, dec = 0;
	size_t n = 0;
	int fd = data_fd(c, part);
	long rc = 0;
	char *buf = NULL;

	if (fd < 0)
		return fd;
	if (off > tlen)
		return 0;
	if (telen == tlen) {
		n = (size_t)(tlen - off) < size ? (size_t)(tlen - off) : size;
		rc = n ? pread_full(fd, dst, n, tpos + off) : 0;
		if (rc < 0)
			return rc;
		dec = off + (int64_t)n;
		goto out;
	}
	if (c->tcur_id == id && c->tcur_dec <= off) {
		enc = c->tcur_enc;
		dec = c->tcur_dec;
	}
	buf = malloc(TEXT_CHUNK);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	while (n < size && dec < tlen && enc < telen) {
		size_t want =
			(size_t)(telen - enc) < TEXT_CHUNK ? (size_t)(telen - enc) : TEXT_CHUNK;
		size_t i = 0, done = 0;
		bool stop = false;

		rc = pread_full(fd, buf, want, tpos + enc);
		if (rc < 0)
			goto out;
		while (i < want && !stop) {
			char b[4];
			size_t k, j, take;

			/* Whole units only: an escape cut by the chunk's end is read again next. */
			if (buf[i] == '\\' && want - i < 12 && enc + (int64_t)want < telen)
				break;
			k = jv_unescape_next(buf, &i, want, b);
			if (dec + (int64_t)k <= off) {
				dec += (int64_t)k;
				done = i;
				continue;
			}
			j = dec < off ? (size_t)(off - dec) : 0;
			take = k - j < size - n ? k - j : size - n;
			memcpy(dst + n, b + j, take);
			n += take;
			if (j + take < k)
				break; /* cut by size: the next read starts inside this unit */
			dec += (int64_t)k;
			done = i;
			stop = n == size;
		}
		if (!done && !stop)
			break; /* the bytes do not decode as their row says: never loop */
		enc += (int64_t)done;
	}
	c->tcur_id = id;
	c->tcur_enc = enc;
	c->tcur_dec = dec;
out:
	free(buf);
	if (rc < 0)
		return rc;
	if (dec == tlen && n < size)
		dst[n++] = '\n';
	return (long)n;
}

long store_text_read(struct store *st, int64_t id, int64_t off, size_t size, char *dst)
{
	static const char sql[] = "SELECT text, part_id, tpos, tlen, telen FROM results WHERE"
				  " id = ?1 AND rtype = 'succeeded' AND (text IS NOT NULL OR"
				  " tpos IS NOT NULL)";
	struct store_conn *c = conn_get(st);
	const char *text;
	int64_t len, k;
	size_t n = 0;
	sqlite3_stmt *s;
	int rc;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		stmt_done(c, s);
		return rc == SQLITE_DONE ? -ENOENT : -EIO;
	}
	if (sqlite3_column_type(s, 2) != SQLITE_NULL) {
		int64_t part = sqlite3_column_int64(s, 1), tpos = sqlite3_column_int64(s, 2);
		int64_t tlen = sqlite3_column_int64(s, 3), telen = sqlite3_column_int64(s, 4);

		stmt_done(c, s);
		return text_span_read(c, id, part, tpos, tlen, telen, off, size, dst);
	}
	text = sqlite3_column_blob(s, 0);
	len = sqlite3_column_bytes(s, 0);
	/* The text, then a newline. */
	for (k = off; k < len && n < size; k++)
		dst[n++] = text[k];
	if (k == len && n < size && off <= len) {
		dst[n++] = '\n';
	}
	stmt_done(c, s);
	return (long)n;
}

int store_retry_known(struct store *st, int64_t batch_id)
{
	/* A part ingested before v7 kept no outcomes (and so no usage sums). */
	static const char sql[] = "SELECT count(*) FROM parts WHERE batch_id = ?1 AND"
				  " results IN ('ready', 'incomplete') AND usage_known = 0";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int64_t old = -1;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	if (sqlite3_step(s) == SQLITE_ROW)
		old = sqlite3_column_int64(s, 0);
	stmt_done(c, s);
	return old < 0 ? -EIO : old ? -ENODATA : 0;
}

int store_retry_lines(struct store *st, int64_t batch_id, int64_t after, int64_t *lines, size_t max,
		      size_t *n)
{
	static const char sql[] =
		"SELECT q.line FROM requests q WHERE q.batch_id = ?1 AND q.line > ?2 AND NOT"
		" EXISTS (SELECT 1 FROM results r WHERE r.batch_id = ?1 AND r.custom_id ="
		" q.custom_id AND r.rtype = 'succeeded') ORDER BY q.line LIMIT ?3";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int rc;

	*n = 0;
	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int64(s, 3, (int64_t)max);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && *n < max)
		lines[(*n)++] = sqlite3_column_int64(s, 0);
	stmt_done(c, s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -EIO;
}

int64_t store_data_version(struct store *st)
{
	static const char sql[] = "PRAGMA data_version";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int64_t v = -1;

	if (!c || !(s = conn_stmt(c, sql)))
		return -1;
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	stmt_done(c, s);
	return v;
}

int store_mark_get(struct store *st, struct store_mark *out)
{
	static const char sql[] = "PRAGMA data_version";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	uint64_t gen;
	int rc;

	if (!c)
		return -EIO;
	gen = conn_gen(c);
	if (gen) {
		out->version = (int64_t)gen;
		out->changes = -1; /* never a data_version mark's */
		return 0;
	}
	if (!(s = conn_stmt(c, sql)))
		return -EIO;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		out->version = sqlite3_column_int64(s, 0);
	stmt_done(c, s);
	out->changes = sqlite3_total_changes64(c->db);
	return rc == SQLITE_ROW ? 0 : -EIO;
}
