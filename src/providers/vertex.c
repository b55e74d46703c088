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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "conf.h"
#include "err.h"
#include "gauth.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "prompt.h"
#include "providers/common.h"
#include "providers/vertex.h"
#include "state.h"
#include "timefmt.h"

#define VTX_AIPLATFORM_FMT   "https://%s-aiplatform.googleapis.com"
#define VTX_STORAGE_DEFAULT  "https://storage.googleapis.com"
#define VTX_BIGQUERY_DEFAULT "https://bigquery.googleapis.com"
#define VTX_BQ_PAGE	     500 /* rows per tabledata.list page */
#define VTX_PREFIX_DEFAULT   "batchfs/"
#define VTX_PUBLISHER	     "publishers/anthropic/models/"
#define VTX_CONTENT_TYPE     "application/jsonl"
#define VTX_URL_MAX	     8192
#define VTX_RESP_MAX	     (8u * 1024 * 1024) /* one JSON answer; a page of 100 jobs ~300 KiB */
#define VTX_JOB_PAGE	     100
#define VTX_OBJ_PAGE	     1000	     /* the Cloud Storage maximum (spec C.9) */
#define VTX_PAGES_MAX	     100000	     /* a loop guard, not a limit anyone should reach */
#define VTX_TOKEN_MAX	     4096	     /* a pageToken we send back */
#define VTX_UNIT	     (256 * 1024)    /* resumable chunks are multiples of this (spec C.9) */
#define VTX_CHUNK_DEFAULT    (32 * VTX_UNIT) /* 8 MiB */
#define VTX_UPLOAD_FAILURES  8		     /* interrupted chunks before giving up */
#define VTX_RESTARTS	     3		     /* whole results downloads started over */
#define VTX_BIG_BODY	     (32 * 1024 * 1024) /* above: only the low-speed timeout applies */
#define VTX_LABEL_ID	     "batchfs_identity"
#define VTX_LABEL_N	     "batchfs_requests"
#define VTX_LABEL_RETRY	     "batchfs_retry_of" /* on a retry: the id of the job it retries */
#define VTX_INTERNAL	     13			/* google.rpc.Code INTERNAL */
#define VTX_RETRY_DEFAULT    600.0		/* first_job_retry: "about 10 minutes" */
#define VTX_RETRIES_MAX	     64			/* retried jobs remembered (then: listed) */
#define VTX_NAME_MAX	     128		/* displayName */
/* Google's Claude batch page: "due to a known bug, cancelled jobs write no results". */
#define VTX_CANCEL_WARNING                                                             \
	"Vertex AI writes no results for a cancelled job (a known bug): the requests " \
	"completed so far are lost"

struct provider {
	struct http *http;
	struct gauth *auth;
	char remote[CONF_NAME_MAX];
	char jobs[2048];      /* .../v1/projects/P/locations/L/batchPredictionJobs */
	char storage[1024];   /* storage_url, no trailing slash */
	char bigquery[1024];  /* bigquery_url, no trailing slash */
	char bq_dataset[512]; /* output = bigquery: "bq://project.dataset", else "" */
	char bucket[256];
	char prefix[512];     /* object name prefix: "" or ending in '/' */
	char model[256];      /* default model, "" when none */
	char state_dir[4096]; /* where the normalised copy of a part is written before upload */
	int64_t resumable_threshold;
	int64_t chunk;
	int64_t first_job_retry_ms; /* 0: a job failing with INTERNAL is not retried */
	/* Jobs that failed with INTERNAL and their retries, once seen (else found by label). */
	pthread_mutex_t retry_lock;
	struct {
		char of[PROVIDER_ID_MAX], id[PROVIDER_ID_MAX];
	} retries[VTX_RETRIES_MAX];
	size_t nretries;
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
static int vtx_perform(struct provider *p, struct http_request *rq, struct http_response *rs,
		       struct bfs_err *err)
{
	const char *const *extra = rq->headers;
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
	rq->headers = extra;
	if (rs)
		*rs = r;
	return rc;
}

/* A JSON call: the answer parsed into *root (the caller frees it); rs (may be NULL) gets the
 * HTTP status and headers. */
static int call_json_rs(struct provider *p, enum http_method m, const char *url,
			const struct http_body *body, enum http_retry retry,
			provider_retry_fn on_retry, void *retry_ctx, cJSON **root,
			struct http_response *rs, struct bfs_err *err)
{
	struct http_request rq = {
		.method = m,
		.url = url,
		.headers = body ? hdr_json : hdr_accept,
		.body = body,
		.retry = retry,
		.on_retry = on_retry,
		.retry_ctx = retry_ctx,
	};

	return provider_call_json(p, vtx_perform, &rq, VTX_RESP_MAX, root, rs, err);
}

static int call_json(struct provider *p, enum http_method m, const char *url,
		     const struct http_body *body, enum http_retry retry,
		     provider_retry_fn on_retry, void *retry_ctx, cJSON **root, struct bfs_err *err)
{
	return call_json_rs(p, m, url, body, retry, on_retry, retry_ctx, root, NULL, err);
}

/* BatchPredictionJob -> provider_batch */

static bool is_claude_job(const cJSON *o)
{
	const char *model = json_str(o, "model");

	return model && strstr(model, VTX_PUBLISHER);
}

/* A job batchfs made to retry another (labelled VTX_LABEL_RETRY): never a batch of its own. */
static bool is_retry_job(const cJSON *o)
{
	return json_str(cJSON_GetObjectItemCaseSensitive(o, "labels"), VTX_LABEL_RETRY) != NULL;
}

/* JobState: QUEUED/PENDING are validating, PAUSED in_progress (docs/semantics.md). */
static int vertex_state_from(const char *job_state, bool cancel_initiated, enum batch_state *out)
{
	static const struct state_word map[] = {
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

	(void)cancel_initiated;
	return state_map_word(map, sizeof(map) / sizeof(map[0]), job_state, false, out);
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
	if (vertex_state_from(b.provider_state, false, &b.state)) {
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
		case BATCH_QUEUED:
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
	if (!b.ref[0]) {
		/* A BigQuery destination: "bq://project.dataset" and the table Vertex made. */
		const char *ds = json_str(info, "bigqueryOutputDataset");
		const char *table = json_str(info, "bigqueryOutputTable");

		if (ds && table && !strncmp(ds, "bq://", 5) && *table && !http_has_ctl(ds) &&
		    !http_has_ctl(table) && strlen(ds) + strlen(table) + 2 < sizeof(b.ref))
			snprintf(b.ref, sizeof(b.ref), "%s.%s", ds, table);
	}
	b.results_available = state_is_terminal(b.state) && b.ref[0] && b.state != BATCH_CANCELED;
	/* A job that failed or expired before writing anything has nothing to fetch; a
	 * cancelled one never has (VTX_CANCEL_WARNING), whatever outputInfo says. */
	b.results_gone = ((b.state == BATCH_FAILED || b.state == BATCH_EXPIRED) && !b.ref[0]) ||
			 b.state == BATCH_CANCELED;
	if (b.state == BATCH_CANCELING || b.state == BATCH_CANCELED)
		snprintf(b.error, sizeof(b.error), "cancelled: %s", VTX_CANCEL_WARNING);
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
	pthread_mutex_destroy(&p->retry_lock);
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
	double retry_s = conf_get_double(conf, "first_job_retry", VTX_RETRY_DEFAULT);
	const char *output = conf_get(conf, "output", "gcs");
	const char *dataset = conf_get(conf, "bigquery_dataset", NULL);
	const char *bqurl = conf_get(conf, "bigquery_url", VTX_BIGQUERY_DEFAULT);
	char base[1024], def[256];
	struct provider *p = NULL;
	int rc;

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
	if (strcmp(output, "gcs") && strcmp(output, "bigquery")) {
		err_set(err, "[%s] output must be gcs or bigquery, not '%.64s'", conf->name,
			output);
		return -EINVAL;
	}
	if (dataset && !strncmp(dataset, "bq://", 5))
		dataset += 5;
	if (!strcmp(output, "bigquery") &&
	    (!dataset || !strchr(dataset, '.') || !is_word(dataset, 400, ":.-_", true))) {
		err_set(err,
			"[%s] output = bigquery needs bigquery_dataset = PROJECT.DATASET (or "
			"bq://PROJECT.DATASET)",
			conf->name);
		return -EINVAL;
	}
	if (conf_get(conf, "first_job_retry", NULL)) {
		const char *v = conf_get(conf, "first_job_retry", NULL);
		char *end;

		retry_s = strtod(v, &end);
		if (end == v || *end)
			retry_s = -1;
	}
	if (!(retry_s >= 0 && retry_s < 1e9)) {
		err_set(err, "[%s] first_job_retry must be a number of seconds (0: never)",
			conf->name);
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		err_set(err, "[%s] out of memory", conf->name);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->retry_lock, NULL);
	p->first_job_retry_ms = (int64_t)(retry_s * 1000.0);
	snprintf(p->remote, sizeof(p->remote), "%s", conf->name);
	snprintf(def, sizeof(def), VTX_AIPLATFORM_FMT, location);
	rc = take_url(conf, "aiplatform_url", aip && *aip ? aip : def, base, sizeof(base), err);
	if (!rc)
		rc = take_url(conf, "storage_url", storage, p->storage, sizeof(p->storage), err);
	if (!rc)
		rc = take_url(conf, "bigquery_url", bqurl, p->bigquery, sizeof(p->bigquery), err);
	if (!rc && !strcmp(output, "bigquery"))
		snprintf(p->bq_dataset, sizeof(p->bq_dataset), "bq://%s", dataset);
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
	snprintf(p->state_dir, sizeof(p->state_dir), "%s", state_dir ? state_dir : "");
	if (p->state_dir[0] && mkdir(p->state_dir, 0700) && errno != EEXIST) {
		rc = -errno;
		err_set(err, "[%s] cannot create '%s': %s", conf->name, p->state_dir,
			strerror(-rc));
		goto fail;
	}
	p->resumable_threshold = (int64_t)threshold;
	p->chunk = (int64_t)chunk;
	rc = provider_http_new(conf, &p->http, err);
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
	rq.headers = hdrs;
	rc = vtx_perform(p, &rq, NULL, err);
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
	rq.headers = hdrs;
	rc = vtx_perform(p, &rq, rs, err);
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
	rq.headers = hdrs;
	rc = vtx_perform(p, &rq, &rs, err);
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
	if (cfg && p->bq_dataset[0]) {
		/* output = bigquery: Vertex makes a predictions table in the dataset. */
		if (!cJSON_AddStringToObject(cfg, "predictionsFormat", "bigquery"))
			goto out;
		src = cJSON_AddObjectToObject(cfg, "bigqueryDestination");
		if (!src || !cJSON_AddStringToObject(src, "outputUri", p->bq_dataset))
			goto out;
	} else {
		if (!cfg || !cJSON_AddStringToObject(cfg, "predictionsFormat", "jsonl"))
			goto out;
		src = cJSON_AddObjectToObject(cfg, "gcsDestination");
		if (!src || !cJSON_AddStringToObject(src, "outputUriPrefix", outp.data))
			goto out;
	}
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

/*
 * The input as Vertex reads it best, and as Google's own SDK writes it (one JSON value per
 * line, "\n"-terminated): no blank lines, no CRs, no byte order mark, no blanks around the
 * object, and no request.model (the job names the model; the request body of a Claude batch
 * line has none: spec C.6). Written beside the state of the remote, streamed line by line
 * (only a line at a time in memory), uploaded, then removed. The member is cut out byte by
 * byte, so every other byte of the line is sent as the user wrote it.
 */
#define VTX_NORM_FLUSH (256 * 1024)

static size_t skip_ws(const char *s, size_t n, size_t i)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
		i++;
	return i;
}

/* The end of the JSON value at i (the line was validated: well formed). */
static size_t value_end(const char *s, size_t n, size_t i)
{
	int depth = 0;

	if (i >= n)
		return n;
	if (s[i] == '"') {
		for (i++; i < n && s[i] != '"'; i++)
			if (s[i] == '\\')
				i++;
		return i < n ? i + 1 : n;
	}
	if (s[i] != '{' && s[i] != '[') {
		while (i < n && !strchr(",}] \t\r\n", s[i]))
			i++;
		return i;
	}
	for (; i < n; i++) {
		if (s[i] == '"') {
			i = value_end(s, n, i) - 1;
		} else if (s[i] == '{' || s[i] == '[') {
			depth++;
		} else if ((s[i] == '}' || s[i] == ']') && --depth == 0) {
			return i + 1;
		}
	}
	return n;
}

/*
 * In the object at o, the member named key (written without escapes): its value at *v, and
 * the bytes [*cut, *cut_end) that remove it with one comma. 0 when found, -ENOENT.
 */
static int find_member(const char *s, size_t n, size_t o, const char *key, size_t *v, size_t *cut,
		       size_t *cut_end)
{
	size_t klen = strlen(key), i, prev_end = 0;
	bool first = true;

	if (o >= n || s[o] != '{')
		return -ENOENT;
	i = skip_ws(s, n, o + 1);
	while (i < n && s[i] == '"') {
		size_t kend = value_end(s, n, i);
		size_t val = skip_ws(s, n, skip_ws(s, n, kend) + 1); /* past the ':' */
		size_t vend = value_end(s, n, val);
		size_t after = skip_ws(s, n, vend);

		if (kend - i == klen + 2 && !memcmp(s + i + 1, key, klen)) {
			*v = val;
			if (after < n && s[after] == ',') {
				*cut = i;
				*cut_end = skip_ws(s, n, after + 1);
			} else {
				/* The last member: the comma before it goes (none: the only one). */
				*cut = first ? i : prev_end;
				*cut_end = vend;
			}
			return 0;
		}
		if (after >= n || s[after] != ',')
			break;
		first = false;
		prev_end = vend;
		i = skip_ws(s, n, after + 1);
	}
	return -ENOENT;
}

struct norm_ctx {
	int fd;
	struct buf out;
	int64_t size;
	int rc;
};

static int norm_flush(struct norm_ctx *c)
{
	const char *d = c->out.data;
	size_t n = c->out.len;

	while (n) {
		ssize_t w = write(c->fd, d, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		d += w;
		n -= (size_t)w;
	}
	buf_reset(&c->out);
	return 0;
}

static int norm_add(struct norm_ctx *c, const char *d, size_t n)
{
	int rc = 0;

	if (c->out.len + n > VTX_NORM_FLUSH)
		rc = norm_flush(c);
	if (!rc && n > VTX_NORM_FLUSH) {
		/* A long line goes straight out: the buffer stays small. */
		while (n && !rc) {
			ssize_t w = write(c->fd, d, n);

			if (w < 0 && errno != EINTR)
				rc = -errno;
			if (w > 0) {
				d += w;
				n -= (size_t)w;
			}
		}
		return rc;
	}
	return rc ? rc : buf_add(&c->out, d, n);
}

static int norm_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct norm_ctx *c = ctx;
	size_t a = 0, b = len, req, v, cut, cut_end;
	int rc;

	if (lineno == 1 && len >= 3 && !memcmp(line, "\xef\xbb\xbf", 3))
		a = 3;
	while (a < b && (line[a] == ' ' || line[a] == '\t'))
		a++;
	while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t' || line[b - 1] == '\r'))
		b--;
	if (a == b)
		return 0; /* blank */
	if (!find_member(line, b, a, "request", &req, &cut, &cut_end) &&
	    !find_member(line, b, req, "model", &v, &cut, &cut_end)) {
		c->size += (int64_t)(cut - a);
		rc = norm_add(c, line + a, cut - a);
		a = cut_end;
		if (rc)
			return rc;
	}
	rc = norm_add(c, line + a, b - a);
	if (!rc)
		rc = norm_add(c, "\n", 1);
	if (!rc)
		c->size += (int64_t)(b - a) + 1;
	return rc;
}

/* Writes the normalised part s to path; its size in *size. 0 or -errno with err set. */
static int normalise_part(const struct provider_submit *s, const char *path, int64_t *size,
			  struct bfs_err *err)
{
	struct norm_ctx c = {.fd = -1, .out = BUF_INIT(2 * VTX_NORM_FLUSH)};
	struct jsonl_splitter sp;
	char *chunk = malloc(VTX_NORM_FLUSH);
	int64_t off = 0;
	int in = -1, rc = 0;

	jsonl_splitter_init(&sp, (size_t)s->length + 1, norm_line, &c);
	if (!chunk) {
		rc = -ENOMEM;
		goto out;
	}
	in = open(s->path, O_RDONLY | O_CLOEXEC);
	c.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (in < 0 || c.fd < 0) {
		rc = -errno;
		goto out;
	}
	while (!rc && off < s->length) {
		size_t want = (size_t)(s->length - off) < VTX_NORM_FLUSH ? (size_t)(s->length - off)
									 : VTX_NORM_FLUSH;
		ssize_t n = pread(in, chunk, want, s->offset + off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		rc = jsonl_splitter_feed(&sp, chunk, (size_t)n, err);
		off += n;
	}
	if (!rc)
		rc = jsonl_splitter_finish(&sp, err);
	if (!rc)
		rc = norm_flush(&c);
	if (!rc && fsync(c.fd))
		rc = -errno;
out:
	if (rc && !err_is_set(err))
		err_set(err, "cannot write the upload copy '%s': %s", path, strerror(-rc));
	if (in >= 0)
		close(in);
	if (c.fd >= 0)
		close(c.fd);
	jsonl_splitter_release(&sp);
	buf_release(&c.out);
	free(chunk);
	*size = c.size;
	return rc;
}

/* Removes an object of the bucket; best effort (a leftover costs only storage). */
static void delete_object(struct provider *p, const char *object)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	struct bfs_err e = BFS_ERR_INIT;
	struct http_request rq = {.method = HTTP_DELETE, .retry = HTTP_RETRY_IDEMPOTENT};

	if (!buf_addf(&url, "%s/storage/v1/b/", p->storage) && !http_url_escape(p->bucket, &url) &&
	    !buf_addstr(&url, "/o/") && !http_url_escape(object, &url)) {
		rq.url = url.data;
		rq.headers = hdr_accept;
		if (vtx_perform(p, &rq, NULL, &e))
			log_debug("vertex: cannot remove an unused upload: %s", e.msg);
	}
	buf_release(&url);
}

static int vtx_submit(struct provider *p, const struct provider_submit *s,
		      struct provider_batch *out, provider_retry_fn on_retry, void *retry_ctx,
		      struct bfs_err *err)
{
	const char *model = s->model && *s->model ? s->model : p->model;
	struct buf object = BUF_INIT(1024);
	struct http_mem_body mb;
	struct http_body body;
	struct http_response rs;
	struct provider_batch b;
	struct stat st;
	cJSON *root = NULL;
	char *json = NULL;
	char norm[sizeof(p->state_dir) + 128] = "";
	const char *path = s->path;
	int64_t base = s->offset, size = s->length;
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
	if (p->state_dir[0]) {
		if (snprintf(norm, sizeof(norm), "%s/upload-%s.jsonl", p->state_dir, s->identity) >=
		    (int)sizeof(norm)) {
			err_set(err, "cannot create batch: the state directory's name is too long");
			norm[0] = '\0';
			rc = -ENAMETOOLONG;
			goto out;
		}
		rc = normalise_part(s, norm, &size, err);
		if (rc) {
			err_prefix(err, "cannot create batch");
			goto out;
		}
		path = norm;
		base = 0;
	}
	if (size > p->resumable_threshold)
		rc = upload_resumable(p, path, base, object.data, size, on_retry, retry_ctx, err);
	else
		rc = upload_simple(p, path, base, object.data, size, on_retry, retry_ctx, err);
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
	memset(&rs, 0, sizeof(rs));
	rc = call_json_rs(p, HTTP_POST, p->jobs, &body, HTTP_RETRY_CREATE, on_retry, retry_ctx,
			  &root, &rs, err);
	if (rc && rc != -EAGAIN && rs.status == 429) {
		/* RESOURCE_EXHAUSTED: the project's concurrent jobs quota; nothing was made. The
		 * part is sent again later under a new identity: its upload goes (best effort). */
		rc = -EUSERS;
		delete_object(p, object.data);
	} else if (rc == -EBADMSG) {
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
	if (norm[0])
		(void)unlink(norm); /* in the bucket now, or not needed */
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

/* The listing's pages (provider_list_pages): GET {jobs}?pageSize=&pageToken=. */
struct list_ctx {
	struct buf url;
	bool claude_only;
};

static int list_fetch(struct provider_pager *pg, long page, const char *cursor, cJSON **root,
		      const cJSON **items, struct bfs_err *err)
{
	struct list_ctx *lc = pg->ctx;
	int rc;

	(void)page;
	buf_reset(&lc->url);
	rc = buf_addf(&lc->url, "%s?pageSize=%d", pg->p->jobs, VTX_JOB_PAGE);
	if (!rc && cursor) {
		rc = buf_addstr(&lc->url, "&pageToken=");
		if (!rc)
			rc = http_url_escape(cursor, &lc->url);
	}
	if (rc) {
		err_set(err, "the listing URL is too long");
		return rc;
	}
	rc = call_json(pg->p, HTTP_GET, lc->url.data, NULL, HTTP_RETRY_IDEMPOTENT, NULL, NULL, root,
		       err);
	if (rc)
		return rc;
	/* Empty fields are omitted (spec C.1): no batchPredictionJobs, no jobs. */
	*items = cJSON_GetObjectItemCaseSensitive(*root, "batchPredictionJobs");
	if (*items && !cJSON_IsArray(*items)) {
		err_set(err, "the answer is not a page of jobs");
		return -EBADMSG;
	}
	return 0;
}

static int list_item(struct provider_pager *pg, const cJSON *item, struct provider_batch *out)
{
	struct list_ctx *lc = pg->ctx;
	struct bfs_err berr = BFS_ERR_INIT;

	/* Other publishers' jobs (Gemini, ...) are not this remote's batches, nor are our
	 * retries of a job (they show as the job they retry). */
	if ((lc->claude_only && !is_claude_job(item)) || is_retry_job(item))
		return 1;
	if (job_from_json(item, out, &berr)) {
		log_warn("vertex: skipping a listed job: %s", berr.msg);
		return 1;
	}
	return 0;
}

static int list_next(struct provider_pager *pg, const cJSON *root, const char *cursor, char **next,
		     struct bfs_err *err)
{
	const char *tok = json_str(root, "nextPageToken");

	(void)pg;
	if (!tok || !*tok)
		return 0;
	if (strlen(tok) > VTX_TOKEN_MAX || (cursor && !strcmp(cursor, tok))) {
		err_set(err, "the listing's nextPageToken is unusable");
		return -EBADMSG;
	}
	*next = strdup(tok);
	return *next ? 1 : -ENOMEM;
}

/*
 * Calls fn for each job (only Claude ones when claude_only); fn returns < 0 to fail, > 0 to
 * stop early.
 */
static int list_jobs(struct provider *p, bool claude_only, provider_batch_fn fn, void *ctx,
		     struct bfs_err *err)
{
	struct list_ctx lc = {.url = BUF_INIT(VTX_URL_MAX), .claude_only = claude_only};
	struct provider_pager pg = {
		.p = p,
		.ctx = &lc,
		.fetch = list_fetch,
		.item = list_item,
		.next = list_next,
		.max_pages = VTX_PAGES_MAX,
		.what = "jobs",
	};
	int rc = provider_list_pages(&pg, fn, ctx, err);

	buf_release(&lc.url);
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

/* GET one job: its JSON in *root (the caller frees it) and its provider_batch. */
static int get_job(struct provider *p, const char *id, struct provider_batch *out, cJSON **root,
		   provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	int rc;

	*root = NULL;
	if (!is_job_id(id)) {
		err_set(err, "cannot get job: '%.*s' is not a job id", 64, id);
		return -ENOENT;
	}
	rc = buf_addf(&url, "%s/%s", p->jobs, id);
	if (!rc)
		rc = call_json(p, HTTP_GET, url.data, NULL, HTTP_RETRY_IDEMPOTENT, on_retry,
			       retry_ctx, root, err);
	if (!rc)
		rc = job_from_json(*root, out, err);
	if (rc)
		err_prefix(err, "cannot get job '%s'", id);
	buf_release(&url);
	return rc;
}

/*
 * A region's first job may fail with INTERNAL (Google's Claude batch page: retry after about
 * ten minutes). Such a job is retried once, first_job_retry after it ended: a new job with
 * the same input, model and labels plus VTX_LABEL_RETRY = the failed job's id, its output
 * beside the first one's. The batch keeps the first job's id; get() and cancel() follow the
 * retry. Exactly once: the retry is looked for (cache, then by label) before any create,
 * under retry_lock, and a create whose answer was lost is found by the next look.
 */
/* The id of the retry of job `of`: 1 found, 0 not there, -errno when it cannot tell. */
static int retry_lookup(struct provider *p, const char *of, char *id, struct bfs_err *err)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	char *token = NULL;
	cJSON *root = NULL;
	int rc = 0, found = 0;

	for (size_t i = 0; i < p->nretries; i++) {
		if (!strcmp(p->retries[i].of, of)) {
			snprintf(id, PROVIDER_ID_MAX, "%s", p->retries[i].id);
			return 1;
		}
	}
	/* Every page: the label is exact, and no filter is trusted to be applied. */
	for (long page = 0; page < VTX_PAGES_MAX && !found; page++) {
		const cJSON *item;

		buf_reset(&url);
		rc = buf_addf(&url, "%s?pageSize=%d", p->jobs, VTX_JOB_PAGE);
		if (!rc && token) {
			rc = buf_addstr(&url, "&pageToken=");
			if (!rc)
				rc = http_url_escape(token, &url);
		}
		if (!rc)
			rc = call_json(p, HTTP_GET, url.data, NULL, HTTP_RETRY_IDEMPOTENT, NULL,
				       NULL, &root, err);
		if (rc)
			break;
		cJSON_ArrayForEach(item,
				   cJSON_GetObjectItemCaseSensitive(root, "batchPredictionJobs")) {
			const char *o = json_str(cJSON_GetObjectItemCaseSensitive(item, "labels"),
						 VTX_LABEL_RETRY);
			const char *name = json_str(item, "name");
			const char *slash = name ? strrchr(name, '/') : NULL;

			if (o && !strcmp(o, of) && slash && is_job_id(slash + 1)) {
				snprintf(id, PROVIDER_ID_MAX, "%s", slash + 1);
				found = 1;
				break;
			}
		}
		if (!found) {
			rc = next_page(root, &token, err);
			if (rc <= 0)
				break;
		}
		cJSON_Delete(root);
		root = NULL;
	}
	cJSON_Delete(root);
	free(token);
	buf_release(&url);
	if (rc < 0)
		return rc;
	if (found && p->nretries < VTX_RETRIES_MAX) {
		snprintf(p->retries[p->nretries].of, PROVIDER_ID_MAX, "%s", of);
		snprintf(p->retries[p->nretries].id, PROVIDER_ID_MAX, "%s", id);
		p->nretries++;
	}
	return found;
}

/* Creates the retry of the failed job `first` (its JSON). 0 with its id, -EAGAIN when the
 * answer was lost (the next look finds it), another -errno when not created. */
static int retry_create(struct provider *p, const cJSON *first, const char *of, char *id,
			struct bfs_err *err)
{
	static const char *const keep[] = {"displayName", "model", "inputConfig", "outputConfig",
					   "labels"};
	cJSON *o = cJSON_CreateObject(), *root = NULL, *labels, *dest;
	struct http_mem_body mb;
	struct http_body body;
	struct provider_batch b;
	const char *prefix;
	char *json = NULL;
	int rc = -ENOMEM;

	for (size_t i = 0; o && i < sizeof(keep) / sizeof(keep[0]); i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(first, keep[i]);

		if (v && !cJSON_AddItemToObject(o, keep[i], cJSON_Duplicate(v, true)))
			goto out;
	}
	labels = cJSON_GetObjectItemCaseSensitive(o, "labels");
	if (!labels)
		labels = cJSON_AddObjectToObject(o, "labels");
	if (!labels || !cJSON_AddStringToObject(labels, VTX_LABEL_RETRY, of))
		goto out;
	/* Beside the first job's output, never mixed with what it may have written. */
	dest = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "outputConfig"),
						"gcsDestination");
	prefix = json_str(dest, "outputUriPrefix");
	if (prefix) {
		struct buf np = BUF_INIT(4096);

		if (buf_addf(&np, "%.*s-retry",
			     (int)(strlen(prefix) -
				   (prefix[0] && prefix[strlen(prefix) - 1] == '/')),
			     prefix) ||
		    !cJSON_ReplaceItemInObjectCaseSensitive(dest, "outputUriPrefix",
							    cJSON_CreateString(np.data))) {
			buf_release(&np);
			goto out;
		}
		buf_release(&np);
	}
	json = cJSON_PrintUnformatted(o);
	if (!json)
		goto out;
	http_mem_body_init(&mb, &body, json, strlen(json));
	rc = call_json(p, HTTP_POST, p->jobs, &body, HTTP_RETRY_CREATE, NULL, NULL, &root, err);
	if (rc == -EBADMSG || (!rc && job_from_json(root, &b, err)))
		rc = -EAGAIN; /* a 2xx: made, but which? The label tells next time. */
	if (!rc)
		snprintf(id, PROVIDER_ID_MAX, "%s", b.id);
out:
	if (rc == -ENOMEM)
		err_set(err, "out of memory");
	cJSON_Delete(o);
	cJSON_Delete(root);
	free(json);
	return rc;
}

/* True when job JSON o failed with INTERNAL and is not a retry itself. */
static bool failed_internal(const cJSON *o, const struct provider_batch *b)
{
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(o, "error"), "code");

	return b->state == BATCH_FAILED && cJSON_IsNumber(code) &&
	       code->valuedouble == VTX_INTERNAL && !is_retry_job(o);
}

/* b (job `id`, JSON first) failed with INTERNAL: the retry's view under id, or the wait. */
static int follow_retry(struct provider *p, const char *id, const cJSON *first,
			struct provider_batch *b, provider_retry_fn on_retry, void *retry_ctx,
			struct bfs_err *err)
{
	struct bfs_err e = BFS_ERR_INIT;
	struct provider_batch nb;
	char rid[PROVIDER_ID_MAX], at[TIMEFMT_SIZE];
	int64_t due = (b->ended_at ? b->ended_at : timefmt_now_ms()) + p->first_job_retry_ms;
	cJSON *root = NULL;
	int rc;

	pthread_mutex_lock(&p->retry_lock);
	/* Before it is due no retry can exist (none is made earlier): no listing then. */
	rc = timefmt_now_ms() < due ? 0 : retry_lookup(p, id, rid, &e);
	if (rc == 0 && timefmt_now_ms() >= due) {
		rc = retry_create(p, first, id, rid, &e);
		if (!rc) {
			log_info("vertex: job %s failed with INTERNAL; retried as job %s", id, rid);
			if (p->nretries < VTX_RETRIES_MAX) {
				snprintf(p->retries[p->nretries].of, PROVIDER_ID_MAX, "%s", id);
				snprintf(p->retries[p->nretries].id, PROVIDER_ID_MAX, "%s", rid);
				p->nretries++;
			}
			rc = 1;
		} else if (rc == -EINVAL || rc == -EACCES) {
			/* Refused for good: the first job's failure stands, with the reason. */
			size_t n = strlen(b->error);

			snprintf(b->error + n, sizeof(b->error) - n, "; its retry was refused: %s",
				 e.msg);
			pthread_mutex_unlock(&p->retry_lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&p->retry_lock);
	if (rc == 1 && !rid[0]) {
		/* Cancelled while it waited: the first job's failure stands. */
		size_t n = strlen(b->error);

		snprintf(b->error + n, sizeof(b->error) - n,
			 "; cancelled before its retry: not retried");
		return 0;
	}
	if (rc == 1) {
		rc = get_job(p, rid, &nb, &root, on_retry, retry_ctx, err);
		cJSON_Delete(root);
		if (rc)
			return rc;
		snprintf(nb.id, sizeof(nb.id), "%s", id); /* the batch keeps its first id */
		snprintf(nb.identity, sizeof(nb.identity), "%s", b->identity);
		if (!nb.error[0])
			snprintf(nb.error, sizeof(nb.error),
				 "job %s failed with INTERNAL (code 13), as a region's first job "
				 "may; retried once as job %s",
				 id, rid);
		*b = nb;
		return 0;
	}
	/* Waiting (or the look or create failed: tried again at the next poll). */
	timefmt_format(due, at);
	b->state = BATCH_VALIDATING;
	b->results_available = b->results_gone = false;
	b->counts.processing = b->counts.total;
	b->counts.errored = 0;
	snprintf(b->error, sizeof(b->error),
		 "job %s failed with INTERNAL (code 13), as a region's first job may; batchfs "
		 "retries it once at %s (first_job_retry)%s%s",
		 id, at, e.msg[0] ? "; last attempt: " : "", e.msg);
	return 0;
}

static int vtx_get(struct provider *p, const char *id, struct provider_batch *out,
		   provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err)
{
	struct provider_batch b;
	cJSON *root = NULL;
	int rc = get_job(p, id, &b, &root, on_retry, retry_ctx, err);

	if (!rc && p->first_job_retry_ms && failed_internal(root, &b))
		rc = follow_retry(p, id, root, &b, on_retry, retry_ctx, err);
	if (!rc)
		*out = b;
	cJSON_Delete(root);
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

	struct bfs_err e = BFS_ERR_INIT;
	char target[PROVIDER_ID_MAX];

	if (!is_job_id(id)) {
		err_set(err, "cannot cancel job: '%.*s' is not a job id", 64, id);
		return -ENOENT;
	}
	/* A job retried after INTERNAL: it is the retry that runs. One still waiting for its
	 * retry is not retried any more (this process remembers it: VTX_RETRIES_MAX). */
	snprintf(target, sizeof(target), "%s", id);
	if (p->first_job_retry_ms) {
		struct provider_batch first;
		cJSON *froot = NULL;
		int found;

		pthread_mutex_lock(&p->retry_lock);
		found = retry_lookup(p, id, target, &e);
		if (found <= 0 || !target[0])
			snprintf(target, sizeof(target), "%s", id);
		if (found == 0 && !get_job(p, id, &first, &froot, NULL, NULL, &e) &&
		    failed_internal(froot, &first) && p->nretries < VTX_RETRIES_MAX) {
			snprintf(p->retries[p->nretries].of, PROVIDER_ID_MAX, "%s", id);
			p->retries[p->nretries].id[0] = '\0'; /* cancelled: no retry */
			p->nretries++;
			cJSON_Delete(froot);
			pthread_mutex_unlock(&p->retry_lock);
			snprintf(first.error + strlen(first.error),
				 sizeof(first.error) - strlen(first.error),
				 "; cancelled before its retry: not retried");
			*out = first;
			return 0;
		}
		cJSON_Delete(froot);
		pthread_mutex_unlock(&p->retry_lock);
	}
	/* :cancel answers {} (spec C.2), so the job is read again for its state. Asking
	 * twice is harmless: retry as an idempotent call. */
	http_mem_body_init(&mb, &body, "{}", 2);
	rc = buf_addf(&url, "%s/%s:cancel", p->jobs, target);
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

/*
 * Output lines without a custom_id (seen on Vertex; one used to fail the whole download on
 * every poll). Their positions and bytes are held back (up to VTX_HELD_MAX) while the rest
 * is delivered; after the pass the job's input is read: when every line that has a custom_id
 * sits where its request sat in the input (the job kept input order), each held line takes
 * the custom_id of the request at its position. The others are delivered under a name that
 * are named as bad lines in status (results "incomplete"), the rest kept. Memory: 8 bytes per output line, plus the held lines.
 */
#define VTX_HELD_MAX (8u * 1024 * 1024)

struct held_line {
	uint64_t pos;	 /* 0-based among the pass's non-blank output lines */
	long lineno;	 /* in the provider's files, numbered on (provider_results) */
	size_t off, len; /* in vtx_lines.held */
	size_t id_off;	 /* in vtx_lines.ids once mapped */
	size_t id_len;	 /* 0 until mapped */
};

struct vtx_lines {
	struct provider_results *r;
	uint64_t *hash; /* per output line: its custom_id's hash, 0 without one */
	size_t n, alloc;
	struct held_line *v;
	size_t nv, valloc;
	struct buf held, ids;
	uint64_t missing, dropped; /* lines without custom_id; of which not held */
	/* The input pass */
	uint64_t in_pos;
	size_t next; /* the next held line to map */
	bool disorder;
};

static uint64_t id_hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h | 1; /* never 0: 0 means "no custom_id" */
}

static void lines_clear(struct vtx_lines *l)
{
	l->n = l->nv = 0;
	l->missing = l->dropped = 0;
	buf_reset(&l->held);
	buf_reset(&l->ids);
}

static void lines_release(struct vtx_lines *l)
{
	free(l->hash);
	free(l->v);
	buf_release(&l->held);
	buf_release(&l->ids);
}

static int lines_mark(struct vtx_lines *l, uint64_t h)
{
	if (l->n == l->alloc) {
		size_t na = l->alloc ? 2 * l->alloc : 1024;
		uint64_t *v = realloc(l->hash, na * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->hash = v;
		l->alloc = na;
	}
	l->hash[l->n++] = h;
	return 0;
}

static int lines_hold(struct vtx_lines *l, const char *line, size_t len, long lineno)
{
	struct held_line *h;

	if (l->held.len + len > VTX_HELD_MAX) {
		l->dropped++;
		return 1; /* delivered unmapped at once */
	}
	if (l->nv == l->valloc) {
		size_t na = l->valloc ? 2 * l->valloc : 16;

		h = realloc(l->v, na * sizeof(*h));
		if (!h)
			return -ENOMEM;
		l->v = h;
		l->valloc = na;
	}
	h = &l->v[l->nv];
	h->pos = l->n;
	h->lineno = lineno;
	h->off = l->held.len;
	h->len = len;
	h->id_len = 0;
	if (buf_add(&l->held, line, len))
		return -ENOMEM;
	l->nv++;
	return 0;
}

/*
 * http line_fn of a results download: a line with a custom_id goes through the common
 * strict check (provider_results_line); one without is held, to be placed by position.
 */
static int vtx_result_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct vtx_lines *l = ctx;
	struct provider_results *r = l->r;
	const cJSON *id = NULL;
	cJSON *o = NULL;
	size_t i;
	int rc;

	if (line) {
		for (i = 0; i < len && (line[i] == ' ' || line[i] == '\t'); i++)
			;
		if (i == len)
			return 0; /* blank */
		o = cJSON_ParseWithLength(line, len);
		id = cJSON_GetObjectItemCaseSensitive(o, "custom_id");
	}
	if (cJSON_IsObject(o) && !id) {
		long n = r->base_line + lineno;

		cJSON_Delete(o);
		l->missing++;
		r->last_line = lineno;
		rc = lines_hold(l, line, len, n);
		if (rc == 1) {
			/* No room to hold it: named as a bad line at once. */
			rc = r->fn(r->ctx, NULL, line, len, n,
				   "no custom_id (too many such lines to place by position)");
			r->delivered += !rc;
		}
		if (!rc)
			rc = lines_mark(l, 0);
		if (rc)
			err_set(r->line_err, "cannot keep result line %ld: %s", n, strerror(-rc));
		return rc;
	}
	/* Not JSON, too long, or with an id: the common check names what is wrong. */
	rc = lines_mark(l,
			cJSON_IsString(id) ? id_hash(id->valuestring, strlen(id->valuestring)) : 0);
	cJSON_Delete(o);
	return rc ? rc : provider_results_line(r, line, len, lineno);
}

/* A retried download: what provider_results_reset drops, the held lines drop too. */
static int vtx_result_reset(void *ctx)
{
	struct vtx_lines *l = ctx;
	int rc = provider_results_reset(l->r);

	if (!rc)
		lines_clear(l);
	return rc;
}

/* http line_fn of the input pass: the custom_id of the request at each position. */
static int vtx_input_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct vtx_lines *l = ctx;
	const cJSON *id;
	cJSON *o;
	size_t i;
	uint64_t pos = l->in_pos;

	(void)lineno;
	if (!line) {
		l->disorder = true; /* a line over the cap: its custom_id is not known */
		return 0;
	}
	for (i = 0; i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'); i++)
		;
	if (i == len)
		return 0;
	l->in_pos++;
	if (l->disorder)
		return 0;
	if (pos >= l->n) {
		l->disorder = true; /* more requests than output lines: positions say nothing */
		return 0;
	}
	o = cJSON_ParseWithLength(line, len);
	id = cJSON_GetObjectItemCaseSensitive(o, "custom_id");
	if (cJSON_IsString(id)) {
		size_t n = strlen(id->valuestring);

		if (l->hash[pos] && l->hash[pos] != id_hash(id->valuestring, n)) {
			l->disorder = true;
		} else if (!l->hash[pos] && l->next < l->nv && l->v[l->next].pos == pos) {
			l->v[l->next].id_off = l->ids.len;
			l->v[l->next].id_len = n;
			if (buf_add(&l->ids, id->valuestring, n))
				l->v[l->next].id_len = 0;
			l->next++;
		} else if (!l->hash[pos]) {
			/* A line not held (over VTX_HELD_MAX): nothing to map it to. */
			while (l->next < l->nv && l->v[l->next].pos < pos)
				l->next++;
		}
	}
	cJSON_Delete(o);
	return 0;
}

static int stream_object(struct provider *p, const char *bucket, const char *name, jsonl_line_fn fn,
			 int (*reset)(void *), void *ctx, provider_retry_fn on_retry,
			 void *retry_ctx, struct bfs_err *err)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	struct http_request rq = {
		.method = HTTP_GET,
		.retry = HTTP_RETRY_IDEMPOTENT,
		.line_fn = fn,
		/* A longer line comes as NULL, unbuffered (provider.h PROVIDER_RESULT_LINE_MAX). */
		.max_line = PROVIDER_RESULT_LINE_MAX,
		.skip_long_lines = true,
		.line_ctx = ctx,
		.reset = reset,
		.on_retry = on_retry,
		.retry_ctx = retry_ctx,
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
	rq.url = url.data;
	rc = vtx_perform(p, &rq, NULL, err);
	if (rc)
		err_prefix(err, "gs://%s/%.300s", bucket, name);
out:
	buf_release(&url);
	return rc;
}

/* The input pass after a results pass with lines lacking a custom_id. Best effort: what
 * cannot be read leaves the lines unmapped. */
static void map_by_position(struct provider *p, const char *id, struct vtx_lines *l)
{
	struct buf url = BUF_INIT(VTX_URL_MAX);
	struct bfs_err e = BFS_ERR_INIT;
	const cJSON *uris, *u;
	cJSON *root = NULL;

	l->in_pos = 0;
	l->next = 0;
	l->disorder = false;
	if (buf_addf(&url, "%s/%s", p->jobs, id) ||
	    call_json(p, HTTP_GET, url.data, NULL, HTTP_RETRY_IDEMPOTENT, NULL, NULL, &root, &e))
		goto out;
	uris = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(
			cJSON_GetObjectItemCaseSensitive(root, "inputConfig"), "gcsSource"),
		"uris");
	if (cJSON_IsString(uris)) {
		u = uris; /* a single string is accepted too (spec C.3) */
		uris = NULL;
	} else {
		u = cJSON_IsArray(uris) ? uris->child : NULL;
	}
	for (; u && !l->disorder; u = uris ? u->next : NULL) {
		const char *s = cJSON_IsString(u) ? u->valuestring : "";
		const char *slash = strncmp(s, "gs://", 5) ? NULL : strchr(s + 5, '/');
		char bucket[256];

		if (!slash || (size_t)(slash - s - 5) >= sizeof(bucket) || !slash[1]) {
			l->disorder = true;
			break;
		}
		snprintf(bucket, sizeof(bucket), "%.*s", (int)(slash - s - 5), s + 5);
		if (stream_object(p, bucket, slash + 1, vtx_input_line, NULL, l, NULL, NULL, &e)) {
			l->disorder = true; /* a retry would map twice: give up on positions */
			break;
		}
	}
	if (l->in_pos != l->n)
		l->disorder = true;
out:
	if (e.msg[0])
		log_warn("vertex: job %s: cannot read its input to place result lines without "
			 "custom_id: %s",
			 id, e.msg);
	cJSON_Delete(root);
	buf_release(&url);
}

/* Delivers the held lines: mapped ones under their custom_id, the rest under a name the
 * ingest reports (not among the requests). */
static int deliver_held(struct provider *p, const char *id, struct vtx_lines *l,
			struct bfs_err *err)
{
	uint64_t mapped = 0;
	int rc = 0;

	map_by_position(p, id, l);
	for (size_t i = 0; i < l->nv && !rc; i++) {
		struct held_line *h = &l->v[i];
		char *cid = NULL;

		if (!l->disorder && h->id_len) {
			cid = strndup(l->ids.data + h->id_off, h->id_len);
			if (!cid) {
				rc = -ENOMEM;
				break;
			}
			mapped++;
		}
		rc = l->r->fn(l->r->ctx, cid, l->held.data + h->off, h->len, h->lineno,
			      cid	    ? NULL
			      : l->disorder ? "no custom_id (the job did not keep input order)"
					    : "no custom_id");
		if (!rc)
			l->r->delivered++;
		free(cid);
	}
	if (rc)
		err_set(err, "cannot keep a result line: %s", strerror(-rc));
	log_warn("vertex: job %s: %" PRIu64 " result line(s) without custom_id: %" PRIu64
		 " placed by position%s, %" PRIu64 " left out",
		 id, l->missing, mapped, l->disorder ? " (the job did not keep input order)" : "",
		 l->missing - mapped);
	return rc;
}

static int download_object(struct provider *p, const char *bucket, const char *name,
			   struct vtx_lines *l, struct bfs_err *err)
{
	struct provider_results *r = l->r;
	int rc;

	provider_results_next_file(r);
	rc = stream_object(p, bucket, name, vtx_result_line, vtx_result_reset, l, r->on_retry,
			   r->retry_ctx, err);
	if (rc && err_is_set(r->line_err))
		err_set(err, "gs://%s/%.300s: %s", bucket, name, r->line_err->msg);
	return rc;
}

/* One pass over the output directory: list it page by page, stream each .jsonl object. */
static int results_pass(struct provider *p, const char *bucket, const char *prefix,
			struct vtx_lines *l, struct bfs_err *err)
{
	struct provider_results *r = l->r;
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
			rc = download_object(p, bucket, name, l, err);
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

/*
 * Results in BigQuery (output = bigquery, or a job made elsewhere with a bq:// output): the
 * table's schema (tables.get), then its rows page by page (tabledata.list), each row made the
 * line the Cloud Storage output would have: an object of its non-null columns, JSON columns
 * (request, response) as JSON, the others as BigQuery's strings. Each page is one bounded
 * JSON answer; lines go through vtx_result_line (custom_id, position) like file lines.
 */
#define VTX_BQ_COLS 64

struct bq_col {
	char name[128];
	bool json;
};

/* "bq://project.dataset.table" -> its three names, URL-escaped after the table path. */
static int bq_table_url(const struct provider *p, const char *ref, struct buf *url)
{
	const char *t = ref + 5, *last = strrchr(t, '.'), *mid;
	int rc;

	if (strncmp(ref, "bq://", 5) || !last || last == t)
		return -EINVAL;
	for (mid = last - 1; mid > t && *mid != '.'; mid--)
		;
	if (mid == t || last - mid < 2 || !last[1])
		return -EINVAL;
	rc = buf_addf(url, "%s/bigquery/v2/projects/", p->bigquery);
	if (!rc) {
		char *proj = strndup(t, (size_t)(mid - t));
		char *ds = strndup(mid + 1, (size_t)(last - mid - 1));

		rc = proj && ds ? 0 : -ENOMEM;
		if (!rc)
			rc = http_url_escape(proj, url);
		if (!rc)
			rc = buf_addstr(url, "/datasets/");
		if (!rc)
			rc = http_url_escape(ds, url);
		free(proj);
		free(ds);
	}
	if (!rc)
		rc = buf_addstr(url, "/tables/");
	if (!rc)
		rc = http_url_escape(last + 1, url);
	return rc;
}

static int bq_schema(struct provider *p, const char *table_url, struct bq_col *cols, size_t *n,
		     struct provider_results *r, struct bfs_err *err)
{
	const cJSON *f;
	cJSON *root = NULL;
	int rc = call_json(p, HTTP_GET, table_url, NULL, HTTP_RETRY_IDEMPOTENT, r->on_retry,
			   r->retry_ctx, &root, err);

	*n = 0;
	if (rc)
		return rc;
	cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(
				      cJSON_GetObjectItemCaseSensitive(root, "schema"), "fields")) {
		const char *name = json_str(f, "name"), *type = json_str(f, "type");

		if (*n == VTX_BQ_COLS || !name) {
			rc = -EBADMSG;
			break;
		}
		snprintf(cols[*n].name, sizeof(cols[*n].name), "%s", name);
		cols[*n].json = type && !strcmp(type, "JSON");
		(*n)++;
	}
	cJSON_Delete(root);
	if (!rc && !*n)
		rc = -EBADMSG;
	if (rc == -EBADMSG)
		err_set(err, "the table's schema is not one batchfs can read");
	return rc;
}

/* One row ({"f": [{"v": ...}]}) as a JSON line; NULL when out of memory. */
static char *bq_row_line(const cJSON *row, const struct bq_col *cols, size_t n)
{
	const cJSON *cell = cJSON_GetObjectItemCaseSensitive(row, "f");
	cJSON *o = cJSON_CreateObject();
	char *line = NULL;
	size_t i = 0;

	cell = cJSON_IsArray(cell) ? cell->child : NULL;
	for (; o && cell && i < n; cell = cell->next, i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(cell, "v");
		cJSON *item = NULL;

		if (!v || cJSON_IsNull(v))
			continue;
		if (cols[i].json && cJSON_IsString(v))
			item = cJSON_Parse(v->valuestring);
		if (!item)
			item = cJSON_Duplicate(v, true);
		if (!item || !cJSON_AddItemToObject(o, cols[i].name, item)) {
			cJSON_Delete(item);
			goto out;
		}
	}
	line = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return line;
}

static int bq_results(struct provider *p, const char *ref, struct vtx_lines *l, struct bfs_err *err)
{
	struct buf table = BUF_INIT(VTX_URL_MAX), url = BUF_INIT(VTX_URL_MAX);
	struct bq_col *cols = calloc(VTX_BQ_COLS, sizeof(*cols));
	char *token = NULL;
	cJSON *root = NULL;
	long lineno = 0;
	size_t ncols = 0;
	int rc;

	if (!cols)
		return -ENOMEM;
	rc = bq_table_url(p, ref, &table);
	if (rc) {
		err_set(err, "'%.200s' is not a BigQuery table", ref);
		rc = -EBADMSG;
		goto out;
	}
	rc = bq_schema(p, table.data, cols, &ncols, l->r, err);
	for (long page = 0; !rc && page < VTX_PAGES_MAX; page++) {
		const cJSON *row;

		buf_reset(&url);
		rc = buf_addf(&url, "%s/data?maxResults=%d", table.data, VTX_BQ_PAGE);
		if (!rc && token) {
			rc = buf_addstr(&url, "&pageToken=");
			if (!rc)
				rc = http_url_escape(token, &url);
		}
		if (rc) {
			err_set(err, "the table's URL is too long");
			break;
		}
		rc = call_json(p, HTTP_GET, url.data, NULL, HTTP_RETRY_IDEMPOTENT, l->r->on_retry,
			       l->r->retry_ctx, &root, err);
		if (rc)
			break;
		cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(root, "rows")) {
			char *line = bq_row_line(row, cols, ncols);

			rc = line ? vtx_result_line(l, line, strlen(line), ++lineno) : -ENOMEM;
			free(line);
			if (rc)
				break;
		}
		if (rc) {
			if (err_is_set(l->r->line_err))
				err_set(err, "%s", l->r->line_err->msg);
			break;
		}
		/* tabledata.list names its next page "pageToken" (not nextPageToken). */
		{
			const char *next = json_str(root, "pageToken");
			char *copy;

			if (!next || !*next)
				break;
			if (strlen(next) > VTX_TOKEN_MAX || (token && !strcmp(token, next))) {
				err_set(err, "the table's pageToken is unusable");
				rc = -EBADMSG;
				break;
			}
			copy = strdup(next);
			if (!copy) {
				rc = -ENOMEM;
				break;
			}
			free(token);
			token = copy;
		}
		cJSON_Delete(root);
		root = NULL;
	}
	if (rc)
		err_prefix(err, "%.200s", ref);
out:
	cJSON_Delete(root);
	free(token);
	free(cols);
	buf_release(&table);
	buf_release(&url);
	return rc;
}

static int vtx_results(struct provider *p, const struct provider_batch *b, provider_result_fn fn,
		       provider_reset_fn reset, void *ctx, provider_retry_fn on_retry,
		       void *retry_ctx, struct bfs_err *err)
{
	struct bfs_err line_err = BFS_ERR_INIT;
	struct provider_results r;
	struct vtx_lines l = {
		.r = &r, .held = BUF_INIT(VTX_HELD_MAX), .ids = BUF_INIT(VTX_HELD_MAX)};
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
	if (!strncmp(dir, "bq://", 5)) {
		rc = bq_results(p, dir, &l, err);
		if (!rc && l.missing)
			rc = deliver_held(p, b->id, &l, err);
		if (!rc && !r.delivered) {
			err_set(err, "job '%s' wrote no rows to %.200s", b->id, dir);
			rc = -ENODATA;
		} else if (rc) {
			err_prefix(err, "cannot download the results of job '%s'", b->id);
		}
		goto out;
	}
	if (parse_gs(dir, bucket, sizeof(bucket), &prefix) || !prefix.len) {
		err_set(err, "job '%s': output directory '%.200s' is not a gs:// directory", b->id,
			dir);
		rc = -EBADMSG;
		goto out;
	}
	for (int pass = 0; pass < VTX_RESTARTS; pass++) {
		err_clear(err);
		lines_clear(&l);
		rc = results_pass(p, bucket, prefix.data, &l, err);
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
	if (!rc && l.missing)
		rc = deliver_held(p, b->id, &l, err);
	if (!rc && !r.delivered) {
		err_set(err, "job '%s' wrote no predictions under %.200s", b->id, dir);
		rc = -ENODATA;
	} else if (rc) {
		err_prefix(err, "cannot download the results of job '%s'", b->id);
	}
out:
	lines_release(&l);
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
	"first_job_retry",
	"output",
	"bigquery_dataset",
	"bigquery_url",
	NULL,
};

/* Request lines */

/*
 * Vertex (spec C.6): request is a Messages body with anthropic_version "vertex-..." and no
 * model of its own; a request.model, if given, names the job's model and must be the same on
 * every line (a job has one model, spec C.3).
 */
static int vertex_validate_line(struct jsonl_validator *v, const cJSON *root, const char *custom_id,
				long lineno, struct bfs_err *err)
{
	const cJSON *req = cJSON_GetObjectItemCaseSensitive(root, "request");
	const cJSON *ver, *model;
	int rc;

	rc = jsonl_need_id(custom_id, lineno, err);
	if (!rc)
		rc = jsonl_need_object(req, "request", lineno, err);
	if (!rc)
		rc = jsonl_need_array(cJSON_GetObjectItemCaseSensitive(req, "messages"),
				      "request.messages", lineno, err);
	if (!rc)
		rc = jsonl_need_max_tokens(cJSON_GetObjectItemCaseSensitive(req, "max_tokens"),
					   "request.max_tokens", lineno, err);
	if (rc)
		return rc;
	ver = cJSON_GetObjectItemCaseSensitive(req, "anthropic_version");
	rc = jsonl_need_string(ver, "request.anthropic_version", lineno, err);
	if (rc)
		return rc;
	if (strncmp(ver->valuestring, "vertex-", 7)) {
		err_set_line(err, lineno,
			     "line %ld: request.anthropic_version must be a Vertex version such as "
			     "\"vertex-2023-10-16\"",
			     lineno);
		return -EINVAL;
	}
	model = cJSON_GetObjectItemCaseSensitive(req, "model");
	if (!model)
		return 0;
	rc = jsonl_need_string(model, "request.model", lineno, err);
	if (rc)
		return rc;
	if (strlen(model->valuestring) >= sizeof(v->model)) {
		err_set_line(err, lineno, "line %ld: request.model is too long", lineno);
		return -EINVAL;
	}
	if (v->common_line && strcmp(v->model, model->valuestring)) {
		err_set_line(err, lineno,
			     "line %ld: request.model '%.100s' differs from '%s' on line %ld (a "
			     "Vertex job uses one model)",
			     lineno, model->valuestring, v->model, v->common_line);
		return -EINVAL;
	}
	if (!v->common_line) {
		snprintf(v->model, sizeof(v->model), "%s", model->valuestring);
		v->common_line = lineno;
	}
	return 0;
}

/* Vertex's Messages version for Claude ("vertex-2023-10-16" on Google's Claude pages). */
#define VTX_ANTHROPIC_VERSION "vertex-2023-10-16"

/*
 * {custom_id, request: {model?, anthropic_version, max_tokens, temperature?, system?,
 * messages}}: the job's model comes from the config, so a line names one only if it says so.
 */
static cJSON *vertex_prompt_native(const struct prompt_request *r)
{
	cJSON *root = cJSON_CreateObject(), *req = NULL;

	if (cJSON_AddStringToObject(root, "custom_id", r->custom_id))
		req = cJSON_AddObjectToObject(root, "request");
	if (!req || (r->model_on_line && !cJSON_AddStringToObject(req, "model", r->model)) ||
	    !cJSON_AddStringToObject(req, "anthropic_version", VTX_ANTHROPIC_VERSION) ||
	    !cJSON_AddNumberToObject(req, "max_tokens", r->max_tokens) ||
	    (r->temperature >= 0 && !cJSON_AddNumberToObject(req, "temperature", r->temperature)) ||
	    (r->system && !cJSON_AddStringToObject(req, "system", r->system)) ||
	    !prompt_add_messages(req, r, false)) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

static const struct jsonl_format vertex_format = {
	.name = "vertex",
	.request_key = "request",
	.max_temperature = 1,
	.prompt_native = vertex_prompt_native,
};

const struct provider_ops provider_vertex_ops = {
	.name = "vertex",
	.format = &vertex_format,
	.validate_line = vertex_validate_line,
	.state_from = vertex_state_from,
	/*
	 * Per-job caps for Claude on Vertex are not documented (spec C.6, [I]); these follow
	 * Vertex batch prediction's published ones (200,000 requests, 1 GB input file).
	 */
	/* A line is one Claude request: the Messages API's 32 MB, not the job's 1 GB. */
	.limits = {.max_requests = 200000,
		   .max_bytes = 1000u * 1000 * 1000,
		   .max_line = 32u * 1000 * 1000},
	/* "4 concurrent batch jobs per project" by default (Google's Claude batch page). */
	.max_active = 4,
	.cancel_warning = VTX_CANCEL_WARNING,
	.keys = provider_vertex_keys,
	.open = vtx_open,
	.free = vtx_free,
	.submit = vtx_submit,
	.find = vtx_find,
	.get = vtx_get,
	.list = vtx_list,
	.cancel = vtx_cancel,
	.results = vtx_results,
	.result_parse = result_parse_vertex,
};
