/* SPDX-License-Identifier: MIT */
/*
 * What a result line says, read from each provider's own shape: its outcome (succeeded,
 * errored, canceled, expired), the assistant's text and the token usage. The ingest keeps
 * these beside the line, so text/, retry.jsonl and status.usage are served from the cache
 * without parsing a result again. Pure.
 */
#ifndef BATCHFS_RESULT_H
#define BATCHFS_RESULT_H

#include <stdbool.h>
#include <stddef.h>

#include "usage.h"

enum result_type {
	RESULT_UNKNOWN = 0, /* a line of a shape batchfs does not know: not succeeded */
	RESULT_SUCCEEDED,
	RESULT_ERRORED,
	RESULT_CANCELED,
	RESULT_EXPIRED,
};

struct result_info {
	enum result_type type;
	char *text; /* succeeded: every text block joined (malloc'd); NULL when it has none */
	size_t text_len;
	/* text_span: the text is exactly one JSON string of the line, whose escaped bytes are
	 * line[text_at, text_at + text_elen) (the store serves it from there). */
	bool text_span;
	size_t text_at, text_elen;
	struct bfs_usage usage; /* succeeded: the tokens it reports (results = 1) */
};

/* "succeeded", ...; "unknown" for RESULT_UNKNOWN. */
const char *result_type_name(enum result_type t);

/*
 * Parsers of one native result line (without terminator) into out, which the caller frees
 * with result_info_release(). 0, or -ENOMEM (a line that is not JSON is RESULT_UNKNOWN, 0;
 * so is one jsonscan_line() refuses, unless its delivery checked it: provider.h).
 *  - anthropic (and mock): {"custom_id", "result": {"type", "message": {"model", "content":
 *    [{"type": "text", "text"}...], "usage": {input_tokens, output_tokens,
 *    cache_creation_input_tokens, cache_read_input_tokens}}}}
 *  - openai (and Azure): {"custom_id", "response": {"status_code", "body": {"model",
 *    "choices": [{"message": {"content"}}] or "output": [{"content": [{"text"}]}], "usage"}},
 *    "error"}; prompt_tokens_details.cached_tokens are cache reads, taken out of the input.
 *  - vertex: {"custom_id", "request", "response": <an Anthropic message>, "status": ""};
 *    a non-empty status is the request's error.
 */
int result_parse_anthropic(const char *line, size_t len, struct result_info *out);
int result_parse_openai(const char *line, size_t len, struct result_info *out);
int result_parse_vertex(const char *line, size_t len, struct result_info *out);
void result_info_release(struct result_info *r);

#endif
