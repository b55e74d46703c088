/* SPDX-License-Identifier: MIT */
/*
 * struct bfs_err carries the human reason beside a -errno (redis's char *err): the errno goes
 * to the syscall, the text goes to the batch's status. Every function taking one accepts NULL.
 */
#ifndef BATCHFS_ERR_H
#define BATCHFS_ERR_H

#include <stdbool.h>
#include <stdint.h>

#define BFS_ERR_MSG_MAX 1024

struct bfs_err {
	char msg[BFS_ERR_MSG_MAX]; /* "" when no error was recorded */
	long line;		   /* 1-based input line the error is about, 0 when none */
	int attempt;		   /* HTTP attempt count when the error came from retries, else 0 */
	/* Rate limited: the server asked not to be called before this (ms since the epoch),
	 * else 0. Set by http.c, kept by err_set and err_prefix, reset by err_clear: the caller
	 * reschedules instead of failing (docs/semantics.md "Rate limits"). */
	int64_t retry_at;
};

/* Where a rate limit's message starts (http.c writes it, batch.c recognises it in status). */
#define ERR_RATE_LIMITED_MSG "rate limited, retrying at"

#define BFS_ERR_INIT                                              \
	{                                                         \
		.msg = "", .line = 0, .attempt = 0, .retry_at = 0 \
	}

/* Empties err. NULL-safe. */
void err_clear(struct bfs_err *err);
/* Records a message (replacing any earlier one), line 0. NULL-safe. */
void err_set(struct bfs_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records a message about input line `line`. NULL-safe. */
void err_set_line(struct bfs_err *err, long line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Puts "prefix: " in front of the recorded message (or sets it if empty). NULL-safe. */
void err_prefix(struct bfs_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when a message is recorded. */
bool err_is_set(const struct bfs_err *err);

#endif
