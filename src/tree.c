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
#include "buf.h"
#include "conf.h"
#include "draft.h"
#include "poller.h"
#include "store.h"
#include "tree.h"
#include "vfile.h"

/* The kind field of a version's inode number (tree.h); tree_node() reads it as TREE_BATCH. */
#define TREE_KIND_VERSION 6
#define TREE_VER_ID_BITS  32

fuse_ino_t tree_ino(enum tree_kind kind, int64_t id, unsigned sub)
{
	if (kind == TREE_ROOT)
		return TREE_ROOT_INO;
	return ((fuse_ino_t)kind << 56) | ((fuse_ino_t)id << 4) | (fuse_ino_t)sub;
}

uint32_t tree_ver_of(uint64_t hash)
{
	uint32_t ver = (uint32_t)(hash & ((1u << TREE_VER_BITS) - 1));

	return ver ? ver : 1; /* 0 is "not a version" */
}

fuse_ino_t tree_ino_version(int64_t id, unsigned sub, uint64_t hash)
{
	if (id < 0 || (uint64_t)id >> TREE_VER_ID_BITS)
		return tree_ino(TREE_BATCH, id, sub);
	return ((fuse_ino_t)TREE_KIND_VERSION << 56) | ((fuse_ino_t)id << (TREE_VER_BITS + 4)) |
	       ((fuse_ino_t)tree_ver_of(hash) << 4) | (fuse_ino_t)sub;
}

/* FNV-1a: a version's name need not resist an adversary, only tell texts apart. */
uint64_t tree_text_hash(const char *data, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)data[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

struct tree_node tree_node(fuse_ino_t ino)
{
	struct tree_node n = {TREE_ROOT, 0, TREE_SUB_DIR, 0};
	unsigned kind = (unsigned)(ino >> 56);

	if (ino == TREE_ROOT_INO)
		return n;
	n.sub = (unsigned)(ino & 0xf);
	if (kind == TREE_KIND_VERSION) {
		n.kind = TREE_BATCH;
		n.ver = (uint32_t)((ino >> 4) & ((1u << TREE_VER_BITS) - 1));
		n.id = (int64_t)((ino >> (TREE_VER_BITS + 4)) & ((1ull << TREE_VER_ID_BITS) - 1));
		return n;
	}
	n.kind = (enum tree_kind)kind;
	n.id = (int64_t)((ino >> 4) & ((1ull << 52) - 1));
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

/*
 * The versions looked up last, text and attributes: an open finds the version its walk found
 * even when the text moved on in between (as with a file renamed over another, the open gets
 * the inode the walk found), and a getattr through a file open on an older version still
 * answers. Bounded: the last VERSIONS_KEPT versions within VERSIONS_KEPT_BYTES, oldest out
 * first; a text longer than that is not kept (fs.c serves its open from the text of now).
 */
#define VERSIONS_KEPT	    64
#define VERSIONS_KEPT_BYTES (4u << 20)

struct version_kept {
	const struct bfs *b;
	fuse_ino_t ino;
	uint64_t hash;
	struct stat st; /* before tree_stat_finish */
	char *text;
	size_t len;
};

static struct version_kept kept[VERSIONS_KEPT];
static unsigned kept_next; /* the oldest entry, the next to go */
static size_t kept_bytes;  /* the texts' lengths, summed */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;

static struct version_kept *kept_find(const struct bfs *b, fuse_ino_t ino)
{
	for (int i = 0; i < VERSIONS_KEPT; i++)
		if (kept[i].ino == ino && kept[i].b == b)
			return &kept[i];
	return NULL;
}

static void kept_drop(struct version_kept *k)
{
	kept_bytes -= k->len;
	free(k->text);
	memset(k, 0, sizeof(*k));
}

bool tree_version_keepable(size_t len)
{
	return len <= VERSIONS_KEPT_BYTES;
}

/*
 * Keeps the version st->st_ino of text. A number taken by another text (20 bits of hash, see
 * tree.h) names the newer one from now on, here as in the kernel, which replaces an inode
 * whose generation changed.
 */
static void version_keep(const struct bfs *b, const struct stat *st, const struct buf *text,
			 uint64_t hash)
{
	struct version_kept *k;
	char *copy;
	bool known;

	if (!tree_version_keepable(text->len))
		return;
	pthread_mutex_lock(&kept_lock);
	k = kept_find(b, st->st_ino);
	known = k && k->hash == hash;
	pthread_mutex_unlock(&kept_lock);
	if (known)
		return; /* the common case: looked up again, nothing changed */
	copy = malloc(text->len ? text->len : 1);
	if (!copy)
		return; /* its open will read the text of now */
	memcpy(copy, text->data, text->len);
	pthread_mutex_lock(&kept_lock);
	k = kept_find(b, st->st_ino);
	if (!k)
		k = &kept[kept_next++ % VERSIONS_KEPT];
	kept_drop(k);
	while (kept_bytes + text->len > VERSIONS_KEPT_BYTES)
		kept_drop(&kept[kept_next++ % VERSIONS_KEPT]);
	*k = (struct version_kept){b, st->st_ino, hash, *st, copy, text->len};
	kept_bytes += text->len;
	pthread_mutex_unlock(&kept_lock);
}

static bool version_stat_kept(const struct bfs *b, fuse_ino_t ino, struct stat *st)
{
	struct version_kept *k;

	pthread_mutex_lock(&kept_lock);
	k = kept_find(b, ino);
	if (k)
		*st = k->st;
	pthread_mutex_unlock(&kept_lock);
	return k;
}

/*
 * A virtual file with versions (tree.h): the attributes of the text now, under the number of
 * its version; for the number of an older version, that version's if it is kept, else
 * -ESTALE (the kernel drops such an entry, and a stat(2) or open(2) walks again). Size and
 * number come from one rendering, so they always belong together.
 */
static int stat_version(struct bfs *b, const struct vfile *v, const struct store_batch *row,
			fuse_ino_t ino, struct tree_node n, struct stat *st, double *timeout,
			uint32_t *gen)
{
	struct buf out = BUF_INIT(1 << 20); /* as at open: a batch of many parts is long */
	const struct buf *text;
	uint64_t hash;
	fuse_ino_t vino;
	int rc;

	rc = v->version(b, row, st, &out, &text, &hash);
	if (rc)
		goto out;
	vino = tree_ino_version(n.id, n.sub, hash);
	*timeout = TREE_TIMEOUT_FIXED; /* a version never changes */
	if (vino == tree_ino(TREE_BATCH, n.id, n.sub)) {
		*timeout = TREE_TIMEOUT_LIVE; /* no room for a version: live, as any other */
	} else if (n.ver && n.ver != tree_ver_of(hash)) {
		rc = version_stat_kept(b, ino, st) ? 0 : -ESTALE;
	} else {
		st->st_ino = vino;
		*gen = (uint32_t)(hash >> 32);
		version_keep(b, st, text, hash);
	}
out:
	buf_release(&out);
	return rc;
}

int tree_version_get(struct bfs *b, fuse_ino_t ino, struct buf *out, struct stat *st)
{
	struct version_kept *k;
	int rc = -ENOENT;

	pthread_mutex_lock(&kept_lock);
	k = kept_find(b, ino);
	if (k) {
		buf_reset(out); /* out stays as it was when the version is not kept */
		*st = k->st;
		rc = buf_add(out, k->text, k->len);
	}
	pthread_mutex_unlock(&kept_lock);
	if (!rc)
		tree_stat_finish(b, st);
	return rc;
}

/* A batch directory, or one of its virtual files. */
static int stat_batch(struct bfs *b, fuse_ino_t ino, struct tree_node n, struct stat *st,
		      double *timeout, uint32_t *gen)
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
	if (v->version)
		return stat_version(b, v, &row, ino, n, st, timeout, gen);
	if (n.ver)
		return -ENOENT; /* no such version */
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

/* gen: the entry's generation (0 but for a version). */
static int stat_node(struct bfs *b, fuse_ino_t ino, struct stat *st, double *timeout, uint32_t *gen)
{
	struct tree_node n = tree_node(ino);
	struct store_batch row;
	struct store_result res;
	int rc;

	*timeout = TREE_TIMEOUT_DIR;
	*gen = 0;
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
		return stat_batch(b, ino, n, st, timeout, gen);
	}
	return -ENOENT;
}

static int stat_finished(struct bfs *b, fuse_ino_t ino, struct stat *st, double *timeout,
			 uint32_t *gen)
{
	int rc = stat_node(b, ino, st, timeout, gen);

	if (!rc)
		tree_stat_finish(b, st);
	return rc;
}

int tree_stat(struct bfs *b, fuse_ino_t ino, struct stat *st, double *timeout)
{
	uint32_t gen;

	return stat_finished(b, ino, st, timeout, &gen);
}

/* An entry's number is its attributes' (a version's, where the file has versions). */
static void entry_fill(struct fuse_entry_param *e, double timeout, uint32_t gen)
{
	e->ino = e->attr.st_ino;
	e->generation = gen;
	e->attr_timeout = timeout;
	/* A version's entry is looked up again at each walk: that is where versions move. */
	if (e->ino >> 56 == TREE_KIND_VERSION)
		e->entry_timeout = 0;
	else
		e->entry_timeout = timeout > 0 ? timeout : TREE_TIMEOUT_DIR;
}

int tree_entry(struct bfs *b, fuse_ino_t ino, struct fuse_entry_param *e)
{
	double timeout;
	uint32_t gen;
	int rc;

	memset(e, 0, sizeof(*e));
	rc = stat_finished(b, ino, &e->attr, &timeout, &gen);
	if (rc)
		return rc;
	entry_fill(e, timeout, gen);
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
	uint32_t gen = 0;
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
		e.attr.st_ino = ino;
		tree_stat_finish(d->b, &e.attr);
	} else if (stat_finished(d->b, ino, &e.attr, &timeout, &gen)) {
		return true; /* vanished meanwhile: skip it */
	}
	if (d->plus) {
		/* "." and ".." carry no entry (and so no lookup count) */
		if (!dots)
			entry_fill(&e, timeout, gen);
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
