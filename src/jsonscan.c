// SPDX-License-Identifier: MIT
/*
 * The strict check of one request line: a recursive-descent scan of RFC 8259 JSON with the
 * I-JSON (RFC 7493) rules a provider applies and cJSON does not, so that batchfs's reading of
 * a line and the provider's are the same (one value, the same strings, the same key for each
 * name). jsonscan_tree() builds, in the same pass, the shallow tree the validators read: a
 * request line is mostly the bytes of its messages, which no check looks into, so they are
 * scanned and counted, never copied into nodes (a cJSON parse of every line cost a third of
 * the check).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "jsonscan.h"

#define HEAD_MAX 16 /* longest key name the scan needs to recognise, decoded */

struct scan {
	const unsigned char *p;
	size_t len, pos;
	struct jsonscan_error *e;
};

/* Containers deeper than this are not built by jsonscan_tree() (the root is depth 1). */
#define TREE_DEPTH 2

/* What a string decodes to, as far as keys need: a hash, a prefix, a \u0000 inside. */
struct str_info {
	uint64_t hash; /* FNV-1a of the decoded bytes */
	size_t dlen;
	char head[HEAD_MAX];
	bool nul;
};

struct key {
	uint64_t hash;
	size_t start; /* offset of the opening quote */
};

struct keys {
	struct key *v; /* small, or the heap once it is full */
	size_t n, alloc;
	struct key small[16]; /* most objects: no malloc per line */
};

static int fail(struct scan *s, size_t at, const char *why)
{
	s->e->column = at + 1;
	s->e->why = why;
	s->e->detail[0] = '\0';
	return -EINVAL;
}

static int peek(const struct scan *s)
{
	return s->pos < s->len ? s->p[s->pos] : -1;
}

/* JSON whitespace inside a line: a CR here was not part of a CRLF (the splitter drops that). */
static int skip_ws(struct scan *s)
{
	while (s->pos < s->len) {
		unsigned char c = s->p[s->pos];

		if (c == '\r')
			return fail(s, s->pos, "a lone CR (line ends must be LF or CRLF)");
		if (c != ' ' && c != '\t' && c != '\n')
			break;
		s->pos++;
	}
	return 0;
}

static void info_add(struct str_info *in, const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (in->dlen < HEAD_MAX)
			in->head[in->dlen] = (char)b[i];
		in->dlen++;
		in->hash = (in->hash ^ b[i]) * 0x100000001b3ull;
	}
}

static int hex4(const unsigned char *p, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		unsigned char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t utf8_put(unsigned cp, unsigned char *b)
{
	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | (cp >> 6));
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | (cp >> 12));
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	b[0] = (unsigned char)(0xf0 | (cp >> 18));
	b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
	b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
	b[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * An escape at p[*pos] ('\\' seen): checks it, decodes it into b (returns its length), moves
 * *pos past it. A \u surrogate must be a high one followed by an escaped low one.
 */
static int scan_escape(struct scan *s, unsigned char *b, size_t *n)
{
	size_t at = s->pos;
	unsigned cp, lo;

	if (s->pos + 1 >= s->len)
		return fail(s, at, "not valid JSON: unterminated string");
	switch (s->p[s->pos + 1]) {
	case '"':
	case '\\':
	case '/':
		b[0] = s->p[s->pos + 1];
		break;
	case 'b':
		b[0] = '\b';
		break;
	case 'f':
		b[0] = '\f';
		break;
	case 'n':
		b[0] = '\n';
		break;
	case 'r':
		b[0] = '\r';
		break;
	case 't':
		b[0] = '\t';
		break;
	case 'u':
		if (s->len - s->pos < 6 || hex4(s->p + s->pos + 2, &cp))
			return fail(s, at, "not valid JSON: a \\u escape needs four hex digits");
		s->pos += 6;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return fail(s, at, "a lone UTF-16 low surrogate escape");
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (s->len - s->pos < 6 || s->p[s->pos] != '\\' ||
			    s->p[s->pos + 1] != 'u' || hex4(s->p + s->pos + 2, &lo) ||
			    lo < 0xdc00 || lo > 0xdfff)
				return fail(s, at, "a lone UTF-16 high surrogate escape");
			s->pos += 6;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		}
		*n = utf8_put(cp, b);
		return 0;
	default:
		return fail(s, at, "not valid JSON: an unknown escape");
	}
	s->pos += 2;
	*n = 1;
	return 0;
}

/*
 * One UTF-8 sequence of 2 to 4 bytes at p[*pos] (RFC 3629 table: no overlong form, no
 * surrogate, nothing above U+10FFFF). Returns its length, or -EINVAL.
 */
static int scan_utf8(struct scan *s, size_t *n)
{
	const unsigned char *c = s->p + s->pos;
	size_t left = s->len - s->pos;
	unsigned char lo = 0x80, hi = 0xbf;
	size_t need;

	if (c[0] >= 0xc2 && c[0] <= 0xdf) {
		need = 2;
	} else if (c[0] >= 0xe0 && c[0] <= 0xef) {
		need = 3;
		if (c[0] == 0xe0)
			lo = 0xa0;
		if (c[0] == 0xed)
			hi = 0x9f;
	} else if (c[0] >= 0xf0 && c[0] <= 0xf4) {
		need = 4;
		if (c[0] == 0xf0)
			lo = 0x90;
		if (c[0] == 0xf4)
			hi = 0x8f;
	} else {
		return fail(s, s->pos,
			    c[0] == 0xc0 || c[0] == 0xc1 ? "invalid UTF-8 (an overlong encoding)"
							 : "invalid UTF-8");
	}
	if (left < need)
		return fail(s, s->pos, "invalid UTF-8 (a sequence cut short)");
	if (c[1] < lo || c[1] > hi) {
		if (c[0] == 0xed && c[1] >= 0xa0 && c[1] <= 0xbf)
			return fail(s, s->pos, "invalid UTF-8 (a UTF-16 surrogate)");
		if ((c[0] == 0xe0 || c[0] == 0xf0) && c[1] >= 0x80 && c[1] < lo)
			return fail(s, s->pos, "invalid UTF-8 (an overlong encoding)");
		return fail(s, s->pos, "invalid UTF-8");
	}
	for (size_t i = 2; i < need; i++)
		if (c[i] < 0x80 || c[i] > 0xbf)
			return fail(s, s->pos, "invalid UTF-8");
	*n = need;
	return 0;
}

typedef unsigned char bytes16 __attribute__((vector_size(16)));

/* As json_plain8() for 32 bytes, with the compiler's vectors (SSE2 on x86-64): a result's
 * text is kilobytes of such bytes, and this loop is the strict scan's cost. */
static bool plain32(const unsigned char *p)
{
	bytes16 a, b, bad;
	uint64_t w[2];

	memcpy(&a, p, 16);
	memcpy(&b, p + 16, 16);
	bad = (bytes16)((a < 0x20) | (a >= 0x80) | (a == '"') | (a == '\\') | (b < 0x20) |
			(b >= 0x80) | (b == '"') | (b == '\\'));
	memcpy(w, &bad, 16);
	return !(w[0] | w[1]);
}

/*
 * A string at p[pos] == '"'. With in, records what it decodes to (keys and custom_id). With
 * size, the bytes cJSON prints it in (its C string ends at a decoded NUL).
 */
static int scan_string(struct scan *s, struct str_info *in, uint64_t *size)
{
	size_t start = s->pos, run;
	unsigned char b[4];
	uint64_t out = 2;
	bool cut = false;
	size_t n;
	int rc;

	if (in) {
		memset(in, 0, sizeof(*in));
		in->hash = 0xcbf29ce484222325ull;
	}
	s->pos++;
	for (;;) {
		unsigned char c;

		/* The hot loop of a long prompt: plain ASCII, nothing to record. */
		if (!in) {
			run = s->pos;
			while (s->pos + 32 <= s->len && plain32(s->p + s->pos))
				s->pos += 32;
			while (s->pos + 8 <= s->len && json_plain8((const char *)s->p + s->pos))
				s->pos += 8;
			while (s->pos < s->len && s->p[s->pos] >= 0x20 && s->p[s->pos] < 0x80 &&
			       s->p[s->pos] != '"' && s->p[s->pos] != '\\')
				s->pos++;
			if (!cut)
				out += s->pos - run;
		}
		if (s->pos >= s->len)
			return fail(s, start, "not valid JSON: unterminated string");
		c = s->p[s->pos];
		if (c == '"') {
			s->pos++;
			if (size)
				*size = out;
			return 0;
		}
		if (c < 0x20)
			return fail(s, s->pos,
				    c == '\r' ? "a lone CR (line ends must be LF or CRLF)"
					      : "not valid JSON: a control character in a string");
		if (c == '\\') {
			rc = scan_escape(s, b, &n);
			if (rc)
				return rc;
			if (in) {
				in->nul |= n == 1 && b[0] == 0;
				info_add(in, b, n);
			}
			for (size_t i = 0; i < n && !cut; i++) {
				cut = b[i] == 0;
				out += cut ? 0 : 1 + json_escape_extra(b[i]);
			}
			continue;
		}
		if (c < 0x80) {
			if (in)
				info_add(in, &c, 1);
			out += !cut;
			s->pos++;
			continue;
		}
		rc = scan_utf8(s, &n);
		if (rc)
			return rc;
		if (in)
			info_add(in, s->p + s->pos, n);
		out += cut ? 0 : n;
		s->pos += n;
	}
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* A number; with val, its value as cJSON reads it (strtod of the token). */
static int scan_number(struct scan *s, double *val)
{
	size_t start = s->pos;
	char tmp[64], *t = tmp;

	if (peek(s) == '-')
		s->pos++;
	if (peek(s) == '0') {
		s->pos++;
	} else if (is_digit(peek(s))) {
		while (is_digit(peek(s)))
			s->pos++;
	} else {
		return fail(s, start, "not valid JSON: a bad number");
	}
	if (peek(s) == '.') {
		s->pos++;
		if (!is_digit(peek(s)))
			return fail(s, start, "not valid JSON: a bad number");
		while (is_digit(peek(s)))
			s->pos++;
	}
	if (peek(s) == 'e' || peek(s) == 'E') {
		s->pos++;
		if (peek(s) == '+' || peek(s) == '-')
			s->pos++;
		if (!is_digit(peek(s)))
			return fail(s, start, "not valid JSON: a bad number");
		while (is_digit(peek(s)))
			s->pos++;
	}
	if (!val)
		return 0;
	if (s->pos - start >= sizeof(tmp)) {
		t = malloc(s->pos - start + 1);
		if (!t)
			return -ENOMEM;
	}
	memcpy(t, s->p + start, s->pos - start);
	t[s->pos - start] = '\0';
	*val = strtod(t, NULL);
	if (t != tmp)
		free(t);
	return 0;
}

static int scan_literal(struct scan *s, const char *word)
{
	size_t n = strlen(word);

	if (s->len - s->pos < n || memcmp(s->p + s->pos, word, n))
		return fail(s, s->pos, "not valid JSON: expected a value");
	s->pos += n;
	return 0;
}

/* The next decoded unit of a checked string at *pos (after its quote); 0 at its end. */
static size_t decode_next(const unsigned char *p, size_t *pos, unsigned char *b)
{
	struct jsonscan_error e;
	struct scan s = {.p = p, .len = SIZE_MAX, .pos = *pos, .e = &e};
	size_t n = 0;

	if (p[*pos] == '"')
		return 0;
	if (p[*pos] == '\\') {
		(void)scan_escape(&s, b, &n); /* checked already */
		*pos = s.pos;
		return n;
	}
	if (p[*pos] < 0x80) {
		b[0] = p[(*pos)++];
		return 1;
	}
	(void)scan_utf8(&s, &n);
	memcpy(b, p + *pos, n);
	*pos += n;
	return n;
}

/* Whether two checked strings (offsets of their quotes) decode to the same bytes. */
static bool same_string(const unsigned char *p, size_t a, size_t b)
{
	unsigned char ua[4], ub[4];
	size_t na, nb;

	a++;
	b++;
	do {
		na = decode_next(p, &a, ua);
		nb = decode_next(p, &b, ub);
		if (na != nb || memcmp(ua, ub, na))
			return false;
	} while (na);
	return true;
}

/* The decoded bytes of the checked string whose quote is at p[q] and which ends before p[end],
 * NUL-terminated, malloc'd (decoding never lengthens a string); NULL when memory runs out. */
static char *decode_dup(const unsigned char *p, size_t q, size_t end)
{
	char *d = malloc(end - q - 1);
	unsigned char b[4];
	size_t pos = q + 1, k = 0, n;

	if (!d)
		return NULL;
	while (p[pos] != '"') {
		if (p[pos] != '\\') {
			d[k++] = (char)p[pos++];
			continue;
		}
		n = decode_next(p, &pos, b);
		memcpy(d + k, b, n);
		k += n;
	}
	d[k] = '\0';
	return d;
}

static int key_cmp(const void *x, const void *y)
{
	const struct key *a = x, *b = y;

	if (a->hash != b->hash)
		return a->hash < b->hash ? -1 : 1;
	return a->start < b->start ? -1 : a->start > b->start;
}

/*
 * Keys sorted by hash, equal hashes compared in full: n log n, not n^2. The first duplicate
 * found is named (its later occurrence).
 */
static int check_dups(struct scan *s, struct keys *k)
{
	size_t dup = SIZE_MAX, end;

	/* A request's few keys: pairs of hashes, no sort (rare equal hashes go the long way). */
	if (k->n <= 16) {
		bool same = false;

		for (size_t i = 1; i < k->n && !same; i++)
			for (size_t j = 0; j < i && !same; j++)
				same = k->v[i].hash == k->v[j].hash;
		if (!same)
			return 0;
	}
	qsort(k->v, k->n, sizeof(*k->v), key_cmp);
	for (size_t i = 1; i < k->n && dup == SIZE_MAX; i++)
		for (size_t j = i; j-- > 0 && k->v[j].hash == k->v[i].hash;)
			if (same_string(s->p, k->v[j].start, k->v[i].start)) {
				dup = k->v[i].start;
				break;
			}
	if (dup == SIZE_MAX)
		return 0;
	fail(s, dup, "a duplicate key (the provider would read the last, batchfs the first)");
	for (end = dup + 1; end < s->len && s->p[end] != '"';)
		end += s->p[end] == '\\' ? 2 : 1;
	snprintf(s->e->detail, sizeof(s->e->detail), "%.*s",
		 (int)(end - dup + 1 > 100 ? 100 : end - dup + 1), (const char *)s->p + dup);
	return -EINVAL;
}

static bool head_is(const struct str_info *in, const char *word)
{
	size_t n = strlen(word);

	return in->dlen == n && !memcmp(in->head, word, n);
}

enum role {
	ROLE_OTHER,
	ROLE_ROOT, /* the line's value */
	ROLE_READ, /* params, body, request: an object batchfs reads */
	ROLE_ID,   /* the top-level custom_id */
};

static int scan_value(struct scan *s, enum role role, int depth, cJSON **out, uint64_t *size);

/*
 * A container's node for jsonscan_tree() (out set): built when shallow enough, else a
 * placeholder of its type flagged cJSON_IsReference (no children; see jsonscan.h).
 */
static int node_open(cJSON **node, cJSON *(*create)(void), bool build)
{
	*node = create();
	if (!*node)
		return -ENOMEM;
	if (!build)
		(*node)->type |= cJSON_IsReference;
	return 0;
}

static void node_close(cJSON **node, cJSON **out, bool build, uint64_t size, size_t count)
{
	if (!build) {
		(*node)->valuedouble = (double)size;
		(*node)->valueint = count > INT_MAX ? INT_MAX : (int)count;
	}
	*out = *node;
	*node = NULL;
}

static int scan_object(struct scan *s, enum role role, int depth, cJSON **out, uint64_t *size)
{
	bool read = role == ROLE_ROOT || role == ROLE_READ;
	bool build = out && depth <= TREE_DEPTH;
	uint64_t total = 2, ksize = 0, vsize = 0, own;
	size_t count = 0;
	cJSON *obj = NULL, *item;
	struct keys k;
	struct str_info in;
	int rc;

	k.v = k.small;
	k.n = 0;
	k.alloc = sizeof(k.small) / sizeof(k.small[0]);
	/* A placeholder keeps its printed size; a built node's is its members' (price.c). */
	if (out && !build && !size)
		size = &own;
	if (out) {
		rc = node_open(&obj, cJSON_CreateObject, build);
		if (rc)
			return rc;
	}
	s->pos++;
	rc = skip_ws(s);
	if (rc)
		goto out;
	if (peek(s) == '}') {
		s->pos++;
		goto done;
	}
	for (;;) {
		size_t start = s->pos, key_end;
		enum role child = ROLE_OTHER;

		if (peek(s) != '"') {
			rc = fail(s, s->pos, "not valid JSON: expected a quoted key");
			goto out;
		}
		rc = scan_string(s, read ? &in : NULL, size ? &ksize : NULL);
		if (rc)
			goto out;
		key_end = s->pos;
		if (read) {
			if (in.nul) {
				rc = fail(s, start, "\\u0000 in a key");
				goto out;
			}
			if (k.n == k.alloc) {
				size_t na = 2 * k.alloc;
				struct key *v =
					realloc(k.v == k.small ? NULL : k.v, na * sizeof(*v));

				if (!v) {
					rc = -ENOMEM;
					goto out;
				}
				if (k.v == k.small)
					memcpy(v, k.small, sizeof(k.small));
				k.v = v;
				k.alloc = na;
			}
			k.v[k.n++] = (struct key){.hash = in.hash, .start = start};
			if (role == ROLE_ROOT && head_is(&in, "custom_id"))
				child = ROLE_ID;
			else if (role == ROLE_ROOT &&
				 (head_is(&in, "params") || head_is(&in, "body") ||
				  head_is(&in, "request")))
				child = ROLE_READ;
		}
		rc = skip_ws(s);
		if (rc)
			goto out;
		if (peek(s) != ':') {
			rc = fail(s, s->pos, "not valid JSON: expected ':'");
			goto out;
		}
		s->pos++;
		rc = skip_ws(s);
		if (rc)
			goto out;
		item = NULL;
		rc = scan_value(s, child, depth + 1, build ? &item : NULL, size ? &vsize : NULL);
		if (rc)
			goto out;
		if (item) {
			/* cJSON's own way of adding a member: the node keyed, then linked in. */
			item->string = decode_dup(s->p, start, key_end);
			if (!item->string) {
				cJSON_Delete(item);
				rc = -ENOMEM;
				goto out;
			}
			cJSON_AddItemToArray(obj, item);
		}
		total += (count ? 1 : 0) + ksize + 1 + vsize;
		count++;
		rc = skip_ws(s);
		if (rc)
			goto out;
		if (peek(s) == '}') {
			s->pos++;
			break;
		}
		if (peek(s) != ',') {
			rc = fail(s, s->pos, "not valid JSON: expected ',' or '}'");
			goto out;
		}
		s->pos++;
		rc = skip_ws(s);
		if (rc)
			goto out;
	}
	if (read)
		rc = check_dups(s, &k);
done:
	if (!rc && size)
		*size = total;
	if (!rc && out)
		node_close(&obj, out, build, total, count);
out:
	if (k.v != k.small)
		free(k.v);
	cJSON_Delete(obj);
	return rc;
}

static int scan_array(struct scan *s, int depth, cJSON **out, uint64_t *size)
{
	bool build = out && depth <= TREE_DEPTH;
	uint64_t total = 2, vsize = 0, own;
	size_t count = 0;
	cJSON *arr = NULL, *item;
	int rc;

	if (out && !build && !size)
		size = &own;
	if (out) {
		rc = node_open(&arr, cJSON_CreateArray, build);
		if (rc)
			return rc;
	}
	s->pos++;
	rc = skip_ws(s);
	if (rc)
		goto out;
	if (peek(s) == ']') {
		s->pos++;
		goto done;
	}
	for (;;) {
		item = NULL;
		rc = scan_value(s, ROLE_OTHER, depth + 1, build ? &item : NULL,
				size ? &vsize : NULL);
		if (rc)
			goto out;
		if (item)
			cJSON_AddItemToArray(arr, item);
		total += (count ? 1 : 0) + vsize;
		count++;
		rc = skip_ws(s);
		if (rc)
			goto out;
		if (peek(s) == ']') {
			s->pos++;
			break;
		}
		if (peek(s) != ',') {
			rc = fail(s, s->pos, "not valid JSON: expected ',' or ']'");
			goto out;
		}
		s->pos++;
		rc = skip_ws(s);
		if (rc)
			goto out;
	}
done:
	if (size)
		*size = total;
	if (out)
		node_close(&arr, out, build, total, count);
out:
	cJSON_Delete(arr);
	return rc;
}

/* A scalar's node for jsonscan_tree(); -ENOMEM when it cannot be made. */
static int leaf(cJSON **out, cJSON *node)
{
	*out = node;
	return node ? 0 : -ENOMEM;
}

static int scan_value(struct scan *s, enum role role, int depth, cJSON **out, uint64_t *size)
{
	struct str_info in;
	size_t start = s->pos;
	uint64_t dummy;
	bool sized = size != NULL;
	double d = 0;
	int rc;

	if (!size)
		size = &dummy;
	/* Containers only, as cJSON counts: a scalar inside the deepest array is fine. */
	if ((peek(s) == '{' || peek(s) == '[') && depth > JSONSCAN_DEPTH_MAX)
		return fail(s, s->pos, "nested too deep");
	switch (peek(s)) {
	case '{':
		return scan_object(s, role, depth, out, sized ? size : NULL);
	case '[':
		return scan_array(s, depth, out, sized ? size : NULL);
	case '"':
		rc = scan_string(s, role == ROLE_ID ? &in : NULL, sized ? size : NULL);
		if (!rc && role == ROLE_ID && in.nul)
			rc = fail(s, start, "\\u0000 in custom_id");
		if (!rc && out) {
			char *str = decode_dup(s->p, start, s->pos);

			rc = leaf(out, str ? cJSON_CreateNull() : NULL);
			if (rc) {
				free(str);
				return rc;
			}
			(*out)->type = cJSON_String;
			(*out)->valuestring = str;
		}
		return rc;
	case 't':
		*size = 4;
		rc = scan_literal(s, "true");
		return !rc && out ? leaf(out, cJSON_CreateTrue()) : rc;
	case 'f':
		*size = 5;
		rc = scan_literal(s, "false");
		return !rc && out ? leaf(out, cJSON_CreateFalse()) : rc;
	case 'n':
		*size = 4;
		rc = scan_literal(s, "null");
		return !rc && out ? leaf(out, cJSON_CreateNull()) : rc;
	case -1:
		return fail(s, s->pos, "not valid JSON: the value is cut short");
	default:
		if (peek(s) != '-' && !is_digit(peek(s)))
			return fail(s, s->pos, "not valid JSON: expected a value");
		rc = scan_number(s, sized || out ? &d : NULL);
		if (rc)
			return rc;
		if (sized)
			*size = json_number_bytes(d);
		return out ? leaf(out, cJSON_CreateNumber(d)) : 0;
	}
}

static int scan_line(struct scan *s, const char *line, size_t len, cJSON **root)
{
	const char *nul = memchr(line, '\0', len);
	int rc;

	/* First, so `dd seek=` padding or a NUL in a string is named as what it is. */
	if (nul)
		return fail(s, (size_t)(nul - line), "a NUL byte");
	if (len >= 3 && !memcmp(line, "\xef\xbb\xbf", 3))
		return fail(s, 0, "a UTF-8 byte order mark (BOM): save the file without it");
	rc = skip_ws(s);
	if (!rc)
		rc = scan_value(s, ROLE_ROOT, 1, root, NULL);
	if (!rc)
		rc = skip_ws(s);
	if (!rc && s->pos < s->len)
		rc = fail(s, s->pos, "text after the JSON value (one request per line)");
	return rc;
}

int jsonscan_line(const char *line, size_t len, struct jsonscan_error *e)
{
	struct scan s = {.p = (const unsigned char *)line, .len = len, .e = e};

	return scan_line(&s, line, len, NULL);
}

int jsonscan_tree(const char *line, size_t len, cJSON **root, struct jsonscan_error *e)
{
	struct scan s = {.p = (const unsigned char *)line, .len = len, .e = e};
	int rc;

	*root = NULL;
	rc = scan_line(&s, line, len, root);
	if (rc) {
		cJSON_Delete(*root);
		*root = NULL;
	}
	return rc;
}
