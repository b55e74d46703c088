// SPDX-License-Identifier: MIT
/*
 * What /proc says of a FUSE caller's thread. Linux-only by nature: FUSE requests carry the
 * thread id of the caller, and the exit code of a dying task is only visible here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caller.h"

#define CALLER_PF_EXITING 0x00000004 /* include/linux/sched.h: getting shut down */

/* Reads a small /proc file into buf (NUL-terminated). Returns 0 or -errno. */
static int read_small(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	if (n < 0)
		n = -errno;
	close(fd);
	if (n < 0)
		return (int)n;
	buf[n] = '\0';
	return 0;
}

static int read_tgid(pid_t tid, pid_t *tgid)
{
	char path[64], buf[4096];
	const char *p;
	int rc;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	rc = read_small(path, buf, sizeof(buf));
	if (rc)
		return rc;
	p = strstr(buf, "\nTgid:");
	if (!p)
		return -EPROTO;
	*tgid = (pid_t)strtol(p + 6, NULL, 10);
	return *tgid > 0 ? 0 : -EPROTO;
}

/*
 * /proc/TID/stat: "pid (comm) state ppid ..." with flags the 9th field and exit_code the 52nd
 * (proc(5)); comm may hold spaces and parentheses, so fields count from the last ')'.
 */
static int read_exit(pid_t tid, struct caller_info *out)
{
	char path[64], buf[4096];
	unsigned long flags = 0;
	long code = 0;
	char *p, *save = NULL;
	int rc, field;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)tid);
	rc = read_small(path, buf, sizeof(buf));
	if (rc)
		return rc;
	p = strrchr(buf, ')');
	if (!p)
		return -EPROTO;
	field = 3;
	for (p = strtok_r(p + 1, " \n", &save); p; p = strtok_r(NULL, " \n", &save), field++) {
		if (field == 9)
			flags = strtoul(p, NULL, 10);
		else if (field == 52)
			code = strtol(p, NULL, 10);
	}
	if (field <= 52)
		return -EPROTO; /* a kernel older than 3.5 */
	out->exiting = (flags & CALLER_PF_EXITING) != 0;
	/* exit_code as wait(2) sees it: low 7 bits the killing signal, 0 for exit(). */
	out->signal = out->exiting ? (int)(code & 0x7f) : 0;
	return 0;
}

int caller_get(pid_t tid, bool want_exit, struct caller_info *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if (tid <= 0)
		return -ENOENT;
	rc = read_tgid(tid, &out->tgid);
	if (!rc && want_exit)
		rc = read_exit(tid, out);
	return rc;
}
