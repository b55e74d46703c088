/* SPDX-License-Identifier: MIT */
/*
 * struct buf: a growable byte buffer with a hard size cap fixed at init (git's strbuf
 * invariants plus curl's dynbuf cap). data is always NUL-terminated when non-NULL.
 */
#ifndef BATCHFS_BUF_H
#define BATCHFS_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;   /* NULL until the first add; NUL-terminated after */
	size_t len;   /* bytes in use, not counting the NUL */
	size_t alloc; /* bytes allocated */
	size_t cap;   /* hard limit on len */
};

#define BUF_INIT(c)                                            \
	{                                                      \
		.data = NULL, .len = 0, .alloc = 0, .cap = (c) \
	}

/* Sets up an empty buffer that will never hold more than cap bytes. */
void buf_init(struct buf *b, size_t cap);
/* Frees the storage; the buffer is empty and reusable afterwards. NULL-safe. */
void buf_release(struct buf *b);
/* Empties the buffer, keeping its storage. */
void buf_reset(struct buf *b);
/* Appends n bytes. Returns 0, -EFBIG past the cap (nothing appended) or -ENOMEM. */
int buf_add(struct buf *b, const void *data, size_t n);
/* Appends a C string; same returns as buf_add(). */
int buf_addstr(struct buf *b, const char *s);
/* Appends printf-formatted text; same returns as buf_add(). */
int buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vaddf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends s as a JSON string literal, quotes included; same returns as buf_add(). */
int buf_add_json_string(struct buf *b, const char *s);
/* Hands the storage to the caller (free() it; never NULL: "" when empty) and resets b. */
char *buf_detach(struct buf *b, size_t *len);

#endif
