// SPDX-License-Identifier: MIT
/*
 * The FUSE layer (low-level API): inode numbers computed from store row ids (so the kernel's
 * lookup counts need no table), every read, stat and listing answered from the store, draft
 * files written to the spool, and the two doors to a provider (the commit point of
 * requests.jsonl and ctl) handed to worker.c as jobs: the op returns without replying and the
 * job's done callback replies, so no FUSE thread waits on the network. Each fs_<op> calls one
 * worker that returns 0 or -errno and replies exactly once (or has a job reply).
 */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "bfs.h"
#include "buf.h"
#include "caller.h"
#include "conf.h"
#include "err.h"
#include "fs.h"
#include "log.h"
#include "poller.h"
#include "provider.h"
#include "statusfmt.h"
#include "store.h"
#include "timefmt.h"
#include "worker.h"

/*
 * ino = kind << 56 | id << 4 | sub. ids are never-reused AUTOINCREMENT row ids, so a number
 * names the same object for the life of the cache.
 */
enum fs_kind {
	FS_ROOT = 0,
	FS_REMOTE = 1, /* id: remote index */
	FS_BATCH = 2,  /* id: batch row; sub: which node of the batch */
	FS_LINK = 3,   /* id: batch row: <pid> -> <name> */
	FS_FILE = 4,   /* id: files row (spool data) */
	FS_RESULT = 5, /* id: results row */
};

enum fs_sub {
	SUB_DIR = 0,
	SUB_STATUS = 1,
	SUB_ID = 2,
	SUB_CTL = 3,
	SUB_RESULTS_JSONL = 4,
	SUB_RESULTS_DIR = 5,
};

#define FS_ROOT_INO   1
#define TIMEOUT_LIVE  0.0 /* things that change behind the kernel's back */
#define TIMEOUT_DIR   1.0
#define TIMEOUT_FIXED 3600.0 /* results never change */

struct fs_node {
	enum fs_kind kind;
	int64_t id;
	enum fs_sub sub;
};

#define FS_WRITERS_MAX 8

/* An open file. */
struct fs_handle {
	struct fs_node node;
	int fd;		 /* spool data (FS_FILE), else -1 */
	bool wrote;	 /* data written since the last commit attempt */
	struct buf text; /* status / id: the snapshot taken at open */
	/* Processes (thread group ids) that wrote since the last commit attempt; nwriters -1:
	 * more than FS_WRITERS_MAX, any close commits. Under writers_lock. */
	pid_t writers[FS_WRITERS_MAX];
	int nwriters;
	pid_t last_tid, last_tgid; /* the last writer thread seen, to skip /proc lookups */
};

/* Protects the writer sets of all handles (short sections, no I/O inside). */
static pthread_mutex_t writers_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const reserved[] = {"status", "id", "ctl", "results.jsonl", "results"};

static fuse_ino_t ino_make(enum fs_kind kind, int64_t id, enum fs_sub sub)
{
	if (kind == FS_ROOT)
		return FS_ROOT_INO;
	return ((fuse_ino_t)kind << 56) | ((fuse_ino_t)id << 4) | (fuse_ino_t)sub;
}

static struct fs_node ino_parse(fuse_ino_t ino)
{
	struct fs_node n;

	if (ino == FS_ROOT_INO)
		return (struct fs_node){FS_ROOT, 0, SUB_DIR};
	n.kind = (enum fs_kind)(ino >> 56);
	n.id = (int64_t)((ino >> 4) & ((1ull << 52) - 1));
	n.sub = (enum fs_sub)(ino & 0xf);
	return n;
}

static struct bfs *fs_ctx(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Deferred replies: the worker runs the job, then one of these answers the request. */

static void fs_done_err(void *ctx, int rc)
{
	fuse_reply_err(ctx, -rc);
}

struct fs_pending_write {
	fuse_req_t req;
	size_t size;
};

static void fs_done_write(void *ctx, int rc)
{
	struct fs_pending_write *p = ctx;

	if (rc)
		fuse_reply_err(p->req, -rc);
	else
		fuse_reply_write(p->req, p->size);
	free(p);
}

/* Queues job with fs_done_err as its answer. 0: the worker replies; -errno: the caller. */
static int fs_defer_err(fuse_req_t req, struct worker_job *job)
{
	job->done = fs_done_err;
	job->ctx = req;
	return worker_queue(fs_ctx(req)->worker, job);
}

static int fs_defer_write(fuse_req_t req, struct worker_job *job, size_t size)
{
	struct fs_pending_write *p = malloc(sizeof(*p));
	int rc;

	if (!p)
		return -ENOMEM;
	p->req = req;
	p->size = size;
	job->done = fs_done_write;
	job->ctx = p;
	rc = worker_queue(fs_ctx(req)->worker, job);
	if (rc)
		free(p);
	return rc;
}

static bool is_reserved(const char *name)
{
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (!strcmp(name, reserved[i]))
			return true;
	return false;
}

/* CONTRACT: batch names are [A-Za-z0-9][A-Za-z0-9._-]{0,127}. */
static bool is_batch_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum =
			(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

static struct remote *remote_of(struct bfs *b, const struct store_batch *row)
{
	return bfs_remote(b, row->remote);
}

static bool batch_is_writable(const struct store_batch *row)
{
	return !row->foreign && state_is_writable(row->state, row->pid[0] != '\0') &&
	       !(row->state == BATCH_FAILED && row->identity[0]);
}

static void ts_from_ms(struct timespec *ts, int64_t ms)
{
	ts->tv_sec = ms / 1000;
	ts->tv_nsec = (ms % 1000) * 1000000;
}

static void fill_common(struct stat *st, fuse_ino_t ino, mode_t mode, int64_t mtime_ms)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_blksize = 4096;
	ts_from_ms(&st->st_mtim, mtime_ms);
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
}

static int status_text(struct bfs *b, const struct store_batch *row, struct buf *out)
{
	struct remote *r = remote_of(b, row);

	return statusfmt_batch(row, r ? r->conf->provider : "?", out);
}

/* The attributes of any node, from the store (and the spool file's own size and times). */
static int node_stat(struct bfs *b, fuse_ino_t ino, struct stat *st, double *timeout)
{
	struct fs_node n = ino_parse(ino);
	struct store_batch row;
	struct store_result res;
	struct store_file f;
	char path[PATH_MAX];
	struct stat sp;
	int rc;

	*timeout = TIMEOUT_DIR;
	switch (n.kind) {
	case FS_ROOT:
		fill_common(st, ino, S_IFDIR | 0755, b->mount_time);
		return 0;
	case FS_REMOTE:
		if ((size_t)n.id >= b->nremotes)
			return -ENOENT;
		fill_common(st, ino, S_IFDIR | 0755, b->mount_time);
		return 0;
	case FS_LINK:
		rc = store_batch_get(b->store, n.id, &row);
		if (rc)
			return rc;
		fill_common(st, ino, S_IFLNK | 0777, row.dir_mtime);
		st->st_size = (off_t)strlen(row.name);
		*timeout = TIMEOUT_FIXED;
		return 0;
	case FS_FILE:
		rc = store_file_get(b->store, n.id, &f);
		if (rc)
			return rc;
		spool_path(&b->spool, f.id, path, sizeof(path));
		if (stat(path, &sp))
			return -errno;
		fill_common(st, ino, S_IFREG | (f.mode & 07777), 0);
		st->st_size = sp.st_size;
		st->st_blocks = sp.st_blocks;
		st->st_mtim = sp.st_mtim;
		st->st_ctim = sp.st_ctim;
		st->st_atim = sp.st_atim;
		*timeout = TIMEOUT_LIVE;
		return 0;
	case FS_RESULT:
		rc = store_result_get(b->store, n.id, &res);
		if (rc)
			return rc;
		fill_common(st, ino, S_IFREG | 0444, res.mtime);
		st->st_size = res.size;
		st->st_blocks = (res.size + 511) / 512;
		*timeout = TIMEOUT_FIXED;
		return 0;
	case FS_BATCH:
		break;
	default:
		return -ENOENT;
	}
	rc = store_batch_get(b->store, n.id, &row);
	if (rc)
		return rc;
	switch (n.sub) {
	case SUB_DIR:
		fill_common(st, ino, S_IFDIR | 0755, row.dir_mtime);
		*timeout = TIMEOUT_LIVE;
		return 0;
	case SUB_STATUS: {
		struct buf text = BUF_INIT(16384);

		rc = status_text(b, &row, &text);
		fill_common(st, ino, S_IFREG | 0444, row.updated_at);
		st->st_size = (off_t)text.len;
		buf_release(&text);
		*timeout = TIMEOUT_LIVE;
		return rc;
	}
	case SUB_ID:
		if (!row.pid[0])
			return -ENOENT;
		fill_common(st, ino, S_IFREG | 0444, row.created_at);
		st->st_size = (off_t)strlen(row.pid) + 1;
		return 0;
	case SUB_CTL:
		fill_common(st, ino, S_IFREG | 0200, row.dir_mtime);
		*timeout = TIMEOUT_LIVE;
		return 0;
	case SUB_RESULTS_JSONL:
		if (row.results != RESULTS_READY)
			return -ENOENT;
		fill_common(st, ino, S_IFREG | 0444, row.ended_at);
		st->st_size = row.results_size;
		st->st_blocks = (row.results_size + 511) / 512;
		*timeout = TIMEOUT_FIXED;
		return 0;
	case SUB_RESULTS_DIR:
		if (row.results != RESULTS_READY)
			return -ENOENT;
		fill_common(st, ino, S_IFDIR | 0555, row.ended_at);
		*timeout = TIMEOUT_FIXED;
		return 0;
	}
	return -ENOENT;
}

static int reply_entry(fuse_req_t req, struct bfs *b, fuse_ino_t ino)
{
	struct fuse_entry_param e;
	double timeout;
	int rc;

	memset(&e, 0, sizeof(e));
	rc = node_stat(b, ino, &e.attr, &timeout);
	if (rc)
		return rc;
	e.ino = ino;
	e.attr_timeout = timeout;
	e.entry_timeout = timeout > 0 ? timeout : TIMEOUT_DIR;
	fuse_reply_entry(req, &e);
	return 0;
}

/* A foreign batch's results are fetched on first access (not at discovery). */
static void want_results(struct bfs *b, int64_t id)
{
	struct store_batch row;

	pthread_mutex_lock(&b->lock);
	if (!store_batch_get(b->store, id, &row) && row.foreign && !row.results_wanted &&
	    row.results == RESULTS_PENDING) {
		row.results_wanted = true;
		if (state_is_terminal(row.state))
			row.next_poll_at = 1;
		(void)store_batch_put(b->store, &row); /* tried again at the next access */
	}
	pthread_mutex_unlock(&b->lock);
	poller_kick(b->poller);
}

static int do_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(parent);
	struct store_batch row;
	struct store_result res;
	struct store_file f;

	switch (n.kind) {
	case FS_ROOT:
		for (size_t i = 0; i < b->nremotes; i++)
			if (!strcmp(b->remotes[i].conf->name, name))
				return reply_entry(req, b, ino_make(FS_REMOTE, (int64_t)i, 0));
		return -ENOENT;
	case FS_REMOTE:
		if ((size_t)n.id >= b->nremotes)
			return -ENOENT;
		if (!store_batch_by_name(b->store, b->remotes[n.id].conf->name, name, &row)) {
			if (row.foreign)
				want_results(b, row.id);
			return reply_entry(req, b, ino_make(FS_BATCH, row.id, SUB_DIR));
		}
		if (!store_batch_by_pid(b->store, b->remotes[n.id].conf->name, name, &row) &&
		    !row.foreign)
			return reply_entry(req, b, ino_make(FS_LINK, row.id, 0));
		return -ENOENT;
	case FS_BATCH:
		if (n.sub == SUB_RESULTS_DIR) {
			if (store_result_by_name(b->store, n.id, name, &res))
				return -ENOENT;
			return reply_entry(req, b, ino_make(FS_RESULT, res.id, 0));
		}
		if (n.sub != SUB_DIR)
			return -ENOTDIR;
		if (!strcmp(name, "status"))
			return reply_entry(req, b, ino_make(FS_BATCH, n.id, SUB_STATUS));
		if (!strcmp(name, "id"))
			return reply_entry(req, b, ino_make(FS_BATCH, n.id, SUB_ID));
		if (!strcmp(name, "ctl"))
			return reply_entry(req, b, ino_make(FS_BATCH, n.id, SUB_CTL));
		if (!strcmp(name, "results.jsonl"))
			return reply_entry(req, b, ino_make(FS_BATCH, n.id, SUB_RESULTS_JSONL));
		if (!strcmp(name, "results"))
			return reply_entry(req, b, ino_make(FS_BATCH, n.id, SUB_RESULTS_DIR));
		if (store_file_by_name(b->store, n.id, name, &f))
			return -ENOENT;
		return reply_entry(req, b, ino_make(FS_FILE, f.id, 0));
	case FS_LINK:
	case FS_FILE:
	case FS_RESULT:
		return -ENOTDIR;
	}
	return -ENOENT;
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int rc = do_lookup(req, parent, name);

	if (rc)
		fuse_reply_err(req, -rc);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	double timeout;
	int rc;

	(void)fi;
	rc = node_stat(fs_ctx(req), ino, &st, &timeout);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, timeout);
}

static int do_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs_node n = ino_parse(ino);
	struct store_batch row;
	int rc;

	if (n.kind != FS_LINK)
		return -EINVAL;
	rc = store_batch_get(fs_ctx(req)->store, n.id, &row);
	if (rc)
		return rc;
	fuse_reply_readlink(req, row.name);
	return 0;
}

static void fs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	int rc = do_readlink(req, ino);

	if (rc)
		fuse_reply_err(req, -rc);
}

/* readdir */

struct dir_fill {
	fuse_req_t req;
	struct bfs *b;
	char *buf;
	size_t size, len;
	off_t off; /* entries with a cookie <= off were sent already */
	bool plus;
	bool full;
};

/*
 * Adds one entry with its cookie; false once the reply buffer is full. known, when given, are
 * the entry's attributes already at hand (results): no query per entry.
 */
static bool dir_add_st(struct dir_fill *d, const char *name, fuse_ino_t ino, off_t cookie,
		       const struct stat *known, double known_timeout)
{
	struct fuse_entry_param e;
	double timeout = known_timeout;
	size_t n;

	if (cookie <= d->off || d->full)
		return !d->full;
	memset(&e, 0, sizeof(e));
	if (!strcmp(name, ".") || !strcmp(name, "..")) {
		e.attr.st_ino = ino;
		e.attr.st_mode = S_IFDIR;
	} else if (known) {
		e.attr = *known;
	} else if (node_stat(d->b, ino, &e.attr, &timeout)) {
		return true; /* vanished meanwhile: skip it */
	}
	if (d->plus) {
		/* "." and ".." carry no entry (and so no lookup count) */
		if (strcmp(name, ".") && strcmp(name, "..")) {
			e.ino = ino;
			e.attr_timeout = timeout;
			e.entry_timeout = timeout > 0 ? timeout : TIMEOUT_DIR;
		}
		n = fuse_add_direntry_plus(d->req, d->buf + d->len, d->size - d->len, name, &e,
					   cookie);
	} else {
		n = fuse_add_direntry(d->req, d->buf + d->len, d->size - d->len, name, &e.attr,
				      cookie);
	}
	if (n > d->size - d->len) {
		d->full = true;
		return false;
	}
	d->len += n;
	return true;
}

static bool dir_add(struct dir_fill *d, const char *name, fuse_ino_t ino, off_t cookie)
{
	return dir_add_st(d, name, ino, cookie, NULL, 0);
}

static int dir_batch_cb(void *ctx, const struct store_batch *row)
{
	struct dir_fill *d = ctx;
	off_t base = 2 + (off_t)row->id * 2;

	if (!dir_add(d, row->name, ino_make(FS_BATCH, row->id, SUB_DIR), base + 1))
		return 1;
	if (!row->foreign && row->pid[0] &&
	    !dir_add(d, row->pid, ino_make(FS_LINK, row->id, 0), base + 2))
		return 1;
	return 0;
}

static int dir_file_cb(void *ctx, const struct store_file *f)
{
	struct dir_fill *d = ctx;

	return dir_add(d, f->name, ino_make(FS_FILE, f->id, 0), 8 + (off_t)f->id) ? 0 : 1;
}

static int dir_result_cb(void *ctx, const struct store_result *r)
{
	struct dir_fill *d = ctx;
	fuse_ino_t ino = ino_make(FS_RESULT, r->id, 0);
	struct stat st;

	fill_common(&st, ino, S_IFREG | 0444, r->mtime);
	st.st_size = r->size;
	st.st_blocks = (r->size + 511) / 512;
	return dir_add_st(d, r->fname, ino, 2 + (off_t)r->id, &st, TIMEOUT_FIXED) ? 0 : 1;
}

/* Rough lower bound of an entry's size in the reply, to size each query's LIMIT. */
static int dir_limit(const struct dir_fill *d)
{
	size_t per = d->plus ? 160 : 32;
	size_t n = d->size / per + 2;

	return n > 4096 ? 4096 : (int)n;
}

static int do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(ino);
	struct dir_fill d = {.req = req, .b = b, .size = size, .off = off, .plus = plus};
	struct store_batch row;
	int rc = 0;

	d.buf = malloc(size);
	if (!d.buf)
		return -ENOMEM;
	dir_add(&d, ".", ino, 1);
	dir_add(&d, "..", FS_ROOT_INO, 2);
	switch (n.kind) {
	case FS_ROOT:
		for (size_t i = 0; i < b->nremotes; i++)
			if (!dir_add(&d, b->remotes[i].conf->name,
				     ino_make(FS_REMOTE, (int64_t)i, 0), 3 + (off_t)i))
				break;
		break;
	case FS_REMOTE:
		if ((size_t)n.id >= b->nremotes) {
			rc = -ENOENT;
			break;
		}
		/* Batch k has cookies 2k+3 (its directory) and 2k+4 (its symlink). */
		rc = store_batch_list(b->store, b->remotes[n.id].conf->name,
				      off >= 3 ? (off - 3) / 2 - 1 : 0, dir_limit(&d), dir_batch_cb,
				      &d);
		rc = rc > 0 ? 0 : rc;
		break;
	case FS_BATCH:
		rc = store_batch_get(b->store, n.id, &row);
		if (rc)
			break;
		if (n.sub == SUB_RESULTS_DIR) {
			if (row.results != RESULTS_READY) {
				rc = -ENOENT;
				break;
			}
			rc = store_result_list(b->store, n.id, off > 2 ? off - 2 : 0, dir_limit(&d),
					       dir_result_cb, &d);
			rc = rc > 0 ? 0 : rc;
			break;
		}
		if (n.sub != SUB_DIR) {
			rc = -ENOTDIR;
			break;
		}
		if (row.foreign)
			want_results(b, row.id);
		if (!dir_add(&d, "status", ino_make(FS_BATCH, n.id, SUB_STATUS), 3))
			break;
		if (row.pid[0] && !dir_add(&d, "id", ino_make(FS_BATCH, n.id, SUB_ID), 4))
			break;
		if (!dir_add(&d, "ctl", ino_make(FS_BATCH, n.id, SUB_CTL), 5))
			break;
		if (row.results == RESULTS_READY) {
			if (!dir_add(&d, "results.jsonl",
				     ino_make(FS_BATCH, n.id, SUB_RESULTS_JSONL), 6))
				break;
			if (!dir_add(&d, "results", ino_make(FS_BATCH, n.id, SUB_RESULTS_DIR), 7))
				break;
		}
		rc = store_file_list(b->store, n.id, off > 8 ? off - 8 : 0, dir_limit(&d),
				     dir_file_cb, &d);
		rc = rc > 0 ? 0 : rc;
		break;
	default:
		rc = -ENOTDIR;
	}
	if (!rc)
		fuse_reply_buf(req, d.buf, d.len);
	free(d.buf);
	return rc;
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	int rc;

	(void)fi;
	rc = do_readdir(req, ino, size, off, false);
	if (rc)
		fuse_reply_err(req, -rc);
}

static void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	int rc;

	(void)fi;
	rc = do_readdir(req, ino, size, off, true);
	if (rc)
		fuse_reply_err(req, -rc);
}

/* Files */

static void handle_free(struct fs_handle *h)
{
	if (!h)
		return;
	if (h->fd >= 0)
		close(h->fd);
	buf_release(&h->text);
	free(h);
}

static struct fs_handle *handle_new(struct fs_node n)
{
	struct fs_handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->node = n;
	h->fd = -1;
	buf_init(&h->text, 1 << 20);
	return h;
}

static int reply_open(fuse_req_t req, struct fs_handle *h, struct fuse_file_info *fi)
{
	/*
	 * Only a writer of a draft file has anything to do at close() (the commit point); for
	 * every other handle the kernel may skip the flush round trip (cat of many results).
	 */
	if (!(h->node.kind == FS_FILE && (fi->flags & O_ACCMODE) != O_RDONLY) &&
	    !(h->node.kind == FS_BATCH && h->node.sub == SUB_CTL))
		fi->noflush = 1;
	/* Results never change once visible (row ids are never reused): keep the page cache. */
	if (h->node.kind == FS_RESULT ||
	    (h->node.kind == FS_BATCH && h->node.sub == SUB_RESULTS_JSONL))
		fi->keep_cache = 1;
	fi->fh = (uint64_t)(uintptr_t)h;
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* The opener was interrupted: nobody will release this handle. */
		handle_free(h);
	}
	return 0;
}

static bool wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

/* Batch row and file row of a draft file, checking that it may be changed now. */
static int file_writable(struct bfs *b, int64_t file_id, struct store_file *f,
			 struct store_batch *row)
{
	int rc = store_file_get(b->store, file_id, f);

	if (!rc)
		rc = store_batch_get(b->store, f->batch_id, row);
	if (rc)
		return rc;
	return batch_is_writable(row) ? 0 : -EACCES;
}

/*
 * The commit point is the close() of a writer (CONTRACT), but a close() reaches us as FLUSH
 * from whichever process closes a copy of the descriptor: in `for ...; done > requests.jsonl`
 * every `$(...)` subshell closes its inherited copy while the loop is still writing. So a
 * handle remembers the processes that wrote through it, and only their closes commit.
 */
static void writer_add(fuse_req_t req, struct fs_handle *h)
{
	pid_t tid = fuse_req_ctx(req)->pid, tgid = 0;
	struct caller_info ci;
	bool known;

	pthread_mutex_lock(&writers_lock);
	known = tid && h->last_tid == tid;
	if (known)
		tgid = h->last_tgid;
	pthread_mutex_unlock(&writers_lock);
	if (!known && !caller_get(tid, false, &ci))
		tgid = ci.tgid; /* else 0: unknown (another pid namespace) */

	pthread_mutex_lock(&writers_lock);
	h->last_tid = tid;
	h->last_tgid = tgid;
	h->wrote = true;
	if (h->nwriters >= 0) {
		int i;

		for (i = 0; i < h->nwriters && h->writers[i] != tgid; i++)
			;
		if (!tgid || (i == h->nwriters && i == FS_WRITERS_MAX))
			h->nwriters = -1; /* cannot tell writers apart: any close commits */
		else if (i == h->nwriters)
			h->writers[h->nwriters++] = tgid;
	}
	pthread_mutex_unlock(&writers_lock);
}

static int do_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(ino);
	struct store_batch row;
	struct store_file f;
	struct fs_handle *h;
	int rc, fd;

	switch (n.kind) {
	case FS_FILE:
		if (wants_write(fi->flags)) {
			rc = file_writable(b, n.id, &f, &row);
			if (rc)
				return rc;
		}
		fd = spool_open(&b->spool, n.id, (fi->flags & O_ACCMODE) | (fi->flags & O_TRUNC));
		if (fd < 0)
			return fd;
		h = handle_new(n);
		if (!h) {
			close(fd);
			return -ENOMEM;
		}
		h->fd = fd;
		/* A truncating open is a write even if nothing follows (`: > requests.jsonl`). */
		if (fi->flags & O_TRUNC)
			writer_add(req, h);
		return reply_open(req, h, fi);
	case FS_RESULT:
		if (wants_write(fi->flags))
			return -EACCES;
		h = handle_new(n);
		if (!h)
			return -ENOMEM;
		fi->keep_cache = 1;
		return reply_open(req, h, fi);
	case FS_BATCH:
		break;
	default:
		return -EISDIR;
	}
	rc = store_batch_get(b->store, n.id, &row);
	if (rc)
		return rc;
	switch (n.sub) {
	case SUB_CTL:
		if ((fi->flags & O_ACCMODE) != O_WRONLY)
			return -EACCES;
		fi->direct_io = 1;
		break;
	case SUB_STATUS:
	case SUB_ID:
	case SUB_RESULTS_JSONL:
		if (wants_write(fi->flags))
			return -EACCES;
		break;
	case SUB_DIR:
	case SUB_RESULTS_DIR:
		return -EISDIR;
	}
	h = handle_new(n);
	if (!h)
		return -ENOMEM;
	if (n.sub == SUB_STATUS) {
		/* One snapshot per open, so a reader never sees half of two states. */
		rc = status_text(b, &row, &h->text);
		fi->direct_io = 1;
	} else if (n.sub == SUB_ID) {
		rc = row.pid[0] ? buf_addf(&h->text, "%s\n", row.pid) : -ENOENT;
	} else if (n.sub == SUB_RESULTS_JSONL) {
		rc = row.results == RESULTS_READY ? 0 : -ENOENT;
		fi->keep_cache = 1;
	}
	if (rc) {
		handle_free(h);
		return rc;
	}
	return reply_open(req, h, fi);
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int rc = do_open(req, ino, fi);

	if (rc)
		fuse_reply_err(req, -rc);
}

static int do_read(fuse_req_t req, struct fs_handle *h, size_t size, off_t off)
{
	struct bfs *b = fs_ctx(req);
	char *dst = NULL;
	long n;

	dst = malloc(size ? size : 1);
	if (!dst)
		return -ENOMEM;
	if (h->node.kind == FS_BATCH && (h->node.sub == SUB_STATUS || h->node.sub == SUB_ID)) {
		/*
		 * Copied, not replied from h->text: the reader may close (and release may free
		 * h) as soon as the kernel has the data, before fuse_reply_buf() returns.
		 */
		size_t len = h->text.len, k = (size_t)off >= len ? 0 : len - (size_t)off;

		n = (long)(k < size ? k : size);
		if (n)
			memcpy(dst, h->text.data + off, (size_t)n);
	} else if (h->node.kind == FS_FILE) {
		ssize_t k = pread(h->fd, dst, size, off);

		n = k < 0 ? -errno : (long)k;
	} else if (h->node.kind == FS_RESULT)
		n = store_result_read(b->store, h->node.id, off, size, dst);
	else if (h->node.kind == FS_BATCH && h->node.sub == SUB_RESULTS_JSONL)
		n = store_results_jsonl_read(b->store, h->node.id, off, size, dst);
	else
		n = -EBADF;
	if (n >= 0)
		fuse_reply_buf(req, dst, (size_t)n);
	free(dst);
	return n < 0 ? (int)n : 0;
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	int rc;

	(void)ino;
	rc = do_read(req, (struct fs_handle *)(uintptr_t)fi->fh, size, off);
	if (rc)
		fuse_reply_err(req, -rc);
}

/* `echo cancel > ctl`: one word per write, surrounding whitespace ignored. The action runs
 * on the worker. */
static int do_ctl(struct bfs *b, int64_t batch_id, const char *data, size_t size,
		  struct worker_job *job)
{
	struct store_batch row;
	struct remote *r;
	char word[32];
	size_t i = 0, j;
	int rc;

	while (i < size &&
	       (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
		i++;
	j = size;
	while (j > i && (data[j - 1] == ' ' || data[j - 1] == '\t' || data[j - 1] == '\n' ||
			 data[j - 1] == '\r' || data[j - 1] == '\0'))
		j--;
	if (j - i == 0 || j - i >= sizeof(word))
		return -EINVAL;
	memcpy(word, data + i, j - i);
	word[j - i] = '\0';
	rc = store_batch_get(b->store, batch_id, &row);
	if (rc)
		return rc;
	r = remote_of(b, &row);
	if (!r)
		return -EIO;
	memset(job, 0, sizeof(*job));
	if (!strcmp(word, "cancel"))
		job->kind = WORKER_CANCEL;
	else if (!strcmp(word, "refresh"))
		job->kind = WORKER_REFRESH;
	else
		return -EINVAL;
	job->r = r;
	job->batch_id = batch_id;
	return 0;
}

static int do_write(fuse_req_t req, struct fs_handle *h, const char *data, size_t size, off_t off)
{
	struct bfs *b = fs_ctx(req);
	struct worker_job job;
	struct store_batch row;
	struct store_file f;
	ssize_t n;
	int rc;

	if (h->node.kind == FS_BATCH && h->node.sub == SUB_CTL) {
		rc = do_ctl(b, h->node.id, data, size, &job);
		return rc ? rc : fs_defer_write(req, &job, size);
	}
	if (h->node.kind != FS_FILE || h->fd < 0)
		return -EBADF;
	/*
	 * A descriptor opened before the commit must not change what was submitted. Other files
	 * stay local: an editor's open swap file keeps working after `:w` submitted, and so
	 * does a file unlinked while open.
	 */
	rc = file_writable(b, h->node.id, &f, &row);
	if (rc == -EACCES && !strcmp(f.name, "requests.jsonl"))
		return rc;
	if (rc && rc != -EACCES && rc != -ENOENT)
		return rc;
	n = pwrite(h->fd, data, size, off);
	if (n < 0)
		return -errno;
	writer_add(req, h);
	fuse_reply_write(req, (size_t)n);
	return 0;
}

static void fs_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	int rc;

	(void)ino;
	rc = do_write(req, (struct fs_handle *)(uintptr_t)fi->fh, data, size, off);
	if (rc)
		fuse_reply_err(req, -rc);
}

/* The worker's commit of file_id, the requests.jsonl of row. */
static int commit_job(struct bfs *b, const struct store_batch *row, int64_t file_id,
		      const struct caller_info *closer, struct worker_job *job)
{
	struct remote *r = remote_of(b, row);

	if (!r)
		return -EIO;
	memset(job, 0, sizeof(*job));
	job->kind = WORKER_COMMIT;
	job->r = r;
	job->batch_id = row->id;
	job->file_id = file_id;
	if (closer) {
		job->closer_known = true;
		job->closer = *closer;
	}
	return 0;
}

/*
 * The commit point (CONTRACT): the close() of a writer of requests.jsonl that wrote data.
 * flush is where close() gets its return value (release's is lost), so it commits.
 */
static int commit_if_requests(struct bfs *b, int64_t file_id, const struct caller_info *closer,
			      struct worker_job *job)
{
	struct store_file f;
	struct store_batch row;
	int rc;

	rc = store_file_get(b->store, file_id, &f);
	if (rc)
		return rc == -ENOENT ? 0 : rc; /* unlinked while open: nothing to submit */
	if (strcmp(f.name, "requests.jsonl"))
		return 0;
	rc = store_batch_get(b->store, f.batch_id, &row);
	if (rc)
		return rc;
	return commit_job(b, &row, file_id, closer, job);
}

/* Fills job when this flush commits; the job copies what it needs (release may free h first). */
static int do_flush(fuse_req_t req, struct fs_handle *h, struct worker_job *job)
{
	struct caller_info ci;
	bool wrote, known, mine = true;

	pthread_mutex_lock(&writers_lock);
	wrote = h->wrote;
	pthread_mutex_unlock(&writers_lock);
	if (!wrote)
		return 0;
	/* Read now, not on the worker: a dying writer is gone from /proc soon after. */
	known = !caller_get(fuse_req_ctx(req)->pid, true, &ci);
	pthread_mutex_lock(&writers_lock);
	if (known && h->nwriters >= 0) {
		mine = false;
		for (int i = 0; i < h->nwriters; i++)
			mine |= h->writers[i] == ci.tgid;
	}
	if (mine) {
		h->wrote = false;
		h->nwriters = 0;
	}
	pthread_mutex_unlock(&writers_lock);
	if (!mine)
		return 0; /* a copy closed by a process that never wrote through it */
	return commit_if_requests(fs_ctx(req), h->node.id, known ? &ci : NULL, job);
}

/* Answers with job's outcome: at once when there is none, else from the worker. */
static void fs_reply_job(fuse_req_t req, int rc, struct worker_job *job)
{
	if (!rc && job->kind != WORKER_NONE)
		rc = fs_defer_err(req, job);
	else if (!rc)
		fuse_reply_err(req, 0);
	if (rc)
		fuse_reply_err(req, -rc);
}

static void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct worker_job job = {.kind = WORKER_NONE};
	int rc = 0;

	(void)ino;
	if (h->node.kind == FS_FILE)
		rc = do_flush(req, h, &job);
	fs_reply_job(req, rc, &job);
}

static void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_free((struct fs_handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	int rc = 0;

	(void)ino;
	if (h->node.kind == FS_FILE && h->fd >= 0)
		rc = (datasync ? fdatasync(h->fd) : fsync(h->fd)) ? -errno : 0;
	fuse_reply_err(req, -rc);
}

static int do_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     struct fuse_file_info *fi)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(parent);
	struct fuse_entry_param e;
	struct store_batch row;
	struct store_file f;
	struct fs_handle *h;
	bool existed = false;
	double timeout;
	int64_t id;
	int rc, fd;

	if (n.kind != FS_BATCH || n.sub != SUB_DIR)
		return n.kind == FS_ROOT || n.kind == FS_REMOTE ? -EPERM : -EACCES;
	if (is_reserved(name))
		return -EEXIST;
	if (strlen(name) >= STORE_NAME_MAX)
		return -ENAMETOOLONG;
	rc = store_batch_get(b->store, n.id, &row);
	if (rc)
		return rc;
	if (!batch_is_writable(&row))
		return -EACCES;
	if (!store_file_by_name(b->store, n.id, name, &f)) {
		if (fi->flags & O_EXCL)
			return -EEXIST;
		/* Open of an existing file through create (O_CREAT without O_EXCL). */
		id = f.id;
		existed = true;
	} else {
		rc = store_file_create(b->store, n.id, name, mode & 07777,
				       timefmt_now_ms() * 1000000, &id);
		if (rc)
			return rc;
	}
	fd = spool_open(&b->spool, id, O_CREAT | (fi->flags & O_ACCMODE) | (fi->flags & O_TRUNC));
	if (fd < 0)
		return fd;
	memset(&e, 0, sizeof(e));
	e.ino = ino_make(FS_FILE, id, 0);
	rc = node_stat(b, e.ino, &e.attr, &timeout);
	if (rc) {
		close(fd);
		return rc;
	}
	e.attr_timeout = timeout;
	e.entry_timeout = TIMEOUT_DIR;
	h = handle_new((struct fs_node){FS_FILE, id, SUB_DIR});
	if (!h) {
		close(fd);
		return -ENOMEM;
	}
	h->fd = fd;
	/* Truncating an existing requests.jsonl is a write (it may become empty: a draft). */
	if (existed && (fi->flags & O_TRUNC))
		writer_add(req, h);
	fi->fh = (uint64_t)(uintptr_t)h;
	if (fuse_reply_create(req, &e, fi) == -ENOENT)
		handle_free(h);
	return 0;
}

static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	int rc = do_create(req, parent, name, mode, fi);

	if (rc)
		fuse_reply_err(req, -rc);
}

static int do_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(ino);
	struct store_batch row;
	struct store_file f;
	char path[PATH_MAX];
	double timeout;
	struct stat st;
	int rc;

	if (n.kind == FS_BATCH && n.sub == SUB_CTL) {
		/* `echo cancel > ctl` truncates first: accept it, there is nothing to cut. */
		if (to_set &
		    ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
		      FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME))
			return -EACCES;
	} else if (n.kind == FS_FILE) {
		rc = file_writable(b, n.id, &f, &row);
		if (rc && rc != -EACCES)
			return rc;
		/* Only times may change once submitted (so `touch` and `rsync -t` work). */
		if (rc == -EACCES && (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
						FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
			return -EACCES;
		spool_path(&b->spool, n.id, path, sizeof(path));
		if ((to_set & FUSE_SET_ATTR_SIZE) && truncate(path, attr->st_size))
			return -errno;
		if (to_set & FUSE_SET_ATTR_MODE) {
			f.mode = attr->st_mode & 07777;
			rc = store_file_put(b->store, &f);
			if (rc)
				return rc;
		}
		if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
			      FUSE_SET_ATTR_MTIME_NOW)) {
			struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};

			if (to_set & FUSE_SET_ATTR_ATIME_NOW)
				ts[0].tv_nsec = UTIME_NOW;
			else if (to_set & FUSE_SET_ATTR_ATIME)
				ts[0] = attr->st_atim;
			if (to_set & FUSE_SET_ATTR_MTIME_NOW)
				ts[1].tv_nsec = UTIME_NOW;
			else if (to_set & FUSE_SET_ATTR_MTIME)
				ts[1] = attr->st_mtim;
			if (utimensat(AT_FDCWD, path, ts, 0))
				return -errno;
		}
	} else if (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
			     FUSE_SET_ATTR_GID)) {
		return -EACCES;
	}
	rc = node_stat(b, ino, &st, &timeout);
	if (rc)
		return rc;
	fuse_reply_attr(req, &st, timeout);
	return 0;
}

static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	int rc;

	(void)fi;
	rc = do_setattr(req, ino, attr, to_set);
	if (rc)
		fuse_reply_err(req, -rc);
}

/* Directories */

static int do_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(parent);
	int64_t id;
	int rc;

	if (n.kind != FS_REMOTE)
		return n.kind == FS_BATCH && n.sub == SUB_DIR ? -EPERM : -EACCES;
	if ((size_t)n.id >= b->nremotes)
		return -ENOENT;
	if (!is_batch_name(name))
		return -EINVAL;
	pthread_mutex_lock(&b->lock);
	rc = store_batch_create(b->store, b->remotes[n.id].conf->name, name, timefmt_now_ms(), &id);
	pthread_mutex_unlock(&b->lock);
	if (rc)
		return rc;
	log_debug("batch '%s' created as a draft in '%s'", name, b->remotes[n.id].conf->name);
	return reply_entry(req, b, ino_make(FS_BATCH, id, SUB_DIR));
}

static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	int rc;

	(void)mode;
	rc = do_mkdir(req, parent, name);
	if (rc)
		fuse_reply_err(req, -rc);
}

static int drop_file_cb(void *ctx, const struct store_file *f)
{
	struct bfs *b = ctx;

	(void)spool_remove(&b->spool, f->id); /* a leftover spool file is only wasted space */
	return 0;
}

static int do_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(parent);
	struct store_batch row;
	int rc;

	if (n.kind == FS_BATCH)
		return n.sub == SUB_DIR && !strcmp(name, "results") ? -EACCES : -ENOTDIR;
	if (n.kind != FS_REMOTE)
		return -EACCES;
	if ((size_t)n.id >= b->nremotes)
		return -ENOENT;
	pthread_mutex_lock(&b->lock);
	rc = store_batch_by_name(b->store, b->remotes[n.id].conf->name, name, &row);
	if (!rc && (!batch_is_writable(&row) || row.pid[0]))
		rc = -EBUSY; /* CONTRACT: nothing is ever destroyed remotely by rmdir */
	if (!rc) {
		(void)store_file_list(b->store, row.id, 0, 0, drop_file_cb, b); /* see above */
		rc = store_batch_delete(b->store, row.id);
	}
	pthread_mutex_unlock(&b->lock);
	if (rc == -ENOENT && !store_batch_by_pid(b->store, b->remotes[n.id].conf->name, name, &row))
		return -ENOTDIR; /* the <pid> symlink */
	return rc;
}

static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int rc = do_rmdir(req, parent, name);

	fuse_reply_err(req, -rc);
}

static int do_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(parent);
	struct store_batch row;
	struct store_file f;
	int rc;

	if (n.kind != FS_BATCH || n.sub != SUB_DIR)
		return -EACCES; /* the root, a remote (symlinks are the provider's), results/ */
	rc = store_batch_get(b->store, n.id, &row);
	if (rc)
		return rc;
	if (is_reserved(name)) {
		/* `rm -r draft/` unlinks everything it lists first; the virtual files of a draft
		 * go with the directory, so let those unlinks succeed. */
		return batch_is_writable(&row) && !row.pid[0] ? 0 : -EACCES;
	}
	rc = store_file_by_name(b->store, n.id, name, &f);
	if (rc)
		return rc;
	if (!strcmp(name, "requests.jsonl") && !batch_is_writable(&row))
		return -EACCES;
	rc = store_file_delete(b->store, f.id);
	if (rc)
		return rc;
	(void)spool_remove(&b->spool, f.id); /* open handles keep their data until release */
	return 0;
}

static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int rc = do_unlink(req, parent, name);

	fuse_reply_err(req, -rc);
}

static int do_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		     const char *newname, unsigned int flags, struct worker_job *job)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(parent);
	struct store_batch row;
	struct store_file f, old;
	int64_t replaced = 0;
	bool onto_requests = !strcmp(newname, "requests.jsonl");
	int rc;

	if (n.kind != FS_BATCH || n.sub != SUB_DIR)
		return -EACCES;
	if (newparent != parent)
		return -EXDEV; /* mv falls back to copy + unlink, which works */
	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	if (is_reserved(newname) || is_reserved(name))
		return -EACCES;
	if (strlen(newname) >= STORE_NAME_MAX)
		return -ENAMETOOLONG;
	rc = store_batch_get(b->store, n.id, &row);
	if (rc)
		return rc;
	rc = store_file_by_name(b->store, n.id, name, &f);
	if (rc)
		return rc;
	if ((onto_requests || !strcmp(name, "requests.jsonl")) && !batch_is_writable(&row))
		return -EACCES;
	if (!store_file_by_name(b->store, n.id, newname, &old) && (flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (!strcmp(name, newname))
		return 0;
	rc = store_file_rename(b->store, f.id, newname, &replaced);
	if (rc)
		return rc;
	if (replaced)
		(void)spool_remove(&b->spool, replaced); /* only space */
	if (!onto_requests)
		return 0;
	/* The other commit point: an editor's or rsync's temp file renamed onto it. */
	return commit_job(b, &row, f.id, NULL, job);
}

static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct worker_job job = {.kind = WORKER_NONE};
	int rc = do_rename(req, parent, name, newparent, newname, flags, &job);

	fs_reply_job(req, rc, &job);
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_node n = ino_parse(ino);
	struct stat st;
	double timeout;
	int rc = node_stat(fs_ctx(req), ino, &st, &timeout);

	if (!rc && !S_ISDIR(st.st_mode))
		rc = -ENOTDIR;
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	(void)n;
	fuse_reply_open(req, fi);
}

static void fs_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct bfs *b = fs_ctx(req);
	struct fs_node n = ino_parse(ino);
	struct store_batch row;
	struct store_file f;
	struct stat st;
	double timeout;
	int rc = node_stat(b, ino, &st, &timeout);

	if (!rc && (mask & W_OK)) {
		if (n.kind == FS_FILE)
			rc = file_writable(b, n.id, &f, &row);
		else if (n.kind == FS_BATCH && n.sub == SUB_DIR)
			rc = store_batch_get(b->store, n.id, &row) ? -ENOENT
			     : batch_is_writable(&row)		   ? 0
								   : -EACCES;
		else if (!(st.st_mode & 0222))
			rc = -EACCES;
	}
	if (!rc && (mask & R_OK) && !(st.st_mode & 0444))
		rc = -EACCES;
	fuse_reply_err(req, -rc);
}

static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct bfs *b = fs_ctx(req);
	struct statvfs sv;

	(void)ino;
	if (statvfs(b->cache_dir, &sv))
		memset(&sv, 0, sizeof(sv));
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* O_TRUNC arrives with open (not as a separate setattr), so a truncating open of
	 * requests.jsonl is one writer, and of ctl needs no setattr. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* Writes must come from the writer itself (not the kernel's flusher): the commit point
	 * knows its writers by the process behind each write. */
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	/*
	 * Always readdirplus, never the kernel's adaptive switch back to plain readdir: `ls -l`
	 * of 100,000 results must not turn into 100,000 lookups.
	 */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	conn->max_write = 1u << 20;
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_init,
	.lookup = fs_lookup,
	.getattr = fs_getattr,
	.setattr = fs_setattr,
	.readlink = fs_readlink,
	.mkdir = fs_mkdir,
	.unlink = fs_unlink,
	.rmdir = fs_rmdir,
	.rename = fs_rename,
	.open = fs_open,
	.read = fs_read,
	.write = fs_write,
	.flush = fs_flush,
	.release = fs_release,
	.fsync = fs_fsync,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.readdirplus = fs_readdirplus,
	.statfs = fs_statfs,
	.access = fs_access,
	.create = fs_create,
};

int fs_main(struct bfs *b, struct fuse_args *args, const char *mountpoint, bool foreground,
	    bool single, int (*start)(struct bfs *b))
{
	struct fuse_loop_config *lc = NULL;
	struct fuse_session *se;
	int rc;

	se = fuse_session_new(args, &fs_ops, sizeof(fs_ops), b);
	if (!se)
		return -EINVAL;
	rc = -EIO;
	if (fuse_set_signal_handlers(se))
		goto out_destroy;
	if (fuse_session_mount(se, mountpoint)) {
		rc = -EIO;
		goto out_signals;
	}
	/* Daemonize before anything opens SQLite or starts a thread: neither survives fork. */
	if (fuse_daemonize(foreground)) {
		rc = -EIO;
		goto out_unmount;
	}
	rc = start(b);
	if (rc)
		goto out_unmount;
	if (single) {
		rc = fuse_session_loop(se);
	} else {
		lc = fuse_loop_cfg_create();
		if (!lc) {
			rc = -ENOMEM;
			goto out_unmount;
		}
		/*
		 * Idle workers stay: each thread owns an SQLite connection (STYLE: one per thread),
		 * and a pool that shrinks and grows would reopen them all the time.
		 */
		fuse_loop_cfg_set_max_threads(lc, 8);
		fuse_loop_cfg_set_idle_threads(lc, 8);
		rc = fuse_session_loop_mt(se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	rc = rc < 0 ? rc : (rc > 0 ? -EINTR : 0);
out_unmount:
	/* Queued jobs hold requests of this session: answer them all before it goes. */
	worker_stop(b->worker);
	b->worker = NULL;
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	return rc == -EINTR ? 0 : rc;
}
