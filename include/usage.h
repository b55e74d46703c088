/* SPDX-License-Identifier: MIT */
/*
 * Token usage of a batch's succeeded results, summed per model: what the results report
 * (status.usage) and what prices turn into a cost (status.cost). Shared by the ingest, which
 * fills it from each provider's result lines, the store, which keeps it per part, and the
 * price table, which prices it.
 */
#ifndef BATCHFS_USAGE_H
#define BATCHFS_USAGE_H

#include <stdint.h>

#define USAGE_MODEL_MAX 128

struct bfs_usage {
	char model[USAGE_MODEL_MAX]; /* as the result reports it; "" when it does not */
	uint64_t results;	     /* succeeded results counted in the sums */
	uint64_t input_tokens;
	uint64_t output_tokens;
	uint64_t cache_creation_tokens; /* Anthropic cache writes; 0 elsewhere */
	uint64_t cache_read_tokens;	/* cached input (Anthropic reads, OpenAI cached_tokens) */
};

#endif
