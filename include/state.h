/* SPDX-License-Identifier: MIT */
/*
 * The contract's batch states and results states, their names, and the mapping of each
 * provider's own words onto them (docs/semantics.md "status"). Pure.
 */
#ifndef BATCHFS_STATE_H
#define BATCHFS_STATE_H

#include <stdbool.h>

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
};

/* "draft", "in_progress", ...; never NULL. */
const char *state_name(enum batch_state s);
/* Inverse of state_name(); returns 0 or -EINVAL. */
int state_parse(const char *name, enum batch_state *out);
const char *results_state_name(enum results_state s);
int results_state_parse(const char *name, enum results_state *out);

/* completed, canceled, expired, failed (queued is not: it is submitted later). */
bool state_is_terminal(enum batch_state s);
/* States in which requests.jsonl may still be (re)written: draft, rejected, and failed or
 * canceled (while queued) before the provider ever knew the batch (has_provider_id false). */
bool state_is_writable(enum batch_state s, bool has_provider_id);

/*
 * Provider words -> contract states. Each returns 0 and sets *out, or -EINVAL for a word it
 * does not know (the caller keeps the previous state and shows the word in provider_state).
 *  - Anthropic processing_status: in_progress, canceling, ended (ended -> canceled when a
 *    cancel was initiated, else completed).
 *  - OpenAI/Azure status, case-insensitive (Azure sends "Validating"): validating,
 *    in_progress, finalizing, cancelling (and "canceling"), completed, cancelled (and
 *    "canceled"), expired, failed.
 *  - Vertex JobState: JOB_STATE_QUEUED/PENDING -> validating, RUNNING/UPDATING -> in_progress,
 *    CANCELLING -> canceling, SUCCEEDED/PARTIALLY_SUCCEEDED -> completed, CANCELLED -> canceled,
 *    EXPIRED -> expired, FAILED -> failed, PAUSED -> in_progress.
 */
int state_from_anthropic(const char *processing_status, bool cancel_initiated,
			 enum batch_state *out);
int state_from_openai(const char *status, enum batch_state *out);
int state_from_vertex(const char *job_state, enum batch_state *out);

#endif
