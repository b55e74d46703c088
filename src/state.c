// SPDX-License-Identifier: MIT
/*
 * Batch and results states: names, parsing, and the mapping of each provider's own words onto
 * the contract's states. Pure: no I/O, no allocation.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "state.h"

static const char *const batch_names[] = {
	[BATCH_DRAFT] = "draft",
	[BATCH_REJECTED] = "rejected",
	[BATCH_SUBMITTING] = "submitting",
	[BATCH_VALIDATING] = "validating",
	[BATCH_IN_PROGRESS] = "in_progress",
	[BATCH_FINALIZING] = "finalizing",
	[BATCH_CANCELING] = "canceling",
	[BATCH_COMPLETED] = "completed",
	[BATCH_CANCELED] = "canceled",
	[BATCH_EXPIRED] = "expired",
	[BATCH_FAILED] = "failed",
	[BATCH_QUEUED] = "queued",
};

static const char *const results_names[] = {
	[RESULTS_PENDING] = "pending",
	[RESULTS_DOWNLOADING] = "downloading",
	[RESULTS_READY] = "ready",
	[RESULTS_UNAVAILABLE] = "unavailable",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const char *state_name(enum batch_state s)
{
	return (size_t)s < NELEM(batch_names) ? batch_names[s] : "failed";
}

int state_parse(const char *name, enum batch_state *out)
{
	for (size_t i = 0; i < NELEM(batch_names); i++) {
		if (!strcmp(name, batch_names[i])) {
			*out = (enum batch_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *results_state_name(enum results_state s)
{
	return (size_t)s < NELEM(results_names) ? results_names[s] : "pending";
}

int results_state_parse(const char *name, enum results_state *out)
{
	for (size_t i = 0; i < NELEM(results_names); i++) {
		if (!strcmp(name, results_names[i])) {
			*out = (enum results_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

bool state_is_terminal(enum batch_state s)
{
	switch (s) {
	case BATCH_COMPLETED:
	case BATCH_CANCELED:
	case BATCH_EXPIRED:
	case BATCH_FAILED:
		return true;
	case BATCH_DRAFT:
	case BATCH_REJECTED:
	case BATCH_QUEUED:
	case BATCH_SUBMITTING:
	case BATCH_VALIDATING:
	case BATCH_IN_PROGRESS:
	case BATCH_FINALIZING:
	case BATCH_CANCELING:
		return false;
	}
	return false;
}

bool state_is_writable(enum batch_state s, bool has_provider_id)
{
	switch (s) {
	case BATCH_DRAFT:
	case BATCH_REJECTED:
		return true;
	case BATCH_FAILED:
	case BATCH_CANCELED: /* canceled while queued: nothing was ever sent */
		return !has_provider_id;
	case BATCH_QUEUED:
	case BATCH_SUBMITTING:
	case BATCH_VALIDATING:
	case BATCH_IN_PROGRESS:
	case BATCH_FINALIZING:
	case BATCH_CANCELING:
	case BATCH_COMPLETED:
	case BATCH_EXPIRED:
		return false;
	}
	return false;
}

struct word_map {
	const char *word;
	enum batch_state state;
};

static int map_word(const struct word_map *map, size_t n, const char *word, bool icase,
		    enum batch_state *out)
{
	if (!word)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (icase ? !strcasecmp(word, map[i].word) : !strcmp(word, map[i].word)) {
			*out = map[i].state;
			return 0;
		}
	}
	return -EINVAL;
}

int state_from_anthropic(const char *processing_status, bool cancel_initiated,
			 enum batch_state *out)
{
	static const struct word_map map[] = {
		{"in_progress", BATCH_IN_PROGRESS},
		{"canceling", BATCH_CANCELING},
		{"ended", BATCH_COMPLETED},
	};
	int rc = map_word(map, NELEM(map), processing_status, false, out);

	/* docs/semantics.md: Anthropic "ended" is canceled when a cancel was initiated. */
	if (!rc && *out == BATCH_COMPLETED && cancel_initiated)
		*out = BATCH_CANCELED;
	return rc;
}

int state_from_openai(const char *status, enum batch_state *out)
{
	/* Azure capitalises ("Validating"); spellings with one 'l' seen in Azure docs too. */
	static const struct word_map map[] = {
		{"validating", BATCH_VALIDATING},  {"in_progress", BATCH_IN_PROGRESS},
		{"finalizing", BATCH_FINALIZING},  {"cancelling", BATCH_CANCELING},
		{"canceling", BATCH_CANCELING},	   {"completed", BATCH_COMPLETED},
		{"cancelled", BATCH_CANCELED},	   {"canceled", BATCH_CANCELED},
		{"expired", BATCH_EXPIRED},	   {"failed", BATCH_FAILED},
		{"inprogress", BATCH_IN_PROGRESS},
	};

	return map_word(map, NELEM(map), status, true, out);
}

int state_from_vertex(const char *job_state, enum batch_state *out)
{
	static const struct word_map map[] = {
		{"JOB_STATE_QUEUED", BATCH_VALIDATING},
		{"JOB_STATE_PENDING", BATCH_VALIDATING},
		{"JOB_STATE_RUNNING", BATCH_IN_PROGRESS},
		{"JOB_STATE_UPDATING", BATCH_IN_PROGRESS},
		{"JOB_STATE_PAUSED", BATCH_IN_PROGRESS},
		{"JOB_STATE_CANCELLING", BATCH_CANCELING},
		{"JOB_STATE_SUCCEEDED", BATCH_COMPLETED},
		{"JOB_STATE_PARTIALLY_SUCCEEDED", BATCH_COMPLETED},
		{"JOB_STATE_CANCELLED", BATCH_CANCELED},
		{"JOB_STATE_EXPIRED", BATCH_EXPIRED},
		{"JOB_STATE_FAILED", BATCH_FAILED},
	};

	return map_word(map, NELEM(map), job_state, false, out);
}
