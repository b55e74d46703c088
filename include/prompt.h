/* SPDX-License-Identifier: MIT */
/*
 * Simple prompt lines (docs/semantics.md "Prompt lines"): {"custom_id", "prompt"} with an
 * optional "system", "model", "max_tokens" and "temperature", the last three defaulting to
 * the remote's config keys. At the commit point each is translated into the remote's native
 * request line, which is then validated and sent like any native line; the user's file is
 * left as written. Pure: no I/O, no global state.
 */
#ifndef BATCHFS_PROMPT_H
#define BATCHFS_PROMPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "jsonl.h"

struct bfs_err;

/* max_tokens of a prompt line when neither the line nor the remote names one. */
#define PROMPT_MAX_TOKENS_DEFAULT 1024

/*
 * A prompt line's fields with the remote's defaults applied: what a format's prompt_native
 * (jsonl.h) builds the native line from.
 */
struct prompt_request {
	const char *custom_id;
	const char *model;  /* the line's model, else the remote's; never NULL */
	bool model_on_line; /* the line named it (Vertex: else the job names the model) */
	double max_tokens;  /* >= 1 */
	double temperature; /* < 0: none given */
	const char *system; /* NULL: none */
	const char *prompt;
};

struct prompt_ctx {
	/* Set by the caller: the remote's defaults. */
	const char *remote; /* its name, for messages */
	const char *model;  /* "model" key; NULL or "" when absent */
	int64_t max_tokens; /* "max_tokens" key; 0 when absent */
	double temperature; /* "temperature" key; < 0 when absent */
	/* Set by prompt_line(). */
	struct buf native; /* the translation of the last prompt line */
	bool translated;   /* the last line was a prompt line */
	uint64_t nprompts; /* prompt lines translated so far */
};

/* Sets up ctx with no defaults; the caller then fills remote/model/max_tokens/temperature. */
void prompt_ctx_init(struct prompt_ctx *ctx);
void prompt_ctx_release(struct prompt_ctx *ctx);
/*
 * Adds "messages" to req as the Messages and Chat Completions APIs take it: the user's prompt,
 * after the system prompt when system_in_messages (Chat Completions' convention; the Messages
 * API takes "system" beside the messages). False when memory runs out (req is then only fit
 * for cJSON_Delete of its root). For the formats' prompt_native.
 */
bool prompt_add_messages(struct cJSON *req, const struct prompt_request *r,
			 bool system_in_messages);
/*
 * Looks at one line of a requests file of format fmt (NULL: no prompt lines). A prompt line is translated into
 * ctx->native and *line and *len are pointed at it (valid until the next call); any other line is
 * left alone for the native validator. Returns 0, or -EINVAL with err naming lineno (a prompt
 * line with a bad field, or no model anywhere), or -ENOMEM.
 */
int prompt_line(struct prompt_ctx *ctx, const struct jsonl_format *fmt, const char **line,
		size_t *len, long lineno, struct bfs_err *err);

#endif
