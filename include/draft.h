/* SPDX-License-Identifier: MIT */
/*
 * The draft rules: what may change in a batch directory and when (docs/semantics.md "The commit
 * point", per-operation table). mkdir and rmdir of batch directories; create, write,
 * truncate, chmod, rename and unlink of draft files; and the commit point itself (the flush
 * of a writer of requests.jsonl, a rename onto it), with the writer tracking that tells a
 * writer's close from the close of an inherited copy.
 *
 * The draft rule: every change of a draft checks that its batch is writable on a fresh read
 * of the store, and acts, while holding bfs_draft_lock(b, batch_id); the commit claims the
 * batch under the same lock, so nothing changes a batch once claimed. The commit itself runs
 * on the worker (worker.h): functions here only say what to queue.
 */
#ifndef BATCHFS_DRAFT_H
#define BATCHFS_DRAFT_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct bfs;
struct bfs_err;
struct store_batch;
struct worker_job;

#define DRAFT_WRITERS_MAX 8

/*
 * The processes (thread group ids) that wrote through one open file since its last commit
 * attempt. Lives in the file handle; guarded by a lock inside draft.c.
 */
struct draft_writers {
	bool wrote; /* data written (or O_TRUNC) since the last commit attempt */
	int failed; /* -errno of a write that failed through this handle, else 0: it never
		      * commits (its data has a gap), its closes return this */
	pid_t tgids[DRAFT_WRITERS_MAX];
	int n;			   /* -1: more than DRAFT_WRITERS_MAX, any close commits */
	pid_t last_tid, last_tgid; /* the last writer thread seen, to skip /proc lookups */
};

/* requests.jsonl of row may be (re)written: a local batch not yet claimed by a commit. */
bool draft_is_writable(const struct store_batch *row);
/* 0 when file_id may be written now; -EACCES for requests.jsonl of a batch not writable. */
int draft_check_file(struct bfs *b, int64_t file_id);

/* Records the thread tid (a FUSE request's pid) as a writer through w. */
void draft_writer_add(struct draft_writers *w, pid_t tid);

/* mkdir in a remote: a new draft. Fills e. */
int draft_mkdir(struct bfs *b, fuse_ino_t parent, const char *name, struct fuse_entry_param *e);
/*
 * rmdir of a batch directory: a draft goes (files and spool data with it); an ended batch is
 * forgotten on this machine (store_batch_forget(): a tombstone, nothing at the provider);
 * -EBUSY with the reason in err while it runs. results/ of an ended batch "goes" (0) so that
 * `rm -r` gets to the batch.
 */
int draft_rmdir(struct bfs *b, fuse_ino_t parent, const char *name, struct bfs_err *err);
/*
 * open(2) of draft file file_id with flags: checks a writing open, truncates under the draft
 * rule, records a truncating opener in w. Sets *fd (the spool file).
 */
int draft_open(struct bfs *b, int64_t file_id, int flags, pid_t tid, struct draft_writers *w,
	       int *fd);
/* create(2) of name in a batch directory: like draft_open() for a new or existing file.
 * Fills e and sets *fd. */
int draft_create(struct bfs *b, fuse_ino_t parent, const char *name, mode_t mode, int flags,
		 pid_t tid, struct draft_writers *w, struct fuse_entry_param *e, int *fd);
/* pwrite(2) through fd of file_id under the draft rule; records tid in w. Returns the count
 * or -errno. */
long draft_write(struct bfs *b, int64_t file_id, int fd, const char *data, size_t size, off_t off,
		 pid_t tid, struct draft_writers *w);
/* setattr of any node (size and mode of draft files under the draft rule); fills st. */
int draft_setattr(struct bfs *b, fuse_ino_t ino, const struct stat *attr, int to_set,
		  struct stat *st, double *timeout);
/* unlink in a batch directory. */
int draft_unlink(struct bfs *b, fuse_ino_t parent, const char *name);
/* rename inside a batch directory; onto requests.jsonl, fills job with the commit. */
int draft_rename(struct bfs *b, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		 const char *newname, unsigned int flags, struct worker_job *job);
/*
 * The flush of file_id by thread tid: when that process wrote through w and the file is
 * requests.jsonl, fills job with the commit (kind WORKER_COMMIT), else leaves WORKER_NONE.
 */
int draft_flush(struct bfs *b, int64_t file_id, pid_t tid, struct draft_writers *w,
		struct worker_job *job);

#endif
