// SPDX-License-Identifier: MIT
/*
 * JSON Lines, streamed: the splitter turns chunks (a spool file, an HTTP body) into lines of
 * bounded length, passing lines wholly inside a chunk without a copy; the validator checks one
 * request line at a time: strict JSON, an object, a custom_id string and the limits here, the
 * rest by the provider's own rules (provider_ops.validate_line, in src/providers/), with the
 * field checks below they share. Pure: no I/O, no globals.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jsonl.h"
#include "jsonscan.h"
#include "prompt.h"

void jsonl_splitter_init(struct jsonl_splitter *s, size_t max_line, jsonl_line_fn fn, void *ctx)
{
	/* One byte more than a line may hold: the '\r' of a CRLF waits here for its '\n'. */
	buf_init(&s->partial, max_line + 1);
	s->lineno = 0;
	s->cr_pending = false;
	s->term = 0;
	s->fn = fn;
	s->ctx = ctx;
	s->skip_long = s->skipping = false;
	s->skipped = 0;
}

void jsonl_splitter_release(struct jsonl_splitter *s)
{
	buf_release(&s->partial);
}

/* With skip_long: the line so far is dropped and the rest of it will be skipped. */
static int start_skip(struct jsonl_splitter *s, size_t more)
{
	s->skipping = true;
	s->skipped = s->partial.len + more;
	buf_reset(&s->partial);
	return 0;
}

static int too_long(struct jsonl_splitter *s, struct bfs_err *err)
{
	err_set_line(err, s->lineno + 1, "line %ld: longer than %zu bytes", s->lineno + 1,
		     s->partial.cap - 1);
	return -E2BIG;
}

/* Delivers one line (terminator removed), dropping the '\r' of a CRLF, checking the cap. */
static int deliver(struct jsonl_splitter *s, const char *line, size_t len, bool had_newline,
		   struct bfs_err *err)
{
	s->term = had_newline ? 1 : 0;
	if (had_newline && len && line[len - 1] == '\r') {
		len--;
		s->term = 2;
	}
	if (len > s->partial.cap - 1)
		return too_long(s, err);
	s->lineno++;
	return s->fn(s->ctx, line, len, s->lineno);
}

int jsonl_splitter_feed(struct jsonl_splitter *s, const char *data, size_t n, struct bfs_err *err)
{
	size_t pos = 0;
	int rc;

	while (pos < n) {
		const char *nl = memchr(data + pos, '\n', n - pos);
		size_t len = nl ? (size_t)(nl - (data + pos)) : n - pos;

		if (s->skipping) {
			/* A line over the cap costs no memory, whatever its length. */
			s->skipped += len;
			if (!nl)
				return 0;
			s->skipping = false;
			s->lineno++;
			rc = s->fn(s->ctx, NULL, s->skipped, s->lineno);
			if (rc)
				return rc;
			pos += len + 1;
			continue;
		}
		if (!nl) {
			/* An unterminated tail waits in partial, bounded by the cap. */
			rc = buf_add(&s->partial, data + pos, len);
			if (rc == -EFBIG && s->skip_long)
				return start_skip(s, len);
			return rc == -EFBIG ? too_long(s, err) : rc;
		}
		if (s->partial.len || (s->skip_long && len > s->partial.cap - 1)) {
			rc = buf_add(&s->partial, data + pos, len);
			if (rc == -EFBIG && s->skip_long) {
				s->lineno++;
				rc = s->fn(s->ctx, NULL, s->partial.len + len, s->lineno);
				buf_reset(&s->partial);
				if (rc)
					return rc;
				pos += len + 1;
				continue;
			}
			if (rc)
				return rc == -EFBIG ? too_long(s, err) : rc;
			rc = deliver(s, s->partial.data, s->partial.len, true, err);
			buf_reset(&s->partial);
		} else {
			/* The whole line is in this chunk: no copy. */
			rc = deliver(s, data + pos, len, true, err);
		}
		if (rc)
			return rc;
		pos += len + 1;
	}
	return 0;
}

int jsonl_splitter_finish(struct jsonl_splitter *s, struct bfs_err *err)
{
	int rc;

	if (s->skipping) {
		s->skipping = false;
		s->lineno++;
		return s->fn(s->ctx, NULL, s->skipped, s->lineno);
	}
	if (!s->partial.len)
		return 0;
	rc = deliver(s, s->partial.data, s->partial.len, false, err);
	buf_reset(&s->partial);
	return rc;
}

void jsonl_validator_init(struct jsonl_validator *v, const struct jsonl_format *fmt,
			  jsonl_check_fn check, const struct jsonl_limits *lim)
{
	memset(v, 0, sizeof(*v));
	v->fmt = fmt;
	v->check = check;
	if (lim)
		v->lim = *lim;
}

static bool is_blank(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t')
			return false;
	return true;
}

/*
 * The strict scan (jsonscan.h), which also builds the shallow tree the checks read: cJSON is
 * lenient where providers are not, and a full parse of every line would copy every message.
 */
static int parse_line(const char *line, size_t len, long lineno, cJSON **root, struct bfs_err *err)
{
	struct jsonscan_error e;
	int rc = jsonscan_tree(line, len, root, &e);

	if (rc == -EINVAL)
		err_set_line(err, lineno, "line %ld, column %zu: %s%s%s", lineno, e.column, e.why,
			     e.detail[0] ? ": " : "", e.detail);
	return rc;
}

int jsonl_need_object(const cJSON *o, const char *what, long lineno, struct bfs_err *err)
{
	if (!o) {
		err_set_line(err, lineno, "line %ld: %s is missing", lineno, what);
		return -EINVAL;
	}
	if (!cJSON_IsObject(o)) {
		err_set_line(err, lineno, "line %ld: %s must be an object", lineno, what);
		return -EINVAL;
	}
	return 0;
}

int jsonl_need_string(const cJSON *o, const char *what, long lineno, struct bfs_err *err)
{
	if (!o) {
		err_set_line(err, lineno, "line %ld: %s is missing", lineno, what);
		return -EINVAL;
	}
	if (!cJSON_IsString(o) || !o->valuestring[0]) {
		err_set_line(err, lineno, "line %ld: %s must be a non-empty string", lineno, what);
		return -EINVAL;
	}
	return 0;
}

int jsonl_need_max_tokens(const cJSON *o, const char *what, long lineno, struct bfs_err *err)
{
	if (!o) {
		err_set_line(err, lineno, "line %ld: %s is missing", lineno, what);
		return -EINVAL;
	}
	/* Range first: casting 1e300 to an integer is undefined behaviour. */
	if (!cJSON_IsNumber(o) || !(o->valuedouble >= 1 && o->valuedouble < 9007199254740992.0) ||
	    o->valuedouble != (double)(int64_t)o->valuedouble) {
		err_set_line(err, lineno, "line %ld: %s must be an integer >= 1", lineno, what);
		return -EINVAL;
	}
	return 0;
}

int jsonl_need_array(const cJSON *o, const char *what, long lineno, struct bfs_err *err)
{
	if (!o) {
		err_set_line(err, lineno, "line %ld: %s is missing", lineno, what);
		return -EINVAL;
	}
	if (!cJSON_IsArray(o)) {
		err_set_line(err, lineno, "line %ld: %s must be an array", lineno, what);
		return -EINVAL;
	}
	return 0;
}

int jsonl_need_id(const char *id, long lineno, struct bfs_err *err)
{
	if (id[0])
		return 0;
	err_set_line(err, lineno, "line %ld: custom_id must not be empty", lineno);
	return -EINVAL;
}

int jsonl_validator_line(struct jsonl_validator *v, const char *line, size_t len, size_t term_len,
			 long lineno, char **custom_id, size_t *id_len, struct bfs_err *err)
{
	const cJSON *id;
	cJSON *root = NULL;
	int rc = 0;

	*custom_id = NULL;
	*id_len = 0;
	if (v->prompt)
		v->prompt->translated = false; /* read by the caller after each line */
	if (is_blank(line, len))
		goto count;
	rc = parse_line(line, len, lineno, &root, err);
	if (rc)
		goto out;
	/* A prompt line (prompt.h) is checked as the native line it translates into. */
	if (v->prompt && cJSON_IsObject(root) && cJSON_GetObjectItemCaseSensitive(root, "prompt")) {
		rc = prompt_line(v->prompt, v->fmt, &line, &len, lineno, err);
		if (!rc && v->prompt->translated) {
			cJSON_Delete(root);
			rc = parse_line(line, len, lineno, &root, err);
		}
		if (rc)
			goto out;
	}
count:
	v->bytes += len + term_len;
	if (v->lim.max_bytes && v->bytes > v->lim.max_bytes) {
		err_set_line(err, lineno,
			     "line %ld: file exceeds the provider's limit of %" PRIu64 " bytes",
			     lineno, v->lim.max_bytes);
		rc = -EINVAL;
		goto out;
	}
	if (!root)
		return 0; /* a blank line */
	if (!cJSON_IsObject(root)) {
		err_set_line(err, lineno, "line %ld: not a JSON object", lineno);
		rc = -EINVAL;
		goto out;
	}
	id = cJSON_GetObjectItemCaseSensitive(root, "custom_id");
	if (!id) {
		err_set_line(err, lineno, "line %ld: custom_id is missing", lineno);
		rc = -EINVAL;
		goto out;
	}
	if (!cJSON_IsString(id)) {
		err_set_line(err, lineno, "line %ld: custom_id must be a string", lineno);
		rc = -EINVAL;
		goto out;
	}
	/* The provider's rules: its custom_id alphabet, its fields, the values lines share. */
	if (v->check)
		rc = v->check(v, root, id->valuestring, lineno, err);
	if (rc)
		goto out;
	if (v->lim.max_requests && v->count + 1 > v->lim.max_requests) {
		err_set_line(err, lineno,
			     "line %ld: too many requests: the provider accepts at most %" PRIu64
			     " per batch",
			     lineno, v->lim.max_requests);
		rc = -EINVAL;
		goto out;
	}
	*id_len = strlen(id->valuestring);
	*custom_id = strdup(id->valuestring);
	if (!*custom_id) {
		rc = -ENOMEM;
		goto out;
	}
	v->count++;
	if (v->on_request)
		v->on_request(v->on_request_ctx, root);
out:
	cJSON_Delete(root);
	return rc;
}

int jsonl_validator_finish(struct jsonl_validator *v, struct bfs_err *err)
{
	if (v->count == 0) {
		err_set_line(err, 1, "line 1: no requests: the file has only blank lines");
		return -ENODATA;
	}
	return 0;
}
