// SPDX-License-Identifier: MIT
/*
 * The FUSE adapter (low-level API): the ops table, file handles, and one fs_<op> per
 * operation that calls one worker (tree.c, vfile.c, draft.c; each returns 0 or -errno) and
 * replies exactly once. An op that needs a provider (the commit point, ctl) hands a job to
 * worker.c and returns without replying: the job's done callback replies, so no FUSE thread
 * ever waits on the network.
 */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bfs.h"
#include "buf.h"
#include "draft.h"
#include "err.h"
#include "fs.h"
#include "log.h"
#include "store.h"
#include "tree.h"
#include "vfile.h"
#include "waiter.h"
#include "worker.h"

/* An open file: a draft file (fd), a result, or a virtual file of a batch (vf). */
struct fs_handle {
	struct tree_node node;
	const struct vfile *vf;
	int fd;		 /* spool data (TREE_FILE), else -1 */
	struct buf text; /* status / id: the snapshot taken at open */
	/* A version's open (tree.h) whose snapshot is that version: its number and
	 * attributes, for a getattr after the text moved on (fs_getattr). */
	fuse_ino_t version_ino;
	struct stat version_st;
	struct draft_writers writers;  /* TREE_FILE: who wrote through it */
	struct fs_handle *prev, *next; /* every open handle (see handles_free_all) */
};

/*
 * Every handle open now. The kernel sends release asynchronously, after close() has returned:
 * at unmount some never arrive, and their handles are freed when the session ends.
 */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_handle *handles;

/* Reads of `wait` parked until their batch is done (one per session, see fs_main). */
static struct waiter *waiter;

/* The session, for notifications (fs_main sets it before the loop starts). */
static struct fuse_session *session;

/*
 * A result file is pushed into the kernel's page cache at its open (FUSE_NOTIFY_STORE), so
 * the reader's read is served there: a cold `cat` of many small results costs no READ round
 * trip per file. Pushed only when the kernel cannot have it yet: each slot holds the inode of
 * a push whose inode the kernel has not forgotten since (direct-mapped; a lost slot means a
 * push too many, a page cache dropped under a live inode one READ: both only cost time).
 */
#define PUSH_MAX   (64u << 10) /* larger files are read as usual: the round trip is amortized */
#define PUSH_SLOTS (1u << 18)
static fuse_ino_t pushed[PUSH_SLOTS];

static fuse_ino_t *push_slot(fuse_ino_t ino)
{
	return &pushed[(ino >> 4) % PUSH_SLOTS];
}

/* Puts data (the whole file) into ino's page cache; the slot remembers it if it took. */
static void push_pages(fuse_ino_t ino, const char *data, size_t len)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(len);

	bv.buf[0].mem = (void *)(uintptr_t)data;
	if (!fuse_lowlevel_notify_store(session, ino, 0, &bv, 0))
		__atomic_store_n(push_slot(ino), ino, __ATOMIC_RELAXED);
}

static bool push_done(fuse_ino_t ino)
{
	return !session || __atomic_load_n(push_slot(ino), __ATOMIC_RELAXED) == ino;
}

static void push_result(struct bfs *b, fuse_ino_t ino, struct tree_node n)
{
	char *buf;
	long k;

	if (push_done(ino))
		return;
	buf = malloc(PUSH_MAX);
	if (!buf)
		return;
	k = store_result_read(b->store, n.id, 0, PUSH_MAX, buf);
	/* A short read is the whole file (results never change once visible). */
	if (k > 0 && (size_t)k < PUSH_MAX)
		push_pages(ino, buf, (size_t)k);
	else if (k > 0)
		/* Too large to push: marked all the same, so that its opens do not read it
		 * again for nothing until the kernel forgets it. */
		__atomic_store_n(push_slot(ino), ino, __ATOMIC_RELAXED);
	free(buf);
}

/* The kernel dropped the inode, its page cache with it: the next open pushes again. */
static void push_forget(fuse_ino_t ino)
{
	fuse_ino_t *slot = push_slot(ino);
	fuse_ino_t want = ino;

	__atomic_compare_exchange_n(slot, &want, 0, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

static struct bfs *fs_ctx(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static pid_t fs_tid(fuse_req_t req)
{
	return fuse_req_ctx(req)->pid;
}

static struct fs_handle *fs_handle_of(struct fuse_file_info *fi)
{
	return (struct fs_handle *)(uintptr_t)fi->fh;
}

static void handle_free(struct fs_handle *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&handles_lock);
	if (h->fd >= 0)
		close(h->fd);
	buf_release(&h->text);
	free(h);
}

static struct fs_handle *handle_new(struct tree_node n)
{
	struct fs_handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->node = n;
	h->fd = -1;
	buf_init(&h->text, 1 << 20);
	pthread_mutex_lock(&handles_lock);
	h->next = handles;
	if (handles)
		handles->prev = h;
	handles = h;
	pthread_mutex_unlock(&handles_lock);
	return h;
}

/* The handles whose release never came (the session has ended: none can come now). */
static void handles_free_all(void)
{
	while (handles)
		handle_free(handles);
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

/* Tree */

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int rc = tree_lookup(fs_ctx(req), parent, name, &e);

	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)nlookup;
	push_forget(ino);
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		push_forget(forgets[i].ino);
	fuse_reply_none(req);
}

/*
 * The attributes of a version the text has left, from a handle open on it (the getattr of an
 * fstat carries no handle): its reader still reads that version.
 */
static bool handle_version_stat(fuse_ino_t ino, struct fuse_file_info *fi, struct stat *st)
{
	struct fs_handle *h = fi ? fs_handle_of(fi) : NULL;
	bool found = false;

	if (h && h->version_ino == ino) {
		*st = h->version_st;
		return true;
	}
	pthread_mutex_lock(&handles_lock);
	for (h = handles; h && !found; h = h->next) {
		if (h->version_ino == ino) {
			*st = h->version_st;
			found = true;
		}
	}
	pthread_mutex_unlock(&handles_lock);
	return found;
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	double timeout;
	int rc;

	rc = tree_stat(fs_ctx(req), ino, &st, &timeout);
	if (rc == -ESTALE && handle_version_stat(ino, fi, &st)) {
		rc = 0;
		timeout = TREE_TIMEOUT_FIXED;
	}
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, timeout);
}

static void fs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char target[PATH_MAX];
	int rc = tree_readlink(fs_ctx(req), ino, target, sizeof(target));

	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_readlink(req, target);
}

static void fs_readdir_any(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct tree_dir d = {.req = req, .size = size, .off = off, .plus = plus};
	int rc = tree_readdir(fs_ctx(req), ino, &d);

	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_buf(req, d.buf, d.len);
	free(d.buf);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	fs_readdir_any(req, ino, size, off, false);
}

static void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	fs_readdir_any(req, ino, size, off, true);
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int rc = tree_opendir(fs_ctx(req), ino);

	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_open(req, fi);
}

static void fs_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	fuse_reply_err(req, -tree_access(fs_ctx(req), ino, mask));
}

static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	(void)ino;
	tree_statfs(fs_ctx(req), &sv);
	fuse_reply_statfs(req, &sv);
}

/* Files */

/*
 * The open of a version (tree.h) gets the text its lookup saw, which the kernel may keep: it
 * goes into the page cache now, so the reads never reach batchfs, and the handle keeps the
 * version's attributes. A version gone from the ring meanwhile (64 versions changed between
 * the walk and the open) is ESTALE: the kernel walks again, once, and opens the version of
 * now. A text too long for the ring opens the snapshot of now, read around the cache (which
 * keeps the version's pages for its other readers); its fstat may then show the size of the
 * version its walk found.
 */
static int open_version(struct bfs *b, fuse_ino_t ino, struct fs_handle *h,
			struct fuse_file_info *fi)
{
	double timeout;
	int rc;

	fi->keep_cache = 1;
	rc = tree_version_get(b, ino, &h->text, &h->version_st);
	if (rc == -ENOENT) {
		/* The snapshot of now is the version when it is still the text the number
		 * names. */
		if (tree_ver_of(tree_text_hash(h->text.data, h->text.len)) != h->node.ver ||
		    tree_stat(b, ino, &h->version_st, &timeout) ||
		    (size_t)h->version_st.st_size != h->text.len)
			return tree_version_keepable(h->text.len) ? -ESTALE : 0;
	} else if (rc) {
		return rc;
	}
	pthread_mutex_lock(&handles_lock); /* handle_version_stat reads it */
	h->version_ino = ino;
	pthread_mutex_unlock(&handles_lock);
	fi->direct_io = 0;
	if (h->text.len && h->text.len < PUSH_MAX && !push_done(ino))
		push_pages(ino, h->text.data, h->text.len);
	return 0;
}

/* A virtual file of a batch: the table entry's checks and snapshot. */
static int open_vfile(struct bfs *b, fuse_ino_t ino, struct tree_node n, struct fuse_file_info *fi,
		      struct fs_handle **out)
{
	const struct vfile *v = vfile_by_sub(n.sub);
	struct store_batch row;
	struct fs_handle *h;
	int rc;

	if (n.sub == TREE_SUB_DIR || (v && !v->open))
		return -EISDIR;
	if (!v)
		return -ENOENT;
	rc = store_batch_get(b->store, n.id, &row);
	if (rc)
		return rc;
	if (!vfile_is_visible(v, &row))
		return -ENOENT;
	h = handle_new(n);
	if (!h)
		return -ENOMEM;
	h->vf = v;
	rc = v->open(b, &row, fi, &h->text);
	if (!rc && n.ver && v->version)
		rc = open_version(b, ino, h, fi);
	if (rc) {
		handle_free(h);
		return rc;
	}
	*out = h;
	return 0;
}

/*
 * A write-only handle of a draft file writes around the kernel's page cache: each write goes
 * from the writer's buffer straight to the daemon, which keeps the data in the spool anyway.
 * Through the cache, `cp` of 250 MB copied every byte once more into 250 MB of pages nobody
 * reads (writes are synchronous without the writeback cache, so the copy was on the writer's
 * path). The kernel drops cached pages of the range a direct write changes, so readers
 * through other handles still see the new bytes. Only write-only handles: one that can read
 * may be mmap'ed shared, which direct I/O refuses.
 */
static void draft_io_flags(struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) == O_WRONLY)
		fi->direct_io = 1;
}

static int open_node(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct fs_handle **out)
{
	struct tree_node n = tree_node(ino);
	struct fs_handle *h;
	int rc;

	switch (n.kind) {
	case TREE_FILE:
		h = handle_new(n);
		if (!h)
			return -ENOMEM;
		rc = draft_open(fs_ctx(req), n.id, fi->flags, fs_tid(req), &h->writers, &h->fd);
		if (rc) {
			handle_free(h);
			return rc;
		}
		/* Only a writer of a draft file has anything to do at close() (the commit
		 * point): the kernel may skip the flush round trip of the others. */
		if ((fi->flags & O_ACCMODE) == O_RDONLY)
			fi->noflush = 1;
		draft_io_flags(fi);
		*out = h;
		return 0;
	case TREE_RESULT:
		if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
			return -EACCES;
		h = handle_new(n);
		if (!h)
			return -ENOMEM;
		/* Results never change once visible (row ids are never reused). */
		fi->keep_cache = 1;
		fi->noflush = 1; /* cat of many results: no flush round trips */
		if (n.sub != TREE_SUB_TEXT)
			push_result(fs_ctx(req), ino, n);
		*out = h;
		return 0;
	case TREE_BATCH:
		return open_vfile(fs_ctx(req), ino, n, fi, out);
	default:
		return -EISDIR;
	}
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_handle *h = NULL;
	int rc = open_node(req, ino, fi, &h);

	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_free(h); /* the opener was interrupted: nobody will release this handle */
}

static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	struct fs_handle *h;
	int rc;

	h = handle_new((struct tree_node){TREE_FILE, 0, 0, 0});
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = draft_create(fs_ctx(req), parent, name, mode, fi->flags, fs_tid(req), &h->writers, &e,
			  &h->fd);
	if (rc) {
		handle_free(h);
		fuse_reply_err(req, -rc);
		return;
	}
	h->node = tree_node(e.ino);
	draft_io_flags(fi);
	fi->fh = (uint64_t)(uintptr_t)h;
	if (fuse_reply_create(req, &e, fi) == -ENOENT)
		handle_free(h);
}

static long read_handle(struct bfs *b, struct fs_handle *h, size_t size, off_t off, char *dst)
{
	ssize_t k;

	switch (h->node.kind) {
	case TREE_FILE:
		k = pread(h->fd, dst, size, off);
		return k < 0 ? -errno : (long)k;
	case TREE_RESULT:
		if (h->node.sub == TREE_SUB_TEXT)
			return store_text_read(b->store, h->node.id, off, size, dst);
		return store_result_read(b->store, h->node.id, off, size, dst);
	default:
		if (h->vf && h->vf->read)
			return h->vf->read(b, h->node.id, &h->text, off, size, dst);
		return -EBADF;
	}
}

/*
 * A read of a file that waits (wait): answered now when it is ready, else parked with the
 * waiter, which answers it from its own thread (no FUSE thread is held meanwhile). 1: the
 * read goes on as any other (the snapshot is in place); 0: parked or answered.
 */
static int read_ready(fuse_req_t req, struct fs_handle *h, size_t size, off_t off)
{
	int rc;

	if (!h->vf || !h->vf->ready || h->text.len)
		return 1;
	rc = h->vf->ready(fs_ctx(req), h->node.id, &h->text);
	if (rc == 0)
		rc = waiter_park(waiter, req, h->vf->ready, h->node.id, size, off, &h->text);
	else if (rc > 0)
		return 1;
	if (rc)
		fuse_reply_err(req, -rc);
	return 0;
}

/*
 * A file whose bytes lie in the store's data files (results.jsonl): the reply is spliced from
 * there into the kernel (FUSE_CAP_SPLICE_WRITE), one copy of each byte where a read into a
 * buffer and its reply make two. 1: not so (a row of an older cache is in the database, or the read
 * is in too many pieces), copy; 0: answered.
 */
#define FS_SPANS 64

static int read_spliced(fuse_req_t req, struct fs_handle *h, size_t size, off_t off)
{
	struct store_span sp[FS_SPANS];
	struct fuse_bufvec *bv;
	size_t total = 0;
	int n;

	if (!h->vf || !h->vf->spans)
		return 1;
	n = h->vf->spans(fs_ctx(req), h->node.id, off, size, sp, FS_SPANS, &total);
	if (n == -EXDEV)
		return 1;
	if (n <= 0) {
		if (n < 0)
			fuse_reply_err(req, -n);
		else
			fuse_reply_buf(req, NULL, 0);
		return 0;
	}
	bv = malloc(sizeof(*bv) + (size_t)(n - 1) * sizeof(bv->buf[0]));
	if (!bv)
		return 1;
	*bv = (struct fuse_bufvec)FUSE_BUFVEC_INIT(0);
	bv->count = (size_t)n;
	for (int i = 0; i < n; i++) {
		bv->buf[i] = (struct fuse_buf){
			.size = sp[i].len,
			.flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY,
			.fd = sp[i].fd,
			.pos = sp[i].off,
		};
	}
	/*
	 * The descriptors are the store's, of this thread, open until its next store call:
	 * libfuse splices (or, when it cannot, copies) them before fuse_reply_data returns.
	 */
	(void)fuse_reply_data(req, bv, 0);
	free(bv);
	return 0;
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	char *dst;
	long n;

	(void)ino;
	if (!read_ready(req, fs_handle_of(fi), size, off))
		return;
	if (!read_spliced(req, fs_handle_of(fi), size, off))
		return;
	dst = malloc(size ? size : 1);
	n = dst ? read_handle(fs_ctx(req), fs_handle_of(fi), size, off, dst) : -ENOMEM;
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, dst, (size_t)n);
	free(dst);
}

static void fs_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fs_handle *h = fs_handle_of(fi);
	struct bfs *b = fs_ctx(req);
	struct worker_job job;
	long n;
	int rc;

	(void)ino;
	if (h->vf) {
		/* ctl: the word is checked here, the action runs on the worker. */
		rc = h->vf->write ? h->vf->write(b, h->node.id, data, size, &job) : -EBADF;
		if (!rc)
			rc = fs_defer_write(req, &job, size);
		if (rc)
			fuse_reply_err(req, -rc);
		return;
	}
	if (h->node.kind != TREE_FILE || h->fd < 0) {
		fuse_reply_err(req, EBADF);
		return;
	}
	n = draft_write(b, h->node.id, h->fd, data, size, off, fs_tid(req), &h->writers);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_handle *h = fs_handle_of(fi);
	struct worker_job job = {.kind = WORKER_NONE};
	int rc = 0;

	(void)ino;
	/* The job copies what it needs: release may free h before the commit has run. */
	if (h->node.kind == TREE_FILE)
		rc = draft_flush(fs_ctx(req), h->node.id, fs_tid(req), &h->writers, &job);
	fs_reply_job(req, rc, &job);
}

static void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_free(fs_handle_of(fi));
	fuse_reply_err(req, 0);
}

static void fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs_handle *h = fs_handle_of(fi);
	int rc = 0;

	(void)ino;
	if (h->node.kind == TREE_FILE && h->fd >= 0)
		rc = (datasync ? fdatasync(h->fd) : fsync(h->fd)) ? -errno : 0;
	fuse_reply_err(req, -rc);
}

static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct stat st;
	double timeout;
	int rc;

	(void)fi;
	rc = draft_setattr(fs_ctx(req), ino, attr, to_set, &st, &timeout);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, timeout);
}

/* Directories */

static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fuse_entry_param e;
	int rc;

	(void)mode;
	rc = draft_mkdir(fs_ctx(req), parent, name, &e);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct bfs_err err = BFS_ERR_INIT;
	int rc = draft_rmdir(fs_ctx(req), parent, name, &err);

	if (rc && err_is_set(&err))
		log_info("rmdir: %s", err.msg); /* the batch's own error stays the provider's */
	fuse_reply_err(req, -rc);
}

static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -draft_unlink(fs_ctx(req), parent, name));
}

static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct worker_job job = {.kind = WORKER_NONE};
	int rc = draft_rename(fs_ctx(req), parent, name, newparent, newname, flags, &job);

	fs_reply_job(req, rc, &job);
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
	conn->max_write = TREE_IO_SIZE;
	/*
	 * Replies may come from a file descriptor by splice (results.jsonl: read_spliced).
	 * Not SPLICE_MOVE: it would steal the pages of the store's data files' page cache.
	 */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_init,
	.lookup = fs_lookup,
	.forget = fs_forget,
	.forget_multi = fs_forget_multi,
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

static int fs_loop(struct fuse_session *se, bool single)
{
	struct fuse_loop_config *lc;
	int rc;

	if (single)
		return fuse_session_loop(se);
	lc = fuse_loop_cfg_create();
	if (!lc)
		return -ENOMEM;
	/*
	 * Idle workers stay: each thread owns an SQLite connection (docs/design.md "Threads": one per thread), and
	 * a pool that shrinks and grows would reopen them all the time.
	 */
	fuse_loop_cfg_set_max_threads(lc, 8);
	fuse_loop_cfg_set_idle_threads(lc, 8);
	rc = fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);
	return rc;
}

int fs_main(struct bfs *b, struct fuse_args *args, const char *mountpoint, bool single,
	    int (*start)(struct bfs *b))
{
	struct fuse_session *se;
	int rc;

	se = fuse_session_new(args, &fs_ops, sizeof(fs_ops), b);
	if (!se)
		return -EINVAL;
	rc = -EIO;
	if (fuse_set_signal_handlers(se))
		goto out_destroy;
	if (fuse_session_mount(se, mountpoint))
		goto out_signals;
	rc = start(b); /* detaches first, when asked to: see fs.h */
	if (!rc)
		rc = waiter_start(&waiter, b);
	if (rc)
		goto out_unmount;
	session = se;
	rc = fs_loop(se, single);
	session = NULL;
	rc = rc < 0 ? rc : (rc > 0 ? -EINTR : 0);
out_unmount:
	/* Parked reads are requests of this session too. */
	waiter_stop(waiter);
	waiter = NULL;
	/* Queued jobs hold requests of this session: answer them all before it goes. */
	worker_stop(b->worker);
	b->worker = NULL;
	handles_free_all();
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	return rc == -EINTR ? 0 : rc;
}
