// SPDX-License-Identifier: MIT
/*
 * The HTTP layer: libcurl easy handles kept in a small pool (keep-alive) and one share handle
 * for DNS and TLS sessions, timeouts, retries with jittered exponential backoff and server
 * hints, bodies streamed both ways, and error envelopes turned into one line. CURLcode and
 * HTTP status are mapped to -errno here and nowhere else. Must never log a header or a body,
 * and never hold a body the caller asked to stream. The stop switch makes every wait here
 * end at once when the daemon stops.
 */
#include <assert.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "batchfs_build.h"
#include "buf.h"
#include "err.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "timefmt.h"

#define HTTP_USER_AGENT	   "batchfs/" BATCHFS_VERSION
#define HTTP_ERRBODY_MAX   (64 * 1024)	       /* non-2xx bodies: enough for any error envelope */
#define HTTP_LINE_MAX	   (64u * 1024 * 1024) /* default line cap of a streamed body */
#define HTTP_POOL_MAX	   8		       /* idle easy handles kept for their connections */
#define HTTP_ATTEMPTS_MAX  20		       /* whatever the options say */
#define HTTP_MSG_MAX	   300		       /* provider text quoted in a message */
#define HTTP_POLL_MS	   1000		       /* longest wait in curl_multi_poll() */
#define HTTP_STREAM_BUFFER (512 * 1024) /* curl buffers of a results download or big upload */

/*
 * An easy handle and the multi handle it runs in. The transfer loop is ours (not
 * curl_easy_perform()) so that it can also wait on the stop descriptor; the connections stay
 * in the multi's cache, so the pair is pooled together.
 */
struct conn {
	CURL *easy;
	CURLM *multi;
};

struct http {
	CURLSH *share;
	/* One lock per curl_lock_data kind, taken by curl from any thread using the share. */
	pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
	/*
	 * Idle easy handles. libcurl does not support sharing its connection cache between
	 * concurrent threads (CURLSHOPT_SHARE(3), 7.88), so keep-alive comes from reusing a
	 * handle, which keeps its own connections across curl_easy_reset().
	 */
	pthread_mutex_t pool_lock; /* protects pool[] and npool; taken alone */
	struct conn pool[HTTP_POOL_MAX];
	int npool;
	struct http_opts opts; /* read-only after http_new() */
};

/* One http_perform(): the request, and what the current attempt has seen. */
struct xfer {
	const struct http_request *rq;
	const struct http_opts *opts;
	CURL *curl;
	char curl_err[CURL_ERROR_SIZE];
	/* per attempt */
	long status;	   /* status of the response whose body is arriving, 0 before */
	bool body_started; /* the write callback has run */
	bool ok_body;	   /* 2xx: the body goes to rq->resp or rq->line_fn */
	bool delivered;	   /* a line went to rq->line_fn */
	uint64_t bytes;	   /* response body bytes */
	int cb_rc;	   /* -errno of a callback that stopped the transfer */
	struct bfs_err cb_err;
	struct buf errbody; /* non-2xx body, cut at HTTP_ERRBODY_MAX */
	bool cancelled;	    /* http_abort_all() ended the attempt */
	bool overdue;	    /* the stream's total deadline ended it */
	bool paused;	    /* a live body waits for its producer (CURL_READFUNC_PAUSE) */
	curl_off_t moved;   /* a live body's transfer: bytes both ways at the last progress */
	int64_t moved_ms;   /* and when (monotonic) */
	int64_t t0_ms;	    /* when the attempt started (monotonic) */
	struct jsonl_splitter split;
	/* headers of the last response (earlier 1xx responses are forgotten) */
	char request_id[128];
	char location[2048];
	char range[64];
	char content_type[128];
	char date[64];
	int64_t local_ms; /* our clock when the status line arrived */
	char retry_after_ms[32];
	char retry_after[64];
	char reset_at[64]; /* anthropic-ratelimit-requests-reset: RFC 3339 */
	char reset_in[32]; /* x-ratelimit-reset-requests: a duration, "6m0s", "20ms" */
	int should_retry;  /* x-should-retry: -1 absent, 0 false, 1 true */
};

/* What one attempt came to. */
struct outcome {
	int rc;	    /* 0 or -errno */
	bool retry; /* worth another attempt */
	struct bfs_err err;
};

/*
 * curl_global_init() is not thread-safe and must run once per process: the one piece of
 * process state this module keeps.
 */
static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static CURLcode http_global_rc = CURLE_FAILED_INIT;

static void http_global_init_once(void)
{
	http_global_rc = curl_global_init(CURL_GLOBAL_ALL);
}

int http_global_init(void)
{
	(void)pthread_once(&http_once, http_global_init_once); /* cannot fail with a static once */
	return http_global_rc == CURLE_OK ? 0 : -ENOMEM;
}

void http_global_cleanup(void)
{
	if (http_global_rc == CURLE_OK)
		curl_global_cleanup();
}

/*
 * The stop switch: a flag, and a pipe whose read end becomes readable for good when the flag
 * is set. Every wait of this module (curl_multi_poll, http_sleep_ms) also waits on that end,
 * so it ends at once. A pipe rather than a condition variable because the switch is thrown
 * from a signal handler too, where only write() is safe. The pipe lives as long as the
 * process.
 */
static atomic_bool http_stopping;
static atomic_int http_stop_rfd = -1, http_stop_wfd = -1;
static pthread_once_t http_stop_once = PTHREAD_ONCE_INIT;

static void http_stop_init_once(void)
{
	int fds[2];

	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK))
		return; /* the flag alone still stops transfers, at curl's next progress call */
	atomic_store(&http_stop_rfd, fds[0]);
	atomic_store(&http_stop_wfd, fds[1]);
	if (atomic_load(&http_stopping)) {
		ssize_t k = write(fds[1], "x", 1); /* thrown before the pipe existed */

		(void)k;
	}
}

int http_abort_fd(void)
{
	(void)pthread_once(&http_stop_once, http_stop_init_once); /* cannot fail */
	return atomic_load(&http_stop_rfd);
}

void http_abort_all(void)
{
	int saved = errno; /* a signal handler must leave errno as it found it */
	int fd;

	if (atomic_exchange(&http_stopping, true))
		return;
	fd = atomic_load(&http_stop_wfd);
	if (fd >= 0) {
		ssize_t k = write(fd, "x", 1); /* never read: it stays readable */

		(void)k;
	}
	errno = saved;
}

bool http_aborted(void)
{
	return atomic_load(&http_stopping);
}

int http_sleep_ms(int64_t ms)
{
	struct pollfd pfd = {.fd = http_abort_fd(), .events = POLLIN};
	int64_t end = timefmt_mono_ms() + (ms > 0 ? ms : 0);

	for (;;) {
		int64_t left = end - timefmt_mono_ms();
		/* Without the pipe, look at the flag every 100 ms (poll ignores fd -1). */
		int64_t cap = pfd.fd >= 0 ? INT_MAX : 100;

		if (http_aborted())
			return -ECANCELED;
		if (left <= 0)
			return 0;
		(void)poll(&pfd, 1, (int)(left < cap ? left : cap)); /* EINTR: look again */
	}
}

/*
 * CURLcode -> -errno, and whether trying again may help. Every value is listed so that
 * -Wswitch flags new ones (foreign codes are mapped once, here).
 */
static int curl_errno(CURLcode cc, bool *transient)
{
	*transient = false;
	switch (cc) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
	case CURLE_NO_CONNECTION_AVAILABLE:
		*transient = true;
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
		*transient = true;
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		*transient = true;
		return -ETIMEDOUT;
	case CURLE_PARTIAL_FILE:
	case CURLE_CHUNK_FAILED:
		*transient = true;
		return -EPROTO;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_HTTP3:
	case CURLE_QUIC_CONNECT_ERROR:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_AGAIN:
	case CURLE_PROXY:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNRECOVERABLE_POLL:
		*transient = true;
		return -ECONNRESET;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_FILESIZE_EXCEEDED:
		return -EFBIG;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_UNKNOWN_OPTION:
	case CURLE_SETOPT_OPTION_SYNTAX:
	case CURLE_TOO_MANY_REDIRECTS:
	case CURLE_BAD_CONTENT_ENCODING:
		return -EINVAL;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CLIENTCERT:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_USE_SSL_FAILED:
	case CURLE_AUTH_ERROR:
	case CURLE_LOGIN_DENIED:
	case CURLE_REMOTE_ACCESS_DENIED:
		return -EACCES;
	case CURLE_ABORTED_BY_CALLBACK:
	case CURLE_WRITE_ERROR:
	case CURLE_READ_ERROR:
	case CURLE_SEND_FAIL_REWIND:
	case CURLE_UPLOAD_FAILED:
	case CURLE_RECURSIVE_API_CALL:
	case CURLE_FAILED_INIT:
	case CURLE_FUNCTION_NOT_FOUND:
	case CURLE_INTERFACE_FAILED:
	case CURLE_HTTP_RETURNED_ERROR:
	case CURLE_HTTP_POST_ERROR:
	case CURLE_RANGE_ERROR:
	case CURLE_BAD_DOWNLOAD_RESUME:
	case CURLE_FILE_COULDNT_READ_FILE:
	case CURLE_REMOTE_DISK_FULL:
	case CURLE_REMOTE_FILE_EXISTS:
	case CURLE_REMOTE_FILE_NOT_FOUND:
	/* protocols batchfs never speaks (CURLOPT_PROTOCOLS_STR is http,https) */
	case CURLE_FTP_ACCEPT_FAILED:
	case CURLE_FTP_WEIRD_PASS_REPLY:
	case CURLE_FTP_ACCEPT_TIMEOUT:
	case CURLE_FTP_WEIRD_PASV_REPLY:
	case CURLE_FTP_WEIRD_227_FORMAT:
	case CURLE_FTP_CANT_GET_HOST:
	case CURLE_FTP_COULDNT_SET_TYPE:
	case CURLE_FTP_COULDNT_RETR_FILE:
	case CURLE_FTP_PORT_FAILED:
	case CURLE_FTP_COULDNT_USE_REST:
	case CURLE_FTP_PRET_FAILED:
	case CURLE_FTP_BAD_FILE_LIST:
	case CURLE_QUOTE_ERROR:
	case CURLE_LDAP_CANNOT_BIND:
	case CURLE_LDAP_SEARCH_FAILED:
	case CURLE_TFTP_NOTFOUND:
	case CURLE_TFTP_PERM:
	case CURLE_TFTP_ILLEGAL:
	case CURLE_TFTP_UNKNOWNID:
	case CURLE_TFTP_NOSUCHUSER:
	case CURLE_RTSP_CSEQ_ERROR:
	case CURLE_RTSP_SESSION_ERROR:
	case CURLE_SSH:
	case CURLE_OBSOLETE20:
	case CURLE_OBSOLETE24:
	case CURLE_OBSOLETE29:
	case CURLE_OBSOLETE32:
	case CURLE_OBSOLETE40:
	case CURLE_OBSOLETE44:
	case CURLE_OBSOLETE46:
	case CURLE_OBSOLETE50:
	case CURLE_OBSOLETE51:
	case CURLE_OBSOLETE57:
	case CURLE_OBSOLETE62:
	case CURLE_OBSOLETE75:
	case CURLE_OBSOLETE76:
#if LIBCURL_VERSION_NUM >= 0x080600
	case CURLE_TOO_LARGE:
#endif
#if LIBCURL_VERSION_NUM >= 0x080800
	case CURLE_ECH_REQUIRED:
#endif
	case CURL_LAST:
		return -EIO;
	}
	return -EIO;
}

/*
 * HTTP status -> -errno, whether an idempotent request may be retried, and whether the
 * server certainly did nothing (so even a create may be retried). 2xx is not an error.
 */
static int status_errno(long status, bool *transient, bool *no_effect)
{
	*transient = false;
	*no_effect = false;
	switch (status) {
	case 400:
	case 413:
	case 422:
		return -EINVAL;
	case 401:
	case 402:
	case 403:
		return -EACCES;
	case 404:
	case 410:
		return -ENOENT;
	case 408:
		*transient = *no_effect = true;
		return -ETIMEDOUT;
	case 409:
		*transient = *no_effect = true;
		return -EBUSY;
	case 429:
	case 529: /* Anthropic "overloaded_error" */
		*transient = *no_effect = true;
		return -EIO;
	default:
		*transient = status >= 500 && status <= 599;
		return -EIO;
	}
}

static const char *method_name(enum http_method m)
{
	switch (m) {
	case HTTP_GET:
		return "GET";
	case HTTP_POST:
		return "POST";
	case HTTP_PUT:
		return "PUT";
	case HTTP_PATCH:
		return "PATCH";
	case HTTP_DELETE:
		return "DELETE";
	}
	return "GET";
}

/* host and path of url for logs: no scheme, no user info, no query (it may hold a secret). */
static void url_for_log(const char *url, char *out, size_t size)
{
	const char *p = strstr(url, "://");
	const char *at, *slash;
	size_t n;

	p = p ? p + 3 : url;
	slash = p + strcspn(p, "/?#");
	at = memchr(p, '@', (size_t)(slash - p));
	if (at)
		p = at + 1;
	n = strcspn(p, "?#");
	if (n >= size)
		n = size - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

static void lock_share(CURL *c, curl_lock_data data, curl_lock_access access, void *user)
{
	struct http *h = user;

	(void)c;
	(void)access;
	assert(data >= 0 && data < CURL_LOCK_DATA_LAST);
	pthread_mutex_lock(&h->locks[data]);
}

static void unlock_share(CURL *c, curl_lock_data data, void *user)
{
	struct http *h = user;

	(void)c;
	assert(data >= 0 && data < CURL_LOCK_DATA_LAST);
	pthread_mutex_unlock(&h->locks[data]);
}

static void http_opts_fill(struct http_opts *o, const struct http_opts *in)
{
	static const struct http_opts defaults = {
		.connect_timeout_ms = 10000,
		.low_speed_time_s = 60,
		.low_speed_bps = 1024,
		.total_timeout_ms = 600000,
		.stream_base_s = 60,
		.stream_min_bps = 1000000,
		.max_attempts = 5,
		.backoff_base_ms = 500,
		.backoff_max_ms = 8000,
		.max_hint_ms = 60000,
		.create_wait_ms = 120000,
	};

	*o = defaults;
	if (!in)
		return;
	if (in->connect_timeout_ms > 0)
		o->connect_timeout_ms = in->connect_timeout_ms;
	if (in->low_speed_time_s > 0)
		o->low_speed_time_s = in->low_speed_time_s;
	if (in->low_speed_bps > 0)
		o->low_speed_bps = in->low_speed_bps;
	if (in->total_timeout_ms > 0)
		o->total_timeout_ms = in->total_timeout_ms;
	if (in->stream_base_s > 0)
		o->stream_base_s = in->stream_base_s;
	if (in->stream_min_bps > 0)
		o->stream_min_bps = in->stream_min_bps;
	if (in->max_attempts > 0)
		o->max_attempts =
			in->max_attempts < HTTP_ATTEMPTS_MAX ? in->max_attempts : HTTP_ATTEMPTS_MAX;
	if (in->backoff_base_ms > 0)
		o->backoff_base_ms = in->backoff_base_ms;
	if (in->backoff_max_ms > 0)
		o->backoff_max_ms = in->backoff_max_ms;
	if (in->max_hint_ms > 0)
		o->max_hint_ms = in->max_hint_ms;
	if (in->create_wait_ms > 0)
		o->create_wait_ms = in->create_wait_ms;
}

int http_new(struct http **out, const struct http_opts *opts, struct bfs_err *err)
{
	struct http *h;
	int i;

	if (http_global_init()) {
		err_set(err, "cannot initialise libcurl");
		return -ENOMEM;
	}
	(void)http_abort_fd(); /* made now, not by the first transfer */
	h = calloc(1, sizeof(*h));
	if (!h)
		goto nomem;
	http_opts_fill(&h->opts, opts);
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&h->locks[i], NULL);
	pthread_mutex_init(&h->pool_lock, NULL);
	h->share = curl_share_init();
	if (!h->share || curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, lock_share) ||
	    curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, unlock_share) ||
	    curl_share_setopt(h->share, CURLSHOPT_USERDATA, h) ||
	    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
	    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION)) {
		http_free(h);
		goto nomem;
	}
	*out = h;
	return 0;
nomem:
	err_set(err, "cannot set up the HTTP client: out of memory");
	return -ENOMEM;
}

void http_free(struct http *h)
{
	if (!h)
		return;
	/* Pooled handles first: they hold references to the share. */
	for (int i = 0; i < h->npool; i++) {
		curl_multi_cleanup(h->pool[i].multi); /* closes its connections */
		curl_easy_cleanup(h->pool[i].easy);
	}
	if (h->share)
		curl_share_cleanup(h->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&h->locks[i]);
	pthread_mutex_destroy(&h->pool_lock);
	free(h);
}

static void conn_free(struct conn *c)
{
	curl_multi_cleanup(c->multi); /* NULL-safe, as is the next */
	curl_easy_cleanup(c->easy);
	c->multi = NULL;
	c->easy = NULL;
}

/* An idle pair from the pool, or a new one. Returns 0 or -ENOMEM. */
static int pool_take(struct http *h, struct conn *c)
{
	bool found = false;

	pthread_mutex_lock(&h->pool_lock);
	if (h->npool) {
		*c = h->pool[--h->npool];
		found = true;
	}
	pthread_mutex_unlock(&h->pool_lock);
	if (found)
		return 0;
	c->easy = curl_easy_init();
	c->multi = curl_multi_init();
	if (!c->easy || !c->multi) {
		conn_free(c);
		return -ENOMEM;
	}
	return 0;
}

/* Returns c to the pool (or frees it). Its live connections stay with it for the next user. */
static void pool_give(struct http *h, struct conn *c, bool keep)
{
	if (!c->easy)
		return;
	if (keep) {
		curl_easy_reset(c->easy);
		pthread_mutex_lock(&h->pool_lock);
		if (h->npool < HTTP_POOL_MAX) {
			h->pool[h->npool++] = *c;
			c->easy = NULL;
			c->multi = NULL;
		}
		pthread_mutex_unlock(&h->pool_lock);
	}
	conn_free(c);
}

/* Bodies */

static long file_body_read(void *ctx, char *dst, size_t n)
{
	struct http_file_body *fb = ctx;
	ssize_t k;

	if ((int64_t)n > fb->len - fb->pos)
		n = (size_t)(fb->len - fb->pos);
	if (!n)
		return 0;
	do
		k = pread(fb->fd, dst, n, (off_t)(fb->start + fb->pos));
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return -errno;
	if (k == 0)
		return -EIO; /* the file shrank under us: never send a short body */
	fb->pos += k;
	return (long)k;
}

static int file_body_rewind(void *ctx)
{
	struct http_file_body *fb = ctx;

	fb->pos = 0;
	return 0;
}

int http_file_body_open(struct http_file_body *fb, struct http_body *body, const char *path,
			int64_t start, int64_t len)
{
	struct stat st;
	int fd;

	fb->fd = -1; /* so that a release after a failed open is harmless */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	if (start < 0 || start > st.st_size || len < -1 || (len >= 0 && len > st.st_size - start)) {
		close(fd);
		return -EINVAL;
	}
	fb->fd = fd;
	fb->start = start;
	fb->pos = 0;
	fb->len = len < 0 ? st.st_size - start : len;
	body->read = file_body_read;
	body->rewind = file_body_rewind;
	body->ctx = fb;
	body->length = fb->len;
	return 0;
}

void http_file_body_release(struct http_file_body *fb)
{
	if (!fb || fb->fd < 0)
		return;
	close(fb->fd);
	fb->fd = -1;
}

static long mem_body_read(void *ctx, char *dst, size_t n)
{
	struct http_mem_body *mb = ctx;

	if (n > mb->len - mb->pos)
		n = mb->len - mb->pos;
	memcpy(dst, mb->mem + mb->pos, n);
	mb->pos += n;
	return (long)n;
}

static int mem_body_rewind(void *ctx)
{
	struct http_mem_body *mb = ctx;

	mb->pos = 0;
	return 0;
}

void http_mem_body_init(struct http_mem_body *mb, struct http_body *body, const char *mem,
			size_t len)
{
	mb->mem = mem;
	mb->len = len;
	mb->pos = 0;
	body->read = mem_body_read;
	body->rewind = mem_body_rewind;
	body->ctx = mb;
	body->length = (int64_t)len;
}

/* curl callbacks */

static size_t read_cb(char *dst, size_t size, size_t nitems, void *user)
{
	struct xfer *x = user;
	const struct http_body *body = x->rq->body;
	long k = body->read(body->ctx, dst, size * nitems);

	if (k == HTTP_BODY_WAIT && x->rq->live) {
		x->paused = true; /* transfer() asks again when the producer has more */
		return CURL_READFUNC_PAUSE;
	}
	if (k < 0) {
		x->cb_rc = (int)k;
		err_set(&x->cb_err, "cannot read the request body: %s", strerror((int)-k));
		return CURL_READFUNC_ABORT;
	}
	return (size_t)k;
}

/* curl rewinds a body it must send again (a dead reused connection, a 100-continue). */
static int seek_cb(void *user, curl_off_t offset, int origin)
{
	struct xfer *x = user;
	const struct http_body *body = x->rq->body;

	if (offset != 0 || origin != SEEK_SET || !body->rewind)
		return CURL_SEEKFUNC_CANTSEEK;
	return body->rewind(body->ctx) ? CURL_SEEKFUNC_FAIL : CURL_SEEKFUNC_OK;
}

static int deliver_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct xfer *x = ctx;

	x->delivered = true;
	return x->rq->line_fn(x->rq->line_ctx, line, len, lineno);
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *user)
{
	struct xfer *x = user;
	const struct http_request *rq = x->rq;
	size_t len = size * nmemb;
	int rc = 0;

	if (!x->body_started) {
		x->body_started = true;
		(void)curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &x->status); /* set */
		x->ok_body = x->status >= 200 && x->status <= 299;
	}
	x->bytes += len;
	if (x->ok_body && x->bytes > HTTP_INFLATE_MIN) {
		curl_off_t wire = 0;

		/* The counter is of bytes as received, before any Content-Encoding is undone. */
		(void)curl_easy_getinfo(x->curl, CURLINFO_SIZE_DOWNLOAD_T, &wire);
		if ((uint64_t)wire * HTTP_INFLATE_RATIO < x->bytes) {
			x->cb_rc = -EFBIG;
			err_set(&x->cb_err,
				"the response inflates to over %d times its %lld bytes on the wire "
				"(Content-Encoding): refused",
				HTTP_INFLATE_RATIO, (long long)wire);
			return 0;
		}
	}
	if (!x->ok_body) {
		size_t room = x->errbody.cap - x->errbody.len;

		/* The start of an error body is all a message needs; the rest is dropped. */
		(void)buf_add(&x->errbody, data, len < room ? len : room);
		return len;
	}
	if (rq->resp) {
		rc = buf_add(rq->resp, data, len);
		if (rc == -EFBIG)
			err_set(&x->cb_err, "response larger than %zu bytes", rq->resp->cap);
	} else if (rq->line_fn) {
		rc = jsonl_splitter_feed(&x->split, data, len, &x->cb_err);
	}
	if (rc) {
		x->cb_rc = rc;
		if (!err_is_set(&x->cb_err))
			err_set(&x->cb_err, "cannot take the response: %s", strerror(-rc));
		return 0; /* anything but len stops the transfer with CURLE_WRITE_ERROR */
	}
	return len;
}

/* Copies a header value (not NUL-terminated, CRLF and blanks trimmed) into out. */
static void header_copy(char *out, size_t size, const char *v, size_t n)
{
	while (n && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n >= size)
		n = size - 1;
	memcpy(out, v, n);
	out[n] = '\0';
}

static void headers_clear(struct xfer *x)
{
	x->request_id[0] = x->location[0] = x->content_type[0] = x->range[0] = '\0';
	x->date[0] = '\0';
	x->retry_after_ms[0] = x->retry_after[0] = '\0';
	x->reset_at[0] = x->reset_in[0] = '\0';
	x->should_retry = -1;
}

static size_t header_cb(char *data, size_t size, size_t nitems, void *user)
{
	struct xfer *x = user;
	size_t len = size * nitems, nlen;
	const char *colon;
	char word[8];

	if (len >= 5 && !strncmp(data, "HTTP/", 5)) {
		headers_clear(x); /* a new response: forget a 100 Continue's headers */
		x->local_ms = timefmt_now_ms();
		return len;
	}
	colon = memchr(data, ':', len);
	if (!colon)
		return len;
	nlen = (size_t)(colon - data);
	colon++;
#define HDR_IS(name) (nlen == sizeof(name) - 1 && !strncasecmp(data, name, nlen))
	if (HDR_IS("request-id") || HDR_IS("x-request-id") || HDR_IS("x-goog-request-id")) {
		if (!x->request_id[0] || HDR_IS("request-id"))
			header_copy(x->request_id, sizeof(x->request_id), colon, len - nlen - 1);
	} else if (HDR_IS("location")) {
		header_copy(x->location, sizeof(x->location), colon, len - nlen - 1);
	} else if (HDR_IS("range")) {
		header_copy(x->range, sizeof(x->range), colon, len - nlen - 1);
	} else if (HDR_IS("content-type")) {
		header_copy(x->content_type, sizeof(x->content_type), colon, len - nlen - 1);
	} else if (HDR_IS("date")) {
		header_copy(x->date, sizeof(x->date), colon, len - nlen - 1);
	} else if (HDR_IS("retry-after-ms")) {
		header_copy(x->retry_after_ms, sizeof(x->retry_after_ms), colon, len - nlen - 1);
	} else if (HDR_IS("retry-after")) {
		header_copy(x->retry_after, sizeof(x->retry_after), colon, len - nlen - 1);
	} else if (HDR_IS("anthropic-ratelimit-requests-reset")) {
		header_copy(x->reset_at, sizeof(x->reset_at), colon, len - nlen - 1);
	} else if (HDR_IS("x-ratelimit-reset-requests")) {
		header_copy(x->reset_in, sizeof(x->reset_in), colon, len - nlen - 1);
	} else if (HDR_IS("x-should-retry")) {
		header_copy(word, sizeof(word), colon, len - nlen - 1);
		if (!strcasecmp(word, "true"))
			x->should_retry = 1;
		else if (!strcasecmp(word, "false"))
			x->should_retry = 0;
	}
#undef HDR_IS
	return len;
}

/* curl calls this at least once a second during a transfer, and at every bit of progress. */
static int xferinfo_cb(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct xfer *x = user;

	if (http_aborted()) {
		x->cancelled = true;
		return 1; /* CURLE_ABORTED_BY_CALLBACK */
	}
	if (x->rq->live) {
		/* curl's low-speed check would count the waits for the producer: ours does not. */
		curl_off_t moved = dlnow + ulnow;
		int64_t now = timefmt_mono_ms();

		if (moved != x->moved || x->paused) {
			x->moved = moved;
			x->moved_ms = now;
		} else if (x->opts->low_speed_time_s > 0 &&
			   now - x->moved_ms > x->opts->low_speed_time_s * 1000) {
			x->overdue = true;
			err_set(&x->cb_err, "no progress for %ld s", x->opts->low_speed_time_s);
			return 1;
		}
		return 0;
	}
	if (x->rq->stream && x->opts->stream_min_bps > 0) {
		curl_off_t size = dltotal > dlnow ? dltotal : dlnow;
		int64_t allowed;

		if (ultotal > size || ulnow > size)
			size = ultotal > ulnow ? ultotal : ulnow;
		allowed = x->opts->stream_base_s * 1000 +
			  (int64_t)size * 1000 / x->opts->stream_min_bps;
		if (timefmt_mono_ms() - x->t0_ms > allowed) {
			x->overdue = true;
			err_set(&x->cb_err,
				"transfer deadline: not done after %lld s (%ld s plus 1 s per %ld "
				"bytes of its %lld)",
				(long long)(allowed / 1000), x->opts->stream_base_s,
				x->opts->stream_min_bps, (long long)size);
			return 1;
		}
	}
	return 0;
}

/* Error messages */

/* Appends s to out, cut to max bytes, control characters as spaces. */
static void add_clean(struct buf *out, const char *s, size_t max)
{
	size_t n = strnlen(s, max);

	for (size_t i = 0; i < n; i++) {
		char ch = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];

		(void)buf_add(out, &ch, 1); /* a full buffer only shortens the message */
	}
	if (s[n])
		(void)buf_addstr(out, "..."); /* as above */
}

/*
 * Builds "HTTP 429 rate_limit_error: message (request_id req_...)" from a non-2xx body:
 * Anthropic {type, error: {type, message}, request_id}, OpenAI/Azure {error: {code, message,
 * type}}, Google {error: {code, message, status}} (sometimes inside an array), else the
 * body's first line. Sets *spend_cap for Anthropic's non-retryable 429 (spec section 6).
 */
static void describe_status(const struct xfer *x, struct bfs_err *err, bool *spend_cap)
{
	char msgbuf[BFS_ERR_MSG_MAX];
	struct buf m = BUF_INIT(sizeof(msgbuf) - 1);
	const char *type = NULL, *msg = NULL, *rid = NULL;
	cJSON *root = NULL;
	const cJSON *e, *o;
	char codebuf[32];

	*spend_cap = false;
	if (x->errbody.len)
		root = cJSON_ParseWithLength(x->errbody.data, x->errbody.len);
	o = cJSON_IsArray(root) ? cJSON_GetArrayItem(root, 0) : root;
	e = cJSON_GetObjectItemCaseSensitive(o, "error");
	if (cJSON_IsObject(e)) {
		const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
		const cJSON *det = cJSON_GetObjectItemCaseSensitive(e, "details");
		const char *dcode = cJSON_IsObject(det) ? json_nonempty(det, "error_code") : NULL;

		type = json_nonempty(e, "type");
		if (!type)
			type = json_nonempty(e, "status");
		if (!type)
			type = json_nonempty(e, "code");
		if (!type && cJSON_IsNumber(code)) {
			snprintf(codebuf, sizeof(codebuf), "%d", code->valueint);
			type = codebuf;
		}
		msg = json_nonempty(e, "message");
		rid = json_nonempty(o, "request_id");
		*spend_cap = dcode && !strcmp(dcode, "enforced_spend_limit_reached");
	} else if (cJSON_IsString(e)) {
		msg = e->valuestring;
	}
	(void)buf_addf(&m, "HTTP %ld", x->status); /* a full buffer only shortens the message */
	if (type) {
		(void)buf_addstr(&m, " ");
		add_clean(&m, type, 64);
	}
	if (msg) {
		(void)buf_addstr(&m, ": ");
		add_clean(&m, msg, HTTP_MSG_MAX);
	} else if (!root && x->errbody.len) {
		/* Not JSON (a proxy's HTML page, plain text): its first non-blank line. */
		const char *p = x->errbody.data;
		size_t n;

		while (*p == '\n' || *p == '\r' || *p == ' ' || *p == '\t')
			p++;
		n = strcspn(p, "\r\n");
		if (n) {
			char line[HTTP_MSG_MAX + 1];

			if (n > HTTP_MSG_MAX)
				n = HTTP_MSG_MAX;
			memcpy(line, p, n);
			line[n] = '\0';
			(void)buf_addstr(&m, ": ");
			add_clean(&m, line, HTTP_MSG_MAX);
		}
	}
	if (!rid && x->request_id[0])
		rid = x->request_id;
	if (rid) {
		(void)buf_addstr(&m, " (request_id ");
		add_clean(&m, rid, 128);
		(void)buf_addstr(&m, ")");
	}
	err_set(err, "%s", m.data ? m.data : "HTTP error");
	buf_release(&m);
	cJSON_Delete(root);
}

/* Retry timing */

static double random_unit(void)
{
	uint32_t u;

	if (getrandom(&u, sizeof(u), GRND_NONBLOCK) != (ssize_t)sizeof(u))
		u = (uint32_t)timefmt_mono_ms() * 2654435761u; /* any spread will do */
	return u / 4294967296.0;
}

/*
 * OpenAI's x-ratelimit-reset-requests: a Go-style duration ("1s", "6m0s", "1h2m3.5s",
 * "20ms") -> ms, 0 when it is not one.
 */
static long duration_ms(const char *s)
{
	double total = 0;

	if (!*s)
		return 0;
	while (*s) {
		char *end;
		double v = strtod(s, &end);
		double unit;

		if (end == s || !isfinite(v) || v < 0)
			return 0;
		if (!strncmp(end, "ms", 2))
			unit = 1, end += 2;
		else if (*end == 'h')
			unit = 3600e3, end++;
		else if (*end == 'm')
			unit = 60e3, end++;
		else if (*end == 's')
			unit = 1e3, end++;
		else
			return 0;
		total += v * unit;
		s = end;
	}
	return total > 0 && total < 1e9 ? (long)ceil(total) : 0;
}

/*
 * A server hint in ms, 0 if none: retry-after-ms, else retry-after (seconds or HTTP-date),
 * as the SDKs read them; a 429 without either falls back on the rate-limit reset headers
 * (Anthropic's RFC 3339 anthropic-ratelimit-requests-reset, OpenAI's duration
 * x-ratelimit-reset-requests), which say when the request budget refills.
 */
static long retry_hint_ms(const struct xfer *x)
{
	char *end;
	double v;
	int64_t at;

	if (x->retry_after_ms[0]) {
		v = strtod(x->retry_after_ms, &end);
		if (end != x->retry_after_ms && !*end && isfinite(v) && v > 0)
			return v < 1e9 ? (long)ceil(v) : 0;
	}
	if (x->retry_after[0]) {
		time_t t;

		v = strtod(x->retry_after, &end);
		if (end != x->retry_after && !*end && isfinite(v) && v > 0)
			return v < 1e6 ? (long)ceil(v * 1000) : 0;
		t = curl_getdate(x->retry_after, NULL);
		if (t > 0) {
			double ms = difftime(t, time(NULL)) * 1000;

			return ms > 0 && ms < 1e9 ? (long)ms : 0;
		}
	}
	if (x->status != 429)
		return 0;
	if (x->reset_at[0] && !timefmt_parse(x->reset_at, &at)) {
		int64_t ms = at - timefmt_now_ms();

		return ms > 0 && ms < 1000000000 ? (long)ms : 0;
	}
	return x->reset_in[0] ? duration_ms(x->reset_in) : 0;
}

/* The backoff before retry number retries + 1 (jittered, doubling, capped). */
static long backoff_ms(const struct http *h, int retries)
{
	double d = (double)h->opts.backoff_base_ms;

	for (int i = 0; i < retries && d < (double)h->opts.backoff_max_ms; i++)
		d *= 2;
	if (d > (double)h->opts.backoff_max_ms)
		d = (double)h->opts.backoff_max_ms;
	return (long)(d * (1 - 0.25 * random_unit()));
}

/*
 * How long to wait before the next attempt, -1 for none. A rate limit (429) with a wait longer
 * than the request may still spend in place (*wait_left), or whose attempts ran out (last), is
 * not waited out here: *retry_at (ms since the epoch) says when the caller may try again.
 * Other answers (503, 529) take a hint up to max_hint_ms, else the backoff.
 */
static long retry_delay_ms(const struct http *h, const struct xfer *x, int retries, bool last,
			   long *wait_left, int64_t *retry_at)
{
	long hint = retry_hint_ms(x);
	long d = hint > 0 && (x->status == 429 || hint <= h->opts.max_hint_ms)
			 ? hint
			 : backoff_ms(h, retries);

	*retry_at = 0;
	if (x->status == 429 && (last || d > *wait_left)) {
		*retry_at = timefmt_now_ms() + d;
		return -1;
	}
	if (last)
		return -1;
	if (x->status == 429)
		*wait_left -= d;
	return d;
}

/* "rate limited, retrying at HH:MM:SS UTC" in front of what the server said. */
static void rate_limited_msg(struct bfs_err *err, int64_t retry_at)
{
	time_t t = (time_t)(retry_at / 1000 + (retry_at % 1000 > 0));
	struct tm tm;
	char hms[16] = "?";

	if (gmtime_r(&t, &tm))
		strftime(hms, sizeof(hms), "%H:%M:%S", &tm);
	err_prefix(err, HTTP_RATE_LIMITED_MSG " %s UTC", hms);
}

/* One request */

static int setup(struct http *h, struct xfer *x, struct curl_slist **hl)
{
	const struct http_request *rq = x->rq;
	CURL *c = x->curl;
	CURLcode cc = CURLE_OK;
	const struct http_body *body = rq->body;
	struct curl_slist *l = NULL, *t;
	bool has_type = false;

#define SET(opt, val)                                       \
	do {                                                \
		if (cc == CURLE_OK)                         \
			cc = curl_easy_setopt(c, opt, val); \
	} while (0)
	SET(CURLOPT_URL, rq->url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_SHARE, h->share);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_USERAGENT, HTTP_USER_AGENT);
	SET(CURLOPT_CONNECTTIMEOUT_MS, h->opts.connect_timeout_ms);
	/* A live body has its own progress deadline (xferinfo_cb): not while it waits. */
	SET(CURLOPT_LOW_SPEED_LIMIT, rq->live ? 0L : h->opts.low_speed_bps);
	SET(CURLOPT_LOW_SPEED_TIME, rq->live ? 0L : h->opts.low_speed_time_s);
	SET(CURLOPT_NOPROGRESS, 0L);
	SET(CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
	SET(CURLOPT_XFERINFODATA, x);
	/* A results download may take hours; it only has to keep moving. */
	SET(CURLOPT_TIMEOUT_MS, rq->stream || rq->live ? 0L : h->opts.total_timeout_ms);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	/*
	 * Bodies of hundreds of megabytes go both ways: larger buffers than curl's 16 KiB
	 * (receive) and 64 KiB (send) cut the callbacks and syscalls per byte (bounded: one
	 * of each per transfer).
	 */
	if (rq->stream)
		SET(CURLOPT_BUFFERSIZE, (long)HTTP_STREAM_BUFFER);
	if (body && (rq->live || body->length > (int64_t)HTTP_STREAM_BUFFER))
		SET(CURLOPT_UPLOAD_BUFFERSIZE, (long)HTTP_STREAM_BUFFER);
	/*
	 * libcurl silently sends a request again when a reused connection gave no answer at
	 * all (Curl_retry_request): harmless for a GET, a second batch for a create. A request
	 * that must not be repeated gets a connection of its own.
	 */
	if (rq->retry == HTTP_RETRY_CREATE ||
	    (rq->retry == HTTP_RETRY_NONE && rq->method != HTTP_GET))
		SET(CURLOPT_FRESH_CONNECT, 1L);
	SET(CURLOPT_ACCEPT_ENCODING, "");
	SET(CURLOPT_ERRORBUFFER, x->curl_err);
	SET(CURLOPT_HEADERFUNCTION, header_cb);
	SET(CURLOPT_HEADERDATA, x);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, x);
	if (rq->method == HTTP_GET) {
		SET(CURLOPT_HTTPGET, 1L);
	} else if (body) {
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_READFUNCTION, read_cb);
		SET(CURLOPT_READDATA, x);
		SET(CURLOPT_SEEKFUNCTION, seek_cb);
		SET(CURLOPT_SEEKDATA, x);
		/* An unknown length (-1) makes curl use chunked encoding over HTTP/1.1. */
		SET(CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)(body->length >= 0 ? body->length : -1));
	} else if (rq->method != HTTP_DELETE) {
		SET(CURLOPT_POSTFIELDS, "");
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	}
	if (rq->method != HTTP_GET && rq->method != HTTP_POST)
		SET(CURLOPT_CUSTOMREQUEST, method_name(rq->method));
	if (cc != CURLE_OK)
		return -EINVAL;
#undef SET

	for (const char *const *p = rq->headers; p && *p; p++) {
		t = curl_slist_append(l, *p);
		if (!t)
			goto nomem;
		l = t;
		has_type |= !strncasecmp(*p, "content-type:", 13);
	}
	/* No 100-continue round trip: every body we send is one the server must read. */
	t = curl_slist_append(l, "Expect:");
	if (!t)
		goto nomem;
	l = t;
	/*
	 * curl labels an empty POST (Anthropic's cancel) as a form; a JSON API may refuse that
	 * type. A request without a body and without a type of its caller's gets none.
	 */
	if (!body && !has_type && rq->method != HTTP_GET && rq->method != HTTP_DELETE) {
		t = curl_slist_append(l, "Content-Type:");
		if (!t)
			goto nomem;
		l = t;
	}
	*hl = l;
	return curl_easy_setopt(c, CURLOPT_HTTPHEADER, l) == CURLE_OK ? 0 : -EINVAL;
nomem:
	curl_slist_free_all(l);
	return -ENOMEM;
}

/*
 * curl_easy_perform(), with the stop descriptor among the descriptors waited on: the attempt
 * ends as soon as http_abort_all() runs, whatever the transfer is waiting for.
 */
static CURLcode transfer(struct conn *c, struct xfer *x)
{
	struct curl_waitfd fds[2];
	int stop_fd = http_abort_fd();
	CURLcode cc = CURLE_FAILED_INIT;
	CURLMcode mc;
	CURLMsg *msg;
	int running = 1, left;
	unsigned nfds;

	if (curl_multi_add_handle(c->multi, c->easy) != CURLM_OK)
		return CURLE_OUT_OF_MEMORY;
	for (;;) {
		mc = curl_multi_perform(c->multi, &running);
		if (mc != CURLM_OK || !running)
			break;
		if (http_aborted()) {
			x->cancelled = true;
			break;
		}
		nfds = 0;
		if (stop_fd >= 0)
			fds[nfds++] =
				(struct curl_waitfd){.fd = stop_fd, .events = CURL_WAIT_POLLIN};
		if (x->paused && x->rq->wake_fd >= 0) /* only then: the producer drains it */
			fds[nfds++] = (struct curl_waitfd){.fd = x->rq->wake_fd,
							   .events = CURL_WAIT_POLLIN};
		mc = curl_multi_poll(c->multi, fds, nfds, HTTP_POLL_MS, NULL);
		if (mc != CURLM_OK)
			break;
		if (x->paused) {
			/* More body, or a second passed: ask the producer again (it may give up). */
			x->paused = false;
			x->moved_ms = timefmt_mono_ms(); /* the wait was the producer's */
			if (curl_easy_pause(c->easy, CURLPAUSE_CONT) != CURLE_OK) {
				mc = CURLM_INTERNAL_ERROR;
				break;
			}
		}
	}
	if (x->cancelled) {
		cc = CURLE_ABORTED_BY_CALLBACK;
	} else if (mc != CURLM_OK) {
		cc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
	} else {
		while ((msg = curl_multi_info_read(c->multi, &left)))
			if (msg->msg == CURLMSG_DONE && msg->easy_handle == c->easy)
				cc = msg->data.result;
	}
	/* Mid-transfer, this closes the connection: it is in an unknown state. */
	(void)curl_multi_remove_handle(c->multi, c->easy);
	return cc;
}

static void attempt_reset(struct xfer *x)
{
	x->status = 0;
	x->body_started = x->ok_body = x->delivered = x->overdue = x->paused = false;
	x->t0_ms = timefmt_mono_ms();
	x->moved = 0;
	x->moved_ms = x->t0_ms;
	x->bytes = 0;
	x->cb_rc = 0;
	err_clear(&x->cb_err);
	buf_reset(&x->errbody);
	x->curl_err[0] = '\0';
	headers_clear(x);
}

/* Decides what one finished attempt means (http.h "enum http_retry"). */
static void judge(const struct xfer *x, CURLcode cc, struct outcome *o)
{
	enum http_retry policy = x->rq->retry;
	bool transient, no_effect, spend_cap;
	bool ok = x->status >= 200 && x->status <= 299;
	long sent = 0;

	o->retry = false;
	err_clear(&o->err);
	(void)curl_easy_getinfo(x->curl, CURLINFO_REQUEST_SIZE, &sent); /* 0 if unknown */
	if (x->cancelled) {
		o->rc = -ECANCELED;
		err_set(&o->err, HTTP_CANCELLED_MSG);
		/* Exactly once: a create that left may have landed; batch.c asks find(). */
		if (policy == HTTP_RETRY_CREATE && (sent > 0 || x->status)) {
			o->rc = -EAGAIN;
			err_set(&o->err, HTTP_CANCELLED_MSG "; the request may have taken effect");
		}
		return;
	}
	if (x->overdue) {
		/* Not retried: another attempt would take as long. Exactly once: a create that
		 * left may have landed; batch.c asks find(). */
		o->rc = -ETIMEDOUT;
		o->err = x->cb_err;
		if (policy == HTTP_RETRY_CREATE && (sent > 0 || x->status)) {
			o->rc = -EAGAIN;
			err_prefix(&o->err, "the request may have taken effect");
		}
		return;
	}
	if (x->cb_rc) {
		/* A callback (ours or the caller's) refused: nothing a retry would change. */
		o->rc = x->cb_rc;
		o->err = x->cb_err;
		if (policy == HTTP_RETRY_CREATE && ok) {
			o->rc = -EAGAIN; /* it was created, but we could not take the answer */
			err_prefix(&o->err, "the request took effect but its answer was lost");
		}
		return;
	}
	if (cc == CURLE_OK && ok) {
		o->rc = 0;
		return;
	}
	if (cc == CURLE_OK || (x->status >= 300 && !ok)) {
		/* An HTTP answer (perhaps with its error body cut short): judge the status. */
		o->rc = status_errno(x->status, &transient, &no_effect);
		describe_status(x, &o->err, &spend_cap);
		if (spend_cap)
			transient = no_effect = false;
		if (x->should_retry >= 0)
			transient = no_effect = x->should_retry;
		switch (policy) {
		case HTTP_RETRY_IDEMPOTENT:
			o->retry = transient;
			break;
		case HTTP_RETRY_CREATE:
			o->retry = no_effect;
			if (!no_effect && x->status >= 500) {
				o->rc = -EAGAIN;
				err_prefix(&o->err, "the request may have taken effect");
			}
			break;
		case HTTP_RETRY_NONE:
			break;
		}
		return;
	}
	o->rc = curl_errno(cc, &transient);
	if (ok) {
		o->rc = -EPROTO;
		err_set(&o->err, "response cut short after %llu bytes: %s",
			(unsigned long long)x->bytes,
			x->curl_err[0] ? x->curl_err : curl_easy_strerror(cc));
	} else {
		err_set(&o->err, "%s", x->curl_err[0] ? x->curl_err : curl_easy_strerror(cc));
	}
	switch (policy) {
	case HTTP_RETRY_IDEMPOTENT:
		o->retry = transient;
		break;
	case HTTP_RETRY_CREATE:
		/* Only a request that never left may be sent again (spec section 8). */
		o->retry = transient && sent == 0 && !x->status;
		if (!o->retry && (sent > 0 || x->status)) {
			o->rc = -EAGAIN;
			err_prefix(&o->err,
				   "no complete answer, the request may have taken effect");
		}
		break;
	case HTTP_RETRY_NONE:
		break;
	}
}

int http_perform(struct http *h, const struct http_request *rq, struct http_response *rs,
		 struct bfs_err *err)
{
	struct xfer x = {.rq = rq, .opts = &h->opts};
	struct conn conn = {NULL, NULL};
	struct curl_slist *hl = NULL;
	struct outcome o = {.rc = -EIO};
	char where[256];
	int attempt = 0, max = h->opts.max_attempts;
	bool keep = false;
	/* What rate limits may still be waited out in place (http_opts). */
	long wait_left =
		rq->retry == HTTP_RETRY_CREATE ? h->opts.create_wait_ms : h->opts.max_hint_ms;
	int64_t retry_at = 0;
	long delay;

	x.errbody = (struct buf)BUF_INIT(HTTP_ERRBODY_MAX);
	url_for_log(rq->url, where, sizeof(where));
	if (rq->retry == HTTP_RETRY_NONE || (rq->body && !rq->body->rewind))
		max = 1;
	if (pool_take(h, &conn)) {
		o.rc = -ENOMEM;
		err_set(&o.err, "cannot set up the HTTP request: out of memory");
		goto out;
	}
	x.curl = conn.easy;
	o.rc = setup(h, &x, &hl);
	if (o.rc) {
		err_set(&o.err, "cannot set up the HTTP request to '%s': %s", where,
			strerror(-o.rc));
		goto out;
	}
	for (;;) {
		int64_t t0 = timefmt_mono_ms();
		CURLcode cc;

		if (http_aborted()) {
			o.rc = -ECANCELED;
			err_set(&o.err, HTTP_CANCELLED_MSG);
			break;
		}
		attempt++;
		attempt_reset(&x);
		if (rq->body && rq->body->rewind && rq->body->rewind(rq->body->ctx)) {
			o.rc = -EIO;
			err_set(&o.err, "cannot rewind the request body");
			break;
		}
		if (rq->resp)
			buf_reset(rq->resp);
		if (rq->line_fn) {
			jsonl_splitter_init(&x.split, rq->max_line ? rq->max_line : HTTP_LINE_MAX,
					    deliver_line, &x);
			x.split.skip_long = rq->skip_long_lines;
		}
		cc = transfer(&conn, &x);
		if (!x.body_started)
			(void)curl_easy_getinfo(x.curl, CURLINFO_RESPONSE_CODE, &x.status); /* 0 */
		if (rq->line_fn) {
			if (cc == CURLE_OK && !x.cb_rc && x.status >= 200 && x.status <= 299) {
				x.cb_rc = jsonl_splitter_finish(&x.split, &x.cb_err);
				if (x.cb_rc && !err_is_set(&x.cb_err))
					err_set(&x.cb_err, "cannot take the response: %s",
						strerror(-x.cb_rc));
			}
			jsonl_splitter_release(&x.split);
		}
		judge(&x, cc, &o);
		log_debug("http %s %s: %ld %s (attempt %d, %lld ms, %llu bytes)",
			  method_name(rq->method), where, x.status,
			  cc == CURLE_OK ? "ok" : curl_easy_strerror(cc), attempt,
			  (long long)(timefmt_mono_ms() - t0), (unsigned long long)x.bytes);
		if (!o.rc || !o.retry)
			break;
		delay = retry_delay_ms(h, &x, attempt - 1, attempt >= max, &wait_left, &retry_at);
		if (delay < 0) {
			if (retry_at) {
				/* Not a failure: the caller tries again then (err.h retry_at). */
				rate_limited_msg(&o.err, retry_at);
				o.err.retry_at = retry_at;
			}
			break;
		}
		if (rq->on_retry && x.status == 429) {
			struct bfs_err note = o.err;

			/* A wait of a minute must say why and until when while it lasts. */
			rate_limited_msg(&note, timefmt_now_ms() + delay);
			rq->on_retry(rq->retry_ctx, attempt + 1, note.msg);
		} else if (rq->on_retry) {
			rq->on_retry(rq->retry_ctx, attempt + 1, o.err.msg);
		}
		if (rq->line_fn && x.delivered && rq->reset) {
			int rc = rq->reset(rq->line_ctx);

			if (rc) {
				o.rc = rc;
				err_set(&o.err, "cannot restart the download: %s", strerror(-rc));
				break;
			}
		}
		if (http_sleep_ms(delay)) {
			/* A create is retried only after an attempt with no effect: nothing landed. */
			o.rc = -ECANCELED;
			err_set(&o.err, HTTP_CANCELLED_MSG);
			break;
		}
	}
	/* A connection in an unknown state is not worth keeping. */
	keep = (!o.rc || x.status) && !x.cancelled;
out:
	if (rs) {
		rs->status = x.status;
		rs->attempts = attempt;
		snprintf(rs->request_id, sizeof(rs->request_id), "%s", x.request_id);
		snprintf(rs->location, sizeof(rs->location), "%s", x.location);
		snprintf(rs->range, sizeof(rs->range), "%s", x.range);
		snprintf(rs->content_type, sizeof(rs->content_type), "%s", x.content_type);
		rs->date_ms = 0;
		rs->local_ms = x.local_ms;
		rs->hint_ms = retry_hint_ms(&x);
		if (x.date[0]) {
			time_t t = curl_getdate(x.date, NULL);

			rs->date_ms = t > 0 ? (int64_t)t * 1000 : 0;
		}
	}
	if (o.rc && err) {
		*err = o.err;
		err->attempt = attempt > 1 ? attempt : 0;
		if (attempt > 1) {
			size_t n = strlen(err->msg);

			/* status keeps only the text: say that retrying did not help */
			snprintf(err->msg + n, sizeof(err->msg) - n, " (%d attempts)", attempt);
		}
	}
	pool_give(h, &conn, keep); /* resets the handle: it no longer points at hl or x */
	curl_slist_free_all(hl);
	buf_release(&x.errbody);
	return o.rc;
}

bool http_has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

int http_url_escape(const char *s, struct buf *out)
{
	size_t n = strlen(s);
	char *e;
	int rc;

	if (n > (size_t)INT32_MAX)
		return -EFBIG;
	/* The handle argument is unused since curl 7.82. */
	e = curl_easy_escape(NULL, s, (int)n);
	if (!e)
		return -ENOMEM;
	rc = buf_addstr(out, e);
	curl_free(e);
	return rc;
}

bool http_is_same_origin(const char *a, const char *b)
{
	static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
	CURLU *ua = curl_url(), *ub = curl_url();
	bool same = ua && ub && !curl_url_set(ua, CURLUPART_URL, a, 0) &&
		    !curl_url_set(ub, CURLUPART_URL, b, 0);

	for (size_t i = 0; same && i < sizeof(parts) / sizeof(parts[0]); i++) {
		char *pa = NULL, *pb = NULL;

		same = !curl_url_get(ua, parts[i], &pa, CURLU_DEFAULT_PORT) &&
		       !curl_url_get(ub, parts[i], &pb, CURLU_DEFAULT_PORT) && !strcasecmp(pa, pb);
		curl_free(pa);
		curl_free(pb);
	}
	curl_url_cleanup(ua);
	curl_url_cleanup(ub);
	return same;
}
