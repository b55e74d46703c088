// SPDX-License-Identifier: MIT
/*
 * JSON Lines, streamed: the splitter turns chunks (a spool file, an HTTP body) into lines of
 * bounded length, passing lines wholly inside a chunk without a copy; the validator checks one
 * request line at a time against a provider's format and limits. Pure: no I/O, no globals.
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

void jsonl_validator_init(struct jsonl_validator *v, enum jsonl_format fmt,
			  const struct jsonl_limits *lim)
{
	memset(v, 0, sizeof(*v));
	v->fmt = fmt;
	if (lim)
		v->lim = *lim;
}

static const char *const openai_endpoints[] = {
	"/v1/responses",   "/v1/chat/completions",   "/v1/embeddings",	 "/v1/completions",
	"/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos",
};

bool jsonl_is_openai_endpoint(const char *url)
{
	for (size_t i = 0; i < sizeof(openai_endpoints) / sizeof(openai_endpoints[0]); i++)
		if (!strcmp(url, openai_endpoints[i]))
			return true;
	return false;
}

static bool is_blank(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t')
			return false;
	return true;
}

/* The strict scan (jsonscan.h) before cJSON, which is lenient where providers are not. */
static int check_syntax(const char *line, size_t len, long lineno, struct bfs_err *err)
{
	struct jsonscan_error e;
	int rc = jsonscan_line(line, len, &e);

	if (rc == -EINVAL)
		err_set_line(err, lineno, "line %ld, column %zu: %s%s%s", lineno, e.column, e.why,
			     e.detail[0] ? ": " : "", e.detail);
	return rc;
}

/* Anthropic's custom_id rule: ^[a-zA-Z0-9_-]{1,64}$, length checked first (as the API). */
static int check_anthropic_id(const char *id, long lineno, struct bfs_err *err)
{
	size_t n = strlen(id);

	if (n == 0 || n > 64) {
		err_set_line(err, lineno,
			     "line %ld: custom_id must be 1 to 64 characters (has %zu)", lineno, n);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-')) {
			err_set_line(err, lineno,
				     "line %ld: custom_id '%.64s' is not accepted by the provider: "
				     "must match ^[a-zA-Z0-9_-]{1,64}$",
				     lineno, id);
			return -EINVAL;
		}
	}
	return 0;
}

static int need_object(const cJSON *o, const char *what, long lineno, struct bfs_err *err)
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

static int need_string(const cJSON *o, const char *what, long lineno, struct bfs_err *err)
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

static int need_max_tokens(const cJSON *o, const char *what, long lineno, struct bfs_err *err)
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

static int need_array(const cJSON *o, const char *what, long lineno, struct bfs_err *err)
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

static const cJSON *field(const cJSON *o, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(o, key);
}

static int check_anthropic(const cJSON *root, long lineno, struct bfs_err *err)
{
	const cJSON *params = field(root, "params");
	const cJSON *it;
	int rc;

	/* The API refuses the whole batch for an unknown field beside custom_id and params. */
	cJSON_ArrayForEach(it, root) {
		if (strcmp(it->string, "custom_id") && strcmp(it->string, "params")) {
			err_set_line(err, lineno, "line %ld: unexpected field '%.64s' beside %s",
				     lineno, it->string, "custom_id and params");
			return -EINVAL;
		}
	}
	rc = need_object(params, "params", lineno, err);
	if (!rc)
		rc = need_string(field(params, "model"), "params.model", lineno, err);
	if (!rc)
		rc = need_max_tokens(field(params, "max_tokens"), "params.max_tokens", lineno, err);
	if (!rc)
		rc = need_array(field(params, "messages"), "params.messages", lineno, err);
	return rc;
}

/*
 * Vertex (spec C.6): request is a Messages body with anthropic_version "vertex-..." and no
 * model of its own; a request.model, if given, names the job's model and must be the same on
 * every line (a job has one model, spec C.3).
 */
static int check_vertex(struct jsonl_validator *v, const cJSON *root, long lineno,
			struct bfs_err *err)
{
	const cJSON *req = field(root, "request");
	const cJSON *ver, *model;
	int rc;

	rc = need_object(req, "request", lineno, err);
	if (!rc)
		rc = need_array(field(req, "messages"), "request.messages", lineno, err);
	if (!rc)
		rc = need_max_tokens(field(req, "max_tokens"), "request.max_tokens", lineno, err);
	if (rc)
		return rc;
	ver = field(req, "anthropic_version");
	rc = need_string(ver, "request.anthropic_version", lineno, err);
	if (rc)
		return rc;
	if (strncmp(ver->valuestring, "vertex-", 7)) {
		err_set_line(err, lineno,
			     "line %ld: request.anthropic_version must be a Vertex version such as "
			     "\"vertex-2023-10-16\"",
			     lineno);
		return -EINVAL;
	}
	model = field(req, "model");
	if (!model)
		return 0;
	rc = need_string(model, "request.model", lineno, err);
	if (rc)
		return rc;
	if (strlen(model->valuestring) >= sizeof(v->model)) {
		err_set_line(err, lineno, "line %ld: request.model is too long", lineno);
		return -EINVAL;
	}
	if (v->common_line && strcmp(v->model, model->valuestring)) {
		err_set_line(err, lineno,
			     "line %ld: request.model '%.100s' differs from '%s' on line %ld (a "
			     "Vertex job uses one model)",
			     lineno, model->valuestring, v->model, v->common_line);
		return -EINVAL;
	}
	if (!v->common_line) {
		snprintf(v->model, sizeof(v->model), "%s", model->valuestring);
		v->common_line = lineno;
	}
	return 0;
}

/* OpenAI and Azure: method POST, a Batch API url shared by all lines, body.model. */
static int check_openai(struct jsonl_validator *v, const cJSON *root, long lineno,
			struct bfs_err *err)
{
	const cJSON *method = field(root, "method"), *url = field(root, "url");
	const cJSON *body = field(root, "body"), *model;
	char ep[JSONL_COMMON_MAX];
	int rc;

	rc = need_string(method, "method", lineno, err);
	if (rc)
		return rc;
	if (strcmp(method->valuestring, "POST")) {
		err_set_line(err, lineno, "line %ld: method must be \"POST\"", lineno);
		return -EINVAL;
	}
	rc = need_string(url, "url", lineno, err);
	if (rc)
		return rc;
	/*
	 * Azure accepts the url with or without the /v1 prefix
	 * (https://learn.microsoft.com/azure/ai-services/openai/how-to/batch); compare in one
	 * form. OpenAI wants the line's url to equal the batch's endpoint, one of the /v1/...
	 * values (https://platform.openai.com/docs/api-reference/batch/create).
	 */
	if (v->fmt == JSONL_AZURE && strncmp(url->valuestring, "/v1/", 4) &&
	    url->valuestring[0] == '/')
		snprintf(ep, sizeof(ep), "/v1%s", url->valuestring);
	else
		snprintf(ep, sizeof(ep), "%s", url->valuestring);
	if (!jsonl_is_openai_endpoint(ep)) {
		err_set_line(err, lineno,
			     "line %ld: url '%.100s' is not an endpoint the Batch API "
			     "accepts",
			     lineno, url->valuestring);
		return -EINVAL;
	}
	if (v->endpoint[0] && strcmp(v->endpoint, ep)) {
		err_set_line(err, lineno,
			     "line %ld: url '%s' differs from '%s' on line %ld (a batch "
			     "has one endpoint)",
			     lineno, ep, v->endpoint, v->common_line);
		return -EINVAL;
	}
	rc = need_object(body, "body", lineno, err);
	if (rc)
		return rc;
	model = field(body, "model");
	rc = need_string(model, "body.model", lineno, err);
	if (rc)
		return rc;
	if (strlen(model->valuestring) >= sizeof(v->model)) {
		err_set_line(err, lineno, "line %ld: body.model is too long", lineno);
		return -EINVAL;
	}
	/* One model per input file: OpenAI's guide (A.7), Azure's deployment rule (B.4). */
	if (v->model[0] && strcmp(v->model, model->valuestring)) {
		err_set_line(err, lineno,
			     "line %ld: body.model '%.100s' differs from '%s' on line %ld "
			     "(%s)",
			     lineno, model->valuestring, v->model, v->common_line,
			     v->fmt == JSONL_AZURE ? "an Azure batch uses one deployment"
						   : "a batch uses one model");
		return -EINVAL;
	}
	if (!v->endpoint[0]) {
		snprintf(v->endpoint, sizeof(v->endpoint), "%s", ep);
		snprintf(v->model, sizeof(v->model), "%s", model->valuestring);
		v->common_line = lineno;
	}
	return 0;
}

int jsonl_validator_line(struct jsonl_validator *v, const char *line, size_t len, size_t term_len,
			 long lineno, char **custom_id, size_t *id_len, struct bfs_err *err)
{
	const cJSON *id;
	cJSON *root = NULL;
	int rc = 0;

	*custom_id = NULL;
	*id_len = 0;
	if (v->prompt) {
		rc = prompt_line(v->prompt, v->fmt, &line, &len, lineno, err);
		if (rc)
			return rc;
	}
	v->bytes += len + term_len;
	if (v->lim.max_bytes && v->bytes > v->lim.max_bytes) {
		err_set_line(err, lineno,
			     "line %ld: file exceeds the provider's limit of %" PRIu64 " bytes",
			     lineno, v->lim.max_bytes);
		return -EINVAL;
	}
	if (is_blank(line, len))
		return 0;
	rc = check_syntax(line, len, lineno, err);
	if (rc)
		return rc;
	root = cJSON_ParseWithLength(line, len);
	if (!root) {
		err_set_line(err, lineno, "line %ld: not valid JSON", lineno);
		return -EINVAL;
	}
	if (!cJSON_IsObject(root)) {
		err_set_line(err, lineno, "line %ld: not a JSON object", lineno);
		rc = -EINVAL;
		goto out;
	}
	id = field(root, "custom_id");
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
	switch (v->fmt) {
	case JSONL_ANTHROPIC:
		rc = check_anthropic_id(id->valuestring, lineno, err);
		if (!rc)
			rc = check_anthropic(root, lineno, err);
		break;
	case JSONL_VERTEX:
		rc = id->valuestring[0] ? 0 : -EINVAL;
		if (rc)
			err_set_line(err, lineno, "line %ld: custom_id must not be empty", lineno);
		else
			rc = check_vertex(v, root, lineno, err);
		break;
	case JSONL_OPENAI:
	case JSONL_AZURE:
		rc = id->valuestring[0] ? 0 : -EINVAL;
		if (rc)
			err_set_line(err, lineno, "line %ld: custom_id must not be empty", lineno);
		else
			rc = check_openai(v, root, lineno, err);
		break;
	}
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
