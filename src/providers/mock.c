// SPDX-License-Identifier: MIT
/*
 * The built-in offline provider "mock": an in-process stand-in for a provider, so a new user
 * can try everything with no key and no network. Its "server side" lives in the provider's
 * state directory (<cache>/mock/<remote>): per batch a copy of the requests (a hard link to
 * the read-only spool file) and a small JSON meta file, so batches survive restarts like real
 * ones. A batch is in_progress for mock_delay seconds, then ended; each request gets a
 * deterministic Anthropic-format result echoing its last user message (model "mock-error":
 * an errored result). Must never touch the network, the store or FUSE.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <unistd.h>

#include "buf.h"
#include "conf.h"
#include "err.h"
#include "jsonl.h"
#include "providers/anthropic.h"
#include "providers/mock.h"
#include "timefmt.h"

#define MOCK_META_MAX	     4096
#define MOCK_CANCEL_DRAIN_MS 500

struct provider {
	char dir[PATH_MAX];
	int64_t delay_ms;
};

/* The mock's record of one batch: what a server would keep. */
struct mock_meta {
	char id[PROVIDER_ID_MAX];
	char identity[64];
	int64_t created_at;
	int64_t cancel_at; /* 0: never canceled */
	int64_t delay_ms;
	int64_t n;
	int64_t errored; /* -1 until counted, once the batch has ended */
};

static int mock_open(struct provider **out, const struct remote_conf *conf, const char *state_dir,
		     struct bfs_err *err)
{
	struct provider *p = calloc(1, sizeof(*p));
	double delay = conf_get_double(conf, "mock_delay", 3);

	if (!p)
		return -ENOMEM;
	snprintf(p->dir, sizeof(p->dir), "%s", state_dir);
	p->delay_ms = (int64_t)(delay * 1000);
	if (mkdir(p->dir, 0700) && errno != EEXIST) {
		int rc = -errno;

		err_set(err, "cannot create '%s': %s", p->dir, strerror(errno));
		free(p);
		return rc;
	}
	*out = p;
	return 0;
}

static void mock_free(struct provider *p)
{
	free(p);
}

static void mock_path(const struct provider *p, const char *id, const char *ext, char *out,
		      size_t size)
{
	snprintf(out, size, "%s/%s.%s", p->dir, id, ext);
}

static int meta_write(const struct provider *p, const struct mock_meta *m)
{
	char path[PATH_MAX + 64], tmp[PATH_MAX + 64];
	char *text = NULL;
	cJSON *o = cJSON_CreateObject();
	FILE *f = NULL;
	int rc = 0;

	if (!o)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "id", m->id);
	cJSON_AddStringToObject(o, "identity", m->identity);
	cJSON_AddNumberToObject(o, "created_at", (double)m->created_at);
	cJSON_AddNumberToObject(o, "cancel_at", (double)m->cancel_at);
	cJSON_AddNumberToObject(o, "delay_ms", (double)m->delay_ms);
	cJSON_AddNumberToObject(o, "n", (double)m->n);
	cJSON_AddNumberToObject(o, "errored", (double)m->errored);
	text = cJSON_PrintUnformatted(o);
	if (!text) {
		rc = -ENOMEM;
		goto out;
	}
	mock_path(p, m->id, "meta", path, sizeof(path));
	mock_path(p, m->id, "meta.tmp", tmp, sizeof(tmp));
	f = fopen(tmp, "we");
	if (!f || fputs(text, f) < 0 || fflush(f) || fsync(fileno(f))) {
		rc = -errno ? -errno : -EIO;
		goto out;
	}
	if (fclose(f)) {
		f = NULL;
		rc = -errno;
		goto out;
	}
	f = NULL;
	/* rename makes the record appear whole or not at all, as a server commit would. */
	if (rename(tmp, path))
		rc = -errno;
out:
	if (f)
		fclose(f);
	free(text);
	cJSON_Delete(o);
	return rc;
}

static int64_t json_i64(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static int meta_read(const struct provider *p, const char *id, struct mock_meta *m)
{
	char path[PATH_MAX + 64], text[MOCK_META_MAX];
	const cJSON *v;
	cJSON *o;
	ssize_t n;
	int fd;

	mock_path(p, id, "meta", path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	text[n] = '\0';
	o = cJSON_Parse(text);
	if (!o)
		return -EBADMSG;
	memset(m, 0, sizeof(*m));
	v = cJSON_GetObjectItemCaseSensitive(o, "id");
	snprintf(m->id, sizeof(m->id), "%s", cJSON_IsString(v) ? v->valuestring : id);
	v = cJSON_GetObjectItemCaseSensitive(o, "identity");
	snprintf(m->identity, sizeof(m->identity), "%s", cJSON_IsString(v) ? v->valuestring : "");
	m->created_at = json_i64(o, "created_at");
	m->cancel_at = json_i64(o, "cancel_at");
	m->delay_ms = json_i64(o, "delay_ms");
	m->n = json_i64(o, "n");
	v = cJSON_GetObjectItemCaseSensitive(o, "errored");
	m->errored = cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
	cJSON_Delete(o);
	return 0;
}

/* How many requests (in file order) finished before a cancel took effect. */
static int64_t mock_done_before_cancel(const struct mock_meta *m)
{
	int64_t ran = m->cancel_at - m->created_at;

	if (!m->cancel_at)
		return m->n;
	if (ran <= 0 || m->delay_ms <= 0)
		return 0;
	if (ran >= m->delay_ms)
		return m->n;
	return m->n * ran / m->delay_ms;
}

/* The batch as a server would describe it at time now, in Anthropic's words. */
static void mock_describe(const struct mock_meta *m, int64_t now, struct provider_batch *out)
{
	int64_t end = m->created_at + m->delay_ms;
	bool ended;

	memset(out, 0, sizeof(*out));
	snprintf(out->id, sizeof(out->id), "%s", m->id);
	snprintf(out->identity, sizeof(out->identity), "%s", m->identity);
	if (m->cancel_at && m->cancel_at + MOCK_CANCEL_DRAIN_MS < end)
		end = m->cancel_at + MOCK_CANCEL_DRAIN_MS;
	ended = now >= end;
	out->created_at = m->created_at;
	out->expires_at = m->created_at + 24 * 3600 * 1000LL;
	out->counts.total = m->n;
	if (ended) {
		int64_t done = mock_done_before_cancel(m);

		out->ended_at = end;
		out->counts.errored = m->errored > 0 ? m->errored : 0;
		out->counts.succeeded = done - out->counts.errored;
		out->counts.canceled = m->n - done;
		snprintf(out->provider_state, sizeof(out->provider_state), "ended");
		out->results_available = true;
	} else {
		out->counts.processing = m->n;
		snprintf(out->provider_state, sizeof(out->provider_state), "%s",
			 m->cancel_at ? "canceling" : "in_progress");
	}
	if (anthropic_state_from(out->provider_state, m->cancel_at != 0, &out->state))
		out->state = BATCH_FAILED;
}

static int mock_new_id(char *out, size_t size)
{
	unsigned char rnd[10];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	snprintf(out, size, "mockbatch_%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
		 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], rnd[8], rnd[9]);
	return 0;
}

/*
 * Copies bytes [off, off + len) of src to dst through a bounded buffer (a part of a file, or
 * a whole file that cannot be hard-linked). copy_file_range lets the kernel do it where it can.
 */
static int copy_range(const char *src, int64_t off, int64_t len, const char *dst)
{
	char chunk[65536];
	int in, out, rc = 0;
	off_t pos = off;

	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0) {
		rc = -errno;
		close(in);
		return rc;
	}
	/* In the kernel where it can (no copy through user space); what is left, if it cannot,
	 * goes through the buffer below, which also reports any error. */
	while (len > 0) {
		loff_t from = pos;
		ssize_t n = copy_file_range(in, &from, out, NULL, (size_t)len, 0);

		if (n <= 0)
			break;
		pos += n;
		len -= n;
	}
	while (len > 0) {
		size_t want = len < (int64_t)sizeof(chunk) ? (size_t)len : sizeof(chunk);
		ssize_t n = pread(in, chunk, want, pos);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO; /* the file is shorter than validated */
			break;
		}
		if (write(out, chunk, (size_t)n) != n) {
			rc = -EIO;
			break;
		}
		pos += n;
		len -= n;
	}
	close(in);
	if (close(out) && !rc)
		rc = -errno;
	return rc;
}

static bool is_whole_file(const struct provider_submit *s)
{
	struct stat st;

	return s->offset == 0 && !stat(s->path, &st) && st.st_size == s->length;
}

static int mock_submit(struct provider *p, const struct provider_submit *s,
		       struct provider_batch *out, provider_retry_fn on_retry, void *retry_ctx,
		       struct bfs_err *err)
{
	char data[PATH_MAX + 64];
	struct mock_meta m = {0};
	int rc;

	(void)on_retry; /* nothing here ever needs a retry */
	(void)retry_ctx;
	rc = mock_new_id(m.id, sizeof(m.id));
	if (rc) {
		err_set(err, "mock: cannot make a batch id");
		return rc;
	}
	mock_path(p, m.id, "jsonl", data, sizeof(data));
	/*
	 * The spool file is read-only from now on, so for a whole file a link is a faithful copy
	 * for free; a part is copied.
	 */
	if (!is_whole_file(s) || link(s->path, data)) {
		rc = copy_range(s->path, s->offset, s->length, data);
		if (rc) {
			err_set(err, "mock: cannot store the requests: %s", strerror(-rc));
			return -EIO;
		}
	}
	snprintf(m.identity, sizeof(m.identity), "%s", s->identity);
	m.created_at = timefmt_now_ms();
	m.delay_ms = p->delay_ms;
	m.n = (int64_t)s->nrequests;
	m.errored = -1;
	rc = meta_write(p, &m);
	if (rc) {
		err_set(err, "mock: cannot store the batch: %s", strerror(-rc));
		unlink(data);
		return -EIO;
	}
	mock_describe(&m, m.created_at, out);
	return 0;
}

struct mock_count {
	int64_t index, done, errored;
};

static int mock_count_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct mock_count *c = ctx;
	const cJSON *model;
	cJSON *req;

	(void)lineno;
	if (strspn(line, " \t") == len)
		return 0;
	if (c->index++ >= c->done)
		return 0;
	req = cJSON_ParseWithLength(line, len);
	model = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(req, "params"),
						 "model");
	if (cJSON_IsString(model) && !strcmp(model->valuestring, "mock-error"))
		c->errored++;
	cJSON_Delete(req);
	return 0;
}

/*
 * Once a batch has ended, counts its errored requests (one pass over the requests, remembered
 * in the meta file) so status counts agree with the results, as a real provider's do.
 */
static void mock_count_errored(const struct provider *p, struct mock_meta *m)
{
	struct mock_count c = {.done = mock_done_before_cancel(m)};
	char path[PATH_MAX + 64], chunk[65536];
	struct jsonl_splitter sp;
	int fd, rc = 0;
	ssize_t n;

	mock_path(p, m->id, "jsonl", path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	jsonl_splitter_init(&sp, 256u << 20, mock_count_line, &c);
	while (!rc && (n = read(fd, chunk, sizeof(chunk))) > 0)
		rc = jsonl_splitter_feed(&sp, chunk, (size_t)n, NULL);
	if (!rc)
		rc = jsonl_splitter_finish(&sp, NULL);
	jsonl_splitter_release(&sp);
	close(fd);
	if (rc)
		return;
	m->errored = c.errored;
	(void)meta_write(p, m); /* only a cache of the count: recounted next time if lost */
}

static int mock_get(struct provider *p, const char *id, struct provider_batch *out,
		    provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err)
{
	struct mock_meta m;
	int64_t now;
	int rc = meta_read(p, id, &m);

	(void)on_retry; /* no network: nothing is ever retried */
	(void)retry_ctx;
	if (rc) {
		err_set(err, "mock: batch '%s' not found", id);
		return rc == -ENOENT ? -ENOENT : -EIO;
	}
	now = timefmt_now_ms();
	mock_describe(&m, now, out);
	if (!strcmp(out->provider_state, "ended") && m.errored < 0) {
		mock_count_errored(p, &m);
		mock_describe(&m, now, out);
	}
	return 0;
}

/* Calls fn(ctx, meta) for every batch in the state directory. */
static int mock_each(struct provider *p, int (*fn)(void *ctx, const struct mock_meta *m), void *ctx)
{
	struct dirent *de;
	DIR *d = opendir(p->dir);
	int rc = 0;

	if (!d)
		return -errno;
	while (!rc && (de = readdir(d))) {
		char id[PROVIDER_ID_MAX];
		size_t n = strlen(de->d_name);
		struct mock_meta m;

		if (n < 6 || n - 5 >= sizeof(id) || strcmp(de->d_name + n - 5, ".meta"))
			continue;
		memcpy(id, de->d_name, n - 5);
		id[n - 5] = '\0';
		if (meta_read(p, id, &m) == 0)
			rc = fn(ctx, &m);
	}
	closedir(d);
	return rc;
}

struct mock_find {
	const struct provider_submit *s;
	struct provider_batch *out;
	bool found;
};

static int mock_find_one(void *ctx, const struct mock_meta *m)
{
	struct mock_find *f = ctx;

	if (f->found || strcmp(m->identity, f->s->identity) ||
	    (f->s->owned && f->s->owned(f->s->owned_ctx, m->id)))
		return 0;
	mock_describe(m, timefmt_now_ms(), f->out);
	f->found = true;
	return 0;
}

static int mock_find(struct provider *p, const struct provider_submit *s,
		     struct provider_batch *out, struct bfs_err *err)
{
	struct mock_find f = {.s = s, .out = out};
	int rc = mock_each(p, mock_find_one, &f);

	if (rc) {
		err_set(err, "mock: cannot list batches: %s", strerror(-rc));
		return rc;
	}
	return f.found ? 0 : -ENOENT;
}

struct mock_list {
	provider_batch_fn fn;
	void *ctx;
};

static int mock_list_one(void *ctx, const struct mock_meta *m)
{
	struct mock_list *l = ctx;
	struct provider_batch b;
	int rc;

	mock_describe(m, timefmt_now_ms(), &b);
	rc = l->fn(l->ctx, &b);
	return rc == PROVIDER_LIST_KNOWN ? 0 : rc; /* no pages: always the whole walk */
}

static int mock_list(struct provider *p, provider_batch_fn fn, void *ctx, struct bfs_err *err)
{
	struct mock_list l = {fn, ctx};
	int rc = mock_each(p, mock_list_one, &l);

	if (rc)
		err_set(err, "mock: cannot list batches: %s", strerror(-rc));
	return rc;
}

static int mock_cancel(struct provider *p, const char *id, struct provider_batch *out,
		       struct bfs_err *err)
{
	struct mock_meta m;
	int64_t now = timefmt_now_ms();
	int rc = meta_read(p, id, &m);

	if (rc) {
		err_set(err, "mock: batch '%s' not found", id);
		return rc == -ENOENT ? -ENOENT : -EIO;
	}
	if (!m.cancel_at && now < m.created_at + m.delay_ms) {
		m.cancel_at = now;
		rc = meta_write(p, &m);
		if (rc) {
			err_set(err, "mock: cannot record the cancel: %s", strerror(-rc));
			return -EIO;
		}
	}
	mock_describe(&m, now, out);
	return 0;
}

struct mock_results {
	const struct mock_meta *m;
	provider_result_fn fn;
	void *ctx;
	int64_t index; /* request index of the line being handled */
	int pass;      /* 0: odd-numbered requests, 1: even: results come out of order */
	int64_t done;  /* requests that ran before a cancel */
	struct buf out;
};

/* The text of the last user message: a string content, or its text blocks joined. */
static void last_user_text(const cJSON *messages, struct buf *text)
{
	const cJSON *msg, *last = NULL, *content, *block;

	cJSON_ArrayForEach(msg, messages) {
		const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");

		if (cJSON_IsString(role) && !strcmp(role->valuestring, "user"))
			last = msg;
	}
	if (!last)
		return;
	content = cJSON_GetObjectItemCaseSensitive(last, "content");
	if (cJSON_IsString(content)) {
		(void)buf_addstr(text, content->valuestring); /* capped: a long echo is cut */
		return;
	}
	cJSON_ArrayForEach(block, content) {
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(block, "text");

		if (cJSON_IsString(t))
			(void)buf_addstr(text, t->valuestring); /* capped, see above */
	}
}

static int mock_result_line(struct mock_results *r, const cJSON *req)
{
	const cJSON *cid = cJSON_GetObjectItemCaseSensitive(req, "custom_id");
	const cJSON *params = cJSON_GetObjectItemCaseSensitive(req, "params");
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(params, "model");
	const char *mname = cJSON_IsString(model) ? model->valuestring : "mock";
	struct buf text = BUF_INIT(1 << 20);
	cJSON *o = NULL, *res, *msg, *content, *block, *usage, *e, *inner;
	char msgid[64], *line = NULL;
	int rc = 0;

	if (!cJSON_IsString(cid))
		return 0; /* validated before submit: cannot happen; nothing to answer */
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "custom_id", cid->valuestring);
	res = cJSON_AddObjectToObject(o, "result");
	if (r->index >= r->done) {
		cJSON_AddStringToObject(res, "type", "canceled");
	} else if (!strcmp(mname, "mock-error")) {
		cJSON_AddStringToObject(res, "type", "errored");
		e = cJSON_AddObjectToObject(res, "error");
		cJSON_AddStringToObject(e, "type", "error");
		inner = cJSON_AddObjectToObject(e, "error");
		cJSON_AddStringToObject(inner, "type", "invalid_request_error");
		cJSON_AddStringToObject(inner, "message",
					"model: mock-error always fails (batchfs mock provider)");
		cJSON_AddNullToObject(e, "request_id");
	} else {
		last_user_text(cJSON_GetObjectItemCaseSensitive(params, "messages"), &text);
		snprintf(msgid, sizeof(msgid), "msg_mock_%s_%06" PRId64, r->m->id + 10, r->index);
		cJSON_AddStringToObject(res, "type", "succeeded");
		msg = cJSON_AddObjectToObject(res, "message");
		cJSON_AddStringToObject(msg, "id", msgid);
		cJSON_AddStringToObject(msg, "type", "message");
		cJSON_AddStringToObject(msg, "role", "assistant");
		cJSON_AddStringToObject(msg, "model", mname);
		content = cJSON_AddArrayToObject(msg, "content");
		block = cJSON_CreateObject();
		cJSON_AddStringToObject(block, "type", "text");
		cJSON_AddStringToObject(block, "text", text.data ? text.data : "");
		cJSON_AddItemToArray(content, block);
		cJSON_AddStringToObject(msg, "stop_reason", "end_turn");
		cJSON_AddNullToObject(msg, "stop_sequence");
		usage = cJSON_AddObjectToObject(msg, "usage");
		cJSON_AddNumberToObject(usage, "input_tokens", (double)(text.len / 4 + 1));
		cJSON_AddNumberToObject(usage, "output_tokens", (double)(text.len / 4 + 1));
	}
	line = cJSON_PrintUnformatted(o);
	if (!line)
		rc = -ENOMEM;
	else
		rc = r->fn(r->ctx, cid->valuestring, line, strlen(line), r->index + 1, NULL);
	free(line);
	cJSON_Delete(o);
	buf_release(&text);
	return rc;
}

static int mock_results_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct mock_results *r = ctx;
	cJSON *req;
	int rc;

	(void)lineno;
	while (len && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (!len || strspn(line, " \t") == len)
		return 0;
	if ((r->index & 1) != r->pass) {
		r->index++;
		return 0;
	}
	req = cJSON_ParseWithLength(line, len);
	rc = req ? mock_result_line(r, req) : 0;
	cJSON_Delete(req);
	r->index++;
	return rc;
}

static int mock_results(struct provider *p, const struct provider_batch *b, provider_result_fn fn,
			provider_reset_fn reset, void *ctx, provider_retry_fn on_retry,
			void *retry_ctx, struct bfs_err *err)
{
	struct mock_results r = {.fn = fn, .ctx = ctx};
	struct jsonl_splitter sp;
	char path[PATH_MAX + 64], chunk[65536];
	struct mock_meta m;
	int fd = -1, rc;

	(void)on_retry;
	(void)retry_ctx;
	ssize_t n;

	(void)reset; /* local file: never starts over */
	rc = meta_read(p, b->id, &m);
	if (rc) {
		err_set(err, "mock: batch '%s' not found", b->id);
		return rc == -ENOENT ? -ENODATA : -EIO;
	}
	r.m = &m;
	r.done = mock_done_before_cancel(&m);
	mock_path(p, b->id, "jsonl", path, sizeof(path));
	for (r.pass = 1; r.pass >= 0; r.pass--) {
		r.index = 0;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			err_set(err, "mock: cannot read the requests of '%s'", b->id);
			return -ENODATA;
		}
		jsonl_splitter_init(&sp, 256u << 20, mock_results_line, &r);
		rc = 0;
		while (!rc && (n = read(fd, chunk, sizeof(chunk))) > 0)
			rc = jsonl_splitter_feed(&sp, chunk, (size_t)n, err);
		if (!rc)
			rc = jsonl_splitter_finish(&sp, err);
		jsonl_splitter_release(&sp);
		close(fd);
		if (rc)
			return rc;
	}
	return 0;
}

static const char *const provider_mock_keys[] = {"mock_delay", NULL};

const struct provider_ops provider_mock_ops = {
	.name = "mock",
	.format = &anthropic_format,
	.validate_line = anthropic_validate_line, /* the mock takes Anthropic's lines */
	.state_from = anthropic_state_from,
	/* The mock lives seconds, not hours: poll it often so a first try feels alive. */
	.default_poll_interval = 0.5,
	.limits = {.max_requests = 100000, .max_bytes = 256ull << 20, .max_line = 32u << 20},
	.keys = provider_mock_keys,
	.open = mock_open,
	.free = mock_free,
	.submit = mock_submit,
	.find = mock_find,
	.get = mock_get,
	.list = mock_list,
	.cancel = mock_cancel,
	.results = mock_results,
	.result_parse = result_parse_anthropic,
};
