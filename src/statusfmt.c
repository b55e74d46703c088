// SPDX-License-Identifier: MIT
/*
 * The status file's JSON (docs/semantics.md "status"), rendered from a store record. Pure: no store,
 * no provider; the field order is fixed so the file diffs well between reads.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>

#include "buf.h"
#include "price.h"
#include "statusfmt.h"
#include "store.h"
#include "timefmt.h"

static int add_time(struct buf *out, const char *key, int64_t ms)
{
	char t[TIMEFMT_SIZE];

	if (!ms)
		return buf_addf(out, ", \"%s\": null", key);
	timefmt_format(ms, t);
	return buf_addf(out, ", \"%s\": \"%s\"", key, t);
}

static int add_str_or_null(struct buf *out, const char *key, const char *v)
{
	int rc = buf_addf(out, ", \"%s\": ", key);

	if (rc)
		return rc;
	return *v ? buf_add_json_string(out, v) : buf_addstr(out, "null");
}

static int add_counts(struct buf *out, const struct batch_counts *c)
{
	return buf_addf(out,
			", \"counts\": {\"total\": %" PRId64 ", \"processing\": %" PRId64
			", \"succeeded\": %" PRId64 ", \"errored\": %" PRId64
			", \"canceled\": %" PRId64 ", \"expired\": %" PRId64 "}",
			c->total, c->processing, c->succeeded, c->errored, c->canceled, c->expired);
}

static int add_error(struct buf *out, const char *msg, long line, int attempt)
{
	int rc = 0;

	if (!msg[0])
		return buf_addstr(out, ", \"error\": null");
	rc |= buf_addstr(out, ", \"error\": {\"message\": ");
	rc |= buf_add_json_string(out, msg);
	if (line)
		rc |= buf_addf(out, ", \"line\": %ld", line);
	if (attempt)
		rc |= buf_addf(out, ", \"attempt\": %d", attempt);
	rc |= buf_addstr(out, "}");
	return rc;
}

/* One part: what a user needs to find it at the provider and to see how far it got. */
static int add_part(struct buf *out, const struct store_part *p)
{
	int rc = 0;

	rc |= buf_addf(out, "{\"part\": %d", p->idx + 1);
	rc |= add_str_or_null(out, "id", p->pid);
	rc |= buf_addf(out, ", \"state\": \"%s\"", state_name(p->state));
	rc |= add_str_or_null(out, "provider_state", p->provider_state);
	rc |= add_counts(out, &p->counts);
	rc |= buf_addf(out, ", \"results\": \"%s\"", results_state_name(p->results));
	if (p->last_line < INT64_MAX)
		rc |= buf_addf(out, ", \"first_line\": %" PRId64 ", \"last_line\": %" PRId64,
			       p->first_line, p->last_line);
	else
		rc |= buf_addstr(out, ", \"first_line\": null, \"last_line\": null");
	rc |= add_error(out, p->error, p->error_line, p->error_attempt);
	rc |= add_time(out, "created_at", p->created_at);
	rc |= add_time(out, "ended_at", p->ended_at);
	rc |= buf_addstr(out, "}");
	return rc;
}

/*
 * status.usage: the token sums of the succeeded results, over the batch and per model; null
 * until the results are in (with a reason when they are in but usage was not kept).
 */
static int add_usage(struct buf *out, const struct statusfmt_extra *x)
{
	struct bfs_usage t = {.results = 0};
	int rc = 0;

	if (!x->have_usage) {
		rc |= buf_addstr(out, ", \"usage\": null");
		if (x->usage_why) {
			rc |= buf_addstr(out, ", \"usage_reason\": ");
			rc |= buf_add_json_string(out, x->usage_why);
		}
		return rc;
	}
	for (size_t i = 0; i < x->nusage; i++) {
		t.results += x->usage[i].results;
		t.input_tokens += x->usage[i].input_tokens;
		t.output_tokens += x->usage[i].output_tokens;
		t.cache_creation_tokens += x->usage[i].cache_creation_tokens;
		t.cache_read_tokens += x->usage[i].cache_read_tokens;
	}
	rc |= buf_addf(out,
		       ", \"usage\": {\"results\": %" PRIu64 ", \"input_tokens\": %" PRIu64
		       ", \"output_tokens\": %" PRIu64 ", \"cache_creation_tokens\": %" PRIu64
		       ", \"cache_read_tokens\": %" PRIu64 ", \"models\": [",
		       t.results, t.input_tokens, t.output_tokens, t.cache_creation_tokens,
		       t.cache_read_tokens);
	for (size_t i = 0; i < x->nusage; i++) {
		const struct bfs_usage *u = &x->usage[i];

		rc |= buf_addstr(out, i ? ", {\"model\": " : "{\"model\": ");
		if (u->model[0])
			rc |= buf_add_json_string(out, u->model);
		else
			rc |= buf_addstr(out, "null");
		rc |= buf_addf(out,
			       ", \"results\": %" PRIu64 ", \"input_tokens\": %" PRIu64
			       ", \"output_tokens\": %" PRIu64
			       ", \"cache_creation_tokens\": %" PRIu64
			       ", \"cache_read_tokens\": %" PRIu64 "}",
			       u->results, u->input_tokens, u->output_tokens,
			       u->cache_creation_tokens, u->cache_read_tokens);
	}
	rc |= buf_addstr(out, "]}");
	return rc;
}

/* status.retry: what retry.jsonl holds, or why there is none. */
static int add_retry(struct buf *out, const struct statusfmt_extra *x)
{
	int rc = 0;

	switch (x->retry) {
	case STATUSFMT_RETRY_THERE:
		return buf_addf(out, ", \"retry\": {\"requests\": %" PRId64 ", \"reason\": null}",
				x->retry_lines);
	case STATUSFMT_RETRY_ABSENT:
		rc |= buf_addstr(out, ", \"retry\": {\"requests\": null, \"reason\": ");
		rc |= buf_add_json_string(out, x->retry_why ? x->retry_why : "");
		rc |= buf_addstr(out, "}");
		return rc;
	default:
		return buf_addstr(out, ", \"retry\": null");
	}
}

/*
 * status.cost: the estimate made at submission and the cost of the reported usage (the
 * batch's usage sums once its results are in; until then "actual" is null).
 */
static int add_cost(struct buf *out, const struct store_batch *b, const struct bfs_usage *u,
		    size_t n, bool have_usage)
{
	int rc = buf_addstr(out, ", \"cost\": ");

	return rc ? rc : price_status_json(b->cost, u, n, have_usage, out);
}

int statusfmt_ids(const struct store_part *parts, size_t n, struct buf *out)
{
	int rc = 0;

	for (size_t i = 0; i < n; i++)
		if (parts[i].pid[0])
			rc |= buf_addf(out, "%s\n", parts[i].pid);
	return rc ? -EFBIG : 0;
}

int statusfmt_batch(const struct store_batch *b, const struct store_part *parts, size_t n,
		    const char *provider, const struct statusfmt_extra *x, struct buf *out)
{
	static const struct statusfmt_extra none = {.done = false};
	const struct batch_counts *c = &b->counts;
	int rc = 0;

	rc |= buf_addstr(out, "{\"name\": ");
	rc |= buf_add_json_string(out, b->name);
	rc |= buf_addstr(out, ", \"remote\": ");
	rc |= buf_add_json_string(out, b->remote);
	rc |= buf_addstr(out, ", \"provider\": ");
	rc |= buf_add_json_string(out, provider);
	rc |= add_str_or_null(out, "id", b->pid);
	rc |= buf_addf(out, ", \"state\": \"%s\"", state_name(b->state));
	rc |= add_str_or_null(out, "provider_state", b->provider_state);
	rc |= add_counts(out, c);
	if (!x)
		x = &none;
	rc |= buf_addf(out, ", \"results\": \"%s\"", results_state_name(b->results));
	rc |= buf_addf(out, ", \"done\": %s", x->done ? "true" : "false");
	rc |= add_error(out, b->error, b->error_line, b->error_attempt);
	rc |= add_time(out, "created_at", b->created_at);
	rc |= add_time(out, "ended_at", b->ended_at);
	rc |= add_time(out, "expires_at", b->expires_at);
	rc |= add_time(out, "updated_at", b->updated_at);
	rc |= add_usage(out, x);
	rc |= add_cost(out, b, x->usage, x->nusage, x->have_usage);
	rc |= add_retry(out, x);
	if (n) {
		rc |= buf_addstr(out, ", \"parts\": [");
		for (size_t i = 0; i < n; i++) {
			if (i)
				rc |= buf_addstr(out, ", ");
			rc |= add_part(out, &parts[i]);
		}
		rc |= buf_addstr(out, "]");
	}
	rc |= buf_addstr(out, "}\n");
	/* Each add returns 0 or one -errno; any failure means the buffer is incomplete. */
	return rc ? -EFBIG : 0;
}
