/* SPDX-License-Identifier: MIT */
/*
 * The HTTP layer every provider shares: libcurl with keep-alive (a share handle for
 * connections and DNS), timeouts, User-Agent batchfs/<version>, bodies streamed from disk,
 * responses streamed to a line callback or collected in a capped buffer, retries with
 * jittered exponential backoff honouring retry-after-ms / retry-after / x-should-retry, and
 * the providers' error envelopes turned into one readable message. curl and HTTP codes are
 * mapped to -errno here and nowhere else. Never logs headers or bodies. One process-wide stop
 * switch (http_abort_all) ends every transfer and backoff sleep when the daemon stops.
 */
#ifndef BATCHFS_HTTP_H
#define BATCHFS_HTTP_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "jsonl.h"

struct bfs_err;
struct buf;
struct http;

/* The message of every call that -ECANCELED ends. */
#define HTTP_CANCELLED_MSG "cancelled: batchfs is stopping"

struct http_opts {
	long connect_timeout_ms; /* default 10000 */
	/*
	 * The progress deadline, uploads and downloads alike: a transfer whose speed (curl's
	 * average over the last ~5 s, bytes both ways) stays under low_speed_bps for
	 * low_speed_time_s fails with -ETIMEDOUT. A stalled body and one trickling a few bytes a
	 * second both end within that time (plus up to ~6 s for a fast start to leave the
	 * average); so does a wait of that long for an answer.
	 */
	long low_speed_time_s; /* default 60 */
	long low_speed_bps;    /* default 1024 */
	long total_timeout_ms; /* JSON calls only (not streams); default 600000 */
	/*
	 * The total deadline of a stream (a long upload or download): stream_base_s plus one
	 * second per stream_min_bps bytes of the body (its announced size, or what has moved so
	 * far when none was announced), so a body that trickles just fast enough to pass the
	 * progress deadline still ends. Past it: -ETIMEDOUT, not retried.
	 */
	long stream_base_s;   /* default 60 */
	long stream_min_bps;  /* default 1000000 (1 MB/s) */
	int max_attempts;     /* including the first; default 5 */
	long backoff_base_ms; /* first retry delay; default 500, doubled, capped at 8000 */
	long backoff_max_ms;  /* default 8000 */
	/*
	 * Rate limits (429 with retry-after-ms / retry-after / anthropic-ratelimit-requests-reset
	 * / x-ratelimit-reset-requests): a request waits its hints out in place up to this much
	 * in all (a create: create_wait_ms); beyond that, or when its attempts run out while
	 * still limited, it returns at once with err->retry_at set and err->msg "rate limited,
	 * retrying at HH:MM:SS UTC (...)", so the caller reschedules instead of failing.
	 * Other retried answers (503, 529) take a hint up to max_hint_ms, else the backoff.
	 */
	long max_hint_ms;    /* default 60000 */
	long create_wait_ms; /* default 120000 */
};

/* The start of the message of a request that a rate limit sent back (err->retry_at set). */
#define HTTP_RATE_LIMITED_MSG ERR_RATE_LIMITED_MSG

/*
 * curl_global_init(), once per process (pthread_once); http_new() calls it too. Returns 0 or
 * -ENOMEM. Call it from main before threads start; http_global_cleanup() after the last
 * http_free(), at exit.
 */
int http_global_init(void);
void http_global_cleanup(void);

/*
 * The stop switch, for the shutdown path: from now on every transfer in flight ends within
 * ~100 ms and every http_perform() returns -ECANCELED with HTTP_CANCELLED_MSG, without retrying
 * (a create cut off after it was sent returns -EAGAIN: it may have taken effect), and every
 * http_sleep_ms() returns at once. One way, idempotent, async-signal-safe (a signal handler may
 * call it).
 */
void http_abort_all(void);
/* True once http_abort_all() ran. Async-signal-safe. */
bool http_aborted(void);
/*
 * A descriptor that becomes readable (and stays so) at http_abort_all(), for callers that
 * wait in poll() on something else too (a command's output). -1 when it cannot be made.
 */
int http_abort_fd(void);
/* Sleeps ms milliseconds, or less when http_abort_all() runs: then returns -ECANCELED. */
int http_sleep_ms(int64_t ms);

/* Creates a client; NULL opts means defaults. Thread-safe to use from many threads. */
int http_new(struct http **out, const struct http_opts *opts, struct bfs_err *err);
/* A body that inflates (Content-Encoding) to more than this many times its size on the wire,
 * once past HTTP_INFLATE_MIN bytes, is refused (-EFBIG): a gzip bomb. */
#define HTTP_INFLATE_RATIO 200
#define HTTP_INFLATE_MIN   (16u << 20)
/* Frees h and its idle connections; no request may be in flight. NULL-safe. */
void http_free(struct http *h);

enum http_method {
	HTTP_GET,
	HTTP_POST,
	HTTP_PUT,
	HTTP_PATCH,
	HTTP_DELETE,
};

/* A request body produced on demand (read callback), so files are never held in memory. */
struct http_body {
	/* Copies up to n bytes into dst; returns the count, 0 at the end, -errno on failure. */
	long (*read)(void *ctx, char *dst, size_t n);
	/* Starts over from the first byte (for a retry); returns 0 or -errno. */
	int (*rewind)(void *ctx);
	void *ctx;
	int64_t length; /* exact byte count, or -1 for chunked transfer encoding */
};

/*
 * What a live body's read returns when it has nothing yet but is not at its end (see
 * http_request.live): the transfer waits, without sending, until wake_fd is readable (or a
 * second has passed), then reads again.
 */
#define HTTP_BODY_WAIT (-EINPROGRESS)

/* A body that is a whole file (or a range of one), streamed. */
struct http_file_body {
	int fd;
	int64_t start; /* first byte */
	int64_t pos;
	int64_t len; /* bytes in the range */
};
/* Opens path for a file body covering [start, start+len) (len -1: to the end). Fills body.
 * Returns 0 or -errno. Release with http_file_body_release(). */
int http_file_body_open(struct http_file_body *fb, struct http_body *body, const char *path,
			int64_t start, int64_t len);
void http_file_body_release(struct http_file_body *fb);
/* A body from memory (not copied: mem must outlive the request). */
struct http_mem_body {
	const char *mem;
	size_t len, pos;
};
void http_mem_body_init(struct http_mem_body *mb, struct http_body *body, const char *mem,
			size_t len);

enum http_retry {
	/* Idempotent request (GET, cancel, a file download): retry connection errors, 408, 409,
	 * 429, 5xx, 529, and whatever says x-should-retry: true. */
	HTTP_RETRY_IDEMPOTENT,
	/* A create: retry only when the request certainly had no effect (could not connect,
	 * or the server answered 408/409/429/529 or x-should-retry: true). A lost answer, a
	 * timeout after sending, or a 5xx returns -EAGAIN: "may have happened". */
	HTTP_RETRY_CREATE,
	/* No retries at all. */
	HTTP_RETRY_NONE,
};

struct http_request {
	enum http_method method;
	const char *url;
	const char *const *headers;   /* NULL-terminated "Name: value" list; may be NULL */
	const struct http_body *body; /* NULL: no body */
	enum http_retry retry;

	/* Where a 2xx response body goes: exactly one of these, or none (body discarded). */
	struct buf *resp;      /* collected, up to the buf's cap (-EFBIG beyond) */
	jsonl_line_fn line_fn; /* streamed as lines (CRLF ok, last line w/o newline ok) */
	void *line_ctx;
	size_t max_line;	 /* line cap for line_fn; 0 = 64 MiB */
	bool skip_long_lines;	 /* a line over max_line goes to line_fn as NULL (jsonl.h) */
	int (*reset)(void *ctx); /* called with line_ctx before a retried stream restarts */
	bool stream;		 /* long download: no total timeout, only the low-speed one */
	/*
	 * A body still being produced while it is sent (a create streamed as its file is
	 * written): body->read may return HTTP_BODY_WAIT, and is asked again when wake_fd (a
	 * descriptor the producer makes readable when it has more) is readable, and at least
	 * once a second, so the producer can give up. No low-speed limit or total deadline
	 * counts the time the body waits for its producer; the rest of the transfer (sending,
	 * the answer) still has the progress deadline. The body has length -1 (chunked) and
	 * no rewind: one attempt. An answer that comes while the body waits ends the transfer.
	 */
	bool live;
	int wake_fd;

	/* Optional: told about each retry (attempt number, reason) so status can show it. */
	void (*on_retry)(void *ctx, int attempt, const char *reason);
	void *retry_ctx;
};

struct http_response {
	long status;	      /* last HTTP status, 0 when no answer */
	int attempts;	      /* attempts made */
	char request_id[128]; /* request-id / x-request-id / x-goog-request-id header */
	char location[2048];  /* Location header (resumable uploads), "" when absent */
	char range[64];	      /* Range header (a resumable upload's 308), "" when absent */
	char content_type[128];
	/* The Date header (ms since the epoch, whole seconds, 0 when absent) and our clock when
	 * the response headers arrived: together they bound the server's clock against ours. */
	int64_t date_ms, local_ms;
	/* The last answer's retry-after(-ms), 2xx too: a poll's "not again before", 0 none. */
	long hint_ms;
};

/*
 * Performs rq, retrying per rq->retry. Returns 0 on a 2xx answer. Otherwise a -errno:
 * -ENOENT 404, -EACCES 401/403, -EINVAL 400/413/422, -EAGAIN for a create that may have
 * happened, -EBUSY 409, -ETIMEDOUT, -ECONNREFUSED / -EHOSTUNREACH, -EPROTO for a cut stream,
 * -EIO for 5xx and the rest; err then holds e.g. "HTTP 429 rate_limit_error: Too many requests
 * (request_id req_...)" built from the error envelope of Anthropic ({type, error: {type,
 * message}, request_id}), OpenAI/Azure ({error: {code, message, type}}) or Google ({error:
 * {code, message, status}}), or from the body's first line when it is not JSON. rs may be
 * NULL. Blocks; network I/O.
 */
int http_perform(struct http *h, const struct http_request *rq, struct http_response *rs,
		 struct bfs_err *err);

/* True when s holds a control byte (< 0x20 or DEL): it cannot go in a header value. Pure. */
bool http_has_ctl(const char *s);

/* Percent-encodes s for a URL path segment or query value into out. Returns 0 or -EFBIG. */
int http_url_escape(const char *s, struct buf *out);

/* True when both absolute URLs have the same scheme, host and port (default ports filled in),
 * e.g. to follow a results URL a provider sends only to the configured host. Pure. */
bool http_is_same_origin(const char *a, const char *b);

#endif
