/* SPDX-License-Identifier: MIT */
/*
 * The shape of the mount (docs/semantics.md "The tree"): inode numbers computed from store rows, and
 * the operations that only look at the tree (lookup, getattr, readdir, opendir, readlink,
 * access, statfs). Everything here is answered from the store: never a provider call, never
 * the network (tenet 2).
 */
#ifndef BATCHFS_TREE_H
#define BATCHFS_TREE_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

struct bfs;
struct buf;

/*
 * ino = kind << 56 | id << 4 | sub. ids are never-reused AUTOINCREMENT row ids, so a number
 * names the same object for the life of the cache.
 */
enum tree_kind {
	TREE_ROOT = 0,
	TREE_REMOTE = 1, /* id: remote index; sub: TREE_SUB_DIR or TREE_SUB_BY_ID */
	TREE_BATCH = 2,	 /* id: batch row; sub: TREE_SUB_DIR or a virtual file (vfile.h) */
	TREE_LINK = 3,	 /* id: part row: .by-id/<pid> -> ../<name> */
	TREE_FILE = 4,	 /* id: files row (spool data) */
	TREE_RESULT = 5, /* id: results row */
};

#define TREE_SUB_DIR 0 /* the batch (or remote) directory itself */
/* <remote>/.by-id/: a symlink per provider id (every part's), so the remote directory lists
 * each batch once (and so do globs over it). */
#define TREE_SUB_BY_ID 1
/* A TREE_RESULT inode with this sub is the result's text/ file (sub 0: results/). */
#define TREE_SUB_TEXT 1
#define TREE_BY_ID    ".by-id"
#define TREE_SUB_MAX  15
#define TREE_ROOT_INO 1
/* The I/O size files show (st_blksize) and the largest write the connection takes. */
#define TREE_IO_SIZE (1u << 20)

/* Attribute and entry timeouts (seconds). */
#define TREE_TIMEOUT_LIVE  0.0 /* things that change behind the kernel's back */
#define TREE_TIMEOUT_DIR   1.0
#define TREE_TIMEOUT_FIXED 3600.0 /* results (and a version's text) never change */

struct tree_node {
	enum tree_kind kind;
	int64_t id;
	unsigned sub;
	uint32_t ver; /* a version's inode (below), else 0 */
};

fuse_ino_t tree_ino(enum tree_kind kind, int64_t id, unsigned sub);
struct tree_node tree_node(fuse_ino_t ino);

/*
 * A virtual file whose text changes (status) has one inode number per version of its text,
 * as if each change were a new file renamed over the old one: a version never changes, so
 * the kernel may keep its attributes and pages, and the entry (timeout 0) is what moves
 * between versions. ino = 6 << 56 | id << 24 | ver << 4 | sub, ver being 20 bits of the
 * text's hash (never 0) and the entry's generation 32 more, so a number taken again by
 * another text is a new inode to the kernel. tree_node() gives kind TREE_BATCH and ver.
 * A batch id beyond 32 bits gets the plain number (served live, as before versions).
 */
#define TREE_VER_BITS 20
fuse_ino_t tree_ino_version(int64_t id, unsigned sub, uint64_t hash);
/* The ver field hash gives (what tree_node(tree_ino_version(id, sub, hash)).ver is). */
uint32_t tree_ver_of(uint64_t hash);
/* The hash that names a version of a text. */
uint64_t tree_text_hash(const char *data, size_t len);
/* Whether a text of len bytes is kept for the opens of its version (tree.c). */
bool tree_version_keepable(size_t len);
/* Replaces out by the text of version ino as a lookup saw it, and st by its attributes: 0,
 * -ENOENT when it is not kept (tree.c; out untouched), -ENOMEM. */
int tree_version_get(struct bfs *b, fuse_ino_t ino, struct buf *out, struct stat *st);

/* Fills the attributes every node shares (owner, links, block size), mode and all three
 * times from mtime_ms. */
void tree_attr_init(struct stat *st, fuse_ino_t ino, mode_t mode, int64_t mtime_ms);
/* Sets all three times of st from ms. */
void tree_attr_times(struct stat *st, int64_t ms);

/* The attributes of any node, from the store (and a spool file's own size and times). */
int tree_stat(struct bfs *b, fuse_ino_t ino, struct stat *st, double *timeout);
/* tree_stat() as a directory entry (what lookup, mkdir and create answer). */
int tree_entry(struct bfs *b, fuse_ino_t ino, struct fuse_entry_param *e);
/* The entry called name in parent. */
int tree_lookup(struct bfs *b, fuse_ino_t parent, const char *name, struct fuse_entry_param *e);
/* The target of a .by-id/<pid> symlink (../<name>), copied into out. */
int tree_readlink(struct bfs *b, fuse_ino_t ino, char *out, size_t size);
/* 0 when ino is a directory that exists. */
int tree_opendir(struct bfs *b, fuse_ino_t ino);
/* access(2): mirrors what open, write and setattr would allow. */
int tree_access(struct bfs *b, fuse_ino_t ino, int mask);
/* The cache file system's figures. */
int tree_statfs(struct bfs *b, struct statvfs *sv);

/* One readdir reply being filled. */
struct tree_dir {
	fuse_req_t req;
	struct bfs *b;
	char *buf;
	size_t size, len;
	off_t off; /* entries with a cookie <= off were sent already */
	bool plus;
	bool full;
};

/*
 * Fills d (d->buf malloc'd, d->len bytes, the caller frees it) with the entries of ino after
 * cookie d->off. Cookies: "." 1, ".." 2; the rest per directory kind (tree.c, vfile.h).
 */
int tree_readdir(struct bfs *b, fuse_ino_t ino, struct tree_dir *d);
/*
 * Adds one entry with its cookie; false once the reply buffer is full. known, when given, are
 * the entry's attributes already at hand (no query per entry), with their timeout.
 */
bool tree_dir_add(struct tree_dir *d, const char *name, fuse_ino_t ino, off_t cookie,
		  const struct stat *known, double known_timeout);
/* Rough number of entries the reply can still hold, to size each query's LIMIT. */
int tree_dir_limit(const struct tree_dir *d);

#endif
