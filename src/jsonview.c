// SPDX-License-Identifier: MIT
/*
 * Reading a checked JSON line in place (include/jsonview.h): each lookup walks the members of
 * one object and skips the values it does not want. A skip only looks for the bytes that end
 * a value (quotes, brackets), with memchr in strings: the line's long text costs a scan at
 * memory speed, not a decode and a copy.
 */
#include <stdlib.h>
#include <string.h>

#include "jsonview.h"

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_blank(const char *p, size_t i, size_t end)
{
	while (i < end && is_blank(p[i]))
		i++;
	return i;
}

/*
 * Past the string whose quote is at p[i]. Its end is the first quote not escaped: one after
 * an even run of backslashes (memchr finds quotes many bytes a cycle; a checked string has
 * no other way to hold one).
 */
static size_t skip_string(const char *p, size_t i, size_t end)
{
	for (i++; i < end;) {
		const char *q = memchr(p + i, '"', end - i);
		size_t at, bs = 0;

		if (!q)
			return end;
		at = (size_t)(q - p);
		while (at - bs > i && p[at - bs - 1] == '\\')
			bs++;
		if (!(bs & 1))
			return at + 1;
		i = at + 1;
	}
	return end;
}

/* Past the value starting at p[i]. */
static size_t skip_value(const char *p, size_t i, size_t end)
{
	size_t depth = 0;

	if (i >= end)
		return end;
	if (p[i] == '"')
		return skip_string(p, i, end);
	if (p[i] != '{' && p[i] != '[') {
		while (i < end && !is_blank(p[i]) && p[i] != ',' && p[i] != '}' && p[i] != ']')
			i++;
		return i;
	}
	while (i < end) {
		char c = p[i];

		if (c == '"') {
			i = skip_string(p, i, end);
			continue;
		}
		if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			if (!--depth)
				return i + 1;
		}
		i++;
	}
	return end;
}

struct jv jv_line(const char *line, size_t len)
{
	size_t i = skip_blank(line, 0, len), e = len;

	while (e > i && is_blank(line[e - 1]))
		e--;
	return (struct jv){i < e ? line + i : NULL, e - i};
}

bool jv_is_object(struct jv v)
{
	return v.p && v.len >= 2 && v.p[0] == '{';
}

bool jv_is_array(struct jv v)
{
	return v.p && v.len >= 2 && v.p[0] == '[';
}

bool jv_is_string(struct jv v)
{
	return v.p && v.len >= 2 && v.p[0] == '"';
}

bool jv_is_set(struct jv v)
{
	return v.p && v.len && v.p[0] != 'n';
}

/*
 * The next member of the object or element of the array c at *pos (0: the first), its key
 * (NULL for an array) and its value.
 */
static bool member_next(struct jv c, size_t *pos, struct jv *key, struct jv *val)
{
	const char *p = c.p;
	size_t i = *pos ? *pos : 1, end = c.len, k;

	if (!jv_is_object(c) && !jv_is_array(c))
		return false;
	i = skip_blank(p, i, end);
	if (i < end && p[i] == ',')
		i = skip_blank(p, i + 1, end);
	if (i >= end || p[i] == '}' || p[i] == ']')
		return false;
	key->p = NULL;
	key->len = 0;
	if (p[0] == '{') {
		if (p[i] != '"')
			return false;
		k = skip_string(p, i, end);
		*key = (struct jv){p + i, k - i};
		i = skip_blank(p, k, end);
		if (i >= end || p[i] != ':')
			return false;
		i = skip_blank(p, i + 1, end);
	}
	k = skip_value(p, i, end);
	if (k == i)
		return false;
	*val = (struct jv){p + i, k - i};
	*pos = k;
	return true;
}

/* The value at o.p[i], its end found only when cheap or needed: a container's view may run
 * on to o's end (every reading of it stops at its own closing bracket), so a lookup never
 * walks the long text inside the member it wants. */
static struct jv value_at(struct jv o, size_t i)
{
	if (i < o.len && (o.p[i] == '{' || o.p[i] == '['))
		return (struct jv){o.p + i, o.len - i};
	return (struct jv){o.p + i, skip_value(o.p, i, o.len) - i};
}

bool jv_next(struct jv c, size_t *pos, struct jv *out)
{
	struct jv key;

	return member_next(c, pos, &key, out);
}

struct jv jv_get(struct jv o, const char *key)
{
	const char *p = o.p;
	size_t i = 1, n = strlen(key), k;
	bool hit;

	if (!jv_is_object(o))
		return (struct jv){NULL, 0};
	for (;;) {
		i = skip_blank(p, i, o.len);
		if (i >= o.len || p[i] != '"')
			break;
		k = skip_string(p, i, o.len);
		/* Plain keys (all real ones) compare as bytes; escaped ones decoded. */
		hit = (k - i == n + 2 && !memcmp(p + i + 1, key, n)) ||
		      (memchr(p + i, '\\', k - i) && jv_str_is((struct jv){p + i, k - i}, key));

		i = skip_blank(p, k, o.len);
		if (i >= o.len || p[i] != ':')
			break;
		i = skip_blank(p, i + 1, o.len);
		if (hit)
			return value_at(o, i);
		i = skip_blank(p, skip_value(p, i, o.len), o.len);
		if (i >= o.len || p[i] != ',')
			break;
		i++;
	}
	return (struct jv){NULL, 0};
}

const char *jv_str_raw(struct jv s, size_t *elen)
{
	if (!jv_is_string(s)) {
		*elen = 0;
		return NULL;
	}
	*elen = s.len - 2;
	return s.p + 1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return 0;
}

static unsigned hex4(const char *p)
{
	return (unsigned)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 |
			  hexval(p[3]));
}

/* The escape at raw[*i] == '\\' decoded into b (1 to 4 bytes); *i moves past it. */
static size_t unescape_one(const char *raw, size_t *i, size_t elen, char *b)
{
	size_t at = *i;
	unsigned cp, lo;
	char c = at + 1 < elen ? raw[at + 1] : '\\';

	*i = at + 2;
	switch (c) {
	case 'b':
		b[0] = '\b';
		return 1;
	case 'f':
		b[0] = '\f';
		return 1;
	case 'n':
		b[0] = '\n';
		return 1;
	case 'r':
		b[0] = '\r';
		return 1;
	case 't':
		b[0] = '\t';
		return 1;
	case 'u':
		break;
	default:
		b[0] = c;
		return 1;
	}
	if (elen - at < 6) {
		*i = elen;
		return 0;
	}
	cp = hex4(raw + at + 2);
	*i = at + 6;
	if (cp >= 0xd800 && cp <= 0xdbff && elen - *i >= 6 && raw[*i] == '\\' &&
	    raw[*i + 1] == 'u') {
		lo = hex4(raw + *i + 2);
		if (lo >= 0xdc00 && lo <= 0xdfff) {
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			*i += 6;
		}
	}
	if (cp < 0x80) {
		b[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	b[0] = (char)(0xf0 | (cp >> 18));
	b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	b[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

size_t jv_unescape_next(const char *raw, size_t *i, size_t elen, char *b)
{
	if (raw[*i] != '\\') {
		b[0] = raw[(*i)++];
		return 1;
	}
	return unescape_one(raw, i, elen, b);
}

size_t jv_unescape(const char *raw, size_t elen, char *out)
{
	size_t i = 0, n = 0;

	while (i < elen) {
		const char *bs = memchr(raw + i, '\\', elen - i);
		size_t run = bs ? (size_t)(bs - raw) - i : elen - i;

		memcpy(out + n, raw + i, run);
		n += run;
		i += run;
		if (i < elen)
			n += unescape_one(raw, &i, elen, out + n);
	}
	return n;
}

/* Compares the C-string reading of raw with word[0, n). */
static bool cstr_is(const char *raw, size_t elen, const char *word, size_t n)
{
	size_t i = 0, got = 0;
	char b[4];

	while (i < elen) {
		size_t k = 1;

		if (raw[i] == '\\') {
			k = unescape_one(raw, &i, elen, b);
		} else {
			b[0] = raw[i++];
		}
		for (size_t j = 0; j < k; j++) {
			if (!b[j])
				return got == n;
			if (got >= n || word[got] != b[j])
				return false;
			got++;
		}
	}
	return got == n;
}

bool jv_str_is(struct jv s, const char *word)
{
	size_t elen, n = strlen(word);
	const char *raw = jv_str_raw(s, &elen);

	if (!raw)
		return false;
	if (elen == n && !memchr(raw, '\\', elen))
		return !memcmp(raw, word, n);
	return cstr_is(raw, elen, word, n);
}

bool jv_str_nonempty(struct jv s)
{
	size_t elen;
	const char *raw = jv_str_raw(s, &elen);

	return raw && elen && !cstr_is(raw, elen, "", 0);
}

bool jv_str_copy(struct jv s, char *out, size_t size)
{
	size_t elen, n = 0, i = 0;
	const char *raw = jv_str_raw(s, &elen);
	char b[4];

	if (!raw)
		return false;
	while (i < elen && n + 1 < size) {
		size_t k = 1;

		if (raw[i] == '\\')
			k = unescape_one(raw, &i, elen, b);
		else
			b[0] = raw[i++];
		for (size_t j = 0; j < k && n + 1 < size; j++) {
			if (!b[j])
				goto out;
			out[n++] = b[j];
		}
	}
out:
	if (size)
		out[n] = '\0';
	return true;
}

bool jv_number(struct jv v, double *out)
{
	char num[64], *at = num; /* the bytes that follow may not be a terminator strtod knows */

	if (!v.p || !v.len || !(v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9')))
		return false;
	/* All its digits, as cJSON reads them: a longer number is rare enough for a malloc. */
	if (v.len >= sizeof(num) && !(at = malloc(v.len + 1)))
		return false;
	memcpy(at, v.p, v.len);
	at[v.len] = '\0';
	*out = strtod(at, NULL);
	if (at != num)
		free(at);
	return true;
}

int64_t jv_count(struct jv o, const char *key)
{
	double d;

	/* Below 2^53: exact in a double, and far beyond any real count. */
	return jv_number(jv_get(o, key), &d) && d >= 0 && d < 9e15 ? (int64_t)d : 0;
}
