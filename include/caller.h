/* SPDX-License-Identifier: MIT */
/*
 * Who is calling: what /proc says of the thread behind a FUSE request. The kernel gives the
 * caller's thread id; the commit point needs the process (thread group), and whether that
 * process is dying of a signal (a writer killed mid-file must not submit half a file).
 */
#ifndef BATCHFS_CALLER_H
#define BATCHFS_CALLER_H

#include <stdbool.h>
#include <sys/types.h>

struct caller_info {
	pid_t tgid;   /* the thread group (process) of the thread */
	bool exiting; /* the thread is in exit (closing its files) */
	int signal;   /* when exiting: the signal that killed it, 0 for a normal exit */
};

/*
 * Reads /proc/TID/status (and, with want_exit, /proc/TID/stat). Returns 0, or -ENOENT when
 * tid is 0 (a caller from another pid namespace) or gone, or another -errno.
 */
int caller_get(pid_t tid, bool want_exit, struct caller_info *out);

#endif
