// SPDX-License-Identifier: MIT
/*
 * The floor of a FUSE file: a minimal libfuse 3 low-level file system serving the regular
 * files of one local directory (FLOOR_SOURCE) as a flat, read-only root, with the choices
 * batchfs makes for its results/ files (keep_cache, noflush, one-hour entry and attribute
 * timeouts, readdirplus, 8 worker threads). It does nothing else: no store, no inode table
 * beyond the directory's own inode numbers, so `cat` of every file through it costs only the
 * kernel's and libfuse's round trips (lookup, open, read, release). bench_results.py runs the
 * same loop through it and through batchfs; what batchfs adds is the difference.
 *
 * With FLOOR_LIVE set, its files are served the way batchfs served `status` before versions (a
 * text that changes between opens): attributes never cached, direct I/O, no page cache, so
 * every open+read+close pays the kernel's and libfuse's round trips for a live file.
 *
 * With FLOOR_VERSION set, they are served the way batchfs serves a version of `status`
 * (docs/design.md "status: one inode per version"): entry timeout 0, so every path walk looks
 * the name up again, attributes and pages kept (keep_cache), so an open+read+close of an
 * unchanged text is a lookup and an open.
 *
 * Build: cc -O2 -o floor_fs floor_fs.c $(pkg-config --cflags --libs fuse3)
 * Run:   FLOOR_SOURCE=DIR [FLOOR_LIVE=1 | FLOOR_VERSION=1] ./floor_fs -f MOUNTPOINT
 */
#define FUSE_USE_VERSION 314
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int src_fd = -1;
static const double timeout = 3600.0;
static bool live;    /* FLOOR_LIVE: files served as batchfs served status before versions */
static bool version; /* FLOOR_VERSION: as batchfs serves a version of status */

/* Inode numbers are the source's, shifted so that 1 stays the root. */
static fuse_ino_t to_fuse(ino_t ino)
{
	return (fuse_ino_t)ino + 2;
}

static int stat_name(const char *name, struct stat *st)
{
	if (fstatat(src_fd, name, st, AT_SYMLINK_NOFOLLOW))
		return -errno;
	if (!S_ISREG(st->st_mode))
		return -ENOENT;
	st->st_ino = to_fuse(st->st_ino);
	st->st_mode = S_IFREG | 0444;
	return 0;
}

/* Every file of the flat source, sorted by inode, read once at start (the files never
 * change): the kernel names files by inode in getattr and open. */
struct entry {
	fuse_ino_t ino;
	char *name;
};
static struct entry *entries;
static size_t nentries;

static int entry_cmp(const void *a, const void *b)
{
	fuse_ino_t x = ((const struct entry *)a)->ino, y = ((const struct entry *)b)->ino;

	return x < y ? -1 : x > y;
}

static int entries_load(void)
{
	DIR *d = fdopendir(dup(src_fd));
	struct dirent *e;
	size_t cap = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (nentries == cap) {
			cap = cap ? 2 * cap : 1024;
			entries = realloc(entries, cap * sizeof(*entries));
			if (!entries)
				return -ENOMEM;
		}
		entries[nentries].ino = to_fuse(e->d_ino);
		entries[nentries++].name = strdup(e->d_name);
	}
	closedir(d);
	qsort(entries, nentries, sizeof(*entries), entry_cmp);
	return 0;
}

static int name_of(fuse_ino_t ino, char *name, size_t size)
{
	struct entry key = {.ino = ino}, *e;

	e = bsearch(&key, entries, nentries, sizeof(*entries), entry_cmp);
	if (!e)
		return -ENOENT;
	snprintf(name, size, "%s", e->name);
	return 0;
}

static void fl_init(void *u, struct fuse_conn_info *conn)
{
	(void)u;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
}

static void fl_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = {0};
	int rc;

	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	rc = stat_name(name, &e.attr);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	e.ino = e.attr.st_ino;
	e.attr_timeout = live ? 0.0 : timeout;
	e.entry_timeout = version ? 0.0 : timeout;
	fuse_reply_entry(req, &e);
}

static void fl_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st = {0};
	char name[256];
	int rc;

	(void)fi;
	if (ino == FUSE_ROOT_ID) {
		st.st_ino = 1;
		st.st_mode = S_IFDIR | 0555;
		st.st_nlink = 2;
		fuse_reply_attr(req, &st, timeout);
		return;
	}
	rc = name_of(ino, name, sizeof(name));
	if (!rc)
		rc = stat_name(name, &st);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, live ? 0.0 : timeout);
}

static void fl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char name[256];
	int fd, rc;

	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EACCES);
		return;
	}
	rc = name_of(ino, name, sizeof(name));
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	fd = openat(src_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = (uint64_t)fd;
	fi->keep_cache = !live;
	fi->direct_io = live;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void fl_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	char *buf = malloc(size ? size : 1);
	ssize_t n;

	(void)ino;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = pread((int)fi->fh, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void fl_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	close((int)fi->fh);
	fuse_reply_err(req, 0);
}

static void fl_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	DIR *d;

	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	d = fdopendir(dup(src_fd));
	if (!d) {
		fuse_reply_err(req, errno);
		return;
	}
	rewinddir(d);
	fi->fh = (uint64_t)(uintptr_t)d;
	fuse_reply_open(req, fi);
}

static void fl_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	DIR *d = (DIR *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	size_t used = 0;
	struct dirent *e;

	(void)ino;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	seekdir(d, off);
	while ((e = readdir(d))) {
		struct fuse_entry_param ep = {0};
		size_t n;

		if (e->d_name[0] == '.' || stat_name(e->d_name, &ep.attr))
			continue;
		ep.ino = ep.attr.st_ino;
		ep.attr_timeout = ep.entry_timeout = timeout;
		n = fuse_add_direntry_plus(req, buf + used, size - used, e->d_name, &ep,
					   telldir(d));
		if (n > size - used) {
			seekdir(d, off);
			break;
		}
		/* The entry is in: the kernel now holds a lookup count on it. */
		used += n;
		off = telldir(d);
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void fl_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	closedir((DIR *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
	.init = fl_init,
	.lookup = fl_lookup,
	.getattr = fl_getattr,
	.open = fl_open,
	.read = fl_read,
	.release = fl_release,
	.opendir = fl_opendir,
	.readdirplus = fl_readdirplus,
	.releasedir = fl_releasedir,
};

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct fuse_loop_config *lc;
	struct fuse_session *se;
	const char *src = getenv("FLOOR_SOURCE");
	int rc = 1;

	if (!src || fuse_parse_cmdline(&args, &opts) || !opts.mountpoint) {
		fprintf(stderr, "usage: FLOOR_SOURCE=DIR %s -f MOUNTPOINT\n", argv[0]);
		return 2;
	}
	live = getenv("FLOOR_LIVE") != NULL;
	version = getenv("FLOOR_VERSION") != NULL;
	src_fd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (src_fd < 0) {
		perror(src);
		return 1;
	}
	if (entries_load()) {
		fprintf(stderr, "%s: cannot list\n", src);
		return 1;
	}
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se || fuse_set_signal_handlers(se) || fuse_session_mount(se, opts.mountpoint))
		return 1;
	lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(lc, 8);
	fuse_loop_cfg_set_idle_threads(lc, 8);
	rc = fuse_session_loop_mt(se, lc) ? 1 : 0;
	fuse_loop_cfg_destroy(lc);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return rc;
}
