// SPDX-License-Identifier: MIT
/*
 * The SQLite cache. Owns the schema and its migrations, one connection per thread (SQLite
 * connections must not be shared), and a cache of prepared statements per connection. Every
 * SQLITE_* code becomes a -errno in store_errno() and nowhere else. Must never call a
 * provider or know about FUSE.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "escape.h"
#include "log.h"
#include "store.h"

#define STORE_SCHEMA_VERSION 1
#define STORE_STMT_MAX	     64

struct store_conn {
	sqlite3 *db;
	struct store *st;
	struct {
		const char *sql; /* the static string it was made from: compared by address */
		sqlite3_stmt *stmt;
	} stmts[STORE_STMT_MAX];
	int nstmts;
	struct store_conn *next; /* in st->conns, protected by st->lock */
};

struct store {
	char path[PATH_MAX];
	pthread_key_t key;
	pthread_mutex_t lock; /* protects conns */
	struct store_conn *conns;
};

struct store_reqs {
	struct store_conn *c;
	int64_t batch_id;
	int64_t seq;
};

struct store_ingest {
	struct store_conn *c;
	int64_t batch_id;
};

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
		log_err("cache: '%.60s' failed: %s", sql, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
	}
	return store_errno(rc);
}

static int conn_open(struct store *st, struct store_conn **out)
{
	struct store_conn *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	c->st = st;
	rc = sqlite3_open_v2(st->path, &c->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc != SQLITE_OK) {
		log_err("cannot open cache '%s': %s", st->path, sqlite3_errstr(rc));
		rc = store_errno(rc);
		conn_close(c);
		return rc ? rc : -EIO;
	}
	sqlite3_busy_timeout(c->db, 30000);
	rc = conn_exec(c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
			  "PRAGMA foreign_keys=OFF; PRAGMA temp_store=FILE");
	if (rc) {
		conn_close(c);
		return rc;
	}
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
	if (version > STORE_SCHEMA_VERSION) {
		err_set(err, "the cache was made by a newer batchfs (schema %d, this one knows %d)",
			version, STORE_SCHEMA_VERSION);
		return -EPROTO;
	}
	if (version == 0) {
		rc = conn_exec(c, "BEGIN IMMEDIATE");
		if (!rc)
			rc = conn_exec(c, schema_v1);
		if (!rc)
			rc = conn_exec(c, "PRAGMA user_version = 1; COMMIT");
		if (rc) {
			(void)conn_exec(c, "ROLLBACK"); /* the error above is the one to report */
			err_set(err, "cannot create the cache schema: %s", sqlite3_errmsg(c->db));
			return rc;
		}
	}
	/* Future versions: if (version < 2) { ALTER ...; PRAGMA user_version = 2 } */
	return 0;
}

int store_open(struct store **out, const char *dir, struct bfs_err *err)
{
	struct store *st = NULL;
	struct store_conn *c;
	int fd, rc;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	if ((size_t)snprintf(st->path, sizeof(st->path), "%s/cache.db", dir) >= sizeof(st->path)) {
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
	pthread_mutex_init(&st->lock, NULL);
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

static void copy_text(char *dst, size_t size, sqlite3_stmt *stmt, int col)
{
	const unsigned char *s = sqlite3_column_text(stmt, col);

	snprintf(dst, size, "%s", s ? (const char *)s : "");
}

/* Batches */

#define BATCH_COLS                                                                                \
	"id, remote, name, is_foreign, pid, state, provider_state, total, processing, succeeded," \
	" errored, canceled, expired, results, error, error_line, error_attempt, created_at,"     \
	" ended_at, expires_at, updated_at, dir_mtime, cancel_requested, results_wanted,"         \
	" identity, intent_at, nrequests, nbytes, endpoint, model, ref, next_poll_at,"            \
	" results_count, results_size"

static void batch_from_row(sqlite3_stmt *s, struct store_batch *b)
{
	char word[32];

	memset(b, 0, sizeof(*b));
	b->id = sqlite3_column_int64(s, 0);
	copy_text(b->remote, sizeof(b->remote), s, 1);
	copy_text(b->name, sizeof(b->name), s, 2);
	b->foreign = sqlite3_column_int(s, 3);
	copy_text(b->pid, sizeof(b->pid), s, 4);
	copy_text(word, sizeof(word), s, 5);
	if (state_parse(word, &b->state))
		b->state = BATCH_FAILED;
	copy_text(b->provider_state, sizeof(b->provider_state), s, 6);
	b->counts.total = sqlite3_column_int64(s, 7);
	b->counts.processing = sqlite3_column_int64(s, 8);
	b->counts.succeeded = sqlite3_column_int64(s, 9);
	b->counts.errored = sqlite3_column_int64(s, 10);
	b->counts.canceled = sqlite3_column_int64(s, 11);
	b->counts.expired = sqlite3_column_int64(s, 12);
	copy_text(word, sizeof(word), s, 13);
	if (results_state_parse(word, &b->results))
		b->results = RESULTS_PENDING;
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
	b->intent_at = sqlite3_column_int64(s, 25);
	b->nrequests = sqlite3_column_int64(s, 26);
	b->nbytes = sqlite3_column_int64(s, 27);
	copy_text(b->endpoint, sizeof(b->endpoint), s, 28);
	copy_text(b->model, sizeof(b->model), s, 29);
	copy_text(b->ref, sizeof(b->ref), s, 30);
	b->next_poll_at = sqlite3_column_int64(s, 31);
	b->results_count = sqlite3_column_int64(s, 32);
	b->results_size = sqlite3_column_int64(s, 33);
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
	static const char sql[] =
		"SELECT 1 FROM batches WHERE remote = ?1 AND (name = ?2 OR pid = ?2) LIMIT 1";
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
	rc = name_taken(c, remote, name);
	if (rc)
		return rc;
	s = conn_stmt(c, sql);
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	rc = stmt_run(c, s);
	if (!rc)
		*id = sqlite3_last_insert_rowid(c->db);
	return rc;
}

int store_batch_add_foreign(struct store *st, const char *remote, const struct provider_batch *pb,
			    int64_t now, int64_t *id)
{
	static const char sql[] =
		"INSERT INTO batches (remote, name, is_foreign, pid, state,"
		" updated_at, dir_mtime) VALUES (?1, ?2, 1, ?2, 'in_progress', ?3, ?3)";
	struct store_conn *c = conn_get(st);
	struct store_batch b;
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	rc = name_taken(c, remote, pb->id);
	if (rc)
		return rc;
	s = conn_stmt(c, sql);
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, pb->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	rc = stmt_run(c, s);
	if (rc)
		return rc;
	*id = sqlite3_last_insert_rowid(c->db);
	rc = store_batch_get(st, *id, &b);
	if (rc)
		return rc;
	return 0;
}

int store_batch_get(struct store *st, int64_t id, struct store_batch *out)
{
	static const char sql[] = "SELECT " BATCH_COLS " FROM batches WHERE id = ?1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
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
	static const char sql[] =
		"SELECT " BATCH_COLS " FROM batches WHERE remote = ?1 AND pid = ?2 AND pid <> ''";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, pid, -1, SQLITE_STATIC);
	return batch_query_one(c, s, out);
}

int store_batch_put(struct store *st, const struct store_batch *b)
{
	static const char sql[] =
		"UPDATE batches SET pid = ?2, state = ?3, provider_state = ?4, total = ?5,"
		" processing = ?6, succeeded = ?7, errored = ?8, canceled = ?9, expired = ?10,"
		" results = ?11, error = ?12, error_line = ?13, error_attempt = ?14,"
		" created_at = ?15, ended_at = ?16, expires_at = ?17, updated_at = ?18,"
		" dir_mtime = ?19, cancel_requested = ?20, results_wanted = ?21, identity = ?22,"
		" intent_at = ?23, nrequests = ?24, nbytes = ?25, endpoint = ?26, model = ?27,"
		" ref = ?28, next_poll_at = ?29, results_count = ?30, results_size = ?31"
		" WHERE id = ?1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, b->id);
	sqlite3_bind_text(s, 2, b->pid, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, state_name(b->state), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, b->provider_state, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, b->counts.total);
	sqlite3_bind_int64(s, 6, b->counts.processing);
	sqlite3_bind_int64(s, 7, b->counts.succeeded);
	sqlite3_bind_int64(s, 8, b->counts.errored);
	sqlite3_bind_int64(s, 9, b->counts.canceled);
	sqlite3_bind_int64(s, 10, b->counts.expired);
	sqlite3_bind_text(s, 11, results_state_name(b->results), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 12, b->error, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 13, b->error_line);
	sqlite3_bind_int(s, 14, b->error_attempt);
	sqlite3_bind_int64(s, 15, b->created_at);
	sqlite3_bind_int64(s, 16, b->ended_at);
	sqlite3_bind_int64(s, 17, b->expires_at);
	sqlite3_bind_int64(s, 18, b->updated_at);
	sqlite3_bind_int64(s, 19, b->dir_mtime);
	sqlite3_bind_int(s, 20, b->cancel_requested);
	sqlite3_bind_int(s, 21, b->results_wanted);
	sqlite3_bind_text(s, 22, b->identity, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 23, b->intent_at);
	sqlite3_bind_int64(s, 24, b->nrequests);
	sqlite3_bind_int64(s, 25, b->nbytes);
	sqlite3_bind_text(s, 26, b->endpoint, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 27, b->model, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 28, b->ref, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 29, b->next_poll_at);
	sqlite3_bind_int64(s, 30, b->results_count);
	sqlite3_bind_int64(s, 31, b->results_size);
	return stmt_run(c, s);
}

int store_batch_delete(struct store *st, int64_t id)
{
	static const char *const sqls[] = {
		"DELETE FROM results WHERE batch_id = ?1",
		"DELETE FROM requests WHERE batch_id = ?1",
		"DELETE FROM files WHERE batch_id = ?1",
		"DELETE FROM batches WHERE id = ?1",
	};
	struct store_conn *c = conn_get(st);
	int rc;

	if (!c)
		return -EIO;
	rc = conn_exec(c, "BEGIN IMMEDIATE");
	if (rc)
		return rc;
	for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
		sqlite3_stmt *s = conn_stmt(c, sqls[i]);

		if (!s) {
			rc = -EIO;
			break;
		}
		sqlite3_bind_int64(s, 1, id);
		rc = stmt_run(c, s);
		if (rc)
			break;
	}
	if (rc) {
		(void)conn_exec(c, "ROLLBACK"); /* rc says what went wrong */
		return rc;
	}
	return conn_exec(c, "COMMIT");
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

int store_batch_due(struct store *st, const char *remote, int64_t now, store_batch_fn fn, void *ctx)
{
	static const char sql[] = "SELECT " BATCH_COLS " FROM batches WHERE remote = ?1 AND"
				  " next_poll_at > 0 AND next_poll_at <= ?2"
				  " ORDER BY next_poll_at";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, now);
	return batch_query_each(c, s, fn, ctx);
}

int64_t store_batch_next_due(struct store *st, const char *remote)
{
	static const char sql[] = "SELECT min(next_poll_at) FROM batches WHERE remote = ?1 AND"
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
		(void)conn_exec(c, "ROLLBACK"); /* rc is the error to report */
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

int store_reqs_begin(struct store *st, int64_t batch_id, struct store_reqs **out)
{
	static const char sql[] = "DELETE FROM requests WHERE batch_id = ?1";
	struct store_conn *c = conn_get(st);
	struct store_reqs *r;
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	rc = conn_exec(c, "BEGIN IMMEDIATE");
	if (rc) {
		free(r);
		return rc;
	}
	if (!(s = conn_stmt(c, sql))) {
		(void)conn_exec(c, "ROLLBACK"); /* reporting the prepare failure */
		free(r);
		return -EIO;
	}
	sqlite3_bind_int64(s, 1, batch_id);
	rc = stmt_run(c, s);
	if (rc) {
		(void)conn_exec(c, "ROLLBACK"); /* rc is the error */
		free(r);
		return rc;
	}
	r->c = c;
	r->batch_id = batch_id;
	*out = r;
	return 0;
}

int store_reqs_add(struct store_reqs *r, const char *custom_id, size_t len, long line,
		   long *dup_line)
{
	static const char ins[] = "INSERT INTO requests (batch_id, custom_id, seq, line)"
				  " VALUES (?1, ?2, ?3, ?4)";
	static const char dup[] =
		"SELECT line FROM requests WHERE batch_id = ?1 AND custom_id = ?2";
	sqlite3_stmt *s = conn_stmt(r->c, ins);
	int rc;

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
	if (!rc)
		r->seq++;
	return rc;
}

int store_reqs_end(struct store_reqs *r, bool commit)
{
	int rc;

	if (!r)
		return 0;
	rc = conn_exec(r->c, commit ? "COMMIT" : "ROLLBACK");
	if (rc && commit)
		(void)conn_exec(r->c, "ROLLBACK"); /* COMMIT failed: rc is reported */
	free(r);
	return rc;
}

/* Results */

int store_ingest_begin(struct store *st, int64_t batch_id, struct store_ingest **out)
{
	struct store_conn *c = conn_get(st);
	struct store_ingest *in;
	int rc;

	if (!c)
		return -EIO;
	in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	rc = conn_exec(c, "BEGIN IMMEDIATE");
	if (rc) {
		free(in);
		return rc;
	}
	in->c = c;
	in->batch_id = batch_id;
	rc = store_ingest_reset(in);
	if (rc) {
		store_ingest_abort(in);
		return rc;
	}
	*out = in;
	return 0;
}

int store_ingest_add(struct store_ingest *in, const char *custom_id, const char *line, size_t len)
{
	static const char sql[] =
		"INSERT OR REPLACE INTO results (batch_id, custom_id, fname, line)"
		" VALUES (?1, ?2, ?3, ?4)";
	char name[ESCAPE_NAME_SIZE + 5];
	size_t idlen = strlen(custom_id);
	sqlite3_stmt *s;
	int n;

	n = escape_name(custom_id, idlen, name);
	if (n < 0)
		return n;
	memcpy(name + n, ".json", 6);
	s = conn_stmt(in->c, sql);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, in->batch_id);
	sqlite3_bind_blob(s, 2, custom_id, (int)idlen, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 4, line, (int)len, SQLITE_STATIC);
	return stmt_run(in->c, s);
}

int store_ingest_reset(struct store_ingest *in)
{
	static const char sql[] = "DELETE FROM results WHERE batch_id = ?1";
	sqlite3_stmt *s = conn_stmt(in->c, sql);

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, in->batch_id);
	return stmt_run(in->c, s);
}

int store_ingest_commit(struct store_ingest *in, int64_t *count, int64_t *size)
{
	/* Request order first (unknown ids after, in arrival order), then the byte offset of
	 * each line in results.jsonl, so a read at any offset is one indexed lookup. */
	static const char order[] =
		"UPDATE results SET seq = coalesce((SELECT r.seq FROM requests r WHERE r.batch_id ="
		" results.batch_id AND r.custom_id = results.custom_id), 4611686018427387904 + id)"
		" WHERE batch_id = ?1";
	static const char offs[] =
		"UPDATE results SET off = x.o FROM (SELECT id, sum(length(line) + 1) OVER (ORDER BY"
		" seq ROWS UNBOUNDED PRECEDING) - length(line) - 1 AS o FROM results WHERE"
		" batch_id = ?1) AS x WHERE results.id = x.id";
	static const char totals[] = "SELECT count(*), coalesce(sum(length(line) + 1), 0) FROM"
				     " results WHERE batch_id = ?1";
	static const char mark[] = "UPDATE batches SET results = 'ready', results_count = ?2,"
				   " results_size = ?3, results_wanted = 0 WHERE id = ?1";
	const char *const steps[] = {order, offs};
	int64_t n = 0, bytes = 0;
	sqlite3_stmt *s;
	int rc = 0;

	for (size_t i = 0; i < 2 && !rc; i++) {
		s = conn_stmt(in->c, steps[i]);
		if (!s) {
			rc = -EIO;
			break;
		}
		sqlite3_bind_int64(s, 1, in->batch_id);
		rc = stmt_run(in->c, s);
	}
	if (rc)
		goto out;
	s = conn_stmt(in->c, totals);
	if (!s) {
		rc = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, in->batch_id);
	if (sqlite3_step(s) == SQLITE_ROW) {
		n = sqlite3_column_int64(s, 0);
		bytes = sqlite3_column_int64(s, 1);
	}
	stmt_done(in->c, s);
	s = conn_stmt(in->c, mark);
	if (!s) {
		rc = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, in->batch_id);
	sqlite3_bind_int64(s, 2, n);
	sqlite3_bind_int64(s, 3, bytes);
	rc = stmt_run(in->c, s);
	if (!rc)
		rc = conn_exec(in->c, "COMMIT");
out:
	if (rc) {
		store_ingest_abort(in);
		return rc;
	}
	if (count)
		*count = n;
	if (size)
		*size = bytes;
	free(in);
	return 0;
}

void store_ingest_abort(struct store_ingest *in)
{
	if (!in)
		return;
	(void)conn_exec(in->c, "ROLLBACK"); /* nothing to do if it fails: the txn is gone */
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

static int result_query_one(struct store_conn *c, sqlite3_stmt *s, struct store_result *out)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		result_from_row(s, out);
		stmt_done(c, s);
		return 0;
	}
	stmt_done(c, s);
	return rc == SQLITE_DONE ? -ENOENT : -EIO;
}

int store_result_by_name(struct store *st, int64_t batch_id, const char *fname,
			 struct store_result *out)
{
	static const char sql[] = "SELECT r.id, r.batch_id, r.fname, length(r.line), b.ended_at"
				  " FROM results r JOIN batches b ON b.id = r.batch_id"
				  " WHERE r.batch_id = ?1 AND r.fname = ?2";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_text(s, 2, fname, -1, SQLITE_STATIC);
	return result_query_one(c, s, out);
}

int store_result_get(struct store *st, int64_t id, struct store_result *out)
{
	static const char sql[] =
		"SELECT r.id, r.batch_id, r.fname, length(r.line), b.ended_at"
		" FROM results r JOIN batches b ON b.id = r.batch_id WHERE r.id = ?1";
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
	static const char sql[] = "SELECT r.id, r.batch_id, r.fname, length(r.line), b.ended_at"
				  " FROM results r JOIN batches b ON b.id = r.batch_id"
				  " WHERE r.batch_id = ?1 AND r.id > ?2 ORDER BY r.id LIMIT ?3";
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
 * Copies bytes [off, off+size) of "line\n" for row id into dst using incremental blob I/O, so
 * a multi-megabyte line is never loaded whole for a 4 KiB read.
 */
static long result_copy(struct store_conn *c, int64_t id, int64_t len, int64_t off, size_t size,
			char *dst)
{
	sqlite3_blob *blob = NULL;
	size_t done = 0;
	int rc;

	if (off >= len + 1)
		return 0;
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
	/* One cached statement per read: substr() hands back only the slice asked for. */
	static const char sql[] = "SELECT substr(line, ?2, ?3), length(line) FROM results"
				  " WHERE id = ?1";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	const void *p;
	int64_t len;
	size_t n, done;
	int rc;

	if (!c || !(s = conn_stmt(c, sql)))
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, off + 1);
	sqlite3_bind_int64(s, 3, (int64_t)size);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		stmt_done(c, s);
		return rc == SQLITE_DONE ? -ENOENT : -EIO;
	}
	len = sqlite3_column_int64(s, 1);
	p = sqlite3_column_blob(s, 0);
	n = (size_t)sqlite3_column_bytes(s, 0);
	if (off >= len)
		n = 0;
	if (n > size)
		n = size;
	if (n)
		memcpy(dst, p, n);
	done = n;
	/* The file is the line plus a newline. */
	if (done < size && off + (int64_t)done == len)
		dst[done++] = '\n';
	stmt_done(c, s);
	return (long)done;
}

long store_results_jsonl_read(struct store *st, int64_t batch_id, int64_t off, size_t size,
			      char *dst)
{
	static const char first[] = "SELECT off FROM results WHERE batch_id = ?1 AND off <= ?2"
				    " ORDER BY off DESC LIMIT 1";
	static const char rows[] = "SELECT id, off, length(line) FROM results WHERE batch_id = ?1"
				   " AND off >= ?2 ORDER BY off";
	struct store_conn *c = conn_get(st);
	sqlite3_stmt *s;
	int64_t start = 0;
	size_t done = 0;
	int rc;

	if (!c || !(s = conn_stmt(c, first)))
		return -EIO;
	sqlite3_bind_int64(s, 1, batch_id);
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
	sqlite3_bind_int64(s, 1, batch_id);
	sqlite3_bind_int64(s, 2, start);
	while (done < size && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 0);
		int64_t roff = sqlite3_column_int64(s, 1);
		int64_t len = sqlite3_column_int64(s, 2);
		int64_t at = off + (int64_t)done - roff;
		long n;

		n = result_copy(c, id, len, at, size - done, dst + done);
		if (n < 0) {
			stmt_done(c, s);
			return n;
		}
		done += (size_t)n;
	}
	stmt_done(c, s);
	return (long)done;
}
