// SPDX-License-Identifier: MIT
/*
 * Result lines of each provider read for their outcome, text and usage (include/result.h).
 * A shape this code does not know is RESULT_UNKNOWN, never a guess at success: a retry of
 * such a line is safe, a text file made up from it would not be.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonscan.h"
#include "jsonview.h"
#include "provider.h"
#include "result.h"

const char *result_type_name(enum result_type t)
{
	switch (t) {
	case RESULT_SUCCEEDED:
		return "succeeded";
	case RESULT_ERRORED:
		return "errored";
	case RESULT_CANCELED:
		return "canceled";
	case RESULT_EXPIRED:
		return "expired";
	default:
		return "unknown";
	}
}

void result_info_release(struct result_info *r)
{
	if (!r)
		return;
	free(r->text);
	r->text = NULL;
	r->text_len = 0;
	r->text_span = false;
}

/*
 * Appends the string s to out's text (the blocks are joined as the provider returns them),
 * read as cJSON's C string would be: up to a \u0000. The first block's place in the line is
 * kept (text_at, text_elen): a text that is that one string is served from the line itself.
 */
static int text_add(struct result_info *out, const char *line, struct jv s)
{
	size_t elen, n;
	const char *raw = jv_str_raw(s, &elen);
	bool first = !out->text;
	char *t = realloc(out->text, out->text_len + elen + 1);

	if (!t)
		return -ENOMEM;
	out->text = t;
	n = jv_unescape(raw, elen, t + out->text_len);
	t[out->text_len + n] = '\0';
	out->text_span = first && strlen(t) == n;
	out->text_at = (size_t)(raw - line);
	out->text_elen = elen;
	out->text_len += strlen(t + out->text_len);
	return 0;
}

static void model_set(struct result_info *out, struct jv o)
{
	(void)jv_str_copy(jv_get(o, "model"), out->usage.model, sizeof(out->usage.model));
}

/* An Anthropic message: content[] text blocks, usage. */
static int message_parse(const char *line, struct jv msg, struct result_info *out)
{
	struct jv content = jv_get(msg, "content"), blk;
	struct jv u = jv_get(msg, "usage");
	size_t pos = 0;
	int rc = 0;

	if (!jv_is_object(msg))
		return 0;
	out->type = RESULT_SUCCEEDED;
	model_set(out, msg);
	while (jv_next(content, &pos, &blk)) {
		struct jv text = jv_get(blk, "text");

		if (jv_str_is(jv_get(blk, "type"), "text") && jv_is_string(text) && !rc)
			rc = text_add(out, line, text);
	}
	out->usage.results = 1;
	out->usage.input_tokens = (uint64_t)jv_count(u, "input_tokens");
	out->usage.output_tokens = (uint64_t)jv_count(u, "output_tokens");
	out->usage.cache_creation_tokens = (uint64_t)jv_count(u, "cache_creation_input_tokens");
	out->usage.cache_read_tokens = (uint64_t)jv_count(u, "cache_read_input_tokens");
	return rc;
}

/*
 * The line's value, read in place: a line its delivery checked already is not scanned
 * again; any other is (the reading is defined on checked JSON only). *root absent: not JSON.
 */
static int line_view(const char *line, size_t len, struct result_info *out, struct jv *root)
{
	struct jsonscan_error e;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	root->p = NULL;
	root->len = 0;
	if (!provider_results_checked(line))
		rc = jsonscan_line(line, len, &e);
	if (!rc)
		*root = jv_line(line, len);
	return rc == -ENOMEM ? rc : 0;
}

/* The outcome is known; a failure frees what was read. */
static int line_done(struct result_info *out, int rc)
{
	if (rc)
		result_info_release(out);
	if (!out->text)
		out->text_span = false;
	return rc;
}

int result_parse_anthropic(const char *line, size_t len, struct result_info *out)
{
	struct jv root, res, type;
	int rc = line_view(line, len, out, &root);

	if (rc)
		return rc;
	res = jv_get(root, "result");
	type = jv_get(res, "type");
	if (!jv_is_string(type))
		;
	else if (jv_str_is(type, "succeeded"))
		rc = message_parse(line, jv_get(res, "message"), out);
	else if (jv_str_is(type, "errored"))
		out->type = RESULT_ERRORED;
	else if (jv_str_is(type, "canceled"))
		out->type = RESULT_CANCELED;
	else if (jv_str_is(type, "expired"))
		out->type = RESULT_EXPIRED;
	return line_done(out, rc);
}

int result_parse_vertex(const char *line, size_t len, struct result_info *out)
{
	struct jv root, resp, status;
	int rc = line_view(line, len, out, &root);

	if (rc)
		return rc;
	resp = jv_get(root, "response");
	status = jv_get(root, "status");
	/* Vertex gives a failed request's error as a non-empty "status" and no response. */
	if (!root.p)
		;
	else if (jv_str_nonempty(status))
		out->type = RESULT_ERRORED;
	else if (jv_is_object(resp))
		rc = message_parse(line, resp, out);
	else
		out->type = RESULT_ERRORED;
	return line_done(out, rc);
}

/* OpenAI's body of a 2xx answer: chat completions, or the Responses API. */
static int openai_body(const char *line, struct jv body, struct result_info *out)
{
	struct jv choices = jv_get(body, "choices"), output = jv_get(body, "output"), o, c;
	struct jv u = jv_get(body, "usage"), det;
	uint64_t in, cached;
	int rc = 0;

	out->type = RESULT_SUCCEEDED;
	model_set(out, body);
	if (jv_is_array(choices)) {
		size_t pos = 0;
		struct jv first = {NULL, 0}, text;

		(void)jv_next(choices, &pos, &first);
		text = jv_get(jv_get(first, "message"), "content");
		if (jv_is_string(text))
			rc = text_add(out, line, text);
		in = (uint64_t)jv_count(u, "prompt_tokens");
		out->usage.output_tokens = (uint64_t)jv_count(u, "completion_tokens");
		det = jv_get(u, "prompt_tokens_details");
	} else {
		size_t opos = 0;

		while (jv_next(output, &opos, &o)) {
			struct jv content = jv_get(o, "content");
			size_t cpos = 0;

			while (jv_next(content, &cpos, &c)) {
				struct jv text = jv_get(c, "text");

				if (jv_str_is(jv_get(c, "type"), "output_text") &&
				    jv_is_string(text) && !rc)
					rc = text_add(out, line, text);
			}
		}
		in = (uint64_t)jv_count(u, "input_tokens");
		out->usage.output_tokens = (uint64_t)jv_count(u, "output_tokens");
		det = jv_get(u, "input_tokens_details");
	}
	/* Cached tokens are part of the prompt's count: priced apart, as cache reads. */
	cached = (uint64_t)jv_count(det, "cached_tokens");
	if (cached > in)
		cached = in;
	out->usage.results = 1;
	out->usage.input_tokens = in - cached;
	out->usage.cache_read_tokens = cached;
	return rc;
}

int result_parse_openai(const char *line, size_t len, struct result_info *out)
{
	struct jv root, resp, error, sc, code;
	double d;
	int rc = line_view(line, len, out, &root);

	if (rc)
		return rc;
	resp = jv_get(root, "response");
	error = jv_get(root, "error");
	sc = jv_get(resp, "status_code");
	code = jv_get(error, "code");
	if (!root.p)
		;
	else if (jv_is_set(error))
		/* The error file's requests that never ran carry these codes. */
		out->type = jv_str_is(code, "batch_expired")	 ? RESULT_EXPIRED
			    : jv_str_is(code, "batch_cancelled") ? RESULT_CANCELED
								 : RESULT_ERRORED;
	else if (jv_number(sc, &d) && d >= 200 && d < 300)
		rc = openai_body(line, jv_get(resp, "body"), out);
	else
		out->type = RESULT_ERRORED;
	return line_done(out, rc);
}
