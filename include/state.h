/* SPDX-License-Identifier: MIT */
/*
 * The contract's batch states and results states, their names, and the lookup providers map
 * their own words onto them with (docs/semantics.md "status"). Pure.
 */
#ifndef BATCHFS_STATE_H
#define BATCHFS_STATE_H

#include <stdbool.h>
#include <stddef.h>

enum batch_state {
	BATCH_DRAFT,
	BATCH_REJECTED,
	BATCH_SUBMITTING,
	BATCH_VALIDATING,
	BATCH_IN_PROGRESS,
	BATCH_FINALIZING,
	BATCH_CANCELING,
	BATCH_COMPLETED,
	BATCH_CANCELED,
	BATCH_EXPIRED,
	BATCH_FAILED,
	/* Accepted here, waiting for a free job slot at the provider (max_concurrent_jobs):
	 * last, so the numbers of the others stay what they were. */
	BATCH_QUEUED,
};

enum results_state {
	RESULTS_PENDING,
	RESULTS_DOWNLOADING,
	RESULTS_READY,
	RESULTS_UNAVAILABLE,
	/* Like ready (the files are there), but some result lines could not be kept: the
	 * error names them. Never "ready" for a set with a line missing. */
	RESULTS_INCOMPLETE,
};

/* "draft", "in_progress", ...; never NULL. */
const char *state_name(enum batch_state s);
/* Inverse of state_name(); returns 0 or -EINVAL. */
int state_parse(const char *name, enum batch_state *out);
const char *results_state_name(enum results_state s);
int results_state_parse(const char *name, enum results_state *out);
/* ready or incomplete: the results are in the cache and shown. */
bool results_are_in(enum results_state s);

/* completed, canceled, expired, failed (queued is not: it is submitted later). */
bool state_is_terminal(enum batch_state s);
/* States in which requests.jsonl may still be (re)written: draft, rejected, and failed or
 * canceled (while queued) before the provider ever knew the batch (has_provider_id false). */
bool state_is_writable(enum batch_state s, bool has_provider_id);

/*
 * A provider's word for a batch state (its table, in src/providers/: provider_ops.state_from)
 * and the contract's state it means.
 */
struct state_word {
	const char *word;
	enum batch_state state;
};

/* Looks word up in map (exactly, or ignoring case): 0 with *out set, -EINVAL when absent or
 * NULL (the caller keeps the previous state and shows the word in provider_state). */
int state_map_word(const struct state_word *map, size_t n, const char *word, bool icase,
		   enum batch_state *out);

#endif
