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

#include "json.h"
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
}

/* Appends s to out's text (the blocks are joined as the provider returns them). */
static int text_add(struct result_info *out, const char *s)
{
	size_t n = strlen(s);
	char *t = realloc(out->text, out->text_len + n + 1);

	if (!t)
		return -ENOMEM;
	memcpy(t + out->text_len, s, n + 1);
	out->text = t;
	out->text_len += n;
	return 0;
}

static void model_set(struct result_info *out, const cJSON *o)
{
	const char *m = json_str(o, "model");

	if (m)
		snprintf(out->usage.model, sizeof(out->usage.model), "%s", m);
}

/* An Anthropic message: content[] text blocks, usage. */
static int message_parse(const cJSON *msg, struct result_info *out)
{
	const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content"), *blk;
	const cJSON *u = cJSON_GetObjectItemCaseSensitive(msg, "usage");
	int rc = 0;

	if (!cJSON_IsObject(msg))
		return 0;
	out->type = RESULT_SUCCEEDED;
	model_set(out, msg);
	cJSON_ArrayForEach(blk, content) {
		const char *type = json_str(blk, "type"), *text = json_str(blk, "text");

		if (type && !strcmp(type, "text") && text && !rc)
			rc = text_add(out, text);
	}
	out->usage.results = 1;
	out->usage.input_tokens = (uint64_t)json_count(u, "input_tokens");
	out->usage.output_tokens = (uint64_t)json_count(u, "output_tokens");
	out->usage.cache_creation_tokens = (uint64_t)json_count(u, "cache_creation_input_tokens");
	out->usage.cache_read_tokens = (uint64_t)json_count(u, "cache_read_input_tokens");
	return rc;
}

/* The line's tree: the one its delivery parsed already (not to be freed: *own false), or a
 * new parse. */
static const cJSON *line_parse(const char *line, size_t len, struct result_info *out, bool *own)
{
	const cJSON *lent = provider_results_parsed(line);

	memset(out, 0, sizeof(*out));
	*own = !lent;
	return lent ? lent : cJSON_ParseWithLength(line, len);
}

static void line_done(const cJSON *root, bool own)
{
	if (own)
		cJSON_Delete((cJSON *)root);
}

int result_parse_anthropic(const char *line, size_t len, struct result_info *out)
{
	bool own;
	const cJSON *root = line_parse(line, len, out, &own);
	const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "result");
	const char *type = json_str(res, "type");
	int rc = 0;

	if (!type)
		;
	else if (!strcmp(type, "succeeded"))
		rc = message_parse(cJSON_GetObjectItemCaseSensitive(res, "message"), out);
	else if (!strcmp(type, "errored"))
		out->type = RESULT_ERRORED;
	else if (!strcmp(type, "canceled"))
		out->type = RESULT_CANCELED;
	else if (!strcmp(type, "expired"))
		out->type = RESULT_EXPIRED;
	line_done(root, own);
	if (rc)
		result_info_release(out);
	return rc;
}

int result_parse_vertex(const char *line, size_t len, struct result_info *out)
{
	bool own;
	const cJSON *root = line_parse(line, len, out, &own);
	const cJSON *resp = cJSON_GetObjectItemCaseSensitive(root, "response");
	const cJSON *status = cJSON_GetObjectItemCaseSensitive(root, "status");
	int rc = 0;

	/* Vertex gives a failed request's error as a non-empty "status" and no response. */
	if (!root)
		;
	else if (cJSON_IsString(status) && status->valuestring[0])
		out->type = RESULT_ERRORED;
	else if (cJSON_IsObject(resp))
		rc = message_parse(resp, out);
	else
		out->type = RESULT_ERRORED;
	line_done(root, own);
	if (rc)
		result_info_release(out);
	return rc;
}

/* OpenAI's body of a 2xx answer: chat completions, or the Responses API. */
static int openai_body(const cJSON *body, struct result_info *out)
{
	const cJSON *choices = cJSON_GetObjectItemCaseSensitive(body, "choices");
	const cJSON *output = cJSON_GetObjectItemCaseSensitive(body, "output"), *o, *c;
	const cJSON *u = cJSON_GetObjectItemCaseSensitive(body, "usage"), *det;
	uint64_t in, cached;
	int rc = 0;

	out->type = RESULT_SUCCEEDED;
	model_set(out, body);
	if (cJSON_IsArray(choices)) {
		const cJSON *msg =
			cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(choices, 0), "message");
		const char *text = json_str(msg, "content");

		if (text)
			rc = text_add(out, text);
		in = (uint64_t)json_count(u, "prompt_tokens");
		out->usage.output_tokens = (uint64_t)json_count(u, "completion_tokens");
		det = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details");
	} else {
		cJSON_ArrayForEach(o, output) {
			const cJSON *content = cJSON_GetObjectItemCaseSensitive(o, "content");

			cJSON_ArrayForEach(c, content) {
				const char *type = json_str(c, "type"), *text = json_str(c, "text");

				if (type && !strcmp(type, "output_text") && text && !rc)
					rc = text_add(out, text);
			}
		}
		in = (uint64_t)json_count(u, "input_tokens");
		out->usage.output_tokens = (uint64_t)json_count(u, "output_tokens");
		det = cJSON_GetObjectItemCaseSensitive(u, "input_tokens_details");
	}
	/* Cached tokens are part of the prompt's count: priced apart, as cache reads. */
	cached = (uint64_t)json_count(det, "cached_tokens");
	if (cached > in)
		cached = in;
	out->usage.results = 1;
	out->usage.input_tokens = in - cached;
	out->usage.cache_read_tokens = cached;
	return rc;
}

int result_parse_openai(const char *line, size_t len, struct result_info *out)
{
	bool own;
	const cJSON *root = line_parse(line, len, out, &own);
	const cJSON *resp = cJSON_GetObjectItemCaseSensitive(root, "response");
	const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
	const cJSON *sc = cJSON_GetObjectItemCaseSensitive(resp, "status_code");
	const char *code = json_str(error, "code");
	int rc = 0;

	if (!root)
		;
	else if (json_is_set(root, "error"))
		/* The error file's requests that never ran carry these codes. */
		out->type = code && !strcmp(code, "batch_expired")     ? RESULT_EXPIRED
			    : code && !strcmp(code, "batch_cancelled") ? RESULT_CANCELED
								       : RESULT_ERRORED;
	else if (cJSON_IsNumber(sc) && sc->valuedouble >= 200 && sc->valuedouble < 300)
		rc = openai_body(cJSON_GetObjectItemCaseSensitive(resp, "body"), out);
	else
		out->type = RESULT_ERRORED;
	line_done(root, own);
	if (rc)
		result_info_release(out);
	return rc;
}
