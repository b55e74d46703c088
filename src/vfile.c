// SPDX-License-Identifier: MIT
/*
 * The virtual files of a batch directory, one table entry each: when it exists, its
 * attributes, and what open, read and write do. Everything is read from the store; the only
 * write (ctl) does not act itself but says which job the worker runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "bfs.h"
#include "buf.h"
#include "conf.h"
#include "statusfmt.h"
#include "store.h"
#include "tree.h"
#include "vfile.h"
#include "worker.h"

/* Times only: what a setattr may change on a file that has no data of its own. */
#define SET_TIMES                                                              \
	(FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | \
	 FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)
#define SET_CHANGES \
	(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)

static bool wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

static bool has_id(const struct store_batch *row)
{
	return row->pid[0] != '\0';
}

static bool results_ready(const struct store_batch *row)
{
	return row->results == RESULTS_READY;
}

/* Copied out of the snapshot, not replied from it: release may free the handle as soon as
 * the kernel has the data, before the reply returns. */
static long read_text(struct bfs *b, int64_t batch_id, const struct buf *text, off_t off,
		      size_t size, char *dst)
{
	size_t len = text->len, k = (size_t)off >= len ? 0 : len - (size_t)off;
	size_t n = k < size ? k : size;

	(void)b;
	(void)batch_id;
	if (n)
		memcpy(dst, text->data + off, n);
	return (long)n;
}

/* status */

/* status (ids false) or id (ids true) of a batch and its parts, from the store. */
static int batch_render(struct bfs *b, const struct store_batch *row, bool ids, struct buf *out)
{
	struct remote *r = bfs_remote(b, row->remote);
	struct store_part *parts = NULL;
	size_t n = 0;
	int rc = row->nparts ? store_parts_load(b->store, row->id, &parts, &n) : 0;

	if (!rc)
		rc = ids ? statusfmt_ids(parts, n, out)
			 : statusfmt_batch(row, parts, n, r ? r->conf->provider : "?", out);
	free(parts);
	return rc;
}

static int status_render(struct bfs *b, const struct store_batch *row, struct buf *out)
{
	return batch_render(b, row, false, out);
}

static int status_stat(struct bfs *b, const struct store_batch *row, struct stat *st)
{
	struct buf text = BUF_INIT(1 << 20); /* as at open: a batch of many parts is long */
	int rc;

	rc = status_render(b, row, &text);
	tree_attr_times(st, row->updated_at);
	st->st_size = (off_t)text.len;
	buf_release(&text);
	return rc;
}

static int status_open(struct bfs *b, const struct store_batch *row, struct fuse_file_info *fi,
		       struct buf *text)
{
	if (wants_write(fi->flags))
		return -EACCES;
	/* One snapshot per open, so a reader never sees half of two states; its size changes
	 * between opens, so no page cache. */
	fi->direct_io = 1;
	fi->noflush = 1;
	return status_render(b, row, text);
}

/* id */

static int id_stat(struct bfs *b, const struct store_batch *row, struct stat *st)
{
	struct buf text = BUF_INIT(1 << 20);
	int rc = batch_render(b, row, true, &text);

	tree_attr_times(st, row->created_at);
	st->st_size = (off_t)text.len;
	buf_release(&text);
	return rc;
}

static int id_open(struct bfs *b, const struct store_batch *row, struct fuse_file_info *fi,
		   struct buf *text)
{
	(void)b;
	if (wants_write(fi->flags))
		return -EACCES;
	fi->noflush = 1;
	fi->direct_io = 1; /* grows as parts are created */
	return batch_render(b, row, true, text);
}

/* ctl */

/*
 * What reading ctl shows: the words it accepts. Readable so that tar, cp -a, rsync -a and
 * grep -r of a batch directory work; its size is this text's, so tar archives all of it.
 */
static const char ctl_help[] =
	"cancel\tcancel the batch at the provider (every part still running)\n"
	"refresh\tpoll the provider now (or look again for an unsettled submission)\n"
	"resubmit\tsend requests.jsonl again when the batch failed before running a request\n";

static int ctl_stat(struct bfs *b, const struct store_batch *row, struct stat *st)
{
	(void)b;
	tree_attr_times(st, row->dir_mtime);
	st->st_size = (off_t)(sizeof(ctl_help) - 1);
	st->st_blocks = (st->st_size + 511) / 512;
	return 0;
}

static int ctl_open(struct bfs *b, const struct store_batch *row, struct fuse_file_info *fi,
		    struct buf *text)
{
	(void)b;
	(void)row;
	/* Every write is one word, seen as written (no page cache in between). */
	fi->direct_io = 1;
	if ((fi->flags & O_ACCMODE) == O_WRONLY)
		return 0;
	fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
	return buf_add(text, ctl_help, sizeof(ctl_help) - 1);
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* `echo cancel > ctl`: one word per write, surrounding whitespace ignored. */
static int ctl_write(struct bfs *b, int64_t batch_id, const char *data, size_t size,
		     struct worker_job *job)
{
	struct store_batch row;
	struct remote *r;
	char word[32];
	size_t i = 0, j = size;
	int rc;

	while (i < size && is_space(data[i]))
		i++;
	while (j > i && (is_space(data[j - 1]) || data[j - 1] == '\0'))
		j--;
	if (j - i == 0 || j - i >= sizeof(word))
		return -EINVAL;
	memcpy(word, data + i, j - i);
	word[j - i] = '\0';
	rc = store_batch_get(b->store, batch_id, &row);
	if (rc)
		return rc;
	r = bfs_remote(b, row.remote);
	if (!r)
		return -EIO;
	memset(job, 0, sizeof(*job));
	if (!strcmp(word, "cancel"))
		job->kind = WORKER_CANCEL;
	else if (!strcmp(word, "refresh"))
		job->kind = WORKER_REFRESH;
	else if (!strcmp(word, "resubmit"))
		job->kind = WORKER_RESUBMIT;
	else
		return -EINVAL;
	job->r = r;
	job->batch_id = batch_id;
	return 0;
}

/* results.jsonl */

static int results_jsonl_stat(struct bfs *b, const struct store_batch *row, struct stat *st)
{
	(void)b;
	tree_attr_times(st, row->ended_at);
	st->st_size = row->results_size;
	st->st_blocks = (row->results_size + 511) / 512;
	return 0;
}

static int results_jsonl_open(struct bfs *b, const struct store_batch *row,
			      struct fuse_file_info *fi, struct buf *text)
{
	(void)b;
	(void)row;
	(void)text;
	if (wants_write(fi->flags))
		return -EACCES;
	/* Results never change once visible (row ids are never reused): keep the page cache. */
	fi->keep_cache = 1;
	fi->noflush = 1;
	return 0;
}

static long results_jsonl_read(struct bfs *b, int64_t batch_id, const struct buf *text, off_t off,
			       size_t size, char *dst)
{
	(void)text;
	return store_results_jsonl_read(b->store, batch_id, off, size, dst);
}

/* results/ */

static int results_dir_stat(struct bfs *b, const struct store_batch *row, struct stat *st)
{
	(void)b;
	tree_attr_times(st, row->ended_at);
	return 0;
}

static int results_dir_lookup(struct bfs *b, int64_t batch_id, const char *name,
			      struct fuse_entry_param *e)
{
	struct store_result res;

	if (store_result_by_name(b->store, batch_id, name, &res))
		return -ENOENT;
	return tree_entry(b, tree_ino(TREE_RESULT, res.id, 0), e);
}

/* Result k has cookie 2 + k: its attributes come with the listing (READDIRPLUS, no query
 * per entry). */
static int results_dir_cb(void *ctx, const struct store_result *r)
{
	struct tree_dir *d = ctx;
	fuse_ino_t ino = tree_ino(TREE_RESULT, r->id, 0);
	struct stat st;

	tree_attr_init(&st, ino, S_IFREG | 0444, r->mtime);
	st.st_size = r->size;
	st.st_blocks = (r->size + 511) / 512;
	return tree_dir_add(d, r->fname, ino, 2 + (off_t)r->id, &st, TREE_TIMEOUT_FIXED) ? 0 : 1;
}

static int results_dir_readdir(struct bfs *b, int64_t batch_id, struct tree_dir *d)
{
	int rc = store_result_list(b->store, batch_id, d->off > 2 ? d->off - 2 : 0,
				   tree_dir_limit(d), results_dir_cb, d);

	return rc > 0 ? 0 : rc;
}

/*
 * Readdir order is table order. sub numbers are part of inode numbers: never change or
 * reuse one.
 */
const struct vfile vfile_table[] = {
	{
		.name = "status",
		.sub = 1,
		.mode = S_IFREG | 0444,
		.timeout = TREE_TIMEOUT_LIVE,
		.setattr_refused = SET_CHANGES,
		.stat = status_stat,
		.open = status_open,
		.read = read_text,
	},
	{
		.name = "id",
		.sub = 2,
		.mode = S_IFREG | 0444,
		.timeout = TREE_TIMEOUT_LIVE, /* a line per part as each is created */
		.setattr_refused = SET_CHANGES,
		.visible = has_id,
		.stat = id_stat,
		.open = id_open,
		.read = read_text,
	},
	{
		.name = "ctl",
		.sub = 3,
		/* Writable by the owner only, as every mode here is enforced with allow_other;
		 * readable by all: it shows nothing but its words. */
		.mode = S_IFREG | 0644,
		.timeout = TREE_TIMEOUT_LIVE,
		/* Shells' `>` truncates first: accept it, there is nothing to cut. */
		.setattr_refused = ~(FUSE_SET_ATTR_SIZE | SET_TIMES),
		.stat = ctl_stat,
		.open = ctl_open,
		.read = read_text,
		.write = ctl_write,
	},
	{
		.name = "results.jsonl",
		.sub = 4,
		.mode = S_IFREG | 0444,
		.timeout = TREE_TIMEOUT_FIXED,
		.setattr_refused = SET_CHANGES,
		.visible = results_ready,
		.stat = results_jsonl_stat,
		.open = results_jsonl_open,
		.read = results_jsonl_read,
	},
	{
		.name = "results",
		.sub = 5,
		.mode = S_IFDIR | 0555,
		.timeout = TREE_TIMEOUT_FIXED,
		.setattr_refused = SET_CHANGES,
		.visible = results_ready,
		.stat = results_dir_stat,
		.lookup = results_dir_lookup,
		.readdir = results_dir_readdir,
	},
};

const size_t vfile_count = sizeof(vfile_table) / sizeof(vfile_table[0]);

_Static_assert(sizeof(vfile_table) / sizeof(vfile_table[0]) <= TREE_SUB_MAX,
	       "sub numbers are 4 bits of the inode number");

const struct vfile *vfile_by_name(const char *name)
{
	for (size_t i = 0; i < vfile_count; i++)
		if (!strcmp(name, vfile_table[i].name))
			return &vfile_table[i];
	return NULL;
}

const struct vfile *vfile_by_sub(unsigned sub)
{
	for (size_t i = 0; i < vfile_count; i++)
		if (vfile_table[i].sub == sub)
			return &vfile_table[i];
	return NULL;
}

bool vfile_is_visible(const struct vfile *v, const struct store_batch *row)
{
	return !v->visible || v->visible(row);
}

off_t vfile_cookie(const struct vfile *v)
{
	return VFILE_COOKIE_FIRST + (off_t)(v - vfile_table);
}

off_t vfile_files_cookie(void)
{
	return VFILE_COOKIE_FIRST + (off_t)vfile_count + VFILE_COOKIE_SPARE;
}
