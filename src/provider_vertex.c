// SPDX-License-Identifier: MIT
/*
 * provider = vertex: Claude batch prediction on Vertex AI (spec section C). A submission is a
 * Cloud Storage upload of the spool file (simple or resumable, streamed from disk) and a
 * batchPredictionJob whose labels carry the local identity; results are the predictions
 * files Vertex writes under the job's output directory, listed and streamed line by line.
 * Tokens come from gauth. Must never log a header, a body or a token, and never send the
 * token to a host other than the configured ones. A create whose answer was lost is never
 * sent again here: it returns -EAGAIN and the caller runs find().
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "buf.h"
#include "conf.h"
#include "err.h"
#include "gauth.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "provider_vertex.h"
#include "state.h"
#include "timefmt.h"

#define VTX_AIPLATFORM_FMT  "https://%s-aiplatform.googleapis.com"
#define VTX_STORAGE_DEFAULT "https://storage.googleapis.com"
#define VTX_PREFIX_DEFAULT  "batchfs/"
#define VTX_PUBLISHER	    "publishers/anthropic/models/"
#define VTX_CONTENT_TYPE    "application/jsonl"
#define VTX_URL_MAX	    8192
#define VTX_RESP_MAX	    (8u * 1024 * 1024) /* one JSON answer; a page of 100 jobs ~300 KiB */
#define VTX_JOB_PAGE	    100
#define VTX_OBJ_PAGE	    1000	    /* the Cloud Storage maximum (spec C.9) */
#define VTX_PAGES_MAX	    100000	    /* a loop guard, not a limit anyone should reach */
#define VTX_TOKEN_MAX	    4096	    /* a pageToken we send back */
#define VTX_UNIT	    (256 * 1024)    /* resumable chunks are multiples of this (spec C.9) */
#define VTX_CHUNK_DEFAULT   (32 * VTX_UNIT) /* 8 MiB */
#define VTX_UPLOAD_FAILURES 8		    /* interrupted chunks before giving up */
#define VTX_RESTARTS	    3		    /* whole results downloads started over */
#define VTX_BIG_BODY	    (32 * 1024 * 1024) /* above: only the low-speed timeout applies */
#define VTX_LABEL_ID	    "batchfs_identity"
#define VTX_LABEL_N	    "batchfs_requests"
#define VTX_NAME_MAX	    128 /* displayName */

struct provider {
	struct http *http;
	struct gauth *auth;
	char remote[CONF_NAME_MAX];
	char jobs[2048];    /* .../v1/projects/P/locations/L/batchPredictionJobs */
	char storage[1024]; /* storage_url, no trailing slash */
	char bucket[256];
	char prefix[512]; /* object name prefix: "" or ending in '/' */
	char model[256];  /* default model, "" when none */
	int64_t resumable_threshold;
	int64_t chunk;
};

static const char *const hdr_json[] = {"Content-Type: application/json; charset=utf-8",
				       "Accept: application/json", NULL};
static const char *const hdr_accept[] = {"Accept: application/json", NULL};

/* Helpers */

/* Non-empty, at most max bytes, every byte in the set (letters are lowercase unless upper). */
static bool is_word(const char *s, size_t max, const char *extra, bool upper)
{
	size_t n = strlen(s);

	if (!n || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      (upper && c >= 'A' && c <= 'Z') || strchr(extra, c)))
			return false;
	}
	return true;
}

/* A proto3 int64: a JSON string (the mapping's rule) or a number; def when absent/odd. */
static int64_t json_int64(const cJSON *o, const char *key, int64_t def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	char *end;
	long long n;

	if (cJSON_IsNumber(v) && v->valuedouble > -9e15 && v->valuedouble < 9e15)
		return (int64_t)v->valuedouble;
	if (!cJSON_IsString(v))
		return def;
	errno = 0;
	n = strtoll(v->valuestring, &end, 10);
	return errno || end == v->valuestring || *end ? def : (int64_t)n;
}

static int64_t json_time(const cJSON *o, const char *key)
{
	const char *s = json_str(o, key);
	int64_t ms;

	return s && !timefmt_parse(s, &ms) ? ms : 0;
}

/* Labels: lowercase letters, digits, '_' and '-', at most 63 characters (spec C.3). */
static void label_safe(const char *in, char *out, size_t size)
{
	size_t n = 0;

	for (; *in && n + 1 < size && n < 63; in++) {
		char c = *in;

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			c = '_';
		out[n++] = c;
	}
	out[n] = '\0';
}

/* "gs://bucket/path" -> bucket and "path/" (empty path: ""). Returns 0 or -EINVAL. */
static int parse_gs(const char *uri, char *bucket, size_t bsize, struct buf *path)
{
	const char *p, *slash;
	size_t n;

	if (strncmp(uri, "gs://", 5))
		return -EINVAL;
	p = uri + 5;
	slash = strchr(p, '/');
	n = slash ? (size_t)(slash - p) : strlen(p);
	if (!n || n >= bsize)
		return -EINVAL;
	memcpy(bucket, p, n);
	bucket[n] = '\0';
	if (!is_word(bucket, 222, "._-", false))
		return -EINVAL;
	if (!slash || !slash[1])
		return 0;
	if (buf_addstr(path, slash + 1))
		return -EINVAL;
	if (path->data[path->len - 1] != '/' && buf_addstr(path, "/"))
		return -EINVAL;
	return 0;
}

/* Authorised requests */

/*
 * http_perform() with the bearer token in front of extra (NULL-terminated), retrying once
 * with a fresh token after a 401 (the token expired or was revoked early: spec C.8).
 */
static int vtx_perform(struct provider *p, struct http_request *rq, const char *const *extra,
		       struct http_response *rs, struct bfs_err *err)
{
	const char *hdrs[12];
	struct http_response r;
	char *auth = NULL;
	int rc = 0;

	memset(&r, 0, sizeof(r));
	for (int attempt = 0; attempt < 2; attempt++) {
		size_t n = 0;

		rc = gauth_header(p->auth, &auth, err);
		if (rc)
			break;
		hdrs[n++] = auth;
		if (gauth_quota_header(p->auth))
			hdrs[n++] = gauth_quota_header(p->auth);
		for (const char *const *h = extra; h && *h && n + 1 < sizeof(hdrs) / sizeof(*hdrs);
		     h++)
			hdrs[n++] = *h;
		hdrs[n] = NULL;
		rq->headers = hdrs;
		memset(&r, 0, sizeof(r));
		rc = http_perform(p->http, rq, &r, err);
		if (rc != -EACCES || r.status != 401 || attempt)
			break;
		log_debug("vertex: access token refused (HTTP 401); fetching a new one");
		gauth_reject(p->auth, auth);
		gauth_header_free(auth);
		auth = NULL;
	}
	gauth_header_free(auth);
	rq->headers = NULL;
	if (rs)
		*rs = r;
	return rc;
}

/* A JSON call: the answer parsed into *root (the caller frees it). */
static int call_json(struct provider *p, enum http_method m, const char *url,
		     const struct http_body *body, enum http_retry retry,
		     provider_retry_fn on_retry, void *retry_ctx, cJSON **root, struct bfs_err *err)
{
	struct buf resp = BUF_INIT(VTX_RESP_MAX);
	struct http_request rq = {
		.method = m,
		.url = url,
		.body = body,
		.retry = retry,
		.resp = &resp,
		.on_retry = on_retry,
		.retry_ctx = retry_ctx,
	};
	int rc = vtx_perform(p, &rq, body ? hdr_json : hdr_accept, NULL, err);

	if (rc)
		goto out;
	*root = resp.data ? cJSON_ParseWithLength(resp.data, resp.len) : NULL;
	if (!*root) {
		err_set(err, "the answer is not JSON");
		rc = -EBADMSG;
	}
out:
	buf_release(&resp);
	return rc;
}

/* BatchPredictionJob -> provider_batch */

static bool is_claude_job(const cJSON *o)
{
	const char *model = json_str(o, "model");

	return model && strstr(model, VTX_PUBLISHER);
}

/* BatchPredictionJob (spec C.4) -> provider_batch. -EBADMSG when it is not one. */
static int job_from_json(const cJSON *o, struct provider_batch *out, struct bfs_err *err)
{
	const char *name = json_str(o, "name");
	const char *st = json_str(o, "state");
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(o, "labels");
	const cJSON *stats = cJSON_GetObjectItemCaseSensitive(o, "completionStats");
	const cJSON *info = cJSON_GetObjectItemCaseSensitive(o, "outputInfo");
	const cJSON *error = cJSON_GetObjectItemCaseSensitive(o, "error");
	const char *ident = json_str(labels, VTX_LABEL_ID);
	const char *dir = json_str(info, "gcsOutputDirectory");
	const char *id = name ? strrchr(name, '/') : NULL;
	int64_t hint = json_int64(labels, VTX_LABEL_N, 0);
	int64_t ok, bad, incomplete, rest;
	struct provider_batch b;

	if (!cJSON_IsObject(o) || !id) {
		err_set(err, "the answer is not a batch prediction job");
		return -EBADMSG;
	}
	id++;
	if (!is_word(id, PROVIDER_ID_MAX - 1, "", false) ||
	    strspn(id, "0123456789") != strlen(id)) {
		err_set(err, "the job id is not numeric");
		return -EBADMSG;
	}
	memset(&b, 0, sizeof(b));
	snprintf(b.id, sizeof(b.id), "%s", id);
	/* proto3 JSON omits an enum at its default: JOB_STATE_UNSPECIFIED (spec C.1). */
	snprintf(b.provider_state, sizeof(b.provider_state), "%s",
		 st && *st && !http_has_ctl(st) ? st : "JOB_STATE_UNSPECIFIED");
	if (state_from_vertex(b.provider_state, &b.state)) {
		/* Unknown or newer than this code (spec C.5): keep polling, show the word. */
		log_debug("vertex: job %s has unknown state", b.id);
		b.state = BATCH_IN_PROGRESS;
	}
	ok = json_int64(stats, "successfulCount", 0);
	bad = json_int64(stats, "failedCount", 0);
	incomplete = json_int64(stats, "incompleteCount", -1); /* -1: unknown (spec C.4) */
	if (ok < 0)
		ok = 0;
	if (bad < 0)
		bad = 0;
	b.counts.succeeded = ok;
	b.counts.errored = bad;
	b.counts.total = ok + bad + (incomplete > 0 ? incomplete : 0);
	if (hint > b.counts.total)
		b.counts.total = hint; /* our label: the count before Vertex reports any */
	rest = b.counts.total - ok - bad;
	if (rest > 0) {
		switch (b.state) {
		case BATCH_CANCELED:
			b.counts.canceled = rest;
			break;
		case BATCH_EXPIRED:
			b.counts.expired = rest;
			break;
		case BATCH_COMPLETED:
		case BATCH_FAILED:
			b.counts.errored += rest; /* ended without a result: they will get none */
			break;
		case BATCH_DRAFT:
		case BATCH_REJECTED:
		case BATCH_SUBMITTING:
		case BATCH_VALIDATING:
		case BATCH_IN_PROGRESS:
		case BATCH_FINALIZING:
		case BATCH_CANCELING:
			b.counts.processing = rest;
			break;
		}
	}
	b.created_at = json_time(o, "createTime");
	b.ended_at = json_time(o, "endTime");
	if (state_is_terminal(b.state) && !b.ended_at)
		b.ended_at = json_time(o, "updateTime");
	if (dir && *dir && strlen(dir) < sizeof(b.ref) && !http_has_ctl(dir))
		snprintf(b.ref, sizeof(b.ref), "%s", dir);
	b.results_available = state_is_terminal(b.state) && b.ref[0];
	/* A job that failed or expired before writing anything has nothing to fetch. */
	b.results_gone = (b.state == BATCH_FAILED || b.state == BATCH_EXPIRED) && !b.ref[0];
	if ((b.state == BATCH_FAILED || b.state == BATCH_EXPIRED) && cJSON_IsObject(error)) {
		const char *msg = json_str(error, "message");

		snprintf(b.error, sizeof(b.error), "%s",
			 msg && *msg ? msg : "the job failed without a message");
		for (char *c = b.error; *c; c++)
			if ((unsigned char)*c < 0x20)
				*c = ' ';
	}
	if (ident && *ident && strlen(ident) < sizeof(b.identity) && !http_has_ctl(ident))
		snprintf(b.identity, sizeof(b.identity), "%s", ident);
	*out = b;
	return 0;
}

/* open / free */

static void vtx_free(struct provider *p)
{
	if (!p)
		return;
	gauth_free(p->auth);
	http_free(p->http);
	free(p);
}

/* An http(s) URL without query or fragment, copied without trailing slashes. */
static int take_url(const struct remote_conf *conf, const char *key, const char *url, char *out,
		    size_t size, struct bfs_err *err)
{
	size_t n = strlen(url);

	while (n && url[n - 1] == '/')
		n--;
	if ((strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8)) || n < 8 ||
	    n >= size || http_has_ctl(url) || strpbrk(url, "?# ")) {
		err_set(err, "[%s] %s '%.200s' is not an http:// or https:// URL", conf->name, key,
			url);
		return -EINVAL;
	}
	memcpy(out, url, n);
	out[n] = '\0';
	return 0;
}

static int vtx_open(struct provider **out, const struct remote_conf *conf, const char *state_dir,
		    struct bfs_err *err)
{
	const char *project = conf_get(conf, "project", NULL);
	const char *location = conf_get(conf, "location", NULL);
	const char *bucket = conf_get(conf, "bucket", NULL);
	const char *prefix = conf_get(conf, "prefix", VTX_PREFIX_DEFAULT);
	const char *model = conf_get(conf, "model", "");
	const char *aip = conf_get(conf, "aiplatform_url", NULL);
	const char *storage = conf_get(conf, "storage_url", VTX_STORAGE_DEFAULT);
	double threshold = conf_get_double(conf, "resumable_threshold", VTX_CHUNK_DEFAULT);
	double chunk = conf_get_double(conf, "upload_chunk_size", VTX_CHUNK_DEFAULT);
	char base[1024], def[256];
	struct provider *p = NULL;
	int rc;

	(void)state_dir; /* nothing kept on disk: Vertex and the bucket hold everything */
	if (!project || !is_word(project, 100, ":.-", false) || !location ||
	    !is_word(location, 64, "-", false) || !bucket || !is_word(bucket, 222, "._-", false)) {
		err_set(err,
			"[%s] vertex needs project, location (a region such as us-east5) and "
			"bucket, in lowercase letters, digits and -._:",
			conf->name);
		return -EINVAL;
	}
	if (!strcmp(location, "global")) {
		/* Claude batch prediction needs a regional endpoint (spec C.1). */
		err_set(err, "[%s] location must be a region (e.g. us-east5), not 'global'",
			conf->name);
		return -EINVAL;
	}
	if (http_has_ctl(prefix) || prefix[0] == '/' || strlen(prefix) > 400 ||
	    strstr(prefix, "//")) {
		err_set(err, "[%s] prefix must be an object name prefix without '//'", conf->name);
		return -EINVAL;
	}
	if (*model && !is_word(model, 200, "@._-/", true)) {
		err_set(err,
			"[%s] model '%.200s' is not a model id such as claude-3-5-haiku@20241022",
			conf->name, model);
		return -EINVAL;
	}
	if (!(threshold >= 0 && threshold < 1e15) ||
	    !(chunk >= VTX_UNIT && chunk < 1e12 && (int64_t)chunk % VTX_UNIT == 0)) {
		err_set(err,
			"[%s] resumable_threshold must be a byte count and upload_chunk_size a "
			"multiple of 262144 bytes",
			conf->name);
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		err_set(err, "[%s] out of memory", conf->name);
		return -ENOMEM;
	}
	snprintf(p->remote, sizeof(p->remote), "%s", conf->name);
	snprintf(def, sizeof(def), VTX_AIPLATFORM_FMT, location);
	rc = take_url(conf, "aiplatform_url", aip && *aip ? aip : def, base, sizeof(base), err);
	if (!rc)
		rc = take_url(conf, "storage_url", storage, p->storage, sizeof(p->storage), err);
	if (rc)
		goto fail;
	if (snprintf(p->jobs, sizeof(p->jobs), "%s/v1/projects/%s/locations/%s/batchPredictionJobs",
		     base, project, location) >= (int)sizeof(p->jobs)) {
		err_set(err, "[%s] aiplatform_url is too long", conf->name);
		rc = -EINVAL;
		goto fail;
	}
	snprintf(p->bucket, sizeof(p->bucket), "%s", bucket);
	snprintf(p->prefix, sizeof(p->prefix), "%s%s", prefix,
		 *prefix && prefix[strlen(prefix) - 1] != '/' ? "/" : "");
	snprintf(p->model, sizeof(p->model), "%s", model);
	p->resumable_threshold = (int64_t)threshold;
	p->chunk = (int64_t)chunk;
	struct http_opts ho;

	provider_http_opts(conf, &ho); /* the remote's rate_limit_wait */
	rc = http_new(&p->http, &ho, err);
	if (!rc)
		rc = gauth_new(&p->auth, conf, p->http, err);
	if (rc)
		goto fail;
	*out = p;
	return 0;
fail:
	vtx_free(p);
	return rc;
}

/* Cloud Storage upload (spec C.9) */

/* {storage}/upload/storage/v1/b/{bucket}/o?uploadType=T&name=N */
static int upload_url(const struct provider *p, const char *type, const char *object,
		      struct buf *url)
{
	int rc = buf_addf(url, "%s/upload/storage/v1/b/", p->storage);

	if (!rc)
		rc = http_url_escape(p->bucket, url);
	if (!rc)
		rc = buf_addf(url, "/o?uploadType=%s&name=", type);
	if (!rc)
		rc = http_url_escape(object, url);
	return rc;
}

/* The Object resource an upload returns must be the whole file. */
static int check_object(const cJSON *o, int64_t size, struct bfs_err *err)
{
	int64_t got = json_int64(o, "size", -1);

	if (got != size) {
		err_set(err, "the bucket kept %" PRId64 " of %" PRId64 " bytes", got, size);
		return -EIO;
	}
	return 0;
}

static int upload_simple(struct provider *p, const char *path, int64_t base, const char *object,
			 int64_t size, provider_retry_fn on_retry, void *retry_ctx,
			 struct bfs_err *err)
{
	static const char *const hdrs[] = {"Content-Type: " VTX_CONTENT_TYPE,
					   "Accept: application/json", NULL};
	struct buf url = BUF_INIT(VTX_URL_MAX), resp = BUF_INIT(VTX_RESP_MAX);
	struct http_file_body fb = {.fd = -1};
	struct http_body body;
	struct http_request rq = {
		.method = HTTP_POST,
		.body = &body,
		/* An upload replaces the object of the same name: repeating it is harmless. */
		.retry = HTTP_RETRY_IDEMPOTENT,
		.resp = &resp,
		.stream = size > VTX_BIG_BODY,
		.on_retry = on_retry,
		.retry_ctx = retry_ctx,
	};
	cJSON *root = NULL;
	int rc;

	rc = upload_url(p, "media", object, &url);
	if (rc) {
		err_set(err, "the upload URL is too long");
		goto out;
	}
	rc = http_file_body_open(&fb, &body, path, base, size);
	if (rc) {
		err_set(err, "cannot read '%s': %s", path, strerror(-rc));
		goto out;
	}
	rq.url = url.data;
	rc = vtx_perform(p, &rq, hdrs, NULL, err);
	if (rc)
		goto out;
	root = resp.data ? cJSON_ParseWithLength(resp.data, resp.len) : NULL;
	rc = check_object(root, size, err);
out:
	cJSON_Delete(root);
	http_file_body_release(&fb);
	buf_release(&url);
	buf_release(&resp);
	return rc;
}

/* The next byte the server wants after a 308: "bytes=0-N" -> N+1; no Range -> 0. */
static int64_t next_offset(const struct http_response *rs)
{
	const char *dash = strrchr(rs->range, '-');

	if (strncmp(rs->range, "bytes=0-", 8) || !dash)
		return 0;
	return strtoll(dash + 1, NULL, 10) + 1;
}

/* A chunk that may be worth resuming after: the network, a timeout, or the server's 5xx. */
static bool is_resumable_failure(int rc, const struct http_response *rs)
{
	return rc == -ECONNRESET || rc == -ETIMEDOUT || rc == -EPROTO || rc == -ECONNREFUSED ||
	       rc == -EHOSTUNREACH || rs->status == 408 || rs->status == 429 || rs->status >= 500;
}

/*
 * One PUT to the session: a chunk [off, off+len) or, with len 0, a status query. Sets *done
 * when the object is complete, else *off to the next byte the server wants.
 */
static int session_put(struct provider *p, const char *session, const char *path, int64_t base,
		       int64_t size, int64_t *off, int64_t len, bool *done,
		       struct http_response *rs, struct bfs_err *err)
{
	struct buf resp = BUF_INIT(VTX_RESP_MAX);
	struct http_file_body fb = {.fd = -1};
	struct http_body body;
	char range[96];
	/* "Content-Type:" with no value stops curl from adding a form type to a PUT. */
	const char *hdrs[] = {range, "Content-Type:", NULL};
	struct http_request rq = {
		.method = HTTP_PUT,
		.url = session,
		/* A chunk is not repeated blindly: the status query says what arrived. */
		.retry = len ? HTTP_RETRY_NONE : HTTP_RETRY_IDEMPOTENT,
		.resp = &resp,
		.stream = len > VTX_BIG_BODY,
	};
	cJSON *root = NULL;
	int rc;

	*done = false;
	if (len) {
		snprintf(range, sizeof(range),
			 "Content-Range: bytes %" PRId64 "-%" PRId64 "/%" PRId64, *off,
			 *off + len - 1, size);
		rc = http_file_body_open(&fb, &body, path, base + *off, len);
		if (rc) {
			err_set(err, "cannot read '%s': %s", path, strerror(-rc));
			return rc;
		}
		rq.body = &body;
	} else {
		snprintf(range, sizeof(range), "Content-Range: bytes */%" PRId64, size);
	}
	rc = vtx_perform(p, &rq, hdrs, rs, err);
	if (!rc) {
		root = resp.data ? cJSON_ParseWithLength(resp.data, resp.len) : NULL;
		rc = check_object(root, size, err);
		*done = !rc;
	} else if (rs->status == 308) {
		/* Resume Incomplete: Range says how much is kept (absent: nothing yet). */
		*off = next_offset(rs);
		err_clear(err);
		rc = *off >= 0 && *off <= size ? 0 : -EIO;
		if (rc)
			err_set(err, "the bucket reported an impossible upload offset");
	}
	cJSON_Delete(root);
	http_file_body_release(&fb);
	buf_release(&resp);
	return rc;
}

static int upload_resumable(struct provider *p, const char *path, int64_t base, const char *object,
			    int64_t size, provider_retry_fn on_retry, void *retry_ctx,
			    struct bfs_err *err)
{
	char len_hdr[64];
	const char *hdrs[] = {"X-Upload-Content-Type: " VTX_CONTENT_TYPE, len_hdr,
			      "Content-Type: application/json; charset=utf-8", NULL};
	struct buf url = BUF_INIT(VTX_URL_MAX), resp = BUF_INIT(VTX_RESP_MAX);
	struct http_mem_body mb;
	struct http_body body;
	struct http_request rq = {
		.method = HTTP_POST,
		.body = &body,
		.retry = HTTP_RETRY_IDEMPOTENT, /* an unused session costs nothing */
		.resp = &resp,
		.on_retry = on_retry,
		.retry_ctx = retry_ctx,
	};
	struct http_response rs;
	char *session = NULL;
	int64_t off = 0;
	int failures = 0, rc;
	bool done = false;

	snprintf(len_hdr, sizeof(len_hdr), "X-Upload-Content-Length: %" PRId64, size);
	rc = upload_url(p, "resumable", object, &url);
	if (rc) {
		err_set(err, "the upload URL is too long");
		goto out;
	}
	http_mem_body_init(&mb, &body, "{}", 2);
	rq.url = url.data;
	rc = vtx_perform(p, &rq, hdrs, &rs, err);
	if (rc)
		goto out;
	/* The session URI is where the file goes: only to the configured host (and token). */
	if (!rs.location[0] || http_has_ctl(rs.location) ||
	    !http_is_same_origin(rs.location, p->storage)) {
		err_set(err, "the bucket gave no usable resumable session");
		rc = -EPROTO;
		goto out;
	}
	session = strdup(rs.location);
	if (!session) {
		rc = -ENOMEM;
		goto out;
	}
	while (!done) {
		int64_t len = size - off < p->chunk ? size - off : p->chunk;

		memset(&rs, 0, sizeof(rs));
		rc = session_put(p, session, path, base, size, &off, len, &done, &rs, err);
		if (!rc)
			continue;
		if (!is_resumable_failure(rc, &rs) || ++failures > VTX_UPLOAD_FAILURES)
			goto out;
		/* Interrupted: ask the session what it kept, then go on from there. */
		if (on_retry)
			on_retry(retry_ctx, failures + 1, err ? err->msg : "upload interrupted");
		log_debug("vertex: upload of %" PRId64 " bytes interrupted at %" PRId64
			  "; asking what arrived",
			  size, off);
		memset(&rs, 0, sizeof(rs));
		rc = session_put(p, session, path, base, size, &off, 0, &done, &rs, err);
		if (rc)
			goto out;
	}
	log_debug("vertex: uploaded %" PRId64 " bytes in a resumable session", size);
out:
	free(session);
	buf_release(&url);
	buf_release(&resp);
	return rc;
}

/* submit */

/* The model resource of a job: a bare id goes under Anthropic's publisher (spec C.3). */
static int model_resource(const char *model, struct buf *out)
{
	if (strchr(model, '/'))
		return buf_addstr(out, model);
	return buf_addf(out, VTX_PUBLISHER "%s", model);
}

static int create_body(const struct provider *p, const struct provider_submit *s, const char *model,
		       const char *object, char **out)
{
	struct buf res = BUF_INIT(1024), in = BUF_INIT(2048), outp = BUF_INIT(2048);
	char display[VTX_NAME_MAX + 1], label[64], count[32];
	cJSON *o = cJSON_CreateObject(), *cfg, *src, *uris, *labels;
	size_t idlen = strlen(s->identity);
	int name_room = (int)(VTX_NAME_MAX - 1 - (idlen < VTX_NAME_MAX ? idlen : 0));
	int rc = -ENOMEM;

	/* The display name shows the batch, and ends in the identity for people to search. */
	snprintf(display, sizeof(display), "%.*s %s", name_room > 0 ? name_room : 0, s->name,
		 s->identity);
	label_safe(s->identity, label, sizeof(label));
	snprintf(count, sizeof(count), "%" PRIu64, s->nrequests);
	if (!o || model_resource(model, &res) || buf_addf(&in, "gs://%s/%s", p->bucket, object) ||
	    buf_addf(&outp, "gs://%s/%s%s/output", p->bucket, p->prefix, s->identity))
		goto out;
	if (!cJSON_AddStringToObject(o, "displayName", display) ||
	    !cJSON_AddStringToObject(o, "model", res.data))
		goto out;
	cfg = cJSON_AddObjectToObject(o, "inputConfig");
	if (!cfg || !cJSON_AddStringToObject(cfg, "instancesFormat", "jsonl"))
		goto out;
	src = cJSON_AddObjectToObject(cfg, "gcsSource");
	uris = src ? cJSON_AddArrayToObject(src, "uris") : NULL;
	if (!uris || !cJSON_AddItemToArray(uris, cJSON_CreateString(in.data)))
		goto out;
	cfg = cJSON_AddObjectToObject(o, "outputConfig");
	if (!cfg || !cJSON_AddStringToObject(cfg, "predictionsFormat", "jsonl"))
		goto out;
	src = cJSON_AddObjectToObject(cfg, "gcsDestination");
	if (!src || !cJSON_AddStringToObject(src, "outputUriPrefix", outp.data))
		goto out;
	labels = cJSON_AddObjectToObject(o, "labels");
	if (!labels || !cJSON_AddStringToObject(labels, VTX_LABEL_ID, label) ||
	    !cJSON_AddStringToObject(labels, VTX_LABEL_N, count))
		goto out;
	*out = cJSON_PrintUnformatted(o);
	rc = *out ? 0 : -ENOMEM;
out:
	cJSON_Delete(o);
	buf_release(&res);
	buf_release(&in);
	buf_release(&outp);
	return rc;
}

static int vtx_submit(struct provider *p, const struct provider_submit *s,
		      struct provider_batch *out, provider_retry_fn on_retry, void *retry_ctx,
		      struct bfs_err *err)
{
	const char *model = s->model && *s->model ? s->model : p->model;
	struct buf object = BUF_INIT(1024);
	struct http_mem_body mb;
	struct http_body body;
	struct provider_batch b;
	struct stat st;
	cJSON *root = NULL;
	char *json = NULL;
	int rc;

	if (!*model) {
		err_set(err,
			"cannot create batch: no model: set 'model' in [%s] or request.model "
			"in the lines",
			p->remote);
		return -EINVAL;
	}
	if (!is_word(model, 200, "@._-/", true)) {
		err_set(err, "cannot create batch: model '%.100s' is not a model id", model);
		return -EINVAL;
	}
	if (stat(s->path, &st)) {
		rc = -errno;
		err_set(err, "cannot create batch: cannot read '%s': %s", s->path, strerror(errno));
		return rc;
	}
	/* The object is named for the identity: a retried upload overwrites, never adds. */
	rc = buf_addf(&object, "%s%s/requests.jsonl", p->prefix, s->identity);
	if (rc) {
		err_set(err, "cannot create batch: object name too long");
		goto out;
	}
	if (s->offset < 0 || s->length <= 0 || s->offset + s->length > (int64_t)st.st_size) {
		err_set(err, "cannot create batch: the part is not within '%s'", s->path);
		rc = -EINVAL;
		goto out;
	}
	if (s->length > p->resumable_threshold)
		rc = upload_resumable(p, s->path, s->offset, object.data, s->length, on_retry,
				      retry_ctx, err);
	else
		rc = upload_simple(p, s->path, s->offset, object.data, s->length, on_retry,
				   retry_ctx, err);
	if (rc) {
		err_prefix(err, "cannot upload the requests to gs://%s", p->bucket);
		goto out;
	}
	rc = create_body(p, s, model, object.data, &json);
	if (rc) {
		err_set(err, "cannot create batch: out of memory");
		goto out;
	}
	http_mem_body_init(&mb, &body, json, strlen(json));
	rc = call_json(p, HTTP_POST, p->jobs, &body, HTTP_RETRY_CREATE, on_retry, retry_ctx, &root,
		       err);
	if (rc == -EBADMSG) {
		rc = -EAGAIN; /* a 2xx came back: the job exists, but we cannot tell which */
	} else if (!rc && job_from_json(root, &b, err)) {
		rc = -EAGAIN; /* as above */
	}
	if (rc) {
		err_prefix(err, "cannot create batch");
		goto out;
	}
	log_debug("vertex: created job %s (%" PRIu64 " requests, %" PRId64 " bytes)", b.id,
		  s->nrequests, s->length);
	*out = b;
out:
	cJSON_Delete(root);
	free(json);
	buf_release(&object);
	return rc;
}

/* list / find */

/*
 * Moves *token on to the page after root's (Google's nextPageToken): 1 when there is one, 0
 * after the last page, -errno with err set for a token that is too long or would loop.
 */
static int next_page(const cJSON *root, char **token, struct bfs_err *err)
{
	const char *next = json_str(root, "nextPageToken");
	char *copy;

	if (!next || !*next)
		return 0;
	if (strlen(next) > VTX_TOKEN_MAX || (*token && !strcmp(*token, next))) {
		err_set(err, "the listing's nextPageToken is unusable");
		return -EBADMSG;
	}
	copy = strdup(next);
	if (!copy)
		return -ENOMEM;
	free(*token);
	*token = copy;
	return 1;
}

/*
 * Calls fn for each job (only Claude ones when claude_only); fn returns < 0 to fail, > 0 to
 * stop early.
 */
static int list_jobs(struct provider *p, bool claude_only, provider_batch_fn fn, void *ctx,
		     struct bfs_err *err)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	char *token = NULL;
	cJSON *root = NULL;
	int rc = 0;

	for (long page = 0; page < VTX_PAGES_MAX; page++) {
		const cJSON *jobs, *item;
		long seen = 0, known = 0; /* jobs of this page given to fn, known ones */

		buf_reset(&url);
		rc = buf_addf(&url, "%s?pageSize=%d", p->jobs, VTX_JOB_PAGE);
		if (!rc && token) {
			rc = buf_addstr(&url, "&pageToken=");
			if (!rc)
				rc = http_url_escape(token, &url);
		}
		if (rc) {
			err_set(err, "the listing URL is too long");
			goto out;
		}
		rc = call_json(p, HTTP_GET, url.data, NULL, HTTP_RETRY_IDEMPOTENT, NULL, NULL,
			       &root, err);
		if (rc)
			goto out;
		jobs = cJSON_GetObjectItemCaseSensitive(root, "batchPredictionJobs");
		if (jobs && !cJSON_IsArray(jobs)) {
			err_set(err, "the answer is not a page of jobs");
			rc = -EBADMSG;
			goto out;
		}
		/* Empty fields are omitted (spec C.1): no batchPredictionJobs, no jobs. */
		cJSON_ArrayForEach(item, jobs) {
			struct provider_batch b;
			struct bfs_err berr = BFS_ERR_INIT;

			/* Other publishers' jobs (Gemini, ...) are not this remote's batches. */
			if (claude_only && !is_claude_job(item))
				continue;
			if (job_from_json(item, &b, &berr)) {
				log_warn("vertex: skipping a listed job: %s", berr.msg);
				continue;
			}
			rc = fn(ctx, &b);
			seen++;
			if (rc == PROVIDER_LIST_KNOWN) {
				known++;
				rc = 0;
			} else if (rc) {
				rc = rc > 0 ? 0 : rc;
				goto out;
			}
		}
		/* A page of batches all known and unchanged: the older pages hold nothing new. */
		if (seen && known == seen)
			goto out;
		rc = next_page(root, &token, err);
		if (rc <= 0)
			goto out;
		cJSON_Delete(root);
		root = NULL;
	}
	err_set(err, "more than %d pages of jobs", VTX_PAGES_MAX);
	rc = -E2BIG;
out:
	cJSON_Delete(root);
	free(token);
	buf_release(&url);
	return rc;
}

static int vtx_list(struct provider *p, provider_batch_fn fn, void *ctx, struct bfs_err *err)
{
	int rc;

	err_clear(err);
	rc = list_jobs(p, true, fn, ctx, err);
	if (rc)
		err_prefix(err, "cannot list batch prediction jobs");
	return rc;
}

struct find_ctx {
	const struct provider_submit *s;
	char label[64];
	bool found;
	struct provider_batch b;
};

static int find_one(void *ctx, const struct provider_batch *b)
{
	struct find_ctx *f = ctx;

	if (strcmp(b->identity, f->label) || (f->s->owned && f->s->owned(f->s->owned_ctx, b->id)))
		return 0;
	f->b = *b;
	f->found = true;
	return 1;
}

/*
 * The identity label is exact (spec C.3 labels), so every page is read: no time window. Every
 * job is looked at, whatever its model: a model outside Anthropic's publisher path (one the
 * user named in full) must not make our own job look absent and be created twice.
 */
static int vtx_find(struct provider *p, const struct provider_submit *s, struct provider_batch *out,
		    struct bfs_err *err)
{
	struct find_ctx f = {.s = s, .found = false};
	int rc;

	label_safe(s->identity, f.label, sizeof(f.label));
	rc = list_jobs(p, false, find_one, &f, err);
	if (rc) {
		err_prefix(err, "cannot look for the created job");
		return rc;
	}
	if (!f.found) {
		err_set(err, "no job is labelled %s=%s", VTX_LABEL_ID, f.label);
		return -ENOENT;
	}
	log_debug("vertex: found job %s for a lost create", f.b.id);
	*out = f.b;
	return 0;
}

/* get / cancel */

static bool is_job_id(const char *id)
{
	return is_word(id, PROVIDER_ID_MAX - 1, "", false) &&
	       strspn(id, "0123456789") == strlen(id);
}

static int vtx_get(struct provider *p, const char *id, struct provider_batch *out,
		   provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	struct provider_batch b;
	cJSON *root = NULL;
	int rc;

	if (!is_job_id(id)) {
		err_set(err, "cannot get job: '%.*s' is not a job id", 64, id);
		return -ENOENT;
	}
	rc = buf_addf(&url, "%s/%s", p->jobs, id);
	if (!rc)
		rc = call_json(p, HTTP_GET, url.data, NULL, HTTP_RETRY_IDEMPOTENT, on_retry,
			       retry_ctx, &root, err);
	if (!rc)
		rc = job_from_json(root, &b, err);
	if (rc) {
		err_prefix(err, "cannot get job '%s'", id);
		goto out;
	}
	*out = b;
out:
	cJSON_Delete(root);
	buf_release(&url);
	return rc;
}

static int vtx_cancel(struct provider *p, const char *id, struct provider_batch *out,
		      struct bfs_err *err)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	struct http_mem_body mb;
	struct http_body body;
	cJSON *root = NULL;
	int rc;

	if (!is_job_id(id)) {
		err_set(err, "cannot cancel job: '%.*s' is not a job id", 64, id);
		return -ENOENT;
	}
	/* :cancel answers {} (spec C.2), so the job is read again for its state. Asking
	 * twice is harmless: retry as an idempotent call. */
	http_mem_body_init(&mb, &body, "{}", 2);
	rc = buf_addf(&url, "%s/%s:cancel", p->jobs, id);
	if (!rc)
		rc = call_json(p, HTTP_POST, url.data, &body, HTTP_RETRY_IDEMPOTENT, NULL, NULL,
			       &root, err);
	cJSON_Delete(root);
	buf_release(&url);
	if (rc) {
		err_prefix(err, "cannot cancel job '%s'", id);
		return rc;
	}
	return vtx_get(p, id, out, NULL, NULL, err);
}

/* results */

static bool is_jsonl_name(const char *name)
{
	size_t n = strlen(name);

	return n > 6 && !strcmp(name + n - 6, ".jsonl");
}

static int download_object(struct provider *p, const char *bucket, const char *name,
			   struct provider_results *r, struct bfs_err *err)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	struct http_request rq = {
		.method = HTTP_GET,
		.retry = HTTP_RETRY_IDEMPOTENT,
		.line_fn = provider_results_line,
		.line_ctx = r,
		.reset = provider_results_reset,
		.on_retry = r->on_retry,
		.retry_ctx = r->retry_ctx,
		.stream = true,
	};
	int rc = buf_addf(&url, "%s/storage/v1/b/", p->storage);

	if (!rc)
		rc = http_url_escape(bucket, &url);
	if (!rc)
		rc = buf_addstr(&url, "/o/");
	if (!rc)
		rc = http_url_escape(name, &url);
	if (!rc)
		rc = buf_addstr(&url, "?alt=media");
	if (rc) {
		err_set(err, "object name too long");
		goto out;
	}
	provider_results_next_file(r);
	rq.url = url.data;
	rc = vtx_perform(p, &rq, NULL, NULL, err);
	if (rc && err_is_set(r->line_err))
		err_set(err, "%s", r->line_err->msg);
	if (rc)
		err_prefix(err, "gs://%s/%.300s", bucket, name);
out:
	buf_release(&url);
	return rc;
}

/* One pass over the output directory: list it page by page, stream each .jsonl object. */
static int results_pass(struct provider *p, const char *bucket, const char *prefix,
			struct provider_results *r, struct bfs_err *err)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	char *token = NULL;
	cJSON *root = NULL;
	int rc = 0;

	for (long page = 0; page < VTX_PAGES_MAX; page++) {
		const cJSON *items, *item;

		buf_reset(&url);
		rc = buf_addf(&url, "%s/storage/v1/b/", p->storage);
		if (!rc)
			rc = http_url_escape(bucket, &url);
		if (!rc)
			rc = buf_addf(&url, "/o?maxResults=%d&prefix=", VTX_OBJ_PAGE);
		if (!rc)
			rc = http_url_escape(prefix, &url);
		if (!rc && token) {
			rc = buf_addstr(&url, "&pageToken=");
			if (!rc)
				rc = http_url_escape(token, &url);
		}
		if (rc) {
			err_set(err, "the listing URL is too long");
			goto out;
		}
		rc = call_json(p, HTTP_GET, url.data, NULL, HTTP_RETRY_IDEMPOTENT, r->on_retry,
			       r->retry_ctx, &root, err);
		if (rc)
			goto out;
		items = cJSON_GetObjectItemCaseSensitive(root, "items");
		if (items && !cJSON_IsArray(items)) {
			err_set(err, "the answer is not a page of objects");
			rc = -EBADMSG;
			goto out;
		}
		/* Every .jsonl the job wrote (predictions*, errors*): never a constructed name
		 * (spec C.7). Listings come in name order. */
		cJSON_ArrayForEach(item, items) {
			const char *name = json_str(item, "name");

			if (!name || strncmp(name, prefix, strlen(prefix)) || !is_jsonl_name(name))
				continue;
			rc = download_object(p, bucket, name, r, err);
			if (rc)
				goto out;
		}
		rc = next_page(root, &token, err);
		if (rc <= 0)
			goto out;
		cJSON_Delete(root);
		root = NULL;
	}
	err_set(err, "more than %d pages of objects", VTX_PAGES_MAX);
	rc = -E2BIG;
out:
	cJSON_Delete(root);
	free(token);
	buf_release(&url);
	return rc;
}

static int vtx_results(struct provider *p, const struct provider_batch *b, provider_result_fn fn,
		       provider_reset_fn reset, void *ctx, provider_retry_fn on_retry,
		       void *retry_ctx, struct bfs_err *err)
{
	struct bfs_err line_err = BFS_ERR_INIT;
	struct provider_results r;
	struct buf prefix = BUF_INIT(PROVIDER_REF_MAX + 2);
	struct provider_batch now;
	const char *dir = b->ref;
	char bucket[256];
	int rc = 0;

	provider_results_init(&r, fn, reset, ctx, on_retry, retry_ctx, &line_err);
	if (b->results_gone) {
		err_set(err, "job '%s' wrote no results", b->id);
		return -ENODATA;
	}
	if (!dir[0]) {
		/* Not known when the job was last seen: ask for outputInfo now. */
		rc = vtx_get(p, b->id, &now, r.on_retry, r.retry_ctx, err);
		if (rc)
			return rc;
		dir = now.ref;
	}
	if (!dir[0]) {
		err_set(err, "job '%s' has no output directory", b->id);
		return -ENODATA;
	}
	if (parse_gs(dir, bucket, sizeof(bucket), &prefix) || !prefix.len) {
		err_set(err, "job '%s': output directory '%.200s' is not a gs:// directory", b->id,
			dir);
		rc = -EBADMSG;
		goto out;
	}
	for (int pass = 0; pass < VTX_RESTARTS; pass++) {
		err_clear(err);
		rc = results_pass(p, bucket, prefix.data, &r, err);
		if (rc != -ERESTART)
			break;
		log_debug("vertex: results of job %s: a file was cut short; starting over", b->id);
		rc = provider_results_restart(&r);
		if (rc) {
			err_set(err, "cannot start the download over: %s", strerror(-rc));
			break;
		}
		rc = -ERESTART;
	}
	if (rc == -ERESTART)
		err_set(err, "the download was cut short %d times", VTX_RESTARTS);
	if (!rc && !r.delivered) {
		err_set(err, "job '%s' wrote no predictions under %.200s", b->id, dir);
		rc = -ENODATA;
	} else if (rc) {
		err_prefix(err, "cannot download the results of job '%s'", b->id);
	}
out:
	buf_release(&prefix);
	return rc;
}

static const char *const provider_vertex_keys[] = {
	"project",
	"location",
	"bucket",
	"prefix",
	"model",
	"aiplatform_url",
	"storage_url",
	"resumable_threshold",
	"upload_chunk_size",
	"access_token_command",
	"access_token_ttl",
	"credentials",
	"quota_project_id",
	NULL,
};

const struct provider_ops provider_vertex_ops = {
	.name = "vertex",
	.format = JSONL_VERTEX,
	/*
	 * Per-job caps for Claude on Vertex are not documented (spec C.6, [I]); these follow
	 * Vertex batch prediction's published ones (200,000 requests, 1 GB input file).
	 */
	.limits = {.max_requests = 200000, .max_bytes = 1000u * 1000 * 1000},
	.keys = provider_vertex_keys,
	.open = vtx_open,
	.free = vtx_free,
	.submit = vtx_submit,
	.find = vtx_find,
	.get = vtx_get,
	.list = vtx_list,
	.cancel = vtx_cancel,
	.results = vtx_results,
};
