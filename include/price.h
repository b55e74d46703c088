/* SPDX-License-Identifier: MIT */
/*
 * The price table (contrib/prices.tsv, installed as share/batchfs/prices.tsv; `price_file`
 * points at another) and what it makes of tokens: the upper-bound estimate of a batch at
 * submission and the cost of the usage its results report, in USD at batch prices. A model
 * the table does not name has no price: callers show null and the reason, never a guess.
 * Pure but for price_table_load(), which reads one local file.
 */
#ifndef BATCHFS_PRICE_H
#define BATCHFS_PRICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jsonl.h"
#include "usage.h"

struct bfs_err;
struct buf;

/* Where the build installs the table (meson: datadir/batchfs). */
const char *price_default_file(void);

/* USD per million tokens, at the provider's batch price. */
struct price_row {
	char model[USAGE_MODEL_MAX];
	double input, output, cache_write, cache_read;
};

struct price_table {
	struct price_row *rows;
	size_t n;
	char path[1024];  /* the file it came from */
	char date[64];	  /* "# date:" line, "" when absent */
	char source[512]; /* first "# source:" line, "" when absent */
};

/*
 * Reads a table: lines "model<TAB>input<TAB>output<TAB>cache_write<TAB>cache_read", '#'
 * comments and blank lines. Returns 0 with *out (free with price_table_free()), or -errno
 * with the file and line in err.
 */
int price_table_load(struct price_table **out, const char *path, struct bfs_err *err);
void price_table_free(struct price_table *t);
/*
 * The row of model: an exact match, else the model with a snapshot date suffix removed
 * ("-20241022", "-2024-07-18", "@20241022"), which names the same model at the same price.
 * NULL when the table has neither.
 */
const struct price_row *price_lookup(const struct price_table *t, const char *model);
/*
 * The USD cost of usage u at the prices of row p. input_tokens must exclude the cache reads
 * and writes counted apart (Anthropic reports it so; OpenAI includes cached_tokens in
 * prompt_tokens: the ingest subtracts them).
 */
double price_cost(const struct price_row *p, const struct bfs_usage *u);

/*
 * Upper bounds of a batch's tokens, per model, gathered one request line at a time
 * (bounded: one entry per distinct model, at most PRICE_MODELS_MAX).
 */
#define PRICE_MODELS_MAX 24

struct price_estimate {
	struct bfs_usage m[PRICE_MODELS_MAX]; /* input/output_tokens are upper bounds */
	size_t n;
	bool overflow;	    /* more models than fit: no estimate */
	uint64_t unbounded; /* requests with no output cap: no estimate */
};

/*
 * Adds one native request line of format fmt (its request_key names the request): its model (default_model when the line has
 * none, as Vertex), input tokens bounded by the bytes of its messages, system and tools as
 * JSON (a token is at least one byte for the Claude and GPT tokenizers), output at its
 * max_tokens (max_completion_tokens). A line that is not a request adds nothing.
 */
void price_estimate_line(struct price_estimate *e, const struct jsonl_format *fmt, const char *line,
			 size_t len, const char *default_model);
/* The same, from the line's parsed object (the validator's: no second parse). */
struct cJSON;
void price_estimate_object(struct price_estimate *e, const struct jsonl_format *fmt,
			   const struct cJSON *root, const char *default_model);
/*
 * Prices e with t (NULL: the table could not be read, load_err says why) into the JSON kept
 * with the batch (status.cost without "actual"). *usd is the total, or -1 when some model has
 * no price (the reason is in the JSON and in why); both are set even when the JSON does not
 * fit out's cap. Returns 0, or -EFBIG when out is full or memory runs out.
 */
int price_estimate_json(const struct price_estimate *e, const struct price_table *t,
			const char *load_err, struct buf *out, double *usd, char *why,
			size_t why_size);
/*
 * status.cost: the stored estimate (stored, "" when none) with "actual" added, the cost of
 * the n usage sums u at the prices the estimate recorded (usage == NULL: results not in yet,
 * null). Appends one JSON value ("null" when there is neither). Returns 0 or -errno.
 */
int price_status_json(const char *stored, const struct bfs_usage *u, size_t n, bool have_usage,
		      struct buf *out);

#endif
