// SPDX-License-Identifier: MIT
/*
 * The status file's JSON (CONTRACT "status"), rendered from a store record. Pure: no store,
 * no provider; the field order is fixed so the file diffs well between reads.
 */
#include <errno.h>
#include <inttypes.h>

#include "buf.h"
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

int statusfmt_batch(const struct store_batch *b, const char *provider, struct buf *out)
{
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
	rc |= buf_addf(out,
		       ", \"counts\": {\"total\": %" PRId64 ", \"processing\": %" PRId64
		       ", \"succeeded\": %" PRId64 ", \"errored\": %" PRId64
		       ", \"canceled\": %" PRId64 ", \"expired\": %" PRId64 "}",
		       c->total, c->processing, c->succeeded, c->errored, c->canceled, c->expired);
	rc |= buf_addf(out, ", \"results\": \"%s\"", results_state_name(b->results));
	if (b->error[0]) {
		rc |= buf_addstr(out, ", \"error\": {\"message\": ");
		rc |= buf_add_json_string(out, b->error);
		if (b->error_line)
			rc |= buf_addf(out, ", \"line\": %ld", b->error_line);
		if (b->error_attempt)
			rc |= buf_addf(out, ", \"attempt\": %d", b->error_attempt);
		rc |= buf_addstr(out, "}");
	} else {
		rc |= buf_addstr(out, ", \"error\": null");
	}
	rc |= add_time(out, "created_at", b->created_at);
	rc |= add_time(out, "ended_at", b->ended_at);
	rc |= add_time(out, "expires_at", b->expires_at);
	rc |= add_time(out, "updated_at", b->updated_at);
	rc |= buf_addstr(out, "}\n");
	/* Each add returns 0 or one -errno; any failure means the buffer is incomplete. */
	return rc ? -EFBIG : 0;
}
