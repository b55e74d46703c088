// SPDX-License-Identifier: MIT
/*
 * The virtual files of a batch directory, one table entry each: when it exists, its
 * attributes, and what open, read and write do. Everything is read from the store; the only
 * write (ctl) does not act itself but says which job the worker runs.
 */
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "bfs.h"
#include "spool.h"
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
	return results_are_in(row->results);
}

/* Copied out of the snapshot, not replied from it: release may free the handle as soon as
 * the kernel has the data, before the reply returns. */
static long read_text(struct bfs *b, int64_t batch_id, struct buf *text, off_t off, size_t size,
		      char *dst)
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

bool vfile_batch_done(const struct store_batch *row)
{
	bool settled = results_are_in(row->results) || row->results == RESULTS_UNAVAILABLE;

	if (row->state == BATCH_REJECTED)
		return true; /* nothing will run until it is written again */
	if (row->state == BATCH_FAILED && !row->nparts_sent)
		return true; /* nothing reached the provider: no results will come */
	return state_is_terminal(row->state) && settled;
}

/* What status shows of the results beyond the row: usage sums and retry.jsonl. */
static int extra_load(struct bfs *b, const struct store_batch *row, struct statusfmt_extra *x)
{
	int rc;

	bool known = false;
	uint64_t ok = 0;

	memset(x, 0, sizeof(*x));
	x->done = vfile_batch_done(row);
	if (x->done || results_are_in(row->results)) {
		/* From the per-part sums the ingest wrote: no scan of the results here. */
		rc = store_usage_get(b->store, row->id, x->usage, STATUSFMT_MODELS_MAX, &x->nusage,
				     &known);
		if (rc)
			return rc;
		for (size_t i = 0; i < x->nusage; i++)
			ok += x->usage[i].results;
	}
	if (results_are_in(row->results)) {
		x->have_usage = known;
		if (!known)
			x->usage_why = "results ingested before batchfs kept usage";
	}
	if (!x->done || row->state == BATCH_REJECTED || row->state == BATCH_DRAFT ||
	    !row->nparts_sent) {
		x->retry = STATUSFMT_RETRY_NOT_YET;
	} else if (row->foreign) {
		x->retry = STATUSFMT_RETRY_ABSENT;
		x->retry_why = "made elsewhere: its requests are not known here";
	} else {
		if (!known) {
			x->retry = STATUSFMT_RETRY_ABSENT;
			x->retry_why = "results ingested before batchfs kept their outcomes";
		} else {
			x->retry = STATUSFMT_RETRY_THERE;
			x->retry_lines = row->nrequests - (int64_t)ok;
		}
	}
	return 0;
}

/* status (ids false) or id (ids true) of a batch and its parts, from the store. */
static int batch_render(struct bfs *b, const struct store_batch *row, bool ids, struct buf *out)
{
	struct remote *r = bfs_remote(b, row->remote);
	struct store_part *parts = NULL;
	size_t n = 0;
	int rc = row->nparts ? store_parts_load(b->store, row->id, &parts, &n) : 0;

	struct statusfmt_extra x;

	if (!rc && !ids)
		rc = extra_load(b, row, &x);
	if (!rc)
		rc = ids ? statusfmt_ids(parts, n, out)
			 : statusfmt_batch(row, parts, n, r ? r->conf->provider : "?", &x, out);
	free(parts);
	return rc;
}

static int status_render(struct bfs *b, const struct store_batch *row, struct buf *out)
{
	return batch_render(b, row, false, out);
}

/*
 * The status texts this thread rendered last, each with the row and the store mark it was
 * rendered at: a reader's open and its stat calls (three renders of four queries each for
 * `cat status`) become one look-up while nothing changes. Per thread because a store mark
 * is; a text is reused only if no connection committed since its mark and the row is the
 * same, so a change is in the next read. Bounded: STATUS_MEMOS texts of at most
 * STATUS_MEMO_MAX bytes per thread; longer ones are rendered every time.
 */
#define STATUS_MEMOS	4
#define STATUS_MEMO_MAX (64 << 10)

struct status_memo {
	const struct store *store;
	struct store_mark mark;
	struct store_batch row;
	struct buf text;
	uint64_t hash; /* tree_text_hash of text */
};

struct status_memos {
	struct status_memo m[STATUS_MEMOS];
	unsigned next; /* the slot a new batch takes */
};

static pthread_key_t status_memo_key;
static pthread_once_t status_memo_once = PTHREAD_ONCE_INIT;
static bool status_memo_ok;

static void status_memos_free(void *p)
{
	struct status_memos *ms = p;

	for (int i = 0; i < STATUS_MEMOS; i++)
		buf_release(&ms->m[i].text);
	free(ms);
}

static void status_memo_init(void)
{
	status_memo_ok = !pthread_key_create(&status_memo_key, status_memos_free);
}

static struct status_memos *status_memos_get(void)
{
	struct status_memos *ms;

	(void)pthread_once(&status_memo_once, status_memo_init); /* cannot fail: static once */
	if (!status_memo_ok)
		return NULL;
	ms = pthread_getspecific(status_memo_key);
	if (ms)
		return ms;
	ms = calloc(1, sizeof(*ms));
	if (!ms)
		return NULL;
	for (int i = 0; i < STATUS_MEMOS; i++)
		buf_init(&ms->m[i].text, STATUS_MEMO_MAX);
	if (pthread_setspecific(status_memo_key, ms)) {
		status_memos_free(ms);
		return NULL;
	}
	return ms;
}

static bool status_memo_fits(const struct status_memo *m, const struct store *st,
			     const struct store_mark *mark, const struct store_batch *row)
{
	/* Rows come from one memset and column copy (store.c), so equal rows compare equal. */
	return m->store == st && m->text.len && m->row.id == row->id &&
	       m->mark.version == mark->version && m->mark.changes == mark->changes &&
	       !memcmp(&m->row, row, sizeof(*row));
}

/*
 * The status text of row, from this thread's memo or rendered (and kept) now: *text points
 * into the memo until this thread's next call, or is out when it was rendered without one.
 * The mark is taken before the queries of the render, so a commit during it leaves the text
 * under an older mark, never a newer one.
 */
static int status_text(struct bfs *b, const struct store_batch *row, struct buf *out,
		       const struct buf **text, uint64_t *hash)
{
	struct status_memos *ms = status_memos_get();
	struct status_memo *m = NULL;
	struct store_mark mark;
	int rc;

	*text = out;
	if (!ms || store_mark_get(b->store, &mark))
		goto render;
	for (int i = 0; i < STATUS_MEMOS; i++) {
		if (status_memo_fits(&ms->m[i], b->store, &mark, row)) {
			*text = &ms->m[i].text;
			*hash = ms->m[i].hash;
			return 0;
		}
		if (!m && ms->m[i].row.id == row->id)
			m = &ms->m[i];
	}
	rc = status_render(b, row, out);
	*hash = tree_text_hash(out->data, out->len);
	if (rc || out->len > STATUS_MEMO_MAX)
		return rc;
	if (!m)
		m = &ms->m[ms->next++ % STATUS_MEMOS];
	buf_reset(&m->text);
	m->store = b->store;
	m->mark = mark;
	m->row = *row;
	m->hash = *hash;
	if (buf_add(&m->text, out->data, out->len))
		buf_reset(&m->text); /* an empty memo fits nothing */
	return 0;
render:
	rc = status_render(b, row, out);
	*hash = tree_text_hash(out->data, out->len);
	return rc;
}

/*
 * status has versions (tree.h): each text its own inode, whose attributes and pages the
 * kernel keeps, so a `cat status` while nothing changes is a lookup and an open, its read
 * served from the page cache.
 */
static int status_version(struct bfs *b, const struct store_batch *row, struct stat *st,
			  struct buf *out, const struct buf **text, uint64_t *hash)
{
	int rc = status_text(b, row, out, text, hash);

	if (rc)
		return rc;
	tree_attr_times(st, row->updated_at);
	st->st_size = (off_t)(*text)->len;
	st->st_blocks = (blkcnt_t)(((*text)->len + 511) / 512);
	return 0;
}

static int status_open(struct bfs *b, const struct store_batch *row, struct fuse_file_info *fi,
		       struct buf *out)
{
	const struct buf *text;
	uint64_t hash;
	int rc;

	if (wants_write(fi->flags))
		return -EACCES;
	/* One snapshot per open, so a reader never sees half of two states. fs.c lets the
	 * kernel cache it when it is the text of the version opened. */
	fi->direct_io = 1;
	fi->noflush = 1;
	rc = status_text(b, row, out, &text, &hash);
	if (!rc && text != out)
		rc = buf_add(out, text->data, text->len);
	return rc;
}

/* id */

/* id has versions too (tree.h): a line per part as each is created. */
static int id_version(struct bfs *b, const struct store_batch *row, struct stat *st,
		      struct buf *out, const struct buf **text, uint64_t *hash)
{
	int rc = batch_render(b, row, true, out);

	*text = out;
	if (rc)
		return rc;
	*hash = tree_text_hash(out->data, out->len);
	tree_attr_times(st, row->created_at);
	st->st_size = (off_t)out->len;
	st->st_blocks = (blkcnt_t)((out->len + 511) / 512);
	return 0;
}

static int id_open(struct bfs *b, const struct store_batch *row, struct fuse_file_info *fi,
		   struct buf *text)
{
	(void)b;
	if (wants_write(fi->flags))
		return -EACCES;
	fi->noflush = 1;
	fi->direct_io = 1; /* fs.c lets the kernel cache it when it is the version opened */
	return batch_render(b, row, true, text);
}

/* ctl */

/*
 * What reading ctl shows: the words it accepts. Readable so that tar, cp -a, rsync -a and
 * grep -r of a batch directory work; its size is this text's, so tar archives all of it.
 */
static const char ctl_help[] =
	"cancel\tcancel the batch at the provider (every part still running)\n"
	"cancel!\tcancel even where the provider then loses the completed work (Vertex)\n"
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
	job->confirmed = !strcmp(word, "cancel!");
	if (!strcmp(word, "cancel") || job->confirmed)
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

static long results_jsonl_read(struct bfs *b, int64_t batch_id, struct buf *text, off_t off,
			       size_t size, char *dst)
{
	(void)text;
	return store_results_jsonl_read(b->store, batch_id, off, size, dst);
}

static int results_jsonl_spans(struct bfs *b, int64_t batch_id, off_t off, size_t size,
			       struct store_span *sp, int max, size_t *total)
{
	return store_results_jsonl_spans(b->store, batch_id, off, size, sp, max, total);
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

/* wait */

static int wait_stat(struct bfs *b, const struct store_batch *row, struct stat *st)
{
	(void)b;
	tree_attr_times(st, row->updated_at);
	st->st_size = 0; /* unknown until the wait is over; read it to the end */
	return 0;
}

static int wait_open(struct bfs *b, const struct store_batch *row, struct fuse_file_info *fi,
		     struct buf *text)
{
	(void)b;
	(void)row;
	(void)text;
	if (wants_write(fi->flags))
		return -EACCES;
	/* Every read reaches batchfs from the reader (so an interrupt names it): no cache. */
	fi->direct_io = 1;
	fi->noflush = 1;
	return 0;
}

/* The status once the wait is over, taken at that moment (one state per open, as status). */
static int wait_ready(struct bfs *b, int64_t batch_id, struct buf *out)
{
	struct store_batch row;
	int rc = store_batch_get(b->store, batch_id, &row);

	if (rc)
		return rc;
	if (!vfile_batch_done(&row))
		return 0;
	rc = status_render(b, &row, out);
	if (rc)
		buf_reset(out); /* never half a status for the next read */
	return rc ? rc : 1;
}

/* retry.jsonl: the lines of requests.jsonl whose result is not succeeded, byte for byte. */

static bool retry_visible(const struct store_batch *row)
{
	return !row->foreign && row->nparts_sent > 0 && row->state != BATCH_REJECTED &&
	       vfile_batch_done(row);
}

#define RETRY_LINES 1024
#define RETRY_BUF   65536

/*
 * A walk over requests.jsonl that copies the lines to retry: a read continues where the
 * last one ended (cat, cp read in order), any other offset starts over. Kept in the open
 * file's snapshot buffer; memory is one chunk of line numbers and one read buffer.
 */
struct retry_walk {
	pthread_mutex_t lock;
	bool started;
	int64_t pos;		    /* next byte of requests.jsonl */
	int64_t out;		    /* bytes of retry.jsonl produced so far */
	int64_t line;		    /* the line pos is in (1-based) */
	bool inc;		    /* that line is copied */
	int64_t lines[RETRY_LINES]; /* to copy, ascending, from the store */
	size_t n, i;
	bool lines_end; /* the store has no more after lines[n - 1] */
};

static int retry_fd(struct bfs *b, int64_t batch_id)
{
	struct store_file f;
	int rc = store_file_by_name(b->store, batch_id, "requests.jsonl", &f);

	return rc ? rc : spool_open(&b->spool, f.id, O_RDONLY | O_CLOEXEC);
}

/* Whether line is one to copy, fetching line numbers from the store as the walk needs. */
static int retry_includes(struct bfs *b, int64_t batch_id, struct retry_walk *w, int64_t line,
			  bool *inc)
{
	int rc;

	for (;;) {
		while (w->i < w->n && w->lines[w->i] < line)
			w->i++;
		if (w->i < w->n || w->lines_end)
			break;
		rc = store_retry_lines(b->store, batch_id, line - 1, w->lines, RETRY_LINES, &w->n);
		if (rc)
			return rc;
		w->i = 0;
		w->lines_end = w->n < RETRY_LINES;
	}
	*inc = w->i < w->n && w->lines[w->i] == line;
	return 0;
}

static int retry_restart(struct bfs *b, int64_t batch_id, struct retry_walk *w)
{
	w->started = true;
	w->pos = w->out = 0;
	w->line = 1;
	w->n = w->i = 0;
	w->lines_end = false;
	return retry_includes(b, batch_id, w, 1, &w->inc);
}

/*
 * Walks on until out reaches until (-1: the end), copying retry.jsonl's bytes from off on to
 * dst (NULL: only walking). Returns the bytes copied.
 */
static long retry_walk_to(struct bfs *b, int64_t batch_id, int fd, struct retry_walk *w,
			  int64_t off, int64_t until, char *dst)
{
	char *in = malloc(RETRY_BUF);
	size_t copied = 0;
	int rc = 0;

	if (!in)
		return -ENOMEM;
	while (!rc && (until < 0 || w->out < until)) {
		ssize_t k = pread(fd, in, RETRY_BUF, w->pos), j;

		if (k < 0) {
			rc = -errno;
			break;
		}
		if (k == 0)
			break;
		for (j = 0; j < k && !rc; j++) {
			char c = in[j];

			if (until >= 0 && w->out >= until)
				break;
			if (w->inc) {
				if (dst && w->out >= off)
					dst[copied++] = c;
				w->out++;
			}
			if (c == '\n') {
				w->line++;
				rc = retry_includes(b, batch_id, w, w->line, &w->inc);
			}
		}
		w->pos += j;
	}
	free(in);
	return rc ? rc : (long)copied;
}

/* The size of retry.jsonl: one walk per batch state (results never change once in). */
static struct {
	pthread_mutex_t lock;
	struct {
		int64_t batch_id, updated_at, size;
	} slot[16];
	unsigned next;
} retry_sizes = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int retry_size(struct bfs *b, const struct store_batch *row, int64_t *size)
{
	struct retry_walk *w = NULL;
	long n;
	int fd = -1, rc = 0;

	pthread_mutex_lock(&retry_sizes.lock);
	for (size_t i = 0; i < 16; i++) {
		if (retry_sizes.slot[i].batch_id == row->id &&
		    retry_sizes.slot[i].updated_at == row->updated_at) {
			*size = retry_sizes.slot[i].size;
			pthread_mutex_unlock(&retry_sizes.lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&retry_sizes.lock);
	rc = store_retry_known(b->store, row->id);
	if (rc)
		return rc == -ENODATA ? -ENOENT : rc;
	fd = retry_fd(b, row->id);
	if (fd < 0)
		return fd;
	w = calloc(1, sizeof(*w));
	rc = w ? retry_restart(b, row->id, w) : -ENOMEM;
	n = rc ? rc : retry_walk_to(b, row->id, fd, w, 0, -1, NULL);
	if (n < 0) {
		rc = (int)n;
		goto out;
	}
	*size = w->out;
	pthread_mutex_lock(&retry_sizes.lock);
	retry_sizes.slot[retry_sizes.next].batch_id = row->id;
	retry_sizes.slot[retry_sizes.next].updated_at = row->updated_at;
	retry_sizes.slot[retry_sizes.next].size = w->out;
	retry_sizes.next = (retry_sizes.next + 1) % 16;
	pthread_mutex_unlock(&retry_sizes.lock);
out:
	free(w);
	close(fd);
	return rc;
}

static int retry_stat(struct bfs *b, const struct store_batch *row, struct stat *st)
{
	int64_t size = 0;
	int rc = retry_size(b, row, &size);

	tree_attr_times(st, row->ended_at);
	st->st_size = size;
	st->st_blocks = (size + 511) / 512;
	return rc;
}

static int retry_open(struct bfs *b, const struct store_batch *row, struct fuse_file_info *fi,
		      struct buf *text)
{
	struct retry_walk w;
	int rc;

	if (wants_write(fi->flags))
		return -EACCES;
	rc = store_retry_known(b->store, row->id);
	if (rc)
		return rc == -ENODATA ? -ENOENT : rc;
	fi->noflush = 1;
	memset(&w, 0, sizeof(w));
	pthread_mutex_init(&w.lock, NULL);
	return buf_add(text, (const char *)&w, sizeof(w));
}

static long retry_read(struct bfs *b, int64_t batch_id, struct buf *text, off_t off, size_t size,
		       char *dst)
{
	struct retry_walk *w = (struct retry_walk *)(void *)text->data;
	long n;
	int fd, rc = 0;

	if (text->len != sizeof(*w))
		return -EBADF;
	fd = retry_fd(b, batch_id);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&w->lock);
	if (!w->started || off < w->out)
		rc = retry_restart(b, batch_id, w);
	if (!rc && off > w->out)
		rc = (int)retry_walk_to(b, batch_id, fd, w, 0, off, NULL);
	n = rc < 0 ? rc : retry_walk_to(b, batch_id, fd, w, off, off + (int64_t)size, dst);
	pthread_mutex_unlock(&w->lock);
	close(fd);
	return n;
}

/* text/ */

static bool text_visible(const struct store_batch *row)
{
	return results_are_in(row->results);
}

static int text_dir_lookup(struct bfs *b, int64_t batch_id, const char *name,
			   struct fuse_entry_param *e)
{
	struct store_result res;

	if (store_text_by_name(b->store, batch_id, name, &res))
		return -ENOENT;
	return tree_entry(b, tree_ino(TREE_RESULT, res.id, TREE_SUB_TEXT), e);
}

static int text_dir_cb(void *ctx, const struct store_result *r)
{
	struct tree_dir *d = ctx;
	fuse_ino_t ino = tree_ino(TREE_RESULT, r->id, TREE_SUB_TEXT);
	struct stat st;

	tree_attr_init(&st, ino, S_IFREG | 0444, r->mtime);
	st.st_size = r->size;
	st.st_blocks = (r->size + 511) / 512;
	return tree_dir_add(d, r->fname, ino, 2 + (off_t)r->id, &st, TREE_TIMEOUT_FIXED) ? 0 : 1;
}

static int text_dir_readdir(struct bfs *b, int64_t batch_id, struct tree_dir *d)
{
	int rc = store_text_list(b->store, batch_id, d->off > 2 ? d->off - 2 : 0, tree_dir_limit(d),
				 text_dir_cb, d);

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
		.version = status_version,
		.open = status_open,
		.read = read_text,
	},
	{
		.name = "id",
		.sub = 2,
		.mode = S_IFREG | 0444,
		.timeout = TREE_TIMEOUT_LIVE, /* unused: versions */
		.setattr_refused = SET_CHANGES,
		.visible = has_id,
		.version = id_version,
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
		.spans = results_jsonl_spans,
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
	{
		.name = "wait",
		.sub = 6,
		.mode = S_IFREG | 0444,
		.timeout = TREE_TIMEOUT_LIVE,
		.setattr_refused = SET_CHANGES,
		.unlisted = true,
		.stat = wait_stat,
		.open = wait_open,
		.read = read_text,
		.ready = wait_ready,
	},
	{
		.name = "retry.jsonl",
		.sub = 7,
		.mode = S_IFREG | 0444,
		.timeout = TREE_TIMEOUT_LIVE, /* a refresh may bring results given up on */
		.setattr_refused = SET_CHANGES,
		.visible = retry_visible,
		.stat = retry_stat,
		.open = retry_open,
		.read = retry_read,
	},
	{
		.name = "text",
		.sub = 8,
		.mode = S_IFDIR | 0555,
		.timeout = TREE_TIMEOUT_FIXED,
		.setattr_refused = SET_CHANGES,
		.visible = text_visible,
		.stat = results_dir_stat,
		.lookup = text_dir_lookup,
		.readdir = text_dir_readdir,
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
