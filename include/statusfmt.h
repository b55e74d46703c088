/* SPDX-License-Identifier: MIT */
/*
 * Renders a batch's status file (docs/semantics.md "status"): one JSON object and a newline. Pure.
 */
#ifndef BATCHFS_STATUSFMT_H
#define BATCHFS_STATUSFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "usage.h"

struct buf;
struct store_batch;
struct store_part;

#define STATUSFMT_MODELS_MAX 24

enum statusfmt_retry {
	STATUSFMT_RETRY_NOT_YET, /* the batch has not ended: "retry": null */
	STATUSFMT_RETRY_THERE,	 /* retry.jsonl exists with retry_lines lines */
	STATUSFMT_RETRY_ABSENT,	 /* it cannot exist: retry_why says why */
};

/* What status shows beyond the batch's row (read from the store by the caller). */
struct statusfmt_extra {
	bool done;				      /* wait would return now */
	struct bfs_usage usage[STATUSFMT_MODELS_MAX]; /* succeeded results' sums, per model */
	size_t nusage;
	bool have_usage;       /* the results are in and usage was kept for all */
	const char *usage_why; /* results in but no usage: why (else NULL) */
	enum statusfmt_retry retry;
	int64_t retry_lines;
	const char *retry_why;
};

/*
 * Appends the status JSON of b (provider is the remote's provider name) to out, with a
 * "parts" array of its n parts (in file order) when it has any. 0 or -errno.
 */
int statusfmt_batch(const struct store_batch *b, const struct store_part *parts, size_t n,
		    const char *provider, const struct statusfmt_extra *x, struct buf *out);
/* The id file: one provider id per line, in part order (parts not yet created: none). */
int statusfmt_ids(const struct store_part *parts, size_t n, struct buf *out);

#endif
