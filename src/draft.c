// SPDX-License-Identifier: MIT
/*
 * The draft rules (docs/semantics.md "Per-operation table"): batch directories made and removed, draft
 * files created, written, truncated, renamed and unlinked, each under the draft lock of its
 * batch after a fresh writability check (struct bfs, "the draft rule"); and the commit
 * point, which only decides that a commit is due and describes it for the worker.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bfs.h"
#include "caller.h"
#include "conf.h"
#include "draft.h"
#include "err.h"
#include "follow.h"
#include "log.h"
#include "store.h"
#include "timefmt.h"
#include "tree.h"
#include "vfile.h"
#include "worker.h"

#define REQUESTS "requests.jsonl"

/* Protects the writer sets of all handles (short sections, no I/O inside). */
static pthread_mutex_t writers_lock = PTHREAD_MUTEX_INITIALIZER;

bool draft_is_writable(const struct store_batch *row)
{
	/* A failed batch that keeps its intent has an unknown outcome: only `refresh` may
	 * settle it (exactly once). */
	return !row->foreign && (store_batch_unrun_failure(row) ||
				 (state_is_writable(row->state, row->pid[0] != '\0') &&
				  !(row->state == BATCH_FAILED && row->identity[0])));
}

/* docs/semantics.md: batch names are [A-Za-z0-9][A-Za-z0-9._-]{0,127}. */
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

static bool is_requests(const char *name)
{
	return !strcmp(name, REQUESTS);
}

/*
 * Something of it is at the provider and it looks ended there: rmdir forgets it (the store
 * checks every part again, in the transaction that forgets), and `rm -r` may first "unlink"
 * what the batch itself shows (status, results, requests.jsonl): those go with it.
 */
static bool is_forgettable(const struct store_batch *row)
{
	return (row->foreign || row->nparts_sent) && state_is_terminal(row->state);
}

/*
 * name may be made, or written, in batch row: requests.jsonl while the batch is writable,
 * any other file always (editor swap files, notes copied in with the job: they stay local).
 */
static bool may_change(const struct store_batch *row, const char *name)
{
	return !is_requests(name) || draft_is_writable(row);
}

/*
 * Takes the draft lock of file_id's batch and reads the file and batch rows under it (a
 * file's batch never changes, so the first read only finds the lock). On 0 *lock is held;
 * on -errno it is not.
 */
static int lock_file(struct bfs *b, int64_t file_id, struct store_file *f, struct store_batch *row,
		     pthread_mutex_t **lock)
{
	int rc;

	rc = store_file_get(b->store, file_id, f);
	if (rc)
		return rc;
	*lock = bfs_draft_lock(b, f->batch_id);
	pthread_mutex_lock(*lock);
	rc = store_file_get(b->store, file_id, f);
	if (!rc)
		rc = store_batch_get(b->store, f->batch_id, row);
	if (rc)
		pthread_mutex_unlock(*lock);
	return rc;
}

int draft_check_file(struct bfs *b, int64_t file_id)
{
	struct store_batch row;
	struct store_file f;
	int rc;

	rc = store_file_get(b->store, file_id, &f);
	if (!rc)
		rc = store_batch_get(b->store, f.batch_id, &row);
	if (rc)
		return rc;
	return may_change(&row, f.name) ? 0 : -EACCES;
}

/*
 * The commit point is the close() of a writer (docs/semantics.md), but a close() reaches us as FLUSH
 * from whichever process closes a copy of the descriptor: in `for ...; done > requests.jsonl`
 * every `$(...)` subshell closes its inherited copy while the loop is still writing. So a
 * handle remembers the processes that wrote through it, and only their closes commit.
 */
void draft_writer_add(struct draft_writers *w, pid_t tid)
{
	struct caller_info ci;
	pid_t tgid = 0;
	bool known;

	pthread_mutex_lock(&writers_lock);
	known = tid && w->last_tid == tid;
	if (known)
		tgid = w->last_tgid;
	pthread_mutex_unlock(&writers_lock);
	if (!known && !caller_get(tid, false, &ci))
		tgid = ci.tgid; /* else 0: unknown (another pid namespace) */

	pthread_mutex_lock(&writers_lock);
	w->last_tid = tid;
	w->last_tgid = tgid;
	w->wrote = true;
	if (w->n >= 0) {
		int i;

		for (i = 0; i < w->n && w->tgids[i] != tgid; i++)
			;
		if (!tgid || (i == w->n && i == DRAFT_WRITERS_MAX))
			w->n = -1; /* cannot tell writers apart: any close commits */
		else if (i == w->n)
			w->tgids[w->n++] = tgid;
	}
	pthread_mutex_unlock(&writers_lock);
}

/* Batch directories */

int draft_mkdir(struct bfs *b, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	struct tree_node n = tree_node(parent);
	int64_t id;
	int rc;

	if (n.kind != TREE_REMOTE || n.sub != TREE_SUB_DIR)
		return n.kind == TREE_BATCH && n.sub == TREE_SUB_DIR ? -EPERM : -EACCES;
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
	return tree_entry(b, tree_ino(TREE_BATCH, id, TREE_SUB_DIR), e);
}

static int drop_file_cb(void *ctx, const struct store_file *f)
{
	struct bfs *b = ctx;

	(void)spool_remove(&b->spool, f->id); /* a leftover spool file is only wasted space */
	return 0;
}

/* The file ids of a batch, collected before its rows go. */
struct file_ids {
	int64_t *ids;
	size_t n, alloc;
};

static int collect_file_cb(void *ctx, const struct store_file *f)
{
	struct file_ids *a = ctx;

	if (a->n == a->alloc) {
		size_t na = a->alloc ? 2 * a->alloc : 16;
		int64_t *v = realloc(a->ids, na * sizeof(*v));

		if (!v)
			return -ENOMEM;
		a->ids = v;
		a->alloc = na;
	}
	a->ids[a->n++] = f->id;
	return 0;
}

int draft_rmdir(struct bfs *b, fuse_ino_t parent, const char *name, struct bfs_err *err)
{
	struct tree_node n = tree_node(parent);
	const struct vfile *v;
	pthread_mutex_t *lock;
	struct file_ids files = {0};
	struct store_batch row;
	const char *remote;
	int rc;

	if (n.kind == TREE_BATCH) {
		v = n.sub == TREE_SUB_DIR ? vfile_by_name(name) : NULL;
		if (!v || !S_ISDIR(v->mode))
			return -ENOTDIR;
		/* results/ goes with its batch: `rm -r` removes it before the batch itself. */
		rc = store_batch_get(b->store, n.id, &row);
		return rc ? rc : is_forgettable(&row) ? 0 : -EACCES;
	}
	if (n.kind != TREE_REMOTE)
		return -EACCES;
	if ((size_t)n.id >= b->nremotes)
		return -ENOENT;
	if (n.sub == TREE_SUB_BY_ID)
		return -ENOTDIR; /* a symlink */
	remote = b->remotes[n.id].conf->name;
	if (!strcmp(name, TREE_BY_ID))
		return -EACCES;
	rc = store_batch_by_name(b->store, remote, name, &row);
	if (rc)
		return rc;
	lock = bfs_draft_lock(b, row.id);
	pthread_mutex_lock(lock);
	pthread_mutex_lock(&b->lock);
	rc = store_batch_get(b->store, row.id, &row);
	if (rc)
		goto out;
	/* docs/semantics.md: nothing is ever destroyed remotely by rmdir. A draft goes; a batch that
	 * reached the provider is forgotten here once it ended (a tombstone keeps discovery
	 * from bringing it back); one still running stays. */
	if (draft_is_writable(&row) && !row.pid[0]) {
		follow_cut(b, row.id);
		(void)store_file_list(b->store, row.id, 0, 0, drop_file_cb, b); /* see above */
		rc = store_batch_delete(b->store, row.id);
		goto out;
	}
	if (row.state == BATCH_SUBMITTING) {
		err_set(err, "'%s' cannot be removed: it is being submitted", row.name);
		rc = -EBUSY;
		goto out;
	}
	/* The spool data goes once the rows are gone (a refusal keeps the notes). */
	rc = store_file_list(b->store, row.id, 0, 0, collect_file_cb, &files);
	if (!rc)
		rc = store_batch_forget(b->store, row.id, timefmt_now_ms(), err);
	for (size_t i = 0; !rc && i < files.n; i++)
		(void)spool_remove(&b->spool, files.ids[i]); /* only space, as above */
	if (!rc)
		log_info("batch '%s' of '%s' forgotten on this machine (nothing done at the "
			 "provider)",
			 row.name, remote);
out:
	pthread_mutex_unlock(&b->lock);
	pthread_mutex_unlock(lock);
	free(files.ids);
	return rc;
}

/* Draft files */

static bool wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

int draft_open(struct bfs *b, int64_t file_id, int flags, pid_t tid, struct draft_writers *w,
	       int *fd)
{
	int oflags = (flags & O_ACCMODE) | (flags & O_TRUNC);
	pthread_mutex_t *lock;
	struct store_batch row;
	struct store_file f;
	int rc;

	if (!wants_write(flags)) {
		*fd = spool_open(&b->spool, file_id, oflags);
		return *fd < 0 ? *fd : 0;
	}
	/* O_TRUNC cuts the data at open: a change like any write. */
	rc = lock_file(b, file_id, &f, &row, &lock);
	if (rc)
		return rc;
	rc = may_change(&row, f.name) ? 0 : -EACCES;
	if (!rc && (flags & O_TRUNC) && is_requests(f.name))
		follow_cut(b, row.id);
	if (!rc) {
		*fd = spool_open(&b->spool, file_id, oflags);
		rc = *fd < 0 ? *fd : 0;
	}
	pthread_mutex_unlock(lock);
	/* A truncating open is a write even if nothing follows (`: > requests.jsonl`). */
	if (!rc && (flags & O_TRUNC))
		draft_writer_add(w, tid);
	return rc;
}

int draft_create(struct bfs *b, fuse_ino_t parent, const char *name, mode_t mode, int flags,
		 pid_t tid, struct draft_writers *w, struct fuse_entry_param *e, int *fd)
{
	struct tree_node n = tree_node(parent);
	pthread_mutex_t *lock;
	struct store_batch row;
	struct store_file f;
	bool existed = false;
	int64_t id;
	int rc;

	if (n.kind != TREE_BATCH || n.sub != TREE_SUB_DIR)
		return n.kind == TREE_ROOT || n.kind == TREE_REMOTE ? -EPERM : -EACCES;
	if (vfile_by_name(name))
		return -EEXIST;
	if (strlen(name) >= STORE_NAME_MAX)
		return -ENAMETOOLONG;
	lock = bfs_draft_lock(b, n.id);
	pthread_mutex_lock(lock);
	rc = store_batch_get(b->store, n.id, &row);
	if (!rc && !may_change(&row, name))
		rc = -EACCES;
	if (rc)
		goto out;
	if (!store_file_by_name(b->store, n.id, name, &f)) {
		if (flags & O_EXCL) {
			rc = -EEXIST;
			goto out;
		}
		/* Open of an existing file through create (O_CREAT without O_EXCL). */
		id = f.id;
		existed = true;
		if ((flags & O_TRUNC) && is_requests(name))
			follow_cut(b, n.id);
	} else {
		rc = store_file_create(b->store, n.id, name, mode & 07777,
				       timefmt_now_ms() * 1000000, &id);
		if (rc)
			goto out;
	}
	*fd = spool_open(&b->spool, id, O_CREAT | (flags & O_ACCMODE) | (flags & O_TRUNC));
	if (*fd < 0)
		rc = *fd;
out:
	pthread_mutex_unlock(lock);
	if (rc)
		return rc;
	rc = tree_entry(b, tree_ino(TREE_FILE, id, 0), e);
	if (rc) {
		close(*fd);
		return rc;
	}
	e->entry_timeout = TREE_TIMEOUT_DIR;
	/* Truncating an existing requests.jsonl is a write (it may become empty: a draft). */
	if (existed && (flags & O_TRUNC))
		draft_writer_add(w, tid);
	return 0;
}

long draft_write(struct bfs *b, int64_t file_id, int fd, const char *data, size_t size, off_t off,
		 pid_t tid, struct draft_writers *w)
{
	pthread_mutex_t *lock = NULL;
	struct store_batch row;
	struct store_file f;
	ssize_t n;
	int rc;

	rc = lock_file(b, file_id, &f, &row, &lock);
	if (rc == -ENOENT)
		lock = NULL; /* unlinked while open: its data is nobody's draft any more */
	else if (rc)
		return rc;
	/*
	 * A descriptor opened before the commit must not change what was submitted. Other files
	 * stay local: an editor's open swap file keeps working after `:w` submitted, and so
	 * does a file unlinked while open.
	 */
	if (lock && !draft_is_writable(&row) && is_requests(f.name)) {
		pthread_mutex_unlock(lock);
		return -EACCES;
	}
	n = pwrite(fd, data, size, off);
	rc = n < 0 ? -errno : 0;
	if (lock && is_requests(f.name)) {
		/* Still under the draft lock: the follower sees the writes in their order. */
		if (rc)
			follow_cut(b, row.id);
		else
			follow_wrote(b, row.id, file_id, off, (size_t)n);
	}
	if (lock)
		pthread_mutex_unlock(lock);
	/* The writer of a partial file (disk full: `cp` stops, then closes) must not submit. */
	draft_writer_add(w, tid);
	if (rc) {
		pthread_mutex_lock(&writers_lock);
		w->failed = rc;
		pthread_mutex_unlock(&writers_lock);
		return rc;
	}
	return (long)n;
}

static int set_times(const char *path, const struct stat *attr, int to_set)
{
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};

	if (!(to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
			FUSE_SET_ATTR_MTIME_NOW)))
		return 0;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		ts[0].tv_nsec = UTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_ATIME)
		ts[0] = attr->st_atim;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		ts[1].tv_nsec = UTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_MTIME)
		ts[1] = attr->st_mtim;
	return utimensat(AT_FDCWD, path, ts, 0) ? -errno : 0;
}

static int setattr_file(struct bfs *b, int64_t file_id, const struct stat *attr, int to_set)
{
	pthread_mutex_t *lock;
	struct store_batch row;
	struct store_file f;
	char path[PATH_MAX];
	int rc;

	rc = lock_file(b, file_id, &f, &row, &lock);
	if (rc)
		return rc;
	/* Only times of requests.jsonl may change once submitted (so `touch` and `rsync -t`
	 * work); other files stay the user's. */
	if (!may_change(&row, f.name) && (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
						    FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		rc = -EACCES;
		goto out;
	}
	/* Owners are the mount's: chown to another is refused as for a file one cannot chown. */
	if (((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != getuid()) ||
	    ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != getgid())) {
		rc = -EPERM;
		goto out;
	}
	spool_path(&b->spool, file_id, path, sizeof(path));
	if ((to_set & FUSE_SET_ATTR_SIZE) && is_requests(f.name))
		follow_cut(b, row.id); /* what it read may be cut or padded away */
	if ((to_set & FUSE_SET_ATTR_SIZE) && truncate(path, attr->st_size)) {
		rc = -errno;
		goto out;
	}
	/* The rejection was about the old contents: `truncate` (no write, so no commit) starts
	 * a new draft. */
	if ((to_set & FUSE_SET_ATTR_SIZE) && is_requests(f.name) && row.state == BATCH_REJECTED) {
		rc = store_batch_set_state(b->store, row.id, BATCH_REJECTED, BATCH_DRAFT, NULL, 0,
					   false);
		if (rc == -ESTALE)
			rc = 0;
		if (rc)
			goto out;
	}
	if (to_set & FUSE_SET_ATTR_MODE) {
		f.mode = attr->st_mode & 07777;
		rc = store_file_put(b->store, &f);
		if (rc)
			goto out;
	}
	rc = set_times(path, attr, to_set);
out:
	pthread_mutex_unlock(lock);
	return rc;
}

int draft_setattr(struct bfs *b, fuse_ino_t ino, const struct stat *attr, int to_set,
		  struct stat *st, double *timeout)
{
	struct tree_node n = tree_node(ino);
	const struct vfile *v;
	int rc;

	if (n.kind == TREE_FILE) {
		rc = setattr_file(b, n.id, attr, to_set);
		if (rc)
			return rc;
	} else if (n.kind == TREE_BATCH && (v = vfile_by_sub(n.sub))) {
		if (to_set & v->setattr_refused)
			return -EACCES;
	} else if (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
			     FUSE_SET_ATTR_GID)) {
		return -EACCES;
	}
	return tree_stat(b, ino, st, timeout);
}

int draft_unlink(struct bfs *b, fuse_ino_t parent, const char *name)
{
	struct tree_node n = tree_node(parent);
	pthread_mutex_t *lock;
	struct store_batch row;
	struct store_file f;
	int rc;

	if (n.kind != TREE_BATCH)
		return -EACCES; /* the root, a remote, .by-id (symlinks are the provider's) */
	if (n.sub != TREE_SUB_DIR) {
		/* results/<name>: goes with an ended batch (`rm -r`), else stays. */
		rc = store_batch_get(b->store, n.id, &row);
		return rc ? rc : is_forgettable(&row) ? 0 : -EACCES;
	}
	lock = bfs_draft_lock(b, n.id);
	pthread_mutex_lock(lock);
	rc = store_batch_get(b->store, n.id, &row);
	if (rc)
		goto out;
	if (vfile_by_name(name)) {
		/* `rm -r draft/` unlinks everything it lists first; the virtual files of a draft
		 * or of an ended batch go with the directory, so let those unlinks succeed. */
		rc = (draft_is_writable(&row) && !row.pid[0]) || is_forgettable(&row) ? 0 : -EACCES;
		goto out;
	}
	rc = store_file_by_name(b->store, n.id, name, &f);
	if (rc)
		goto out;
	if (is_requests(name) && !draft_is_writable(&row)) {
		/* What was submitted never changes; with an ended batch it goes at rmdir. */
		rc = is_forgettable(&row) ? 0 : -EACCES;
		goto out;
	}
	if (is_requests(name))
		follow_cut(b, row.id);
	rc = store_file_delete(b->store, f.id);
	if (rc == -ENOSPC) {
		/* The cache's disk is full, so SQLite has no room for its journal: give it the
		 * space of the file being removed (the user wants it gone; a descriptor still
		 * open on it sees it empty), then try again. */
		char path[PATH_MAX];

		spool_path(&b->spool, f.id, path, sizeof(path));
		if (!truncate(path, 0))
			rc = store_file_delete(b->store, f.id);
	}
	if (!rc)
		(void)spool_remove(&b->spool, f.id); /* open handles keep their data */
out:
	pthread_mutex_unlock(lock);
	return rc;
}

/* The worker's commit of file_id, the requests.jsonl of row. */
static int commit_job(struct bfs *b, const struct store_batch *row, int64_t file_id,
		      const struct caller_info *closer, struct worker_job *job)
{
	struct remote *r = bfs_remote(b, row->remote);

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

int draft_rename(struct bfs *b, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		 const char *newname, unsigned int flags, struct worker_job *job)
{
	struct tree_node n = tree_node(parent);
	bool onto_requests = is_requests(newname);
	pthread_mutex_t *lock;
	struct store_batch row;
	struct store_file f, old;
	int64_t replaced = 0;
	int rc;

	job->kind = WORKER_NONE;
	if (n.kind != TREE_BATCH || n.sub != TREE_SUB_DIR)
		return -EACCES;
	if (newparent != parent)
		return -EXDEV; /* mv falls back to copy + unlink, which works */
	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	if (vfile_by_name(newname) || vfile_by_name(name))
		return -EACCES;
	if (strlen(newname) >= STORE_NAME_MAX)
		return -ENAMETOOLONG;
	lock = bfs_draft_lock(b, n.id);
	pthread_mutex_lock(lock);
	rc = store_batch_get(b->store, n.id, &row);
	if (!rc)
		rc = store_file_by_name(b->store, n.id, name, &f);
	if (rc)
		goto out;
	if ((onto_requests || is_requests(name)) && !draft_is_writable(&row)) {
		rc = -EACCES;
		goto out;
	}
	if (!store_file_by_name(b->store, n.id, newname, &old) && (flags & RENAME_NOREPLACE)) {
		rc = -EEXIST;
		goto out;
	}
	if (!strcmp(name, newname))
		goto out;
	if (onto_requests || is_requests(name))
		follow_cut(b, row.id); /* a commit of another file, or none */
	rc = store_file_rename(b->store, f.id, newname, &replaced);
	if (rc)
		goto out;
	if (replaced)
		(void)spool_remove(&b->spool, replaced); /* only space */
	/* The other commit point: an editor's or rsync's temp file renamed onto it. */
	if (onto_requests)
		rc = commit_job(b, &row, f.id, NULL, job);
out:
	pthread_mutex_unlock(lock);
	return rc;
}

/*
 * The commit point (docs/semantics.md): the close() of a writer of requests.jsonl that wrote data.
 * flush is where close() gets its return value (release's is lost), so it commits.
 */
int draft_flush(struct bfs *b, int64_t file_id, pid_t tid, struct draft_writers *w,
		struct worker_job *job)
{
	struct store_batch row;
	struct caller_info ci;
	struct store_file f;
	bool wrote, known, mine = true;
	int rc, failed;

	job->kind = WORKER_NONE;
	pthread_mutex_lock(&writers_lock);
	wrote = w->wrote;
	failed = w->failed;
	pthread_mutex_unlock(&writers_lock);
	if (!wrote)
		return 0;
	/* Read now, not on the worker: a dying writer is gone from /proc soon after. */
	known = !caller_get(tid, true, &ci);
	pthread_mutex_lock(&writers_lock);
	if (known && w->n >= 0) {
		mine = false;
		for (int i = 0; i < w->n; i++)
			mine |= w->tgids[i] == ci.tgid;
	}
	if (mine) {
		w->wrote = false;
		w->n = 0;
	}
	pthread_mutex_unlock(&writers_lock);
	if (!mine)
		return 0; /* a copy closed by a process that never wrote through it */
	rc = store_file_get(b->store, file_id, &f);
	if (failed) {
		/* The batch stays a draft: fix the cause, write it again. */
		if (!rc && is_requests(f.name)) {
			char msg[160];

			snprintf(msg, sizeof(msg),
				 "requests.jsonl was not submitted: a write to it failed (%s); "
				 "write it again",
				 strerror(-failed));
			log_info("batch %" PRId64 ": %s", f.batch_id, msg);
			/* Best effort: on a full disk the cache may not take it either. */
			(void)store_batch_note(b->store, f.batch_id, msg);
		}
		return failed;
	}
	if (rc)
		return rc == -ENOENT ? 0 : rc; /* unlinked while open: nothing to submit */
	if (!is_requests(f.name))
		return 0;
	rc = store_batch_get(b->store, f.batch_id, &row);
	if (rc)
		return rc;
	return commit_job(b, &row, file_id, known ? &ci : NULL, job);
}
