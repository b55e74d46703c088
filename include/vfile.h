/* SPDX-License-Identifier: MIT */
/*
 * The virtual files of a batch directory (status, id, ctl, results.jsonl, results/) as one
 * table: lookup, getattr, readdir, open, read, write, setattr and the reserved-name refusals
 * of create, unlink and rename all go through it, so a new virtual file is one entry.
 */
#ifndef BATCHFS_VFILE_H
#define BATCHFS_VFILE_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct bfs;
struct buf;
struct store_batch;
struct store_span;
struct tree_dir;
struct worker_job;

struct vfile {
	const char *name;
	/* The sub field of its inode numbers (1..TREE_SUB_MAX): fixed forever, so inode
	 * numbers survive a reordering of the table. */
	unsigned sub;
	mode_t mode;
	double timeout; /* attribute and entry timeout */
	/* FUSE_SET_ATTR_* bits a setattr may not change (EACCES). */
	int setattr_refused;
	/* Whether the file exists for this batch now; NULL: always. */
	bool (*visible)(const struct store_batch *row);
	/* Size and times (ino and mode are set). */
	int (*stat)(struct bfs *b, const struct store_batch *row, struct stat *st);
	/* Instead of stat, for a file with versions (tree.h): the text now (*text, which is out
	 * or a copy valid until this thread's next call), its tree_text_hash(), size and
	 * times. */
	int (*version)(struct bfs *b, const struct store_batch *row, struct stat *st,
		       struct buf *out, const struct buf **text, uint64_t *hash);

	/* Regular files. open checks fi->flags, takes its snapshot into text and sets fi's
	 * caching bits; NULL for a directory (open is EISDIR). */
	int (*open)(struct bfs *b, const struct store_batch *row, struct fuse_file_info *fi,
		    struct buf *text);
	/* Copies [off, off + size) into dst; returns the count or -errno. NULL: EBADF. */
	long (*read)(struct bfs *b, int64_t batch_id, struct buf *text, off_t off, size_t size,
		     char *dst);
	/* Where [off, off + size) lies in the store's data files, for a reply by splice (see
	 * store_results_jsonl_spans); NULL, or -EXDEV: read copies. */
	int (*spans)(struct bfs *b, int64_t batch_id, off_t off, size_t size, struct store_span *sp,
		     int max, size_t *total);
	/* Fills job with what the write asks for (the caller queues it and answers when it is
	 * done); 0 or -errno. NULL: EBADF. */
	int (*write)(struct bfs *b, int64_t batch_id, const char *data, size_t size,
		     struct worker_job *job);

	/*
	 * A read that waits (wait): 1 with the answer in out, 0 when it must wait (fs.c parks
	 * the request: waiter.h), -errno. Called with an empty snapshot only.
	 */
	int (*ready)(struct bfs *b, int64_t batch_id, struct buf *out);
	/* Found by lookup but left out of readdir (wait: so tar, cp -a, grep -r never block). */
	bool unlisted;

	/* Directories: an entry, and the listing after tree_dir.off. */
	int (*lookup)(struct bfs *b, int64_t batch_id, const char *name,
		      struct fuse_entry_param *e);
	int (*readdir)(struct bfs *b, int64_t batch_id, struct tree_dir *d);
};

/*
 * Readdir cookies of a batch directory: "." 1, ".." 2, table entry i 3 + i, and the draft
 * files from VFILE_FILES_COOKIE on (cookie = VFILE_FILES_COOKIE + file row id). The spare
 * cookies let the table grow without moving the draft files' cookies.
 */
#define VFILE_COOKIE_FIRST 3
#define VFILE_COOKIE_SPARE 8

extern const struct vfile vfile_table[];
extern const size_t vfile_count;

/* True when a batch's wait is over: ended with its results settled (or never to run). */
bool vfile_batch_done(const struct store_batch *row);

/* The entry called name, or NULL (the names a draft file may not take). */
const struct vfile *vfile_by_name(const char *name);
/* The entry of an inode's sub number, or NULL. */
const struct vfile *vfile_by_sub(unsigned sub);
/* True when v exists for row (visible, or no predicate). */
bool vfile_is_visible(const struct vfile *v, const struct store_batch *row);
/* The readdir cookie of v. */
off_t vfile_cookie(const struct vfile *v);
/* The cookie of the draft file with row id 0 (see above). */
off_t vfile_files_cookie(void);

#endif
