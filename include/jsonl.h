/* SPDX-License-Identifier: MIT */
/*
 * JSON Lines, streamed: a splitter that turns chunks of bytes (a spool file, an HTTP body)
 * into lines of any length up to a cap, and the validator of request lines (docs/semantics.md
 * "The commit point"): the provider-agnostic checks here, the provider's own rules through a
 * jsonl_check_fn each provider gives (provider_ops.validate_line). Pure: no I/O, no global
 * state.
 */
#ifndef BATCHFS_JSONL_H
#define BATCHFS_JSONL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct cJSON;
struct bfs_err;
struct prompt_ctx;

/*
 * Called for each line with its 1-based number, the terminator ("\n" or "\r\n") removed.
 * Blank lines (empty or only spaces/tabs) are passed too, flagged by the validator, not here.
 * `line` is valid only during the call. Return 0 to go on, a -errno to stop feeding (the
 * splitter returns it). With skip_long set, a line over the cap is skipped unbuffered and
 * reported once its end is seen: line NULL, len its length.
 */
typedef int (*jsonl_line_fn)(void *ctx, const char *line, size_t len, long lineno);

struct jsonl_splitter {
	struct buf partial; /* bytes of a line not yet terminated; capped at max_line */
	long lineno;	    /* number of the last line delivered */
	bool cr_pending;    /* chunk ended in '\r' (it may be half of a CRLF) */
	size_t term;	    /* during fn: the terminator length of the line (0, 1 or 2) */
	jsonl_line_fn fn;
	void *ctx;
	bool skip_long; /* a line over the cap is passed as NULL, not an error (set after init) */
	bool skipping;	/* inside such a line */
	size_t skipped; /* its bytes so far */
};

/* Sets up a splitter delivering lines of at most max_line bytes to fn(ctx, ...). */
void jsonl_splitter_init(struct jsonl_splitter *s, size_t max_line, jsonl_line_fn fn, void *ctx);
/*
 * Feeds n bytes. A CRLF may be split across chunks; a lone '\r' not followed by '\n' stays
 * part of the line. Lines wholly inside the chunk are passed without copying. Returns 0,
 * -E2BIG when a line exceeds max_line (err names the line), or the callback's -errno.
 */
int jsonl_splitter_feed(struct jsonl_splitter *s, const char *data, size_t n, struct bfs_err *err);
/* Delivers a last line that lacks its newline. Returns as jsonl_splitter_feed(). */
int jsonl_splitter_finish(struct jsonl_splitter *s, struct bfs_err *err);
/* Frees the partial-line storage. Restart with jsonl_splitter_init(). */
void jsonl_splitter_release(struct jsonl_splitter *s);

struct prompt_request;

/*
 * A provider's request-line format (provider_ops.format), as far as the provider-agnostic
 * modules need to know it: the estimate (price.c) finds a line's request parameters, and a
 * prompt line (prompt.c) becomes a native line. The line rules themselves are the provider's
 * validate_line. A provider with a new format defines one of these in its own file
 * (docs/internals/new-provider.md). Pure data and pure functions.
 */
struct jsonl_format {
	const char *name;	 /* "anthropic", "openai", ...: for messages and tests */
	const char *request_key; /* the member holding the request ("params", "body", ...) */
	double max_temperature;	 /* the largest temperature its models take */
	/* The native line of a prompt line (prompt.h), keys in a fixed order, so the same file
	 * under the same config gives the same bytes. NULL when memory runs out. Pure. */
	struct cJSON *(*prompt_native)(const struct prompt_request *r);
};

struct jsonl_limits {
	uint64_t max_requests; /* 0 = no limit */
	uint64_t max_bytes;    /* of the whole file, blank lines included; 0 = no limit */
	/* The longest line (one request) the provider takes; 0 = max_bytes. A line is held
	 * whole while it is checked: this keeps that bounded where max_bytes is a gigabyte. */
	uint64_t max_line;
};

#define JSONL_COMMON_MAX 256

struct jsonl_validator;

/*
 * A provider's rules for one request line (provider_ops.validate_line): root is a JSON
 * object whose custom_id is a string (custom_id, any bytes but NUL), checked strictly already.
 * It checks the custom_id's alphabet, the format's fields and the values every line must
 * share (v->endpoint, v->model, v->common_line). Pure. 0, or -EINVAL with err set to "line N:
 * ..." (err->line = lineno).
 */
typedef int (*jsonl_check_fn)(struct jsonl_validator *v, const struct cJSON *root,
			      const char *custom_id, long lineno, struct bfs_err *err);

struct jsonl_validator {
	const struct jsonl_format *fmt; /* may be NULL: no prompt lines, no estimate */
	jsonl_check_fn check;		/* the provider's rules; NULL: the agnostic checks only */
	struct jsonl_limits lim;
	uint64_t count; /* requests (non-blank lines) accepted so far */
	uint64_t bytes; /* bytes seen so far, terminators included */
	/*
	 * The values every line must share: OpenAI/Azure "url" (the endpoint; Azure's is
	 * normalised to "/v1/...") and body.model (Azure: the deployment); "" until the first
	 * request line.
	 */
	char endpoint[JSONL_COMMON_MAX];
	char model[JSONL_COMMON_MAX];
	long common_line; /* line that set endpoint/model */
	/*
	 * Set by the caller to accept prompt lines (prompt.h): each is checked as the native
	 * line it translates into, and the limits count the translation. NULL: native only.
	 */
	struct prompt_ctx *prompt;
	/*
	 * Called by the caller's wish with each accepted request line's parsed object, so
	 * per-line work (the cost estimate) needs no second parse. NULL: none.
	 */
	void (*on_request)(void *ctx, const struct cJSON *root);
	void *on_request_ctx;
};

/* Sets up a validator for one file: fmt for prompt lines (prompt.h), check for the rest. */
void jsonl_validator_init(struct jsonl_validator *v, const struct jsonl_format *fmt,
			  jsonl_check_fn check, const struct jsonl_limits *lim);
/*
 * Checks one line of the file (terminator length term_len, 0 for a last line without one, so
 * byte limits count exactly). Blank lines return 0 with *custom_id NULL. A valid request line
 * returns 0 with *custom_id a malloc'd copy (the caller frees it; it may hold any bytes but
 * NUL) and *id_len its length. Otherwise returns -EINVAL (or -ENOMEM) and err says why, with
 * err->line = lineno. Uniqueness of custom_id is the caller's job (it needs storage).
 * Reasons, in order: too many bytes; not strict JSON (jsonscan_line(): the message gives the
 * byte column too); not an object; custom_id missing/not a
 * string/refused by the provider; format fields missing or wrong-typed; mixed endpoint/model;
 * too many requests.
 */
int jsonl_validator_line(struct jsonl_validator *v, const char *line, size_t len, size_t term_len,
			 long lineno, char **custom_id, size_t *id_len, struct bfs_err *err);
/* Whole-file checks after the last line. Returns 0, or -ENODATA when no request was seen. */
int jsonl_validator_finish(struct jsonl_validator *v, struct bfs_err *err);

/*
 * Field checks the providers' rules share, each with its fixed message ("line N: WHAT is
 * missing", "... must be an object", "... must be a non-empty string", "... must be an
 * integer >= 1", "... must be an array", "custom_id must not be empty"). o may be NULL
 * (absent). 0 or -EINVAL with err set.
 */
int jsonl_need_object(const struct cJSON *o, const char *what, long lineno, struct bfs_err *err);
int jsonl_need_string(const struct cJSON *o, const char *what, long lineno, struct bfs_err *err);
int jsonl_need_max_tokens(const struct cJSON *o, const char *what, long lineno,
			  struct bfs_err *err);
int jsonl_need_array(const struct cJSON *o, const char *what, long lineno, struct bfs_err *err);
int jsonl_need_id(const char *id, long lineno, struct bfs_err *err);

#endif
