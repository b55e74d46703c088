// SPDX-License-Identifier: MIT
/*
 * struct buf: a growable, NUL-terminated byte buffer whose length never passes the cap fixed at
 * buf_init(), so memory stays bounded whatever a peer sends. Every append is all or nothing: on
 * -EFBIG or -ENOMEM the buffer is left exactly as it was. It never logs and never aborts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define BUF_MIN_ALLOC 64

void buf_init(struct buf *b, size_t cap)
{
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	b->cap = cap;
}

void buf_release(struct buf *b)
{
	if (!b)
		return;
	free(b->data);
	buf_init(b, b->cap);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

/* Makes room for n more bytes plus the NUL. Returns 0, -EFBIG or -ENOMEM; b is unchanged. */
static int buf_grow(struct buf *b, size_t n)
{
	size_t need, limit, want;
	char *p;

	if (n > b->cap - b->len)
		return -EFBIG;
	if (b->len + n == SIZE_MAX)
		return -ENOMEM;
	need = b->len + n + 1;
	if (need <= b->alloc)
		return 0;
	limit = b->cap < SIZE_MAX ? b->cap + 1 : SIZE_MAX;
	want = b->alloc < BUF_MIN_ALLOC ? BUF_MIN_ALLOC : b->alloc;
	while (want < need && want <= SIZE_MAX / 2)
		want *= 2;
	if (want < need)
		want = need;
	if (want > limit)
		want = limit;
	p = realloc(b->data, want);
	if (!p)
		return -ENOMEM;
	if (!b->data)
		p[0] = '\0';
	b->data = p;
	b->alloc = want;
	return 0;
}

int buf_add(struct buf *b, const void *data, size_t n)
{
	int rc = buf_grow(b, n);

	if (rc)
		return rc;
	if (n)
		memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_addstr(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

int buf_vaddf(struct buf *b, const char *fmt, va_list ap)
{
	va_list cp;
	int n, rc;

	va_copy(cp, ap);
	n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0)
		return -EINVAL;
	rc = buf_grow(b, (size_t)n);
	if (rc)
		return rc;
	/* buf_grow() left room for n bytes and the NUL that vsnprintf() writes */
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int buf_addf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vaddf(b, fmt, ap);
	va_end(ap);
	return rc;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one (RFC 3629). */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	size_t len, i;
	unsigned int cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

int buf_add_json_string(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t old = b->len, n = strlen(s), i = 0, run;
	char esc[7];
	int rc;

	rc = buf_add(b, "\"", 1);
	while (!rc && i < n) {
		/* copy the longest run that needs no escaping in one go */
		for (run = 0; i + run < n; run++) {
			unsigned char c = p[i + run];

			if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80)
				break;
		}
		if (run) {
			rc = buf_add(b, p + i, run);
			i += run;
			continue;
		}
		if (p[i] >= 0x80) {
			run = utf8_seq_len(p + i, n - i);
			if (run) {
				rc = buf_add(b, p + i, run);
				i += run;
			} else {
				/* keep status valid JSON whatever bytes a provider sent */
				rc = buf_add(b, "\\ufffd", 6);
				i++;
			}
			continue;
		}
		switch (p[i]) {
		case '"':
			rc = buf_add(b, "\\\"", 2);
			break;
		case '\\':
			rc = buf_add(b, "\\\\", 2);
			break;
		case '\n':
			rc = buf_add(b, "\\n", 2);
			break;
		case '\r':
			rc = buf_add(b, "\\r", 2);
			break;
		case '\t':
			rc = buf_add(b, "\\t", 2);
			break;
		case '\b':
			rc = buf_add(b, "\\b", 2);
			break;
		case '\f':
			rc = buf_add(b, "\\f", 2);
			break;
		default:
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[p[i] >> 4];
			esc[5] = hex[p[i] & 0xf];
			rc = buf_add(b, esc, 6);
			break;
		}
		i++;
	}
	if (!rc)
		rc = buf_add(b, "\"", 1);
	if (rc) {
		b->len = old;
		if (b->data)
			b->data[old] = '\0';
	}
	return rc;
}

char *buf_detach(struct buf *b, size_t *len)
{
	char *p = b->data;
	size_t n = b->len;

	if (!p) {
		/* the contract promises a string; only a failed 1-byte malloc makes this NULL */
		p = calloc(1, 1);
		n = 0;
	}
	buf_init(b, b->cap);
	if (len)
		*len = n;
	return p;
}
