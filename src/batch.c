// SPDX-License-Identifier: MIT
/*
 * The life of a batch between its files and its provider: the commit point (validate, record
 * the intent, submit exactly once), cancel, polling, results download and ingest, crash
 * reconciliation and discovery of batches made elsewhere. Every outcome a user must know is
 * written to the batch's row, which status renders. Rows are read-modified-written under
 * bfs.lock, which is never held across network I/O.
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
#include "jsonl.h"
#include "log.h"
#include "poller.h"
#include "provider.h"
#include "spool.h"
#include "store.h"
#include "timefmt.h"

#define BATCH_READ_CHUNK   (256 * 1024)
#define BATCH_SUBMIT_TRIES 3
#define BATCH_RECORD_MAX   (512u << 20)
/* How long an interrupted create may still take effect at the provider (reconcile_grace). */
#define BATCH_RECONCILE_GRACE_S 300.0
/* The provider's clock against ours, when telling a batch made just now from older ones. */
#define BATCH_DISCOVER_SKEW_MS (10 * 60 * 1000)

static int64_t poll_delay_ms(const struct remote *r)
{
	return (int64_t)(r->conf->poll_interval * 1000.0);
}

/* Applies fn to batch id's row under the lock: read, change, write back. */
static int batch_update(struct bfs *b, int64_t id, void (*fn)(struct store_batch *, void *),
			void *ctx)
{
	struct store_batch row;
	int rc;

	pthread_mutex_lock(&b->lock);
	rc = store_batch_get(b->store, id, &row);
	if (!rc) {
		fn(&row, ctx);
		row.updated_at = timefmt_now_ms();
		rc = store_batch_put(b->store, &row);
	}
	pthread_mutex_unlock(&b->lock);
	if (rc)
		log_err("cannot update batch %" PRId64 " in the cache: %s", id, strerror(-rc));
	return rc;
}

static void set_error(struct store_batch *row, const char *msg, long line)
{
	snprintf(row->error, sizeof(row->error), "%s", msg ? msg : "");
	row->error_line = line;
	row->error_attempt = 0;
}

static void do_note(struct store_batch *row, void *ctx)
{
	if (!row->pid[0] && row->state != BATCH_SUBMITTING)
		set_error(row, ctx, 0);
}

int batch_note_unsubmitted(struct bfs *b, int64_t batch_id, const char *msg)
{
	return batch_update(b, batch_id, do_note, (void *)msg);
}

/* Copies what the provider says of a batch into its row and schedules the next look. */
static void apply_provider(struct store_batch *row, const struct provider_batch *pb,
			   int64_t poll_ms)
{
	int64_t now = timefmt_now_ms();

	snprintf(row->pid, sizeof(row->pid), "%s", pb->id);
	row->state = pb->state;
	snprintf(row->provider_state, sizeof(row->provider_state), "%s", pb->provider_state);
	row->counts = pb->counts;
	if (pb->created_at)
		row->created_at = pb->created_at;
	row->ended_at = pb->ended_at;
	if (pb->expires_at)
		row->expires_at = pb->expires_at;
	if (pb->ref[0])
		snprintf(row->ref, sizeof(row->ref), "%s", pb->ref);
	if (pb->error[0])
		set_error(row, pb->error, pb->error_line);
	else
		set_error(row, NULL, 0);
	if (!state_is_terminal(row->state)) {
		row->next_poll_at = now + poll_ms;
		return;
	}
	if (row->results == RESULTS_READY) {
		row->next_poll_at = 0;
	} else if (pb->results_gone || (!pb->results_available && row->state == BATCH_FAILED &&
					!row->counts.succeeded && !row->counts.errored)) {
		row->results = RESULTS_UNAVAILABLE;
		row->next_poll_at = 0;
	} else if (pb->results_available) {
		/* A foreign batch's results wait for someone to look (results_wanted). */
		row->next_poll_at = row->foreign && !row->results_wanted ? 0 : now;
	} else {
		row->next_poll_at = now + poll_ms;
	}
}

struct apply_ctx {
	const struct provider_batch *pb;
	int64_t poll_ms;
};

static void do_apply(struct store_batch *row, void *ctx)
{
	struct apply_ctx *a = ctx;

	apply_provider(row, a->pb, a->poll_ms);
}

struct state_ctx {
	enum batch_state state;
	const char *msg;
	long line;
	int64_t next_poll_at; /* -1: leave as is */
};

static void do_state(struct store_batch *row, void *ctx)
{
	struct state_ctx *s = ctx;

	row->state = s->state;
	set_error(row, s->msg, s->line);
	if (s->next_poll_at >= 0)
		row->next_poll_at = s->next_poll_at;
}

static int set_state(struct bfs *b, int64_t id, enum batch_state state, const char *msg, long line,
		     int64_t next_poll_at)
{
	struct state_ctx s = {state, msg, line, next_poll_at};

	return batch_update(b, id, do_state, &s);
}

static void do_failed(struct store_batch *row, void *ctx)
{
	const struct bfs_err *e = ctx;

	row->state = BATCH_FAILED;
	set_error(row, e->msg, 0);
	row->identity[0] = '\0';
	row->intent_at = 0;
	row->next_poll_at = 0;
}

struct retry_ctx {
	struct bfs *b;
	int64_t id;
	const char *what;
};

static void do_retry_note(struct store_batch *row, void *ctx)
{
	const struct bfs_err *e = ctx;

	snprintf(row->error, sizeof(row->error), "%s", e->msg);
	row->error_line = 0;
	row->error_attempt = e->attempt;
}

/* HTTP retries show in status while they happen (provider_retry_fn). */
static void note_retry(void *ctx, int attempt, const char *reason)
{
	struct retry_ctx *rc = ctx;
	struct bfs_err e = BFS_ERR_INIT;

	err_set(&e, "%s: %s (retrying, attempt %d)", rc->what, reason, attempt);
	e.attempt = attempt;
	(void)batch_update(rc->b, rc->id, do_retry_note, &e); /* logged inside */
}

/* Validation */

struct validate_ctx {
	struct jsonl_validator v;
	struct store_reqs *reqs;
	struct bfs_err *err;
	size_t pending_term; /* terminator length of the line being delivered */
};

static int validate_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct validate_ctx *vc = ctx;
	char *id = NULL;
	size_t idlen = 0;
	long dup = 0;
	int rc;

	rc = jsonl_validator_line(&vc->v, line, len, vc->pending_term, lineno, &id, &idlen,
				  vc->err);
	if (rc || !id)
		return rc;
	rc = store_reqs_add(vc->reqs, id, idlen, lineno, &dup);
	if (rc == -EEXIST) {
		err_set_line(vc->err, lineno,
			     "line %ld: duplicate custom_id '%.*s' (first on line %ld)", lineno,
			     (int)(idlen > 80 ? 80 : idlen), id, dup);
		rc = -EINVAL;
	} else if (rc) {
		err_set_line(vc->err, lineno,
			     "line %ld: cannot record the request in the cache: %s", lineno,
			     strerror(-rc));
	}
	free(id);
	return rc;
}

/*
 * Streams the spool file through the splitter and validator, recording request order and
 * catching duplicate custom_ids in the store (disk, not RAM). Commits the request list only
 * when the whole file is valid.
 */
static int validate_file(struct bfs *b, const struct remote *r, int64_t batch_id, int fd,
			 struct jsonl_validator *out, struct bfs_err *err)
{
	struct validate_ctx vc = {.err = err};
	struct jsonl_splitter sp;
	char *chunk = malloc(BATCH_READ_CHUNK);
	size_t max_line = r->ops->limits.max_bytes ? r->ops->limits.max_bytes : (512u << 20);
	int rc;

	if (!chunk)
		return -ENOMEM;
	jsonl_validator_init(&vc.v, r->ops->format, &r->ops->limits);
	rc = store_reqs_begin(b->store, batch_id, &vc.reqs);
	if (rc) {
		err_set(err, "cannot write to the cache: %s", strerror(-rc));
		free(chunk);
		return rc;
	}
	/*
	 * Terminator lengths matter for the byte limit; the splitter does not report them, so
	 * count bytes from the file size instead: the validator's byte check gets term_len 1
	 * per line and the exact total is compared with the limit below.
	 */
	vc.pending_term = 1;
	jsonl_splitter_init(&sp, max_line, validate_line, &vc);
	for (;;) {
		ssize_t n = read(fd, chunk, BATCH_READ_CHUNK);

		if (n < 0) {
			rc = -errno;
			err_set(err, "cannot read requests.jsonl: %s", strerror(errno));
			break;
		}
		if (n == 0) {
			rc = jsonl_splitter_finish(&sp, err);
			break;
		}
		rc = jsonl_splitter_feed(&sp, chunk, (size_t)n, err);
		if (rc)
			break;
	}
	if (rc == -E2BIG) {
		/* A line over the cap is over the provider's byte limit too. */
		rc = -EINVAL;
	}
	if (!rc)
		rc = jsonl_validator_finish(&vc.v, err);
	jsonl_splitter_release(&sp);
	free(chunk);
	if (rc) {
		(void)store_reqs_end(vc.reqs, false); /* the validation error is the one to show */
		return rc;
	}
	rc = store_reqs_end(vc.reqs, true);
	if (rc) {
		err_set(err, "cannot write to the cache: %s", strerror(-rc));
		return rc;
	}
	*out = vc.v;
	return 0;
}

/* Commit */

struct intent_ctx {
	const struct jsonl_validator *v;
	const char *identity;
	int64_t intent_at;
	int64_t nbytes;
};

static void do_intent(struct store_batch *row, void *ctx)
{
	struct intent_ctx *ic = ctx;

	row->state = BATCH_SUBMITTING;
	set_error(row, NULL, 0);
	snprintf(row->identity, sizeof(row->identity), "%s", ic->identity);
	row->intent_at = ic->intent_at;
	row->nrequests = (int64_t)ic->v->count;
	row->nbytes = ic->nbytes;
	row->counts = (struct batch_counts){.total = (int64_t)ic->v->count};
	snprintf(row->endpoint, sizeof(row->endpoint), "%s", ic->v->endpoint);
	snprintf(row->model, sizeof(row->model), "%s", ic->v->model);
	row->next_poll_at = 0; /* the commit itself drives it; the poller keeps off */
}

static int make_identity(int64_t batch_id, char *out, size_t size)
{
	unsigned char rnd[6];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	snprintf(out, size, "bfs-%02x%02x%02x%02x%02x%02x-%" PRId64, rnd[0], rnd[1], rnd[2], rnd[3],
		 rnd[4], rnd[5], batch_id);
	return 0;
}

/* Sets the mode of requests.jsonl: read-only once submitted (CONTRACT), writable otherwise. */
static void set_file_mode(struct bfs *b, int64_t file_id, uint32_t mode)
{
	struct store_file f;

	if (store_file_get(b->store, file_id, &f))
		return;
	f.mode = mode;
	(void)store_file_put(b->store,
			     &f); /* a wrong mode is cosmetic; writes are checked by state */
}

static void submit_desc(const struct store_batch *row, const char *path, struct provider_submit *s)
{
	memset(s, 0, sizeof(*s));
	s->path = path;
	s->nrequests = (uint64_t)row->nrequests;
	s->nbytes = (uint64_t)row->nbytes;
	s->endpoint = row->endpoint;
	s->model = row->model;
	s->identity = row->identity;
	s->name = row->name;
	s->intent_at = row->intent_at;
}

/*
 * Submits exactly once: a create whose answer may have been lost (-EAGAIN) is followed by a
 * find(); only a certain "not there" allows another attempt. Returns 0 with pb filled, or
 * -EAGAIN when it cannot tell (never resubmitted on its own), or the failure.
 */
static int submit_once(struct bfs *b, struct remote *r, const struct provider_submit *s,
		       int64_t batch_id, struct provider_batch *pb, struct bfs_err *err)
{
	struct retry_ctx rctx = {b, batch_id, "submitting"};
	int rc = -EIO;

	for (int i = 0; i < BATCH_SUBMIT_TRIES; i++) {
		struct bfs_err ferr = BFS_ERR_INIT;

		err_clear(err);
		rc = r->ops->submit(r->prov, s, pb, note_retry, &rctx, err);
		if (rc != -EAGAIN)
			return rc;
		log_warn("batch '%s': the answer to its creation was lost; looking for it",
			 s->name);
		rc = r->ops->find(r->prov, s, pb, &ferr);
		if (rc == 0)
			return 0;
		if (rc != -ENOENT) {
			err_set(err,
				"cannot tell whether the batch was created (%s; then: %s); "
				"batchfs will not resubmit it on its own: 'echo refresh > ctl' "
				"looks "
				"again",
				err->msg[0] ? err->msg : "answer lost", ferr.msg);
			return -EAGAIN;
		}
	}
	return rc;
}

int batch_commit(struct bfs *b, struct remote *r, int64_t batch_id, int64_t file_id,
		 struct bfs_err *err)
{
	struct jsonl_validator v;
	struct provider_batch pb;
	struct provider_submit s;
	struct store_batch row;
	struct store_file f;
	struct intent_ctx ic;
	char path[PATH_MAX], identity[64];
	struct apply_ctx ac;
	struct stat st;
	int fd = -1, rc;

	spool_path(&b->spool, file_id, path, sizeof(path));
	pthread_mutex_lock(&b->lock);
	rc = store_batch_get(b->store, batch_id, &row);
	if (!rc)
		rc = store_file_get(b->store, file_id, &f);
	/* An unknown outcome keeps the batch: only `refresh` may settle it (exactly once). */
	if (!rc && (!state_is_writable(row.state, row.pid[0] != '\0') ||
		    (row.state == BATCH_FAILED && row.identity[0])))
		rc = -EACCES;
	if (!rc && stat(path, &st))
		rc = -errno;
	if (!rc && st.st_size == 0) {
		/* An empty file is not submitted (CONTRACT): `touch` keeps a draft. */
		row.state = BATCH_DRAFT;
		set_error(&row, NULL, 0);
		row.updated_at = timefmt_now_ms();
		rc = store_batch_put(b->store, &row);
		pthread_mutex_unlock(&b->lock);
		return rc;
	}
	if (!rc) {
		/* Claim the batch: writers are refused from here on (state not writable). */
		row.state = BATCH_SUBMITTING;
		row.identity[0] = '\0';
		row.intent_at = 0;
		row.next_poll_at = 0;
		set_error(&row, NULL, 0);
		row.updated_at = timefmt_now_ms();
		rc = store_batch_put(b->store, &row);
	}
	pthread_mutex_unlock(&b->lock);
	if (rc) {
		err_set(err, "cannot commit: %s", strerror(-rc));
		return rc;
	}

	fd = spool_open(&b->spool, file_id, O_RDONLY);
	if (fd < 0) {
		rc = fd;
		err_set(err, "cannot read requests.jsonl: %s", strerror(-fd));
		goto failed;
	}
	rc = validate_file(b, r, batch_id, fd, &v, err);
	close(fd);
	if (rc == -EINVAL || rc == -ENODATA) {
		(void)set_state(b, batch_id, BATCH_REJECTED, err->msg, err->line, 0);
		log_info("batch '%s' rejected: %s", row.name, err->msg);
		return -EINVAL;
	}
	if (rc)
		goto failed;

	/* The intent is durable before the first byte goes out (exactly once, CONTRACT). */
	rc = make_identity(batch_id, identity, sizeof(identity));
	if (rc)
		goto failed;
	ic = (struct intent_ctx){&v, identity, timefmt_now_ms(), (int64_t)v.bytes};
	rc = batch_update(b, batch_id, do_intent, &ic);
	if (rc) {
		err_set(err, "cannot record the submission in the cache: %s", strerror(-rc));
		goto failed;
	}
	set_file_mode(b, file_id, 0444);
	rc = store_batch_get(b->store, batch_id, &row);
	if (rc)
		goto failed;
	submit_desc(&row, path, &s);
	log_info("batch '%s': submitting %" PRId64 " requests (%" PRId64 " bytes) to '%s'",
		 row.name, row.nrequests, row.nbytes, r->conf->name);
	rc = submit_once(b, r, &s, batch_id, &pb, err);
	if (rc == -EAGAIN) {
		/* Unknown outcome: failed, but the intent stays so refresh can still find it. */
		(void)set_state(b, batch_id, BATCH_FAILED, err->msg, 0, 0);
		log_err("batch '%s': %s", row.name, err->msg);
		return -EIO;
	}
	if (rc) {
		err_prefix(err, "cannot submit batch '%s'", row.name);
		goto failed;
	}
	ac = (struct apply_ctx){&pb, poll_delay_ms(r)};
	rc = batch_update(b, batch_id, do_apply, &ac);
	if (rc) {
		/* Created at the provider, but the cache lost it: the identity lets the next
		 * start find it again. */
		err_set(err, "batch created as '%s' but the cache could not record it", pb.id);
		return -EIO;
	}
	log_info("batch '%s' submitted as '%s'", row.name, pb.id);
	if (b->poller)
		poller_kick(b->poller);
	return 0;

failed:
	if (!err->msg[0])
		err_set(err, "cannot submit: %s", strerror(-rc));
	/* Certainly not created: forget the intent so nothing ever looks for it. */
	(void)batch_update(b, batch_id, do_failed, err);
	set_file_mode(b, file_id, 0644);
	log_err("%s", err->msg);
	return -EIO;
}

/* Cancel, refresh, reconcile */

static void do_cancel_requested(struct store_batch *row, void *ctx)
{
	(void)ctx;
	row->cancel_requested = true;
}

int batch_cancel(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err)
{
	struct provider_batch pb;
	struct store_batch row;
	struct apply_ctx ac;
	int rc;

	rc = store_batch_get(b->store, batch_id, &row);
	if (rc)
		return rc;
	if (!row.pid[0]) {
		err_set(err, "cannot cancel batch '%s': it was never submitted", row.name);
		return -EINVAL;
	}
	if (state_is_terminal(row.state))
		return 0; /* nothing left to cancel; not an error for `echo cancel > ctl` twice */
	(void)batch_update(b, batch_id, do_cancel_requested, NULL); /* logged inside */
	rc = r->ops->cancel(r->prov, row.pid, &pb, err);
	if (rc) {
		err_prefix(err, "cannot cancel batch '%s'", row.name);
		(void)set_state(b, batch_id, row.state, err->msg, 0, -1);
		return -EIO;
	}
	ac = (struct apply_ctx){&pb, poll_delay_ms(r)};
	rc = batch_update(b, batch_id, do_apply, &ac);
	if (b->poller)
		poller_kick(b->poller);
	return rc;
}

static int64_t reconcile_grace_ms(const struct remote *r)
{
	return (int64_t)(conf_get_double(r->conf, "reconcile_grace", BATCH_RECONCILE_GRACE_S) *
			 1000.0);
}

/*
 * An earlier submission of row may or may not have reached the provider: look for it
 * (CONTRACT "Exactly once"). Found: adopt it. Absent: still submitting while a late create
 * could land (reconcile_grace after the intent), then failed, nothing sent, the user may write
 * again. Cannot tell: failed, and nothing is resubmitted on its own.
 */
static int reconcile(struct bfs *b, struct remote *r, const struct store_batch *row,
		     struct bfs_err *err)
{
	struct provider_submit s;
	struct provider_batch pb;
	struct store_file f;
	char path[PATH_MAX] = "";
	struct apply_ctx ac;
	int64_t grace = reconcile_grace_ms(r);
	int rc;

	if (!row->identity[0]) {
		err_set(err,
			"submission of '%s' was interrupted before anything was sent; write "
			"requests.jsonl again to submit",
			row->name);
		rc = set_state(b, row->id, BATCH_FAILED, err->msg, 0, 0);
		return rc ? rc : -EIO;
	}
	if (!store_file_by_name(b->store, row->id, "requests.jsonl", &f))
		spool_path(&b->spool, f.id, path, sizeof(path));
	submit_desc(row, path, &s);
	rc = r->ops->find(r->prov, &s, &pb, err);
	if (rc == 0) {
		log_info("batch '%s': found its earlier submission '%s'", row->name, pb.id);
		ac = (struct apply_ctx){&pb, poll_delay_ms(r)};
		return batch_update(b, row->id, do_apply, &ac);
	}
	if (rc == -ENOENT && timefmt_now_ms() < row->intent_at + grace) {
		char until[TIMEFMT_SIZE];

		/*
		 * A create sent just before a crash may still be on its way or in the works:
		 * servers finish a request whose sender died. "Not there yet" becomes "never
		 * there" only once the grace has passed; until then the poller looks again.
		 */
		timefmt_format(row->intent_at + grace, until);
		err_set(err,
			"submission of '%s' was interrupted; looking for it at the provider until "
			"%s before concluding that nothing was created",
			row->name, until);
		(void)set_state(b, row->id, BATCH_SUBMITTING, err->msg, 0,
				timefmt_now_ms() + poll_delay_ms(r)); /* logged inside */
		return 0;
	}
	if (rc == -ENOENT) {
		struct bfs_err e = BFS_ERR_INIT;

		err_set(&e,
			"submission of '%s' was interrupted and the provider has no such "
			"batch: nothing was created; write requests.jsonl again to submit",
			row->name);
		(void)batch_update(b, row->id, do_failed, &e); /* logged inside */
		if (!store_file_by_name(b->store, row->id, "requests.jsonl", &f))
			set_file_mode(b, f.id, 0644);
		err_set(err, "%s", e.msg);
		return -EIO;
	}
	err_prefix(err,
		   "cannot tell whether batch '%s' was created; batchfs will not resubmit "
		   "it on its own; 'echo refresh > ctl' looks again",
		   row->name);
	(void)set_state(b, row->id, BATCH_FAILED, err->msg, 0, 0);
	return rc;
}

int batch_refresh(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err)
{
	struct retry_ctx rctx;
	struct provider_batch pb;
	struct store_batch row;
	struct apply_ctx ac;
	int rc;

	rc = store_batch_get(b->store, batch_id, &row);
	if (rc)
		return rc;
	if (row.state == BATCH_SUBMITTING ||
	    (row.state == BATCH_FAILED && !row.pid[0] && row.identity[0]))
		return reconcile(b, r, &row, err);
	if (!row.pid[0]) {
		err_set(err, "batch '%s' has not been submitted", row.name);
		return -EINVAL;
	}
	rctx = (struct retry_ctx){b, batch_id, "polling"};
	rc = r->ops->get(r->prov, row.pid, &pb, note_retry, &rctx, err);
	if (rc) {
		err_prefix(err, "cannot poll batch '%s'", row.name);
		(void)set_state(b, batch_id, row.state, err->msg, 0,
				timefmt_now_ms() + poll_delay_ms(r));
		return rc;
	}
	ac = (struct apply_ctx){&pb, poll_delay_ms(r)};
	return batch_update(b, batch_id, do_apply, &ac);
}

/* Results: download to a local file first, then ingest it in one short transaction, so the
 * database is never locked for as long as a network transfer takes. */

struct dl_ctx {
	int fd;
	int64_t count;
};

/* Record: u32 id length, u32 line length, id bytes, line bytes. */
static int dl_line(void *ctx, const char *custom_id, const char *line, size_t len)
{
	struct dl_ctx *d = ctx;
	uint32_t hdr[2];
	size_t idlen = strlen(custom_id);

	if (idlen > BATCH_RECORD_MAX || len > BATCH_RECORD_MAX)
		return -E2BIG;
	hdr[0] = (uint32_t)idlen;
	hdr[1] = (uint32_t)len;
	if (write(d->fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr) ||
	    write(d->fd, custom_id, idlen) != (ssize_t)idlen ||
	    write(d->fd, line, len) != (ssize_t)len)
		return -EIO;
	d->count++;
	return 0;
}

static int dl_reset(void *ctx)
{
	struct dl_ctx *d = ctx;

	d->count = 0;
	if (ftruncate(d->fd, 0) || lseek(d->fd, 0, SEEK_SET))
		return -errno;
	return 0;
}

static int read_full(int fd, void *dst, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = read(fd, (char *)dst + done, n - done);

		if (k < 0)
			return -errno;
		if (k == 0)
			return done ? -EIO : -ENODATA;
		done += (size_t)k;
	}
	return 0;
}

static int ingest_file(struct bfs *b, int64_t batch_id, int fd, int64_t *count, int64_t *size)
{
	struct store_ingest *in = NULL;
	char *rec = NULL;
	size_t alloc = 0;
	int rc;

	if (lseek(fd, 0, SEEK_SET))
		return -errno;
	rc = store_ingest_begin(b->store, batch_id, &in);
	if (rc)
		return rc;
	for (;;) {
		uint32_t hdr[2];
		size_t need;

		rc = read_full(fd, hdr, sizeof(hdr));
		if (rc == -ENODATA) {
			rc = 0;
			break;
		}
		if (rc)
			break;
		/* One record at a time: memory is bounded by the longest line, not the file. */
		need = (size_t)hdr[0] + 1 + hdr[1] + 1;
		if (need > alloc) {
			char *p = realloc(rec, need);

			if (!p) {
				rc = -ENOMEM;
				break;
			}
			rec = p;
			alloc = need;
		}
		rc = read_full(fd, rec, hdr[0]);
		if (!rc)
			rc = read_full(fd, rec + hdr[0] + 1, hdr[1]);
		if (rc)
			break;
		rec[hdr[0]] = '\0';
		rc = store_ingest_add(in, rec, rec + hdr[0] + 1, hdr[1]);
		if (rc)
			break;
	}
	free(rec);
	if (rc) {
		store_ingest_abort(in);
		return rc;
	}
	return store_ingest_commit(in, count, size);
}

static void do_results_state(struct store_batch *row, void *ctx)
{
	const struct state_ctx *s = ctx;

	row->results = (enum results_state)s->state;
	set_error(row, s->msg, 0);
	if (s->next_poll_at >= 0)
		row->next_poll_at = s->next_poll_at;
	if (row->results == RESULTS_UNAVAILABLE)
		row->results_wanted = false;
}

static int set_results(struct bfs *b, int64_t id, enum results_state st, const char *msg,
		       int64_t next_poll_at)
{
	struct state_ctx s = {(enum batch_state)st, msg, 0, next_poll_at};

	return batch_update(b, id, do_results_state, &s);
}

int batch_fetch_results(struct bfs *b, struct remote *r, int64_t batch_id, struct bfs_err *err)
{
	struct retry_ctx rctx = {b, batch_id, "downloading the results"};
	struct dl_ctx d = {.fd = -1};
	struct provider_batch pb;
	struct store_batch row;
	char path[PATH_MAX];
	int64_t count = 0, size = 0;
	int rc;

	rc = store_batch_get(b->store, batch_id, &row);
	if (rc)
		return rc;
	if (row.results == RESULTS_READY)
		return 0;
	(void)set_results(b, batch_id, RESULTS_DOWNLOADING, NULL, 0); /* logged inside */
	memset(&pb, 0, sizeof(pb));
	snprintf(pb.id, sizeof(pb.id), "%s", row.pid);
	snprintf(pb.ref, sizeof(pb.ref), "%s", row.ref);
	snprintf(pb.provider_state, sizeof(pb.provider_state), "%s", row.provider_state);
	pb.state = row.state;
	pb.counts = row.counts;
	pb.created_at = row.created_at;
	pb.ended_at = row.ended_at;
	pb.results_available = true;

	snprintf(path, sizeof(path), "%s/download-%" PRId64, b->cache_dir, batch_id);
	d.fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (d.fd < 0) {
		rc = -errno;
		err_set(err, "cannot create '%s': %s", path, strerror(errno));
		goto out;
	}
	rc = r->ops->results(r->prov, &pb, dl_line, dl_reset, &d, note_retry, &rctx, err);
	if (rc == -ENODATA) {
		(void)set_results(b, batch_id, RESULTS_UNAVAILABLE, err->msg[0] ? err->msg : NULL,
				  0); /* logged inside */
		rc = 0;
		goto out;
	}
	if (rc) {
		err_prefix(err, "cannot download the results of '%s'", row.name);
		goto out;
	}
	rc = ingest_file(b, batch_id, d.fd, &count, &size);
	if (rc) {
		err_set(err, "cannot store the results of '%s': %s", row.name, strerror(-rc));
		goto out;
	}
	log_info("batch '%s': %" PRId64 " results stored (%" PRId64 " bytes)", row.name, count,
		 size);
out:
	if (d.fd >= 0) {
		close(d.fd);
		unlink(path);
	}
	if (rc)
		(void)set_results(b, batch_id, RESULTS_PENDING, err->msg,
				  timefmt_now_ms() + poll_delay_ms(r)); /* logged inside */
	else if (count || !row.counts.total)
		(void)set_results(b, batch_id, RESULTS_READY, NULL, 0); /* logged inside */
	else
		/* An empty answer for a batch that had requests: say so rather than wait forever. */
		(void)set_results(b, batch_id, RESULTS_UNAVAILABLE,
				  "the provider returned no result lines", 0); /* logged inside */
	return rc;
}

/* Discovery of batches made elsewhere */

struct discover_ctx {
	struct bfs *b;
	struct remote *r;
	int added;
	int64_t started; /* when the listing was asked for */
};

static int count_submitting(void *ctx, const struct store_batch *row)
{
	int *n = ctx;

	if (row->state == BATCH_SUBMITTING ||
	    (row->state == BATCH_FAILED && !row->pid[0] && row->identity[0]))
		(*n)++;
	return 0;
}

static int discover_one(void *ctx, const struct provider_batch *pb)
{
	struct discover_ctx *dc = ctx;
	struct store_batch row;
	struct apply_ctx ac;
	int pending = 0;
	int64_t id;
	int rc;

	if (!store_batch_by_pid(dc->b->store, dc->r->conf->name, pb->id, &row))
		return 0;
	/* One of ours whose create answer was lost is adopted by reconcile, not shown twice. */
	if (pb->identity[0] && !strncmp(pb->identity, "bfs-", 4)) {
		const char *dash = strrchr(pb->identity, '-');
		int64_t local = dash ? strtoll(dash + 1, NULL, 10) : 0;

		if (local && !store_batch_get(dc->b->store, local, &row) &&
		    !strcmp(row.identity, pb->identity))
			return 0;
	}
	pthread_mutex_lock(&dc->b->lock);
	/*
	 * A submission that began after this listing was asked for may have created this very
	 * batch, its pid not yet recorded (the create answered after the provider made the
	 * listing). Under the lock no submission starts or ends, so a recent batch waits for the
	 * next listing while one of ours is in flight. Older batches cannot be ours.
	 */
	if (!pb->created_at || pb->created_at >= dc->started - BATCH_DISCOVER_SKEW_MS)
		rc = store_batch_list(dc->b->store, dc->r->conf->name, 0, 1 << 30, count_submitting,
				      &pending);
	else
		rc = 0;
	if (!rc && !pending)
		rc = store_batch_add_foreign(dc->b->store, dc->r->conf->name, pb, timefmt_now_ms(),
					     &id);
	pthread_mutex_unlock(&dc->b->lock);
	if (rc == -EEXIST || (!rc && pending))
		return 0; /* a local batch has that name or pid, or may be this batch */
	if (rc)
		return rc;
	ac = (struct apply_ctx){pb, poll_delay_ms(dc->r)};
	dc->added++;
	return batch_update(dc->b, id, do_apply, &ac);
}

int batch_discover(struct bfs *b, struct remote *r, struct bfs_err *err)
{
	struct discover_ctx dc = {b, r, 0, timefmt_now_ms()};
	int pending = 0, rc;

	/*
	 * While a submission of ours has an unknown outcome, a batch at the provider might be
	 * it: adding it as foreign would show it twice. Wait for reconciliation first.
	 */
	rc = store_batch_list(b->store, r->conf->name, 0, 1 << 30, count_submitting, &pending);
	if (rc)
		return rc;
	if (pending)
		return 0;
	rc = r->ops->list(r->prov, discover_one, &dc, err);
	if (dc.added)
		log_info("remote '%s': %d batch(es) made elsewhere found", r->conf->name, dc.added);
	return rc;
}

struct id_list {
	int64_t *ids;
	size_t n, alloc;
};

static int resume_collect(void *ctx, const struct store_batch *row)
{
	struct id_list *l = ctx;
	bool due = false;

	if (row->state == BATCH_SUBMITTING)
		due = true; /* reconcile before anything could submit again */
	else if (row->pid[0] && !state_is_terminal(row->state))
		due = true;
	else if (row->pid[0] && row->results != RESULTS_READY &&
		 row->results != RESULTS_UNAVAILABLE && (!row->foreign || row->results_wanted))
		due = true;
	if (!due)
		return 0;
	if (l->n == l->alloc) {
		size_t na = l->alloc ? 2 * l->alloc : 64;
		int64_t *p = realloc(l->ids, na * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->ids = p;
		l->alloc = na;
	}
	l->ids[l->n++] = row->id;
	return 0;
}

static void do_resume(struct store_batch *row, void *ctx)
{
	(void)ctx;
	if (row->results == RESULTS_DOWNLOADING)
		row->results = RESULTS_PENDING;
	row->next_poll_at = 1;
}

int batch_resume_all(struct bfs *b)
{
	struct id_list l = {0};
	int rc = 0;

	for (size_t i = 0; i < b->nremotes && !rc; i++)
		rc = store_batch_list(b->store, b->remotes[i].conf->name, 0, 1 << 30,
				      resume_collect, &l);
	for (size_t i = 0; i < l.n && !rc; i++)
		rc = batch_update(b, l.ids[i], do_resume, NULL);
	free(l.ids);
	return rc;
}
