// SPDX-License-Identifier: MIT
/*
 * The tree: inode numbers computed from store row ids (so the kernel's lookup counts need no
 * table and forget is a no-op), and lookup, getattr, readdir, readlink, opendir, access and
 * statfs answered from the store only. The virtual files of a batch directory come from the
 * vfile table; nothing here knows their names.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bfs.h"
#include "conf.h"
#include "draft.h"
#include "poller.h"
#include "store.h"
#include "tree.h"
#include "vfile.h"

fuse_ino_t tree_ino(enum tree_kind kind, int64_t id, unsigned sub)
{
	if (kind == TREE_ROOT)
		return TREE_ROOT_INO;
	return ((fuse_ino_t)kind << 56) | ((fuse_ino_t)id << 4) | (fuse_ino_t)sub;
}

struct tree_node tree_node(fuse_ino_t ino)
{
	struct tree_node n;

	if (ino == TREE_ROOT_INO)
		return (struct tree_node){TREE_ROOT, 0, TREE_SUB_DIR};
	n.kind = (enum tree_kind)(ino >> 56);
	n.id = (int64_t)((ino >> 4) & ((1ull << 52) - 1));
	n.sub = (unsigned)(ino & 0xf);
	return n;
}

void tree_attr_times(struct stat *st, int64_t ms)
{
	st->st_mtim.tv_sec = ms / 1000;
	st->st_mtim.tv_nsec = (ms % 1000) * 1000000;
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
}

void tree_attr_init(struct stat *st, fuse_ino_t ino, mode_t mode, int64_t mtime_ms)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_uid = getuid();
	st->st_gid = getgid();
	/*
	 * The I/O size cp, cat and dd pick (coreutils' io_blksize()): each write is one FUSE
	 * request, so 1 MiB (the connection's max_write) rather than 128 KiB makes a cp into
	 * the mount 8 times fewer round trips.
	 */
	st->st_blksize = S_ISREG(mode) ? TREE_IO_SIZE : 4096;
	tree_attr_times(st, mtime_ms);
}

static int stat_file(struct bfs *b, fuse_ino_t ino, int64_t id, struct stat *st)
{
	char path[PATH_MAX];
	struct store_file f;
	struct stat sp;
	int rc;

	rc = store_file_get(b->store, id, &f);
	if (rc)
		return rc;
	spool_path(&b->spool, f.id, path, sizeof(path));
	if (stat(path, &sp))
		return -errno;
	tree_attr_init(st, ino, S_IFREG | (f.mode & 07777), 0);
	st->st_size = sp.st_size;
	st->st_blocks = sp.st_blocks;
	st->st_mtim = sp.st_mtim;
	st->st_ctim = sp.st_ctim;
	st->st_atim = sp.st_atim;
	return 0;
}

/* A batch directory, or one of its virtual files. */
static int stat_batch(struct bfs *b, fuse_ino_t ino, struct tree_node n, struct stat *st,
		      double *timeout)
{
	const struct vfile *v = NULL;
	struct store_batch row;
	int rc;

	if (n.sub != TREE_SUB_DIR) {
		v = vfile_by_sub(n.sub);
		if (!v)
			return -ENOENT;
	}
	rc = store_batch_get(b->store, n.id, &row);
	if (rc)
		return rc;
	if (!v) {
		tree_attr_init(st, ino, S_IFDIR | 0755, row.dir_mtime);
		*timeout = TREE_TIMEOUT_LIVE;
		return 0;
	}
	if (!vfile_is_visible(v, &row))
		return -ENOENT;
	tree_attr_init(st, ino, v->mode, 0);
	*timeout = v->timeout;
	return v->stat(b, &row, st);
}

/* The batch a .by-id link (a part row) leads to. */
static int link_batch(struct bfs *b, int64_t part_id, struct store_batch *row)
{
	struct store_part p;
	int rc = store_part_get(b->store, part_id, &p);

	if (!rc && !p.pid[0])
		rc = -ENOENT;
	return rc ? rc : store_batch_get(b->store, p.batch_id, row);
}

static int stat_node(struct bfs *b, fuse_ino_t ino, struct stat *st, double *timeout)
{
	struct tree_node n = tree_node(ino);
	struct store_batch row;
	struct store_result res;
	int rc;

	*timeout = TREE_TIMEOUT_DIR;
	switch (n.kind) {
	case TREE_ROOT:
		tree_attr_init(st, ino, S_IFDIR | 0755, b->mount_time);
		return 0;
	case TREE_REMOTE:
		if ((size_t)n.id >= b->nremotes || n.sub > TREE_SUB_BY_ID)
			return -ENOENT;
		/* .by-id is the provider's index: nothing can be made in it. */
		tree_attr_init(st, ino, S_IFDIR | (n.sub == TREE_SUB_BY_ID ? 0555 : 0755),
			       b->mount_time);
		return 0;
	case TREE_LINK:
		rc = link_batch(b, n.id, &row);
		if (rc)
			return rc;
		tree_attr_init(st, ino, S_IFLNK | 0777, row.dir_mtime);
		st->st_size = (off_t)(strlen("../") + strlen(row.name));
		*timeout = TREE_TIMEOUT_DIR; /* gone when the batch is forgotten */
		return 0;
	case TREE_FILE:
		*timeout = TREE_TIMEOUT_LIVE;
		return stat_file(b, ino, n.id, st);
	case TREE_RESULT:
		rc = n.sub == TREE_SUB_TEXT ? store_text_get(b->store, n.id, &res)
					    : store_result_get(b->store, n.id, &res);
		if (rc)
			return rc;
		tree_attr_init(st, ino, S_IFREG | 0444, res.mtime);
		st->st_size = res.size;
		st->st_blocks = (res.size + 511) / 512;
		*timeout = TREE_TIMEOUT_FIXED;
		return 0;
	case TREE_BATCH:
		return stat_batch(b, ino, n, st, timeout);
	}
	return -ENOENT;
}

/*
 * The mount's owner and umask (main.c sets them from -o uid=, gid=, umask=), on every stat
 * answered. The umask only takes bits away: a mode never shows a permission batchfs refuses.
 */
static void tree_stat_finish(const struct bfs *b, struct stat *st)
{
	st->st_uid = b->uid;
	st->st_gid = b->gid;
	st->st_mode &= ~(mode_t)(b->umask & 07777);
}

int tree_stat(struct bfs *b, fuse_ino_t ino, struct stat *st, double *timeout)
{
	int rc = stat_node(b, ino, st, timeout);

	if (!rc)
		tree_stat_finish(b, st);
	return rc;
}

int tree_entry(struct bfs *b, fuse_ino_t ino, struct fuse_entry_param *e)
{
	double timeout;
	int rc;

	memset(e, 0, sizeof(*e));
	rc = tree_stat(b, ino, &e->attr, &timeout);
	if (rc)
		return rc;
	e->ino = ino;
	e->attr_timeout = timeout;
	e->entry_timeout = timeout > 0 ? timeout : TREE_TIMEOUT_DIR;
	return 0;
}

/* A foreign batch's results are fetched on first access (not at discovery). */
static void want_results(struct bfs *b, int64_t id)
{
	(void)store_batch_want_results(b->store, id); /* tried again at the next access */
	poller_kick(b->poller);
}

static int lookup_remote(struct bfs *b, struct tree_node n, const char *name,
			 struct fuse_entry_param *e)
{
	const char *remote;
	struct store_batch row;
	struct store_part p;

	if ((size_t)n.id >= b->nremotes)
		return -ENOENT;
	remote = b->remotes[n.id].conf->name;
	if (n.sub == TREE_SUB_BY_ID) {
		if (store_part_by_pid(b->store, remote, name, &p))
			return -ENOENT;
		return tree_entry(b, tree_ino(TREE_LINK, p.id, 0), e);
	}
	if (!strcmp(name, TREE_BY_ID))
		return tree_entry(b, tree_ino(TREE_REMOTE, n.id, TREE_SUB_BY_ID), e);
	if (!store_batch_by_name(b->store, remote, name, &row)) {
		if (row.foreign)
			want_results(b, row.id);
		return tree_entry(b, tree_ino(TREE_BATCH, row.id, TREE_SUB_DIR), e);
	}
	return -ENOENT;
}

static int lookup_batch(struct bfs *b, struct tree_node n, const char *name,
			struct fuse_entry_param *e)
{
	const struct vfile *v;
	struct store_batch row;
	struct store_file f;
	int rc;

	if (n.sub != TREE_SUB_DIR) {
		/* A directory among the virtual files (results/). */
		v = vfile_by_sub(n.sub);
		if (!v || !v->lookup)
			return -ENOTDIR;
		rc = store_batch_get(b->store, n.id, &row);
		if (rc)
			return rc;
		if (!vfile_is_visible(v, &row))
			return -ENOENT;
		return v->lookup(b, n.id, name, e);
	}
	v = vfile_by_name(name);
	if (v)
		return tree_entry(b, tree_ino(TREE_BATCH, n.id, v->sub), e);
	if (store_file_by_name(b->store, n.id, name, &f))
		return -ENOENT;
	return tree_entry(b, tree_ino(TREE_FILE, f.id, 0), e);
}

int tree_lookup(struct bfs *b, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	struct tree_node n = tree_node(parent);

	switch (n.kind) {
	case TREE_ROOT:
		for (size_t i = 0; i < b->nremotes; i++)
			if (!strcmp(b->remotes[i].conf->name, name))
				return tree_entry(b, tree_ino(TREE_REMOTE, (int64_t)i, 0), e);
		return -ENOENT;
	case TREE_REMOTE:
		return lookup_remote(b, n, name, e);
	case TREE_BATCH:
		return lookup_batch(b, n, name, e);
	case TREE_LINK:
	case TREE_FILE:
	case TREE_RESULT:
		return -ENOTDIR;
	}
	return -ENOENT;
}

int tree_readlink(struct bfs *b, fuse_ino_t ino, char *out, size_t size)
{
	struct tree_node n = tree_node(ino);
	struct store_batch row;
	int rc;

	if (n.kind != TREE_LINK)
		return -EINVAL;
	rc = link_batch(b, n.id, &row);
	if (rc)
		return rc;
	if ((size_t)snprintf(out, size, "../%s", row.name) >= size)
		return -ENAMETOOLONG;
	return 0;
}

/* readdir */

bool tree_dir_add(struct tree_dir *d, const char *name, fuse_ino_t ino, off_t cookie,
		  const struct stat *known, double known_timeout)
{
	struct fuse_entry_param e;
	double timeout = known_timeout;
	bool dots = !strcmp(name, ".") || !strcmp(name, "..");
	size_t n;

	if (cookie <= d->off || d->full)
		return !d->full;
	memset(&e, 0, sizeof(e));
	if (dots) {
		e.attr.st_ino = ino;
		e.attr.st_mode = S_IFDIR;
	} else if (known) {
		e.attr = *known;
		tree_stat_finish(d->b, &e.attr);
	} else if (tree_stat(d->b, ino, &e.attr, &timeout)) {
		return true; /* vanished meanwhile: skip it */
	}
	if (d->plus) {
		/* "." and ".." carry no entry (and so no lookup count) */
		if (!dots) {
			e.ino = ino;
			e.attr_timeout = timeout;
			e.entry_timeout = timeout > 0 ? timeout : TREE_TIMEOUT_DIR;
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

int tree_dir_limit(const struct tree_dir *d)
{
	size_t per = d->plus ? 160 : 32;
	size_t n = d->size / per + 2;

	return n > 4096 ? 4096 : (int)n;
}

/* Remote directory cookies: .by-id 3, batch k 3 + k (row ids start at 1). */
#define DIR_BY_ID_COOKIE 3

static int dir_batch_cb(void *ctx, const struct store_batch *row)
{
	struct tree_dir *d = ctx;

	if (!tree_dir_add(d, row->name, tree_ino(TREE_BATCH, row->id, TREE_SUB_DIR),
			  DIR_BY_ID_COOKIE + (off_t)row->id, NULL, 0))
		return 1; /* the reply is full */
	return 0;
}

/* .by-id cookies: part k 2 + k. */
static int dir_link_cb(void *ctx, const struct store_part *p)
{
	struct tree_dir *d = ctx;

	if (!tree_dir_add(d, p->pid, tree_ino(TREE_LINK, p->id, 0), 2 + (off_t)p->id, NULL, 0))
		return 1;
	return 0;
}

static int dir_file_cb(void *ctx, const struct store_file *f)
{
	struct tree_dir *d = ctx;
	off_t cookie = vfile_files_cookie() + (off_t)f->id;

	return tree_dir_add(d, f->name, tree_ino(TREE_FILE, f->id, 0), cookie, NULL, 0) ? 0 : 1;
}

static int readdir_remote(struct bfs *b, struct tree_node n, struct tree_dir *d)
{
	const char *remote;
	int rc;

	if ((size_t)n.id >= b->nremotes)
		return -ENOENT;
	remote = b->remotes[n.id].conf->name;
	if (n.sub == TREE_SUB_BY_ID) {
		rc = store_part_list_remote(b->store, remote, d->off > 2 ? d->off - 2 : 0,
					    tree_dir_limit(d), dir_link_cb, d);
		return rc > 0 ? 0 : rc;
	}
	if (!tree_dir_add(d, TREE_BY_ID, tree_ino(TREE_REMOTE, n.id, TREE_SUB_BY_ID),
			  DIR_BY_ID_COOKIE, NULL, 0))
		return 0;
	rc = store_batch_list(b->store, remote,
			      d->off > DIR_BY_ID_COOKIE ? d->off - DIR_BY_ID_COOKIE : 0,
			      tree_dir_limit(d), dir_batch_cb, d);
	return rc > 0 ? 0 : rc;
}

/* A batch directory: the visible virtual files (table order), then the draft files. */
static int readdir_batch(struct bfs *b, struct tree_node n, struct tree_dir *d)
{
	off_t base = vfile_files_cookie();
	const struct vfile *v;
	struct store_batch row;
	int rc;

	rc = store_batch_get(b->store, n.id, &row);
	if (rc)
		return rc;
	if (n.sub != TREE_SUB_DIR) {
		v = vfile_by_sub(n.sub);
		if (!v || !v->readdir)
			return -ENOTDIR;
		if (!vfile_is_visible(v, &row))
			return -ENOENT;
		return v->readdir(b, n.id, d);
	}
	if (row.foreign)
		want_results(b, row.id);
	for (size_t i = 0; i < vfile_count; i++) {
		v = &vfile_table[i];
		if (v->unlisted || !vfile_is_visible(v, &row))
			continue;
		if (!tree_dir_add(d, v->name, tree_ino(TREE_BATCH, n.id, v->sub), vfile_cookie(v),
				  NULL, 0))
			return 0;
	}
	rc = store_file_list(b->store, n.id, d->off > base ? d->off - base : 0, tree_dir_limit(d),
			     dir_file_cb, d);
	return rc > 0 ? 0 : rc;
}

int tree_readdir(struct bfs *b, fuse_ino_t ino, struct tree_dir *d)
{
	struct tree_node n = tree_node(ino);
	int rc = 0;

	d->b = b;
	d->len = 0;
	d->full = false;
	d->buf = malloc(d->size ? d->size : 1);
	if (!d->buf)
		return -ENOMEM;
	tree_dir_add(d, ".", ino, 1, NULL, 0);
	tree_dir_add(d, "..", TREE_ROOT_INO, 2, NULL, 0);
	switch (n.kind) {
	case TREE_ROOT:
		for (size_t i = 0; i < b->nremotes; i++)
			if (!tree_dir_add(d, b->remotes[i].conf->name,
					  tree_ino(TREE_REMOTE, (int64_t)i, 0), 3 + (off_t)i, NULL,
					  0))
				break;
		break;
	case TREE_REMOTE:
		rc = readdir_remote(b, n, d);
		break;
	case TREE_BATCH:
		rc = readdir_batch(b, n, d);
		break;
	default:
		rc = -ENOTDIR;
	}
	if (rc) {
		free(d->buf);
		d->buf = NULL;
	}
	return rc;
}

int tree_opendir(struct bfs *b, fuse_ino_t ino)
{
	struct stat st;
	double timeout;
	int rc = tree_stat(b, ino, &st, &timeout);

	if (!rc && !S_ISDIR(st.st_mode))
		rc = -ENOTDIR;
	return rc;
}

int tree_access(struct bfs *b, fuse_ino_t ino, int mask)
{
	struct tree_node n = tree_node(ino);
	struct stat st;
	double timeout;
	int rc = tree_stat(b, ino, &st, &timeout);

	if (!rc && (mask & W_OK)) {
		if (n.kind == TREE_FILE)
			rc = draft_check_file(b, n.id);
		else if (n.kind == TREE_BATCH && n.sub == TREE_SUB_DIR)
			rc = 0; /* files other than requests.jsonl may be made in any batch */
		else if (!(st.st_mode & 0222))
			rc = -EACCES;
	}
	if (!rc && (mask & R_OK) && !(st.st_mode & 0444))
		rc = -EACCES;
	return rc;
}

int tree_statfs(struct bfs *b, struct statvfs *sv)
{
	if (statvfs(b->cache_dir, sv))
		memset(sv, 0, sizeof(*sv));
	sv->f_namemax = 255;
	return 0;
}
