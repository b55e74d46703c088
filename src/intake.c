// SPDX-License-Identifier: MIT
/*
 * The check of a requests.jsonl (intake.h): lines are delivered by the splitter, checked by
 * the validator, and planned into parts; translated prompt lines go to the translated copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bfs.h"
#include "buf.h"
#include "conf.h"
#include "err.h"
#include "intake.h"
#include "jsonl.h"
#include "price.h"
#include "prompt.h"
#include "spool.h"
#include "store.h"

#define INTAKE_READ_CHUNK (256 * 1024)

/* The plan of parts */

struct plan {
	struct store_part_plan *parts;
	size_t n, alloc;
	struct jsonl_limits lim;
	int64_t off;	      /* file offset of the line being delivered */
	int64_t part_off;     /* where the current part starts */
	uint64_t part_n;      /* its requests */
	int64_t part_payload; /* its request lines' bytes without leading blanks and ends */
	long part_first;      /* its first line */
	long last_request;    /* the last request line seen */
};

static int plan_close(struct plan *pl, int64_t end)
{
	struct store_part_plan *p;

	if (!pl->part_n)
		return 0;
	if (pl->n == pl->alloc) {
		size_t na = pl->alloc ? 2 * pl->alloc : 4;

		p = realloc(pl->parts, na * sizeof(*p));
		if (!p)
			return -ENOMEM;
		pl->parts = p;
		pl->alloc = na;
	}
	p = &pl->parts[pl->n++];
	p->first_line = pl->part_first;
	p->last_line = pl->last_request;
	p->off = pl->part_off;
	p->len = end - pl->part_off;
	p->nrequests = (int64_t)pl->part_n;
	p->payload = pl->part_payload;
	pl->part_off = end;
	pl->part_n = 0;
	pl->part_payload = 0;
	return 0;
}

/*
 * A line [off, off + size) joins the current part unless it would take the part over a limit
 * (requests, or bytes with terminators and blank lines: what a provider given the raw range
 * counts); then the part ends before it. Parts split at line boundaries, in file order, as few
 * as fit; each starts with the line that did not fit.
 */
static int plan_line(struct plan *pl, long lineno, int64_t size, int64_t payload, bool request)
{
	bool over = pl->part_n &&
		    ((request && pl->lim.max_requests && pl->part_n + 1 > pl->lim.max_requests) ||
		     (pl->lim.max_bytes &&
		      (uint64_t)(pl->off + size - pl->part_off) > pl->lim.max_bytes));
	int rc = 0;

	if (over) {
		rc = plan_close(pl, pl->off);
		pl->part_first = lineno;
	}
	if (request) {
		pl->part_n++;
		pl->part_payload += payload;
		pl->last_request = lineno;
	}
	return rc;
}

/*
 * The translated copy of a file with prompt lines (spool_native_path()): every line as it is
 * sent, native lines byte for byte, prompt lines as their translation, each with the user's
 * line end, so line n of the copy is line n of the file and parts, provider errors and
 * results all speak the user's line numbers. Written only once a prompt line shows up: the
 * lines before it are copied from the user's file then.
 */
struct native_copy {
	int user_fd;		/* the user's file, to copy the lines before the first prompt */
	int fd;			/* the copy being written, -1 while there is none */
	char path[PATH_MAX];	/* where it goes once complete */
	char tmp[PATH_MAX + 8]; /* where it is written */
	int64_t user_off;	/* bytes of the user's file before the current line */
	struct buf out;		/* lines not yet written */
};

#define NATIVE_FLUSH (256 * 1024)

struct intake {
	struct jsonl_validator v;
	struct jsonl_splitter sp;
	struct store_reqs *reqs;
	struct plan plan;
	struct prompt_ctx prompt;
	struct price_estimate est;
	const char *default_model; /* the remote's model (Vertex jobs take it when lines do not) */
	struct native_copy copy;
	struct bfs_err *err;	   /* where the line being fed reports */
	struct bfs_err failed_err; /* the first failure, given again */
	int failed;
	int64_t fed;
	bool finished;
	struct bfs *b;
	int64_t batch_id;
	int own_fd; /* a descriptor closed with it (intake_adopt_fd), else -1 */
};

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int copy_flush(struct native_copy *c)
{
	int rc = write_all(c->fd, c->out.data ? c->out.data : "", c->out.len);

	buf_reset(&c->out);
	return rc;
}

/* Starts the copy with the user's first user_off bytes: native lines, already checked. */
static int copy_open(struct native_copy *c)
{
	char *chunk;
	int64_t off = 0;
	int rc = 0;

	c->fd = open(c->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (c->fd < 0)
		return -errno;
	chunk = malloc(INTAKE_READ_CHUNK);
	if (!chunk)
		return -ENOMEM;
	while (!rc && off < c->user_off) {
		size_t want = (size_t)(c->user_off - off) < INTAKE_READ_CHUNK
				      ? (size_t)(c->user_off - off)
				      : INTAKE_READ_CHUNK;
		ssize_t n = pread(c->user_fd, chunk, want, off);

		if (n <= 0)
			rc = n < 0 ? -errno : -EIO;
		else
			rc = write_all(c->fd, chunk, (size_t)n);
		off += n > 0 ? n : 0;
	}
	free(chunk);
	return rc;
}

/* Adds one line as sent (with the user's terminator of term bytes) to the copy, if any. */
static int copy_line(struct native_copy *c, bool translated, const char *line, size_t len,
		     size_t term)
{
	static const char *const ends[] = {"", "\n", "\r\n"};
	int rc = 0;

	if (c->fd < 0 && !translated)
		return 0;
	if (c->fd < 0)
		rc = copy_open(c);
	if (!rc && len >= NATIVE_FLUSH) {
		/* A long line goes straight out: the buffer stays small. */
		rc = copy_flush(c);
		if (!rc)
			rc = write_all(c->fd, line, len);
		len = 0;
	}
	if (!rc)
		rc = buf_add(&c->out, line, len);
	if (!rc)
		rc = buf_addstr(&c->out, ends[term]);
	if (!rc && c->out.len >= NATIVE_FLUSH)
		rc = copy_flush(c);
	return rc;
}

/*
 * Ends the copy: kept, it is made durable under its final name before any part is recorded
 * (a resumed submission sends exactly these bytes); a file without prompt lines removes any
 * copy of an earlier commit, so the parts always describe the file they are sent from.
 */
static int copy_finish(struct native_copy *c, bool keep)
{
	int rc = 0;

	if (c->fd >= 0 && keep) {
		rc = copy_flush(c);
		if (!rc && fsync(c->fd))
			rc = -errno;
		if (close(c->fd) && !rc)
			rc = -errno;
		c->fd = -1;
		if (!rc && rename(c->tmp, c->path))
			rc = -errno;
		if (!rc) {
			char dir[PATH_MAX];
			char *slash;
			int dfd;

			snprintf(dir, sizeof(dir), "%s", c->path);
			slash = strrchr(dir, '/');
			if (slash)
				*slash = '\0';
			dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (dfd >= 0) {
				if (fsync(dfd))
					rc = -errno;
				close(dfd);
			}
		}
	} else if (keep) {
		if (unlink(c->path) && errno != ENOENT)
			rc = -errno;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	if (rc || !keep)
		(void)unlink(c->tmp);
	buf_release(&c->out);
	return rc;
}

/* A request line's bytes as a body that joins lines (Anthropic's) carries them: without the
 * blanks before the object (the line end is not passed here). */
static int64_t line_payload(const char *line, size_t len)
{
	size_t i = 0;

	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	return (int64_t)(len - i);
}

static void estimate_request(void *ctx, const struct cJSON *root)
{
	struct intake *vc = ctx;

	price_estimate_object(&vc->est, vc->v.fmt, root, vc->default_model);
}

static int validate_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct intake *vc = ctx;
	const char *sent = line;
	size_t sent_len = len;
	int64_t size;
	char *id = NULL;
	size_t idlen = 0;
	long dup = 0;
	int rc;

	rc = jsonl_validator_line(&vc->v, line, len, vc->sp.term, lineno, &id, &idlen, vc->err);
	if (vc->prompt.translated) {
		/* Parts hold what is sent: the translation's bytes, not the prompt line's. */
		sent = vc->prompt.native.data;
		sent_len = vc->prompt.native.len;
	}
	size = (int64_t)(sent_len + vc->sp.term);
	if (!rc && vc->plan.lim.max_bytes && (uint64_t)size > vc->plan.lim.max_bytes) {
		err_set_line(vc->err, lineno,
			     "line %ld: %" PRId64 " bytes with its line end, more than a batch of "
			     "this remote may hold (%" PRIu64 ")",
			     lineno, size, vc->plan.lim.max_bytes);
		rc = -EINVAL;
	}
	if (!rc && !id)
		rc = plan_line(&vc->plan, lineno, size, 0, false);
	if (!rc && id) {
		rc = store_reqs_add(vc->reqs, id, idlen, lineno, &dup);
		if (rc == -EEXIST) {
			err_set_line(vc->err, lineno,
				     "line %ld: duplicate custom_id '%.*s' (first on line %ld)",
				     lineno, (int)(idlen > 80 ? 80 : idlen), id, dup);
			rc = -EINVAL;
		} else if (rc) {
			err_set_line(vc->err, lineno,
				     "line %ld: cannot record the request in the cache: %s", lineno,
				     strerror(-rc));
		}
		if (!rc)
			rc = plan_line(&vc->plan, lineno, size, line_payload(sent, sent_len), true);
		/* The cost estimate was added by estimate_request() as the line was checked. */
	}
	if (!rc) {
		rc = copy_line(&vc->copy, vc->prompt.translated, sent, sent_len, vc->sp.term);
		if (rc)
			err_set(vc->err, "cannot write the translated copy of requests.jsonl: %s",
				strerror(-rc));
	}
	free(id);
	vc->plan.off += size;
	vc->copy.user_off += (int64_t)(len + vc->sp.term);
	return rc;
}

int intake_begin(struct bfs *b, const struct remote *r, int64_t batch_id, int64_t file_id,
		 int user_fd, struct intake **out, struct bfs_err *err)
{
	/* Counts and bytes are what parts are for; only a line must fit in one part. */
	static const struct jsonl_limits unlimited = {0, 0, 0};
	uint64_t cap = r->limits.max_line ? r->limits.max_line : (512u << 20);
	size_t max_line =
		r->limits.max_bytes && r->limits.max_bytes < cap ? r->limits.max_bytes : cap;
	const char *mt = conf_get(r->conf, "max_tokens", NULL);
	struct intake *vc = calloc(1, sizeof(*vc));
	int rc;

	if (!vc)
		return -ENOMEM;
	vc->b = b;
	vc->batch_id = batch_id;
	vc->own_fd = -1;
	prompt_ctx_init(&vc->prompt);
	/* The remote's defaults for prompt lines. */
	vc->prompt.remote = r->conf->name;
	vc->prompt.model = conf_get(r->conf, "model", NULL);
	vc->prompt.max_tokens = mt ? (int64_t)strtoll(mt, NULL, 10) : 0; /* checked by conf */
	vc->prompt.temperature = conf_get_double(r->conf, "temperature", -1);
	vc->default_model = conf_get(r->conf, "model", NULL);
	vc->copy.fd = -1;
	vc->copy.user_fd = user_fd;
	buf_init(&vc->copy.out, 2 * NATIVE_FLUSH);
	spool_native_path(&b->spool, file_id, vc->copy.path, sizeof(vc->copy.path));
	snprintf(vc->copy.tmp, sizeof(vc->copy.tmp), "%s.tmp", vc->copy.path);
	vc->plan.lim = r->limits;
	vc->plan.part_first = 1;
	jsonl_validator_init(&vc->v, r->ops->format, r->ops->validate_line, &unlimited);
	vc->v.prompt = &vc->prompt;
	vc->v.on_request = estimate_request;
	vc->v.on_request_ctx = vc;
	jsonl_splitter_init(&vc->sp, max_line, validate_line, vc);
	rc = store_reqs_begin(b->store, batch_id, &vc->reqs);
	if (rc) {
		err_set(err, "cannot write to the cache: %s", strerror(-rc));
		intake_free(vc);
		return rc;
	}
	*out = vc;
	return 0;
}

/* Keeps the first failure: a file found invalid stays so, whatever is fed after. */
static int intake_fail(struct intake *in, int rc, struct bfs_err *err)
{
	if (rc == -E2BIG)
		rc = -EINVAL; /* a line over the cap cannot fit in any part */
	in->failed = rc;
	in->failed_err = *err;
	/* No transaction stays open: the caller records the rejection next. */
	(void)store_reqs_end(in->reqs, false);
	in->reqs = NULL;
	return rc;
}

int intake_feed(struct intake *in, const char *data, size_t n, struct bfs_err *err)
{
	int rc;

	if (in->failed) {
		*err = in->failed_err;
		return in->failed;
	}
	in->err = err;
	rc = jsonl_splitter_feed(&in->sp, data, n, err);
	in->fed += (int64_t)n;
	return rc ? intake_fail(in, rc, err) : 0;
}

int intake_read(struct intake *in, int fd, int64_t from, struct bfs_err *err)
{
	char *chunk = malloc(INTAKE_READ_CHUNK);
	int rc = 0;

	if (!chunk)
		return -ENOMEM;
	for (;;) {
		ssize_t n = pread(fd, chunk, INTAKE_READ_CHUNK, from);

		if (n < 0) {
			rc = -errno;
			err_set(err, "cannot read requests.jsonl: %s", strerror(errno));
			break;
		}
		if (n == 0)
			break;
		from += n;
		rc = intake_feed(in, chunk, (size_t)n, err);
		if (rc)
			break;
	}
	free(chunk);
	return rc;
}

int64_t intake_fed(const struct intake *in)
{
	return in->fed;
}

int64_t intake_sendable(const struct intake *in)
{
	if (in->failed || in->prompt.nprompts || in->prompt.translated)
		return -1;
	if (in->plan.n)
		return in->plan.parts[0].off == 0 ? in->plan.parts[0].len : -1;
	return in->plan.part_off == 0 ? in->plan.off : -1;
}

int intake_finish(struct intake *in, struct bfs_err *err)
{
	int rc;

	if (in->failed) {
		*err = in->failed_err;
		return in->failed;
	}
	in->err = err;
	rc = jsonl_splitter_finish(&in->sp, err);
	if (!rc)
		rc = jsonl_validator_finish(&in->v, err);
	if (!rc)
		rc = plan_close(&in->plan, in->plan.off);
	if (rc)
		return intake_fail(in, rc, err);
	/* The request list is committed only when the file is valid. */
	rc = store_reqs_end(in->reqs, true);
	in->reqs = NULL;
	if (rc) {
		err_set(err, "cannot write to the cache: %s", strerror(-rc));
		return intake_fail(in, rc, err);
	}
	in->finished = true;
	return 0;
}

void intake_result(const struct intake *in, struct intake_result *res)
{
	res->parts = in->plan.parts;
	res->nparts = in->plan.n;
	res->endpoint = in->v.endpoint;
	res->model = in->v.model;
	res->count = in->v.count;
	res->nprompts = in->prompt.nprompts;
	res->est = &in->est;
}

int intake_pause(struct intake *in)
{
	return in && in->reqs ? store_reqs_pause(in->reqs) : 0;
}

int intake_keep_copy(struct intake *in)
{
	return copy_finish(&in->copy, true);
}

void intake_free(struct intake *in)
{
	if (!in)
		return;
	/* Not finished: the custom_ids recorded so far go (the validation error, if any, is
	 * the one to show). */
	(void)store_reqs_end(in->reqs, false);
	(void)copy_finish(&in->copy, false); /* a copy not kept by now is not wanted */
	jsonl_splitter_release(&in->sp);
	prompt_ctx_release(&in->prompt);
	free(in->plan.parts);
	if (in->own_fd >= 0)
		close(in->own_fd);
	free(in);
}

void intake_adopt_fd(struct intake *in, int fd)
{
	in->own_fd = fd;
}
