// SPDX-License-Identifier: MIT
/*
 * struct bfs_err: the human reason that travels beside a -errno, into a batch's status. Every
 * function accepts a NULL err and then does nothing. Messages are cut to BFS_ERR_MSG_MAX - 1
 * bytes, never inside a UTF-8 sequence. This module never allocates and never logs.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

/* After a cut at n bytes, drops a UTF-8 sequence the cut left incomplete. */
static void trim_utf8_tail(char *s, size_t n)
{
	size_t i = n, need;
	unsigned char lead;

	while (i > 0 && ((unsigned char)s[i - 1] & 0xc0) == 0x80 && n - i < 3)
		i--;
	if (i == 0)
		return;
	lead = (unsigned char)s[i - 1];
	if (lead < 0xc0)
		return;
	need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
	if (n - (i - 1) < need)
		s[i - 1] = '\0';
}

static void err_vformat(char *dst, size_t size, const char *fmt, va_list ap)
{
	int n = vsnprintf(dst, size, fmt, ap);

	if (n < 0)
		dst[0] = '\0';
	else if ((size_t)n >= size)
		trim_utf8_tail(dst, size - 1);
}

void err_clear(struct bfs_err *err)
{
	if (!err)
		return;
	err->msg[0] = '\0';
	err->line = 0;
	err->attempt = 0;
	err->retry_at = 0;
}

void err_set(struct bfs_err *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	err_vformat(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	err->line = 0;
}

void err_set_line(struct bfs_err *err, long line, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	err_vformat(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	err->line = line;
}

void err_prefix(struct bfs_err *err, const char *fmt, ...)
{
	char prefix[BFS_ERR_MSG_MAX];
	char old[BFS_ERR_MSG_MAX];
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	err_vformat(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (!err->msg[0]) {
		memcpy(err->msg, prefix, sizeof(prefix));
		return;
	}
	memcpy(old, err->msg, sizeof(old));
	if (snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old) >= (int)sizeof(err->msg))
		trim_utf8_tail(err->msg, sizeof(err->msg) - 1);
}

bool err_is_set(const struct bfs_err *err)
{
	return err && err->msg[0] != '\0';
}
