// SPDX-License-Identifier: MIT
/*
 * Batch and results states: names, parsing, and the table lookup each provider maps its own
 * words with (the tables are the providers', provider_ops.state_from). Pure: no I/O, no
 * allocation.
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
	[RESULTS_PENDING] = "pending",	     [RESULTS_DOWNLOADING] = "downloading",
	[RESULTS_READY] = "ready",	     [RESULTS_UNAVAILABLE] = "unavailable",
	[RESULTS_INCOMPLETE] = "incomplete",
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

bool results_are_in(enum results_state s)
{
	return s == RESULTS_READY || s == RESULTS_INCOMPLETE;
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

int state_map_word(const struct state_word *map, size_t n, const char *word, bool icase,
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
