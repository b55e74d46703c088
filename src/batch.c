// SPDX-License-Identifier: MIT
/*
 * The life of a batch directory between its files and its provider: the commit point
 * (validate the whole file, split it into parts that fit the remote's per-batch limits,
 * submit each part exactly once), cancel, polling, results download and ingest, crash
 * reconciliation and discovery of batches made elsewhere. Every change of a row is a guarded
 * store update that names the state it expects, so actions racing each other (a refresh, a
 * cancel, an ingest, a commit) never roll one another back. Never holds a lock across a
 * network call, except a remote's create_lock around its creates.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "bfs.h"
#include "buf.h"
#include "conf.h"
#include "err.h"
#include "follow.h"
#include "intake.h"
#include "jsonl.h"
#include "log.h"
#include "price.h"
#include "prompt.h"
#include "provider.h"
#include "spool.h"
#include "store.h"
#include "timefmt.h"

#define BATCH_SUBMIT_TRIES 3
/* How long an interrupted create may still take effect at the provider (reconcile_grace). */
#define BATCH_RECONCILE_GRACE_S 300.0
/* The provider's clock against ours, when telling a batch made just now from older ones. */
#define BATCH_DISCOVER_SKEW_MS (10 * 60 * 1000)
/* The longest wait between two attempts at a part's results after failures in a row. */
#define BATCH_FETCH_BACKOFF_MAX_MS (60 * 60 * 1000)
/* The longest wait before an automatic resubmit after a quota failure (quota_retry). */
#define BATCH_QUOTA_BACKOFF_MAX_MS (6 * 60 * 60 * 1000)

static int64_t poll_delay_ms(const struct remote *r)
{
	return provider_poll_ms(r->ops, r->conf); /* poll_interval, at least the guidance */
}

/* The registry of submissions in flight (struct bfs). */

/* Claims batch_id for this thread's submission; false when one is already in flight. */
static bool inflight_claim(struct bfs *b, int64_t batch_id)
{
	bool ok = true;

	pthread_mutex_lock(&b->inflight_lock);
	for (size_t i = 0; i < b->ninflight && ok; i++)
		ok = b->inflight[i] != batch_id;
	if (ok && b->ninflight == BFS_INFLIGHT_MAX)
		ok = false; /* cannot be tracked: do not act on it now (tried again later) */
	if (ok)
		b->inflight[b->ninflight++] = batch_id;
	pthread_mutex_unlock(&b->inflight_lock);
	return ok;
}

static void inflight_release(struct bfs *b, int64_t batch_id)
{
	pthread_mutex_lock(&b->inflight_lock);
	for (size_t i = 0; i < b->ninflight; i++) {
		if (b->inflight[i] == batch_id) {
			b->inflight[i] = b->inflight[--b->ninflight];
			break;
		}
	}
	pthread_mutex_unlock(&b->inflight_lock);
}

bool batch_is_in_flight(struct bfs *b, int64_t batch_id)
{
	bool found = false;

	pthread_mutex_lock(&b->inflight_lock);
	for (size_t i = 0; i < b->ninflight && !found; i++)
		found = b->inflight[i] == batch_id;
	pthread_mutex_unlock(&b->inflight_lock);
	return found;
}

static void log_store_err(const char *what, int64_t id, int rc)
{
	if (rc && rc != -ESTALE)
		log_err("cannot record %s of %" PRId64 " in the cache: %s", what, id,
			strerror(-rc));
}

int batch_note_unsubmitted(struct bfs *b, int64_t batch_id, const char *msg)
{
	int rc = store_batch_note(b->store, batch_id, msg);

	return rc == -ESTALE ? 0 : rc; /* submitted meanwhile: the note no longer applies */
}

/*
 * The provider's view of a part, computed from the part as it was and pb, with the next look
 * scheduled: unfinished parts are polled, ended ones fetch their results (a foreign batch's
 * only once someone looked), parts whose results will never come are settled.
 */
static void part_from_provider(const struct store_part *old, const struct store_batch *row,
			       const struct provider_batch *pb, int64_t poll_ms,
			       struct store_part *out)
{
	int64_t now = timefmt_now_ms();

	*out = *old;
	snprintf(out->pid, sizeof(out->pid), "%s", pb->id);
	out->state = pb->state;
	snprintf(out->provider_state, sizeof(out->provider_state), "%s", pb->provider_state);
	out->counts = pb->counts;
	if (pb->created_at)
		out->created_at = pb->created_at;
	out->ended_at = pb->ended_at;
	if (pb->expires_at)
		out->expires_at = pb->expires_at;
	if (pb->ref[0])
		snprintf(out->ref, sizeof(out->ref), "%s", pb->ref);
	snprintf(out->error, sizeof(out->error), "%s", pb->error);
	out->error_line = pb->error_line; /* the file's line: providers know first_line */
	if (!state_is_terminal(out->state)) {
		/* Whichever is later: our interval or the provider's "not before". */
		out->next_poll_at = now + poll_ms > pb->poll_after ? now + poll_ms : pb->poll_after;
		return;
	}
	if (results_are_in(out->results)) {
		out->next_poll_at = 0;
	} else if (pb->results_gone || (!pb->results_available && out->state == BATCH_FAILED &&
					!out->counts.succeeded && !out->counts.errored)) {
		out->results = RESULTS_UNAVAILABLE;
		out->next_poll_at = 0;
	} else if (pb->results_available) {
		out->next_poll_at = row->foreign && !row->results_wanted ? 0 : now;
	} else {
		out->next_poll_at = now + poll_ms;
	}
}

static void set_file_mode(struct bfs *b, int64_t batch_id, uint32_t mode);

/* The wait before a part's attempt-th automatic resubmit: quota_retry_delay doubled. */
static int64_t quota_delay_ms(const struct remote *r, int attempt)
{
	double d = r->conf->quota_retry_delay * 1000.0;

	for (int i = 1; i < attempt && d < BATCH_QUOTA_BACKOFF_MAX_MS; i++)
		d *= 2;
	return d < BATCH_QUOTA_BACKOFF_MAX_MS ? (int64_t)d : BATCH_QUOTA_BACKOFF_MAX_MS;
}

/*
 * A part that failed for a quota before running a request, with quota_retry = on: its
 * resubmit is scheduled (its next_poll_at, which a settled failed part does not otherwise
 * have) and status says when and which attempt; past quota_retry_attempts, that it gave up.
 */
static void note_quota_failure(struct bfs *b, struct remote *r, const struct store_part *p,
			       const char *why)
{
	struct bfs_err e = BFS_ERR_INIT;
	char when[TIMEFMT_SIZE];
	int attempt = p->resubmits + 1;
	int64_t at;

	if (attempt <= r->conf->quota_retry_attempts) {
		at = timefmt_now_ms() + quota_delay_ms(r, attempt);
		timefmt_format(at, when);
		err_set(&e, "%s; quota_retry: resubmitting at %s (attempt %d of %d)", why, when,
			attempt, r->conf->quota_retry_attempts);
		log_info("batch part %" PRId64 ": %s", p->id, e.msg);
		log_store_err("a resubmit", p->id,
			      store_part_note(b->store, p->id, e.msg, attempt, at));
		return;
	}
	err_set(&e,
		"%s; quota_retry gave up after %d resubmits; 'echo resubmit > ctl' sends it again",
		why, p->resubmits);
	log_store_err("a note", p->id, store_part_note(b->store, p->id, e.msg, 0, -1));
}

/* What status says of a failure before running (error_line kept, so not a note). */
static void hint_unrun_failure(struct store_part *nw)
{
	size_t len = strlen(nw->error);

	if (!len)
		len = (size_t)snprintf(nw->error, sizeof(nw->error), "the batch failed");
	snprintf(nw->error + len, sizeof(nw->error) - len,
		 "; nothing ran: 'echo resubmit > ctl' sends it again, or write requests.jsonl "
		 "anew");
}

/* Applies pb to part id if it is still in state expect (else a newer view won: -ESTALE). */
static int apply_part(struct bfs *b, struct remote *r, int64_t part_id, enum batch_state expect,
		      const struct provider_batch *pb)
{
	struct store_part old, nw;
	struct store_batch row;
	bool unrun, retry;
	int rc;

	rc = store_part_get(b->store, part_id, &old);
	if (!rc)
		rc = store_batch_get(b->store, old.batch_id, &row);
	if (rc)
		return rc;
	part_from_provider(&old, &row, pb, poll_delay_ms(r), &nw);
	/* Failed at the provider before any request ran: may be sent again (resubmit). */
	unrun = !row.foreign && old.state != BATCH_FAILED && nw.state == BATCH_FAILED &&
		!nw.counts.succeeded && !nw.counts.errored;
	retry = unrun && pb->quota && r->conf->quota_retry;
	if (unrun && !retry)
		hint_unrun_failure(&nw);
	rc = store_part_apply(b->store, &nw, expect);
	log_store_err("the provider's view", part_id, rc);
	if (!rc && retry)
		note_quota_failure(b, r, &nw, nw.error[0] ? nw.error : "the batch failed");
	if (!rc && unrun && !store_batch_get(b->store, old.batch_id, &row) &&
	    store_batch_unrun_failure(&row))
		set_file_mode(b, row.id, 0644);
	return rc;
}

struct retry_ctx {
	struct bfs *b;
	int64_t part_id;
	const char *what;
};

/* HTTP retries show in status while they happen (provider_retry_fn). */
static void note_retry(void *ctx, int attempt, const char *reason)
{
	struct retry_ctx *rc = ctx;
	struct bfs_err e = BFS_ERR_INIT;

	err_set(&e, "%s: %s (retrying, attempt %d)", rc->what, reason, attempt);
	log_store_err("a retry", rc->part_id,
		      store_part_note(rc->b->store, rc->part_id, e.msg, attempt, -1));
}

/* Submission of parts */

static int make_identity(int64_t batch_id, int idx, char *out, size_t size)
{
	unsigned char rnd[6];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	snprintf(out, size, "bfs-%02x%02x%02x%02x%02x%02x-%" PRId64 "-%d", rnd[0], rnd[1], rnd[2],
		 rnd[3], rnd[4], rnd[5], batch_id, idx);
	return 0;
}

/* Sets the mode of requests.jsonl: read-only once submitted (docs/semantics.md), writable otherwise. */
static void set_file_mode(struct bfs *b, int64_t batch_id, uint32_t mode)
{
	struct store_file f;

	if (store_file_by_name(b->store, batch_id, "requests.jsonl", &f))
		return;
	f.mode = mode;
	(void)store_file_put(b->store, &f); /* a wrong mode is cosmetic; writes check state */
}

struct owned_ctx {
	struct store *st;
	const char *remote;
};

static bool is_owned(void *ctx, const char *id)
{
	struct owned_ctx *o = ctx;

	return store_pid_is_owned(o->st, o->remote, id);
}

static void submit_desc(const struct store_batch *row, const struct store_part *p, const char *path,
			struct owned_ctx *oc, struct provider_submit *s)
{
	memset(s, 0, sizeof(*s));
	s->path = path;
	s->offset = p->off;
	s->length = p->len;
	s->first_line = (long)p->first_line;
	s->last_line = p->last_line < INT64_MAX ? (long)p->last_line : 0;
	s->nrequests = (uint64_t)p->nrequests;
	s->nbytes = (uint64_t)p->len;
	s->payload = p->payload;
	s->endpoint = row->endpoint;
	s->model = row->model;
	s->identity = p->identity;
	s->name = row->name;
	s->intent_at = p->intent_at;
	s->owned = is_owned;
	s->owned_ctx = oc;
}

static int64_t reconcile_grace_ms(const struct remote *r)
{
	return (int64_t)(conf_get_double(r->conf, "reconcile_grace", BATCH_RECONCILE_GRACE_S) *
			 1000.0);
}

enum part_outcome {
	PART_CREATED, /* at the provider, its id recorded */
	PART_QUEUED,  /* certainly not created: waits in the remote's queue (state queued) */
	PART_ABSENT,  /* certainly not created: may be sent (again) */
	PART_FAILED,  /* certainly not created, and the provider refused it: stop */
	PART_QUOTA,   /* the same, for a quota: may be resubmitted later (quota_retry) */
	PART_UNKNOWN, /* cannot tell yet: stays submitting, looked for again later */
	PART_WAIT,    /* rate limited, certainly not created: sent again at err->retry_at */
};

/*
 * The queue: a remote runs at most max_concurrent_jobs batches at once (default: the
 * provider's max_active), counting those made elsewhere that this cache knows. A part past
 * the limit, or one the provider refused for its own limit (submit's -EUSERS), is accepted
 * here as queued, oldest first, and sent by the poller as running batches end. The check
 * and the create happen under the remote's create_lock, so two threads never both take
 * the last slot.
 */
static int64_t max_active(const struct remote *r)
{
	return (int64_t)conf_get_double(r->conf, "max_concurrent_jobs", r->ops->max_active);
}

/* Puts p (in state expect, without an id) in the queue, or renews its place there: status
 * shows why and the position; the poller looks again after poll_interval. */
static int queue_part(struct bfs *b, struct remote *r, const struct store_part *p,
		      enum batch_state expect, const char *why)
{
	struct store_part nw = *p;
	int64_t active = 0, ahead = 0;
	int rc = store_remote_slots(b->store, r->conf->name, p->id, &active, &ahead);

	if (rc)
		return rc;
	nw.state = BATCH_QUEUED;
	nw.provider_state[0] = '\0';
	nw.error_line = 0;
	snprintf(nw.error, sizeof(nw.error),
		 "queued: position %" PRId64 " in the queue of [%s]; %s", ahead + 1, r->conf->name,
		 why);
	nw.next_poll_at = timefmt_now_ms() + poll_delay_ms(r);
	rc = store_part_apply(b->store, &nw, expect);
	log_store_err("a queued part", p->id, rc);
	return rc;
}

/* Records the id of a created part; an id another part owns is never adopted. */
static enum part_outcome adopt(struct bfs *b, struct remote *r, const struct store_part *p,
			       const struct provider_batch *pb, struct bfs_err *err)
{
	int rc;

	if (!provider_id_is_safe(pb->id)) {
		/* Never record what could not be polled, cancelled or shown as a file name. */
		err_set(err, "the provider answered with an unusable batch id '%.64s'", pb->id);
		return PART_UNKNOWN;
	}
	rc = apply_part(b, r, p->id, BATCH_SUBMITTING, pb);
	if (!rc)
		return PART_CREATED;
	if (rc == -EEXIST)
		err_set(err, "the provider's batch '%s' belongs to another batch directory here",
			pb->id);
	else
		err_set(err, "batch '%s' was created but the cache could not record it: %s", pb->id,
			strerror(-rc));
	return PART_UNKNOWN;
}

/*
 * Settles a part whose create may or may not have reached the provider (its identity is
 * recorded, its id not): found -> adopted; certainly absent once reconcile_grace has passed
 * since the intent -> absent; else unknown (nothing is ever resent on a guess).
 */
static enum part_outcome settle_part(struct bfs *b, struct remote *r, const struct store_batch *row,
				     const struct store_part *p, const char *path,
				     struct bfs_err *err)
{
	struct owned_ctx oc = {b->store, r->conf->name};
	struct provider_submit s;
	struct provider_batch pb;
	char until[TIMEFMT_SIZE];
	int64_t grace = reconcile_grace_ms(r);
	int rc;

	enum part_outcome o;

	submit_desc(row, p, path, &oc, &s);
	pthread_mutex_lock(&r->create_lock);
	rc = r->ops->find(r->prov, &s, &pb, err);
	if (rc == 0) {
		log_info("batch '%s': found part %d's earlier submission '%s'", row->name,
			 p->idx + 1, pb.id);
		o = adopt(b, r, p, &pb, err); /* owned before another find can see it */
		pthread_mutex_unlock(&r->create_lock);
		return o;
	}
	pthread_mutex_unlock(&r->create_lock);
	if (rc == -ENOENT && timefmt_now_ms() >= p->intent_at + grace)
		return PART_ABSENT;
	if (rc == -ENOENT) {
		/*
		 * A create sent just before a crash may still be on its way or in the works:
		 * servers finish a request whose sender died. "Not there yet" becomes "never
		 * there" only once the grace has passed; until then the poller looks again.
		 */
		timefmt_format(p->intent_at + grace, until);
		err_set(err,
			"submission of '%s' was interrupted; looking for it at the provider until "
			"%s "
			"before concluding that nothing was created",
			row->name, until);
		return PART_UNKNOWN;
	}
	err_prefix(err,
		   "cannot tell whether batch '%s' was created; batchfs will not resubmit it on "
		   "its own; 'echo refresh > ctl' looks again",
		   row->name);
	return PART_UNKNOWN;
}

/*
 * Sends one part exactly once: the intent (identity) is durable before the first byte goes
 * out; a create whose answer may have been lost (-EAGAIN) is followed by a find(); only a
 * certain "not there" allows another attempt.
 */
static enum part_outcome send_part(struct bfs *b, struct remote *r, const struct store_batch *row,
				   const struct store_part *p0, const char *path,
				   struct provider_stream *stream, struct bfs_err *err)
{
	struct retry_ctx rctx = {b, p0->id, "submitting"};
	struct owned_ctx oc = {b->store, r->conf->name};
	struct provider_submit s;
	struct provider_batch pb;
	struct store_part p = *p0;
	int rc = -EIO;

	enum part_outcome o;

	/*
	 * Under the remote's create lock from the intent to the recorded id: a later create's
	 * intent is after every earlier batch of this remote was made and owned, so a lost
	 * answer's find has one candidate where the provider keeps no identity.
	 */
	pthread_mutex_lock(&r->create_lock);
	if (max_active(r) > 0) {
		int64_t active = 0, ahead = 0, limit = max_active(r);
		char why[256];

		rc = store_remote_slots(b->store, r->conf->name, p.id, &active, &ahead);
		if (!rc && active + ahead >= limit) {
			snprintf(why, sizeof(why),
				 "%" PRId64 " of the %" PRId64 " jobs [%s] may run at once "
				 "(max_concurrent_jobs) are running; sent when one ends",
				 active, limit, r->conf->name);
			rc = queue_part(b, r, &p, p.state, why);
			pthread_mutex_unlock(&r->create_lock);
			follow_stream_abort(b, r, stream);
			if (!rc)
				return PART_QUEUED;
			err_set(err, "cannot queue the part in the cache: %s", strerror(-rc));
			return PART_FAILED;
		}
		if (rc) {
			pthread_mutex_unlock(&r->create_lock);
			follow_stream_abort(b, r, stream);
			err_set(err, "cannot read the cache: %s", strerror(-rc));
			return PART_FAILED;
		}
	}
	rc = make_identity(row->id, p.idx, p.identity, sizeof(p.identity));
	p.intent_at = timefmt_now_ms();
	if (!rc)
		rc = store_part_intent(b->store, p.id, p.identity, p.intent_at);
	if (rc) {
		pthread_mutex_unlock(&r->create_lock);
		follow_stream_abort(b, r, stream);
		err_set(err, "cannot record the submission in the cache: %s", strerror(-rc));
		return PART_FAILED;
	}
	submit_desc(row, &p, path, &oc, &s);
	log_info("batch '%s': submitting part %d (%" PRId64 " requests, %" PRId64 " bytes) to '%s'",
		 row->name, p.idx + 1, p.nrequests, p.len, r->conf->name);
	for (int i = 0; i < BATCH_SUBMIT_TRIES; i++) {
		struct bfs_err ferr = BFS_ERR_INIT;

		err_clear(err);
		rc = -ESTALE;
		if (stream) {
			/* The intent is durable: the body's end may go (follow.h). */
			rc = follow_stream_end(b, r, stream, &s, &pb, err);
			stream = NULL;
			if (rc == -ESTALE) {
				log_info("batch '%s': the create streamed while requests.jsonl was "
					 "written made nothing (%s); sending part %d now",
					 row->name, err->msg[0] ? err->msg : "failed", p.idx + 1);
				err_clear(err);
			}
		}
		if (rc == -ESTALE)
			rc = r->ops->submit(r->prov, &s, &pb, note_retry, &rctx, err);
		if (rc != -EAGAIN)
			break;
		log_warn("batch '%s': the answer to the creation of part %d was lost; looking for "
			 "it",
			 row->name, p.idx + 1);
		rc = r->ops->find(r->prov, &s, &pb, &ferr);
		if (rc == 0)
			break;
		if (rc != -ENOENT) {
			char first[sizeof(err->msg)];

			/* err is both the message and one of its parts: copy that part out. */
			snprintf(first, sizeof(first), "%s",
				 err->msg[0] ? err->msg : "answer lost");
			err_set(err,
				"cannot tell whether the batch was created (%s; then: %s); batchfs "
				"will not resubmit it on its own: 'echo refresh > ctl' looks again",
				first, ferr.msg);
			rc = -EAGAIN;
			break;
		}
		rc = -EAGAIN; /* certainly absent: try again */
	}
	if (rc == -EUSERS) {
		/* The provider's own limit (jobs this cache does not know of): not created, so
		 * the intent is taken back and the part waits for a slot. */
		char why[sizeof(err->msg)];

		snprintf(why, sizeof(why),
			 "the provider refused a new batch (%s); sent when a "
			 "running one ends",
			 err->msg[0] ? err->msg : "too many running");
		rc = store_part_unsend(b->store, p.id);
		if (!rc)
			rc = queue_part(b, r, &p, BATCH_SUBMITTING, why);
		pthread_mutex_unlock(&r->create_lock);
		if (!rc) {
			err_clear(err);
			return PART_QUEUED;
		}
		err_set(err, "cannot queue the part in the cache: %s", strerror(-rc));
		return PART_UNKNOWN;
	}
	o = rc == 0 ? adopt(b, r, &p, &pb, err) : PART_UNKNOWN;
	pthread_mutex_unlock(&r->create_lock);
	if (rc == 0)
		return o;
	if (rc != -EAGAIN && err->retry_at) {
		/*
		 * A 429 is a refusal that created nothing (http.c): the intent goes, and the
		 * poller sends the part afresh when the provider said; the close does not wait
		 * longer than rate_limit_wait. Should forgetting fail, the intent stays and the
		 * part is settled by find() as after a crash: exactly once either way.
		 */
		if (store_part_unsend(b->store, p.id))
			return PART_UNKNOWN;
		log_info("batch '%s': part %d not created yet: %s", row->name, p.idx + 1, err->msg);
		return PART_WAIT;
	}
	if (rc == -EAGAIN && !err->msg[0])
		err_set(err, "the answers to %d creates were lost", BATCH_SUBMIT_TRIES);
	if (rc == -EAGAIN)
		return PART_UNKNOWN;
	err_prefix(err, "cannot submit batch '%s'", row->name);
	return rc == -EDQUOT ? PART_QUOTA : PART_FAILED;
}

/* True when a part other than l[skip] is, or may be, at the provider. */
static bool others_sent(const struct store_part *l, size_t n, size_t skip)
{
	for (size_t i = 0; i < n; i++)
		if (i != skip && (l[i].pid[0] || l[i].identity[0]))
			return true;
	return false;
}

struct part_list {
	struct store_part *v;
	size_t n;
};

static int load_parts(struct bfs *b, int64_t batch_id, struct part_list *l)
{
	l->v = NULL;
	l->n = 0;
	return store_parts_load(b->store, batch_id, &l->v, &l->n);
}

/*
 * Drives every part of a claimed batch that has no provider id yet, in file order: settles
 * the ones whose create may have happened, sends the others. One remote's creates go one at
 * a time. Stops at the first part that cannot be settled (looked for again by the poller);
 * after a refusal, the parts not yet sent are failed too ("not submitted"). Returns 0 when
 * every part is at the provider, -EIO otherwise (err says why).
 */
static int submit_parts(struct bfs *b, struct remote *r, int64_t batch_id,
			struct provider_stream *stream, struct bfs_err *err)
{
	struct store_batch row;
	struct part_list l;
	struct store_file f;
	char path[PATH_MAX] = "";
	int failed = -1, queued = -1, rc;
	bool quota = false;

	rc = store_batch_get(b->store, batch_id, &row);
	if (!rc)
		rc = load_parts(b, batch_id, &l);
	if (rc) {
		follow_stream_abort(b, r, stream);
		err_set(err, "cannot read the cache: %s", strerror(-rc));
		return -EIO;
	}
	if (!store_file_by_name(b->store, batch_id, "requests.jsonl", &f)) {
		/* A file with prompt lines is sent from its translated copy (validate_line). */
		spool_native_path(&b->spool, f.id, path, sizeof(path));
		if (access(path, F_OK))
			spool_path(&b->spool, f.id, path, sizeof(path));
	}
	for (size_t i = 0; i < l.n && !rc; i++) {
		struct store_part *p = &l.v[i];
		struct bfs_err perr = BFS_ERR_INIT;
		enum part_outcome o = PART_ABSENT;

		if (p->pid[0] || (p->state != BATCH_SUBMITTING && p->state != BATCH_QUEUED))
			continue;
		if (failed >= 0) {
			err_set(&perr, "not submitted: part %d could not be", failed + 1);
			log_store_err("a part's failure", p->id,
				      store_part_fail(b->store, p->id, p->state, perr.msg));
			continue;
		}
		if (queued >= 0 && !p->identity[0]) {
			/* Parts go in file order: the ones after a queued part wait behind it. */
			char why[64];

			snprintf(why, sizeof(why), "waiting behind part %d", queued + 1);
			if (queue_part(b, r, p, p->state, why)) {
				err_set(err, "cannot queue part %d in the cache", p->idx + 1);
				rc = -EIO;
			}
			continue;
		}
		if (p->identity[0]) {
			o = settle_part(b, r, &row, p, path, &perr);
			if (o == PART_ABSENT && !others_sent(l.v, l.n, i)) {
				/* Nothing of this directory is at the provider: let the user decide
				 * (docs/semantics.md: the file may be written again). */
				err_set(&perr,
					"submission of '%s' was interrupted and the provider has "
					"no "
					"such batch: nothing was created; write requests.jsonl "
					"again "
					"to submit",
					row.name);
				o = PART_FAILED;
			} else if (o == PART_ABSENT) {
				log_info("batch '%s': part %d was never created; sending it now",
					 row.name, p->idx + 1);
				p->identity[0] = '\0';
				rc = store_part_unsend(b->store, p->id);
				if (rc) {
					err_set(&perr, "cannot write to the cache: %s",
						strerror(-rc));
					o = PART_UNKNOWN;
				}
			}
		}
		if (o == PART_ABSENT && !path[0]) {
			err_set(&perr, "requests.jsonl is gone from the cache");
			o = PART_FAILED;
		}
		if (o == PART_ABSENT && stream && (p->idx != 0 || p->identity[0] || p->off != 0)) {
			follow_stream_abort(b, r, stream); /* not the part it streamed */
			stream = NULL;
		}
		if (o == PART_ABSENT) {
			o = send_part(b, r, &row, p, path, stream, &perr);
			stream = NULL;
		}
		switch (o) {
		case PART_CREATED:
			(void)store_part_get(b->store, p->id, p); /* others_sent() sees its id */
			continue;
		case PART_QUEUED:
			if (p->state != BATCH_QUEUED)
				log_info("batch '%s': part %d queued: [%s] runs as many jobs as "
					 "it may",
					 row.name, p->idx + 1, r->conf->name);
			queued = p->idx;
			continue;
		case PART_ABSENT:
			continue;
		case PART_QUOTA:
		case PART_FAILED:
			log_err("batch '%s' part %d: %s", row.name, p->idx + 1, perr.msg);
			/* Failed after its intent (submitting) or before it left the queue. */
			rc = store_part_fail(b->store, p->id, BATCH_SUBMITTING, perr.msg);
			if (rc == -ESTALE)
				rc = store_part_fail(b->store, p->id, BATCH_QUEUED, perr.msg);
			log_store_err("a part's failure", p->id, rc);
			rc = 0;
			failed = p->idx;
			if (!err->msg[0])
				err_set(err, "%s", perr.msg);
			if (o == PART_QUOTA && r->conf->quota_retry) {
				/* Kept as a part, so its resubmit can be scheduled and shown. */
				quota = true;
				note_quota_failure(b, r, p, perr.msg);
			}
			continue;
		case PART_UNKNOWN:
			log_warn("batch '%s' part %d: %s", row.name, p->idx + 1, perr.msg);
			log_store_err("a note", p->id,
				      store_part_note(b->store, p->id, perr.msg, 0,
						      timefmt_now_ms() + poll_delay_ms(r)));
			err_set(err, "%s", perr.msg);
			rc = -EIO;
			break;
		case PART_WAIT:
			/* Stays submitting; its error says until when (resume_commit). */
			log_store_err("a note", p->id,
				      store_part_note(b->store, p->id, perr.msg, 0, perr.retry_at));
			err_set(err, "%s", perr.msg);
			err->retry_at = perr.retry_at;
			rc = -EIO;
			break;
		}
	}
	free(l.v);
	follow_stream_abort(b, r, stream); /* not sent: the part was settled or failed */
	if (!rc && failed >= 0)
		rc = -EIO;
	if (failed >= 0 && !quota && !store_batch_get(b->store, batch_id, &row) &&
	    !row.nparts_sent && !row.identity[0]) {
		/* Nothing at the provider: the file may be written again (docs/semantics.md). */
		(void)store_batch_set_state(b->store, batch_id, BATCH_FAILED, BATCH_FAILED,
					    err->msg, 0, true); /* logged above */
		set_file_mode(b, batch_id, 0644);
	}
	return rc;
}

int batch_claim(struct bfs *b, int64_t batch_id, int64_t file_id, struct bfs_err *err)
{
	pthread_mutex_t *dl = bfs_draft_lock(b, batch_id);
	struct store_batch row;
	char path[PATH_MAX];
	struct stat st;
	int rc;

	spool_path(&b->spool, file_id, path, sizeof(path));
	/* The draft rule (bfs.h): once claimed under the draft lock, nothing changes the file. */
	pthread_mutex_lock(dl);
	rc = store_batch_get(b->store, batch_id, &row);
	if (!rc && (row.foreign || !(state_is_writable(row.state, row.pid[0] != '\0') ||
				     store_batch_unrun_failure(&row))))
		rc = -EACCES;
	if (!rc && stat(path, &st))
		rc = -errno;
	if (!rc && st.st_size == 0) {
		/* An empty file is not submitted (docs/semantics.md): `touch` keeps a draft. */
		rc = store_batch_set_state(b->store, batch_id, row.state, BATCH_DRAFT, NULL, 0,
					   true);
		pthread_mutex_unlock(dl);
		return rc == -ESTALE ? -EACCES : rc ? rc : 1;
	}
	if (!rc)
		rc = store_batch_claim(b->store, batch_id);
	if (!rc && !inflight_claim(b, batch_id)) {
		(void)store_batch_set_state(b->store, batch_id, BATCH_SUBMITTING, row.state,
					    row.error, row.error_line, false); /* undo the claim */
		rc = -EBUSY;
	}
	pthread_mutex_unlock(dl);
	if (rc)
		err_set(err, "cannot commit: %s", strerror(-rc));
	return rc;
}

void batch_unclaim(struct bfs *b, int64_t batch_id, const char *msg)
{
	log_store_err("a claim given back", batch_id,
		      store_batch_set_state(b->store, batch_id, BATCH_SUBMITTING, BATCH_DRAFT, msg,
					    0, true));
	inflight_release(b, batch_id);
}

/*
 * The upper-bound estimate of what the batch will cost, recorded with it (status.cost), and
 * the remote's max_cost: over the cap, or not computable while a cap is set, the commit is
 * refused with -EDQUOT (nothing is sent). Other failures are the cache's: -errno.
 */
static int commit_cost(struct bfs *b, const struct remote *r, int64_t batch_id,
		       const struct price_estimate *est, struct bfs_err *err)
{
	const char *file = conf_get(r->conf, "price_file", price_default_file());
	const char *cap_s = conf_get(r->conf, "max_cost", NULL);
	struct bfs_err lerr = BFS_ERR_INIT;
	struct price_table *t = NULL;
	struct buf json = BUF_INIT(STORE_COST_MAX - 1);
	char why[BFS_ERR_MSG_MAX / 2];
	double usd = -1, cap = cap_s ? strtod(cap_s, NULL) : 0;
	int rc;

	(void)price_table_load(&t, file, &lerr); /* no table: the estimate says why */
	rc = price_estimate_json(est, t, lerr.msg, &json, &usd, why, sizeof(why));
	price_table_free(t);
	if (!rc)
		rc = store_batch_set_cost(b->store, batch_id, json.data);
	buf_release(&json);
	if (rc == -EFBIG || rc == -E2BIG) {
		log_warn("the cost estimate of batch %" PRId64 " is too long to keep; status shows "
			 "none (the max_cost check still applies)",
			 batch_id);
		rc = 0;
	}
	if (rc) {
		err_set(err, "cannot record the cost estimate in the cache: %s", strerror(-rc));
		return rc;
	}
	if (!cap_s)
		return 0;
	if (usd < 0) {
		err_set(err,
			"the cost cannot be checked against max_cost (%.2f USD) of [%s]: %s; "
			"nothing was sent",
			cap, r->conf->name, why);
		return -EDQUOT;
	}
	if (usd > cap) {
		err_set(err,
			"estimated cost %.4f USD (upper bound) exceeds max_cost %.4f USD of [%s]; "
			"nothing was sent",
			usd, cap, r->conf->name);
		return -EDQUOT;
	}
	return 0;
}

/*
 * The whole file is checked before anything is sent: one bad line anywhere means no part at
 * all. A check that followed the writer (follow.h) has done most of it; otherwise, or when
 * the writes were not one sequential stream, it is done here in one pass.
 */
static int check_file(struct bfs *b, struct remote *r, int64_t batch_id, int64_t file_id, int fd,
		      int64_t size, struct intake **out, int64_t *left_out,
		      struct provider_stream **stream, struct bfs_err *err)
{
	struct intake *in = NULL;
	int64_t left = 0;
	int rc = follow_take(b, batch_id, file_id, size, &in, &left, stream, err);

	*left_out = in ? left : -1;
	if (rc == -ENOENT)
		rc = intake_begin(b, r, batch_id, file_id, fd, &in, err);
	if (!rc)
		rc = intake_read(in, fd, intake_fed(in), err);
	if (!rc)
		rc = intake_finish(in, err);
	*out = in;
	return rc;
}

int batch_commit_claimed(struct bfs *b, struct remote *r, int64_t batch_id, int64_t file_id,
			 struct bfs_err *err)
{
	struct intake *in = NULL;
	struct intake_result res;
	struct store_batch row;
	struct stat st;
	struct provider_stream *stream = NULL;
	int64_t followed;
	int fd = -1, rc;

	(void)store_batch_set_cost(b->store, batch_id, ""); /* an older commit's estimate */
	rc = store_batch_get(b->store, batch_id, &row);
	if (rc) {
		err_set(err, "cannot read the cache: %s", strerror(-rc));
		follow_drop(b, batch_id);
		inflight_release(b, batch_id);
		return rc;
	}
	fd = spool_open(&b->spool, file_id, O_RDONLY);
	if (fd >= 0 && fstat(fd, &st)) {
		int e = errno;

		close(fd);
		fd = -e;
	}
	if (fd < 0) {
		rc = fd;
		err_set(err, "cannot read requests.jsonl: %s", strerror(-fd));
		follow_drop(b, batch_id);
		goto failed;
	}
	rc = check_file(b, r, batch_id, file_id, fd, (int64_t)st.st_size, &in, &followed, &stream,
			err);
	if (followed >= 0)
		log_info("batch '%s': requests.jsonl checked as it was written (%" PRId64
			 " of %" PRId64 " bytes left for the close)",
			 row.name, followed, (int64_t)st.st_size);
	else
		log_debug("batch '%s': requests.jsonl checked at close", row.name);
	if (rc == -EINVAL || rc == -ENODATA) {
		log_store_err("a rejection", batch_id,
			      store_batch_set_state(b->store, batch_id, BATCH_SUBMITTING,
						    BATCH_REJECTED, err->msg, err->line, false));
		log_info("batch '%s' rejected: %s", row.name, err->msg);
		rc = -EINVAL;
		goto out;
	}
	if (rc)
		goto failed;
	intake_result(in, &res);
	rc = commit_cost(b, r, batch_id, res.est, err);
	if (rc == -EDQUOT) {
		log_store_err("a rejection", batch_id,
			      store_batch_set_state(b->store, batch_id, BATCH_SUBMITTING,
						    BATCH_REJECTED, err->msg, 0, false));
		log_info("batch '%s' rejected: %s", row.name, err->msg);
		goto out;
	}
	if (rc)
		goto failed;
	rc = intake_keep_copy(in);
	if (rc) {
		err_set(err, "cannot write the translated copy of requests.jsonl: %s",
			strerror(-rc));
		goto failed;
	}
	if (res.nprompts)
		log_info("batch '%s': %" PRIu64 " prompt lines translated for '%s'", row.name,
			 res.nprompts, r->conf->name);
	rc = store_parts_create(b->store, batch_id, r->conf->name, res.parts, res.nparts,
				res.endpoint, res.model, (int64_t)res.count, (int64_t)st.st_size);
	if (rc) {
		err_set(err, "cannot record the submission in the cache: %s", strerror(-rc));
		goto failed;
	}
	set_file_mode(b, batch_id, 0444);
	if (res.nparts > 1)
		log_info("batch '%s': %" PRIu64 " requests in %zu parts (limits: %" PRIu64
			 " requests, %" PRIu64 " bytes per batch)",
			 row.name, res.count, res.nparts, r->limits.max_requests,
			 r->limits.max_bytes);
	if (stream && (res.nprompts || !res.nparts || res.parts[0].off != 0)) {
		follow_stream_abort(b, r, stream); /* the first part is not what it sent */
		stream = NULL;
	}
	intake_free(in);
	in = NULL;
	close(fd);
	fd = -1;
	rc = submit_parts(b, r, batch_id, stream, err);
	stream = NULL;
	if (!rc)
		log_info("batch '%s' submitted", row.name);
	goto out;

failed:
	if (!err->msg[0])
		err_set(err, "cannot submit: %s", strerror(-rc));
	/* Certainly nothing created: the file may be written again. */
	log_store_err("a failure", batch_id,
		      store_batch_set_state(b->store, batch_id, BATCH_SUBMITTING, BATCH_FAILED,
					    err->msg, 0, true));
	set_file_mode(b, batch_id, 0644);
	log_err("%s", err->msg);
	rc = -EIO;
out:
	follow_stream_abort(b, r, stream);
	intake_free(in);
	if (fd >= 0)
		close(fd);
	inflight_release(b, batch_id);
	return rc;
}

int batch_commit(struct bfs *b, struct remote *r, int64_t batch_id, int64_t file_id,
		 struct bfs_err *err)
{
	int rc = batch_claim(b, batch_id, file_id, err);

	if (rc)
		return rc > 0 ? 0 : rc;
	return batch_commit_claimed(b, r, batch_id, file_id, err);
}

/* True when a part of the batch waits for a rate limit to send its create (PART_WAIT). */
static bool rate_limited(struct bfs *b, int64_t batch_id)
{
	struct part_list l;
	bool yes = false;

	if (load_parts(b, batch_id, &l))
		return false;
	for (size_t i = 0; i < l.n && !yes; i++)
		yes = l.v[i].state == BATCH_SUBMITTING && !l.v[i].pid[0] &&
		      strstr(l.v[i].error, ERR_RATE_LIMITED_MSG);
	free(l.v);
	return yes;
}

/*
 * After a crash (or when a create could not be settled): carries on with a batch's commit in
 * this process. Nothing sent at all: failed, nothing at the provider, the user may write again.
 */
static int resume_commit(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err)
{
	struct store_batch row;
	int rc;

	if (!inflight_claim(b, batch_id))
		return 0; /* its commit is running: it reports for itself */
	rc = store_batch_get(b->store, batch_id, &row);
	if (!rc && row.state == BATCH_SUBMITTING && !row.nparts_sent && !row.identity[0] &&
	    !rate_limited(b, batch_id)) {
		err_set(err,
			"submission of '%s' was interrupted before anything was sent; write "
			"requests.jsonl again to submit",
			row.name);
		rc = store_batch_set_state(b->store, batch_id, BATCH_SUBMITTING, BATCH_FAILED,
					   err->msg, 0, true);
		if (!rc)
			set_file_mode(b, batch_id, 0644);
		rc = rc ? rc : -EIO;
	} else if (!rc) {
		rc = submit_parts(b, r, batch_id, NULL, err);
	}
	inflight_release(b, batch_id);
	return rc;
}

/* Resubmit */

int batch_resubmit(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err)
{
	struct store_batch row;
	struct store_file f;
	int rc;

	rc = store_batch_get(b->store, batch_id, &row);
	if (rc)
		return rc;
	if (row.foreign) {
		err_set(err, "cannot resubmit '%s': it was made elsewhere", row.name);
		return -EINVAL;
	}
	if (row.state == BATCH_FAILED && !row.nparts) {
		/* Nothing was created: the same as writing the same file again. */
		rc = store_file_by_name(b->store, batch_id, "requests.jsonl", &f);
		if (rc) {
			err_set(err, "cannot resubmit '%s': it has no requests.jsonl", row.name);
			return -EINVAL;
		}
		log_info("batch '%s': resubmitting requests.jsonl", row.name);
		return batch_commit(b, r, batch_id, f.id, err);
	}
	if (!inflight_claim(b, batch_id)) {
		err_set(err, "cannot resubmit '%s': its submission is running", row.name);
		return -EBUSY;
	}
	/* The parts go back to "not sent" in one transaction: a crash from here on resumes
	 * them through the exactly-once path (intent, create, find) like any commit. */
	rc = store_batch_resubmit(b->store, batch_id);
	if (rc == -ENOENT) {
		err_set(err,
			"cannot resubmit '%s': no part of it failed before running a request "
			"(state %s)",
			row.name, state_name(row.state));
		rc = -EINVAL;
	} else if (rc) {
		err_set(err, "cannot resubmit '%s': cannot write to the cache: %s", row.name,
			strerror(-rc));
	} else {
		log_info("batch '%s': resubmitting the parts that failed before running", row.name);
		set_file_mode(b, batch_id, 0444);
		rc = submit_parts(b, r, batch_id, NULL, err);
	}
	inflight_release(b, batch_id);
	return rc;
}

/* Cancel, refresh */

/*
 * Providers' messages for cancel, poll and download already say what failed and of which id
 * ("cannot cancel batch 'msgbatch_..': ..."): a second "cannot ..." in front only repeats
 * it. Other messages (a bare transport error) get the prefix.
 */
static void prefix_unless_said(struct bfs_err *err, const char *what, const char *name)
{
	if (strncmp(err->msg, "cannot ", 7))
		err_prefix(err, "%s '%s'", what, name);
}

/* True when cancelling batch_id would throw away finished requests at the provider. */
static bool cancel_loses_work(const struct part_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].pid[0] && !state_is_terminal(l->v[i].state))
			return true;
	return false;
}

static int cancel_parts(struct bfs *b, struct remote *r, int64_t batch_id, bool confirmed,
			struct bfs_err *err);

int batch_cancel(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err)
{
	return cancel_parts(b, r, batch_id, false, err);
}

int batch_cancel_confirmed(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err)
{
	return cancel_parts(b, r, batch_id, true, err);
}

static int cancel_parts(struct bfs *b, struct remote *r, int64_t batch_id, bool confirmed,
			struct bfs_err *err)
{
	struct store_batch row;
	struct part_list l;
	int rc, failures = 0;

	rc = store_batch_get(b->store, batch_id, &row);
	if (rc)
		return rc;
	if (!row.pid[0] && row.state != BATCH_QUEUED) {
		err_set(err, "cannot cancel batch '%s': it was never submitted", row.name);
		return -EINVAL;
	}
	rc = load_parts(b, batch_id, &l);
	if (rc)
		return rc;
	if (!confirmed && r->ops->cancel_warning && cancel_loses_work(&l) &&
	    strcmp(conf_get(r->conf, "cancel_confirm", "on"), "off")) {
		/* Nothing is sent: the user decides, with the cost in status. */
		err_set(err,
			"cancel refused: %s; write 'cancel!' to ctl to cancel anyway (or set "
			"cancel_confirm = off in [%s])",
			r->ops->cancel_warning, r->conf->name);
		for (size_t i = 0; i < l.n; i++)
			if (l.v[i].pid[0] && !state_is_terminal(l.v[i].state))
				log_store_err(
					"a note", l.v[i].id,
					store_part_note(b->store, l.v[i].id, err->msg, 0, -1));
		free(l.v);
		return -EBUSY;
	}
	for (size_t i = 0; i < l.n; i++) {
		struct store_part *p = &l.v[i];
		struct provider_batch pb;
		struct bfs_err perr = BFS_ERR_INIT;

		if (p->state == BATCH_QUEUED) {
			/* Never sent: it leaves the queue here, nothing to ask the provider. */
			struct store_part nw = *p;

			nw.state = BATCH_CANCELED;
			nw.results = RESULTS_UNAVAILABLE;
			nw.next_poll_at = 0;
			nw.counts.canceled = nw.counts.total;
			snprintf(nw.error, sizeof(nw.error), "canceled while queued: never sent");
			log_store_err("a cancel", p->id,
				      store_part_apply(b->store, &nw, BATCH_QUEUED));
			continue;
		}
		if (!p->pid[0] || state_is_terminal(p->state))
			continue; /* nothing left to cancel; `echo cancel > ctl` twice is fine */
		log_store_err("a cancel", p->id, store_part_cancel_requested(b->store, p->id));
		if (r->ops->cancel(r->prov, p->pid, &pb, &perr)) {
			/* The state stays what the provider last said: only the reason is new. */
			prefix_unless_said(&perr, "cannot cancel batch", row.name);
			log_store_err("a note", p->id,
				      store_part_note(b->store, p->id, perr.msg, 0, -1));
			if (!failures++)
				err_set(err, "%s", perr.msg);
			continue;
		}
		/* A view newer than the one we had (the poller's) is kept: -ESTALE is fine. */
		(void)apply_part(b, r, p->id, p->state, &pb); /* logged inside */
	}
	free(l.v);
	if (!store_batch_get(b->store, batch_id, &row) && !row.pid[0] &&
	    row.state == BATCH_CANCELED)
		set_file_mode(b, batch_id, 0644); /* nothing was sent: it may be written again */
	return failures ? -EIO : 0;
}

static int poll_part(struct bfs *b, struct remote *r, const struct store_part *p,
		     struct bfs_err *err)
{
	struct retry_ctx rctx = {b, p->id, "polling"};
	struct provider_batch pb;
	int rc;

	rc = r->ops->get(r->prov, p->pid, &pb, note_retry, &rctx, err);
	if (rc) {
		int64_t next = timefmt_now_ms() + poll_delay_ms(r);

		prefix_unless_said(err, "cannot poll batch", p->pid);
		log_store_err("a note", p->id,
			      store_part_note(b->store, p->id, err->msg, 0,
					      err->retry_at > next ? err->retry_at : next));
		return rc;
	}
	rc = apply_part(b, r, p->id, p->state, &pb);
	return rc == -ESTALE ? 0 : rc; /* a newer view came first */
}

int batch_refresh(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err)
{
	struct store_batch row;
	struct part_list l;
	bool submitting = false;
	int rc, first = 0;

	rc = store_batch_get(b->store, batch_id, &row);
	if (rc)
		return rc;
	if (batch_is_in_flight(b, batch_id))
		return 0; /* its submission is running here: status shows it, nothing to add */
	if (!row.nparts) {
		err_set(err, "batch '%s' has not been submitted", row.name);
		return -EINVAL;
	}
	rc = load_parts(b, batch_id, &l);
	if (rc)
		return rc;
	for (size_t i = 0; i < l.n; i++) {
		struct bfs_err perr = BFS_ERR_INIT;

		if (l.v[i].state == BATCH_SUBMITTING || l.v[i].state == BATCH_QUEUED) {
			submitting = true;
			continue;
		}
		if (!l.v[i].pid[0])
			continue;
		if (state_is_terminal(l.v[i].state)) {
			/* Results that failed to come, or were given up: try again now. */
			rc = store_part_results_retry(b->store, l.v[i].id);
			if (rc < 0 && !first) {
				first = rc;
				err_set(err, "cannot schedule the results of '%s': %s", l.v[i].pid,
					strerror(-rc));
			}
			continue;
		}
		rc = poll_part(b, r, &l.v[i], &perr);
		if (rc && !first) {
			first = rc;
			err_set(err, "%s", perr.msg);
		}
	}
	free(l.v);
	if (submitting) {
		struct bfs_err serr = BFS_ERR_INIT;

		rc = resume_commit(b, r, batch_id, &serr);
		if (rc && !first) {
			first = rc;
			err_set(err, "%s", serr.msg);
		}
	}
	return first;
}

/*
 * Results: the download streams into the part's results file (store_ingest_*: no SQLite
 * transaction is open meanwhile), then one short transaction indexes it, so the database is
 * never locked for as long as a network transfer takes and the bytes are written once.
 */

static int dl_line(void *ctx, const char *custom_id, const char *line, size_t len, long lineno,
		   const char *bad)
{
	if (bad) {
		/* One bad line costs that line, not the whole set: it is named in status. */
		store_ingest_bad(ctx, lineno, bad);
		return 0;
	}
	return store_ingest_add(ctx, custom_id, line, len, lineno);
}

static int dl_reset(void *ctx)
{
	return store_ingest_reset(ctx);
}

#define RESULTS_BIT(s) (1u << (s))

/* What a failure of the cache's disk means to a user (not "Input/output error"). */
static const char *cache_reason(int rc)
{
	return rc == -ENOSPC ? "no space left on the cache's file system" : strerror(-rc);
}

/*
 * A part made here whose batch ended and whose results are settled (in the cache, or never
 * coming): the provider may free what the submission left (OpenAI/Azure: the input file).
 */
static void part_settled(struct bfs *b, struct remote *r, int64_t part_id)
{
	struct provider_batch pb;
	struct store_batch row;
	struct store_part p;

	if (!r->ops->settled || store_part_get(b->store, part_id, &p) ||
	    store_batch_get(b->store, p.batch_id, &row) || row.foreign || !p.pid[0] ||
	    !state_is_terminal(p.state) ||
	    (p.results != RESULTS_READY && p.results != RESULTS_UNAVAILABLE))
		return;
	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "%s", p.pid);
	snprintf(pb.ref, sizeof(pb.ref), "%s", p.ref);
	pb.state = p.state;
	r->ops->settled(r->prov, &pb);
}

int batch_fetch_results(struct bfs *b, struct remote *r, int64_t part_id, struct bfs_err *err)
{
	struct retry_ctx rctx = {b, part_id, "downloading the results"};
	struct store_ingest *in = NULL;
	struct provider_batch pb;
	struct store_part p;
	char stray_msg[STORE_INGEST_MSG] = "";
	int64_t count = 0, stray = 0, t0, t1;
	int rc;

	rc = store_part_get(b->store, part_id, &p);
	if (rc)
		return rc;
	if (results_are_in(p.results) || p.results == RESULTS_UNAVAILABLE)
		return 0;
	t0 = timefmt_mono_ms();
	rc = store_part_set_results(b->store, part_id,
				    RESULTS_BIT(RESULTS_PENDING) | RESULTS_BIT(RESULTS_DOWNLOADING),
				    RESULTS_DOWNLOADING, NULL, 0);
	if (rc) {
		log_store_err("a download", part_id, rc);
		return rc == -ESTALE ? 0 : rc;
	}
	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "%s", p.pid);
	snprintf(pb.ref, sizeof(pb.ref), "%s", p.ref);
	snprintf(pb.provider_state, sizeof(pb.provider_state), "%s", p.provider_state);
	pb.state = p.state;
	pb.counts = p.counts;
	pb.created_at = p.created_at;
	pb.ended_at = p.ended_at;
	pb.results_available = true;

	rc = store_ingest_begin(b->store, part_id, &in);
	if (!rc)
		store_ingest_set_parse(in, r->ops->result_parse); /* text/, retry, usage */
	if (rc) {
		err_set(err, "cannot store the results of '%s': %s", p.pid, cache_reason(rc));
		goto out;
	}
	rc = r->ops->results(r->prov, &pb, dl_line, dl_reset, in, note_retry, &rctx, err);
	if (rc == -ENODATA) {
		log_store_err("results", part_id,
			      store_part_set_results(
				      b->store, part_id, RESULTS_BIT(RESULTS_DOWNLOADING),
				      RESULTS_UNAVAILABLE, err->msg[0] ? err->msg : NULL, 0));
		store_ingest_abort(in);
		part_settled(b, r, part_id);
		return 0;
	}
	if (rc == -ENOSPC) {
		err_set(err, "cannot store the results of '%s': %s", p.pid, cache_reason(rc));
		goto out;
	}
	if (rc) {
		prefix_unless_said(err, "cannot download the results of", p.pid);
		goto out;
	}
	if (!store_ingest_count(in) && !store_ingest_bad_count(in) && p.counts.total) {
		/* An empty answer for a batch that had requests: say so rather than wait forever. */
		log_store_err("results", part_id,
			      store_part_set_results(b->store, part_id,
						     RESULTS_BIT(RESULTS_DOWNLOADING),
						     RESULTS_UNAVAILABLE,
						     "the provider returned no result lines", 0));
		store_ingest_abort(in);
		return 0;
	}
	t1 = timefmt_mono_ms();
	rc = store_ingest_commit(in, &count, &stray, stray_msg);
	in = NULL; /* freed by the commit, whatever it returned */
	if (rc) {
		err_set(err, "cannot store the results of '%s': %s", p.pid, cache_reason(rc));
		goto out;
	}
	if (stray)
		log_warn("batch '%s': %s", p.pid, stray_msg);
	log_info("batch '%s': %" PRId64 " results stored (download %.2f s, index %.2f s)", p.pid,
		 count, (double)(t1 - t0) / 1e3, (double)(timefmt_mono_ms() - t1) / 1e3);
	part_settled(b, r, part_id);
out:
	store_ingest_abort(in);
	if (rc && err->retry_at) {
		/* A rate limit is no failed attempt: pending again, looked at when it said. */
		log_store_err("results", part_id,
			      store_part_set_results(b->store, part_id,
						     RESULTS_BIT(RESULTS_DOWNLOADING),
						     RESULTS_PENDING, err->msg, err->retry_at));
		return rc;
	}
	if (rc)
		/* A lasting cause (a full disk, a bad answer) must not cost a whole download
		 * every poll_interval: each failure in a row doubles the wait. */
		log_store_err("results", part_id,
			      store_part_fetch_failed(b->store, part_id, err->msg, poll_delay_ms(r),
						      BATCH_FETCH_BACKOFF_MAX_MS,
						      r->conf->results_attempts
							      ? r->conf->results_attempts
							      : CONF_RESULTS_ATTEMPTS_DEFAULT));
	return rc;
}

/* Discovery of batches made elsewhere */

struct discover_ctx {
	struct bfs *b;
	struct remote *r;
	int added;
	int64_t started; /* when the listing was asked for */
	bool full;	 /* every page, whatever is known */
	int known;	 /* batches seen known and unchanged */
};

/* A listed batch already owned here whose view is the one stored: nothing to learn from it. */
static bool discover_unchanged(struct discover_ctx *dc, const struct provider_batch *pb)
{
	struct store_part p;
	int rc = store_part_by_pid(dc->b->store, dc->r->conf->name, pb->id, &p);

	if (rc == -ENOENT)
		return true; /* owned but no part: a batch forgotten here (rm), not shown again */
	return !rc && p.state == pb->state && !strcmp(p.provider_state, pb->provider_state) &&
	       !memcmp(&p.counts, &pb->counts, sizeof(p.counts));
}

static int discover_one(void *ctx, const struct provider_batch *pb)
{
	struct discover_ctx *dc = ctx;
	bool recent;
	int64_t id, part_id;
	int rc;

	if (store_pid_is_owned(dc->b->store, dc->r->conf->name, pb->id)) {
		if (dc->full || !discover_unchanged(dc, pb))
			return 0;
		dc->known++;
		return PROVIDER_LIST_KNOWN;
	}
	/* One of ours whose create answer was lost is adopted by its part, not shown twice. */
	if (pb->identity[0] && store_identity_is_ours(dc->b->store, pb->identity))
		return 0;
	/*
	 * A submission that began after this listing was asked for may have created this very
	 * batch, its id not yet recorded (the create answered after the provider made the
	 * listing); its intent was recorded before the create was sent, so the store refuses
	 * a recent batch while such an intent is unsettled. Older batches cannot be ours.
	 */
	recent = !pb->created_at || pb->created_at >= dc->started - BATCH_DISCOVER_SKEW_MS;
	rc = store_batch_add_foreign(dc->b->store, dc->r->conf->name, pb, recent, timefmt_now_ms(),
				     &id, &part_id);
	if (rc == -EEXIST || rc == -EBUSY)
		return 0; /* known here, or may be ours: the next listing looks again */
	if (rc)
		return rc;
	dc->added++;
	rc = apply_part(dc->b, dc->r, part_id, pb->state, pb);
	return rc == -ESTALE ? 0 : rc;
}

int batch_discover(struct bfs *b, struct remote *r, bool full, struct bfs_err *err)
{
	struct discover_ctx dc = {b, r, 0, timefmt_now_ms(), full, 0};
	int rc;

	rc = r->ops->list(r->prov, discover_one, &dc, err);
	log_debug("remote '%s': %s listing, %d batch(es) known and unchanged", r->conf->name,
		  full ? "full" : "incremental", dc.known);
	if (dc.added)
		log_info("remote '%s': %d batch(es) made elsewhere found", r->conf->name, dc.added);
	return rc;
}

/* The poller's visit of one due part: decide what it needs from the store alone. */
int batch_visit(struct bfs *b, struct remote *r, int64_t part_id, struct bfs_err *err)
{
	int64_t now = timefmt_now_ms();
	struct store_batch row;
	struct store_part p;
	int rc = 0;

	if (store_part_get(b->store, part_id, &p) || store_batch_get(b->store, p.batch_id, &row))
		return 0;
	if (batch_is_in_flight(b, p.batch_id)) {
		/* Its commit is running: look after it later, never meanwhile. */
		(void)store_part_schedule(b->store, part_id, p.next_poll_at,
					  now + poll_delay_ms(r)); /* else someone rescheduled it */
		return 0;
	}
	if (p.state == BATCH_FAILED && !row.foreign && r->conf->quota_retry && p.next_poll_at &&
	    p.next_poll_at <= now && !p.counts.succeeded && !p.counts.errored) {
		/* A quota failure's resubmit is due (note_quota_failure scheduled it). */
		(void)store_part_schedule(b->store, part_id, p.next_poll_at, 0);
		return batch_resubmit(b, r, p.batch_id, err);
	}
	if (p.state == BATCH_SUBMITTING || p.state == BATCH_QUEUED) {
		/* A queued part is sent when a slot is free, else its place is renewed. */
		rc = resume_commit(b, r, p.batch_id, err);
	} else if (p.pid[0] && !state_is_terminal(p.state)) {
		rc = poll_part(b, r, &p, err);
		if (!store_part_get(b->store, part_id, &p) && p.results == RESULTS_UNAVAILABLE)
			part_settled(b, r, part_id); /* ended with no results (failed) */
	}
	if (store_part_get(b->store, part_id, &p) || store_batch_get(b->store, p.batch_id, &row))
		return rc;
	if (p.pid[0] && state_is_terminal(p.state) && !results_are_in(p.results) &&
	    p.results != RESULTS_UNAVAILABLE && (!row.foreign || row.results_wanted) &&
	    p.next_poll_at && p.next_poll_at <= timefmt_now_ms())
		return batch_fetch_results(b, r, part_id, err);
	/* Nothing left to do with it now: keep it off the due list, unless rescheduled since. */
	if (p.next_poll_at && p.next_poll_at <= timefmt_now_ms() &&
	    !(p.state == BATCH_FAILED && r->conf->quota_retry)) /* a resubmit due: next visit */
		(void)store_part_schedule(b->store, part_id, p.next_poll_at, 0);
	return rc;
}

int batch_resume_all(struct bfs *b)
{
	return store_parts_resume(b->store,
				  "submission was interrupted before anything was sent; write "
				  "requests.jsonl again to submit");
}
