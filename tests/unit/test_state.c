// SPDX-License-Identifier: MIT
/* Unit tests: state names and the mapping of every provider's words. */
#include <errno.h>
#include <string.h>

#include "provider.h"
#include "state.h"
#include "tap.h"

/* A provider's word through its ops (provider_ops.state_from), no cancel initiated. */
static enum batch_state map(const char *provider, const char *w, int *rc)
{
	enum batch_state s = BATCH_DRAFT;

	*rc = provider_lookup(provider)->state_from(w, false, &s);
	return s;
}

static int state_from_anthropic(const char *w, bool cancel_initiated, enum batch_state *out)
{
	return provider_lookup("anthropic")->state_from(w, cancel_initiated, out);
}

int main(void)
{
	enum batch_state s;
	enum results_state r;
	int rc;

	for (int i = BATCH_DRAFT; i <= BATCH_FAILED; i++) {
		ok(state_parse(state_name((enum batch_state)i), &s) == 0 &&
			   s == (enum batch_state)i,
		   "state '%s' round-trips", state_name((enum batch_state)i));
	}
	for (int i = RESULTS_PENDING; i <= RESULTS_UNAVAILABLE; i++) {
		ok(results_state_parse(results_state_name((enum results_state)i), &r) == 0 &&
			   r == (enum results_state)i,
		   "results '%s' round-trips", results_state_name((enum results_state)i));
	}
	is_int(state_parse("bogus", &s), -EINVAL, "unknown state name is -EINVAL");

	is_int(state_from_anthropic("in_progress", false, &s), 0, "anthropic in_progress");
	is_int(s, BATCH_IN_PROGRESS, "-> in_progress");
	state_from_anthropic("canceling", true, &s);
	is_int(s, BATCH_CANCELING, "anthropic canceling -> canceling");
	state_from_anthropic("ended", false, &s);
	is_int(s, BATCH_COMPLETED, "anthropic ended without cancel -> completed");
	state_from_anthropic("ended", true, &s);
	is_int(s, BATCH_CANCELED, "anthropic ended after a cancel -> canceled");
	is_int(state_from_anthropic("Ended", false, &s), -EINVAL, "anthropic words are exact");

	s = map("openai", "validating", &rc);
	ok(!rc && s == BATCH_VALIDATING, "openai validating");
	s = map("openai", "Validating", &rc);
	ok(!rc && s == BATCH_VALIDATING, "azure Validating (capitalised)");
	s = map("openai", "in_progress", &rc);
	ok(!rc && s == BATCH_IN_PROGRESS, "openai in_progress");
	s = map("openai", "finalizing", &rc);
	ok(!rc && s == BATCH_FINALIZING, "openai finalizing");
	s = map("openai", "cancelling", &rc);
	ok(!rc && s == BATCH_CANCELING, "openai cancelling");
	s = map("openai", "completed", &rc);
	ok(!rc && s == BATCH_COMPLETED, "openai completed");
	s = map("openai", "cancelled", &rc);
	ok(!rc && s == BATCH_CANCELED, "openai cancelled");
	s = map("openai", "Expired", &rc);
	ok(!rc && s == BATCH_EXPIRED, "azure Expired");
	s = map("openai", "failed", &rc);
	ok(!rc && s == BATCH_FAILED, "openai failed");
	map("openai", "paused", &rc);
	is_int(rc, -EINVAL, "unknown openai word is -EINVAL");
	map("openai", NULL, &rc);
	is_int(rc, -EINVAL, "null openai status is -EINVAL");

	s = map("vertex", "JOB_STATE_QUEUED", &rc);
	ok(!rc && s == BATCH_VALIDATING, "vertex queued");
	s = map("vertex", "JOB_STATE_RUNNING", &rc);
	ok(!rc && s == BATCH_IN_PROGRESS, "vertex running");
	s = map("vertex", "JOB_STATE_CANCELLING", &rc);
	ok(!rc && s == BATCH_CANCELING, "vertex cancelling");
	s = map("vertex", "JOB_STATE_SUCCEEDED", &rc);
	ok(!rc && s == BATCH_COMPLETED, "vertex succeeded");
	s = map("vertex", "JOB_STATE_PARTIALLY_SUCCEEDED", &rc);
	ok(!rc && s == BATCH_COMPLETED, "vertex partially succeeded");
	s = map("vertex", "JOB_STATE_CANCELLED", &rc);
	ok(!rc && s == BATCH_CANCELED, "vertex cancelled");
	s = map("vertex", "JOB_STATE_FAILED", &rc);
	ok(!rc && s == BATCH_FAILED, "vertex failed");
	s = map("vertex", "JOB_STATE_EXPIRED", &rc);
	ok(!rc && s == BATCH_EXPIRED, "vertex expired");
	map("vertex", "JOB_STATE_UNSPECIFIED", &rc);
	is_int(rc, -EINVAL, "vertex unspecified is -EINVAL");

	ok(state_is_terminal(BATCH_COMPLETED) && state_is_terminal(BATCH_FAILED) &&
		   !state_is_terminal(BATCH_CANCELING) && !state_is_terminal(BATCH_DRAFT),
	   "terminal states");
	ok(state_is_writable(BATCH_DRAFT, false) && state_is_writable(BATCH_REJECTED, false) &&
		   state_is_writable(BATCH_FAILED, false) &&
		   !state_is_writable(BATCH_FAILED, true) &&
		   !state_is_writable(BATCH_IN_PROGRESS, true) &&
		   !state_is_writable(BATCH_SUBMITTING, false) &&
		   !state_is_writable(BATCH_QUEUED, false) &&
		   state_is_writable(BATCH_CANCELED, false) &&
		   !state_is_writable(BATCH_CANCELED, true),
	   "writable states");
	ok(!state_is_terminal(BATCH_QUEUED), "queued is not terminal");
	{
		enum batch_state q = BATCH_DRAFT;

		ok(!strcmp(state_name(BATCH_QUEUED), "queued") && !state_parse("queued", &q) &&
			   q == BATCH_QUEUED,
		   "queued by name");
	}
	/* Every provider gives its words through its ops: Azure's are OpenAI's, the mock's
	 * Anthropic's. */
	s = map("azure", "inprogress", &rc);
	ok(!rc && s == BATCH_IN_PROGRESS, "azure's words through its ops");
	s = map("mock", "ended", &rc);
	ok(!rc && s == BATCH_COMPLETED, "mock's words through its ops");
	{
		static const char *const all[] = {"mock", "anthropic", "openai", "azure", "vertex"};

		for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
			ok(provider_lookup(all[i])->state_from &&
				   provider_lookup(all[i])->validate_line,
			   "%s owns its state words and line rules", all[i]);
	}
	return tap_done();
}
