// SPDX-License-Identifier: MIT
/*
 * Unit tests: the HTTP layer's deadlines against a small server on 127.0.0.1 run here. A body
 * that trickles fails by the progress deadline; http_abort_all() ends a stalled download, a
 * stalled upload, a backoff and a plain sleep at once, and every call after it. The stop
 * switch is one way, so its tests come last.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "http.h"
#include "tap.h"
#include "timefmt.h"

static int srv_port;
static atomic_int srv_requests; /* requests whose head was read */
static atomic_int srv_holding;	/* connections held open on purpose */

static void send_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t k = send(fd, s, n, MSG_NOSIGNAL);

		if (k <= 0)
			return;
		s += k;
		n -= (size_t)k;
	}
}

/* Holds the connection, reading nothing more, until the client closes its end. */
static void hold(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};

	atomic_fetch_add(&srv_holding, 1);
	/* POLLRDHUP, not recv(): a body nobody reads may sit in front of the end. */
	while (poll(&p, 1, 1000) >= 0 && !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
		;
	atomic_fetch_sub(&srv_holding, 1);
}

/* One request: its head is read, then the path says how to answer. */
static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char head[8192];
	size_t n = 0;

	while (n < sizeof(head) - 1) {
		ssize_t k = recv(fd, head + n, 1, 0);

		if (k <= 0)
			goto out;
		n += (size_t)k;
		head[n] = '\0';
		if (strstr(head, "\r\n\r\n"))
			break;
	}
	atomic_fetch_add(&srv_requests, 1);
	if (strstr(head, " /ok ")) {
		static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
					"Connection: close\r\n\r\nhello";

		send_all(fd, r, sizeof(r) - 1);
	} else if (strstr(head, " /trickle ")) {
		static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n"
					"Connection: close\r\n\r\n";

		/* Two bytes every half second: alive for curl's old 1 byte/s floor. */
		send_all(fd, r, sizeof(r) - 1);
		for (int i = 0; i < 200; i++) {
			if (send(fd, "{}", 2, MSG_NOSIGNAL) != 2)
				break;
			usleep(500000);
		}
	} else if (strstr(head, " /stall ")) {
		static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n"
					"Connection: close\r\n\r\n{\"a\":1}\n";

		send_all(fd, r, sizeof(r) - 1);
		hold(fd);
	} else if (strstr(head, " /upload ")) {
		hold(fd); /* the body is never read: the sender's buffers fill up */
	} else if (strstr(head, " /limited-")) {
		char r[512], reset[64] = "";
		time_t t = time(NULL) + 100;
		struct tm tm;

		/* 429s as the providers send them: a long retry-after, a reset header only. */
		gmtime_r(&t, &tm);
		strftime(reset, sizeof(reset), "%Y-%m-%dT%H:%M:%SZ", &tm);
		snprintf(r, sizeof(r),
			 "HTTP/1.1 429 Too Many Requests\r\n%s%s%s\r\n"
			 "Content-Length: 0\r\nConnection: close\r\n\r\n",
			 strstr(head, " /limited-long ")    ? "Retry-After: 90"
			 : strstr(head, " /limited-short ") ? "Retry-After-Ms: 20"
			 : strstr(head, " /limited-oai ")   ? "x-ratelimit-reset-requests: 2m0.5s"
							  : "anthropic-ratelimit-requests-reset: ",
			 strstr(head, " /limited-anth ") ? reset : "", "");
		send_all(fd, r, strlen(r));
	} else if (strstr(head, " /busy ")) {
		static const char r[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\n"
					"Content-Length: 0\r\nConnection: close\r\n\r\n";

		send_all(fd, r, sizeof(r) - 1);
	}
out:
	close(fd);
	return NULL;
}

static void *srv_main(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		pthread_t t;

		if (fd < 0)
			continue;
		if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd)) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

static int srv_start(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	pthread_t t;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 16) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		return -1;
	srv_port = ntohs(a.sin_port);
	if (pthread_create(&t, NULL, srv_main, (void *)(intptr_t)fd))
		return -1;
	pthread_detach(t);
	return 0;
}

static void url(char *out, size_t n, const char *path)
{
	snprintf(out, n, "http://127.0.0.1:%d%s", srv_port, path);
}

/* One call in a thread of its own, timed. */
struct call {
	struct http *h;
	const char *path;
	bool create;	 /* a POST of a big body (HTTP_RETRY_CREATE) */
	bool sleep_only; /* http_sleep_ms(60 s), no request */
	pthread_t tid;
	int rc;
	struct bfs_err err;
	int64_t ended;
};

static int discard_line(void *ctx, const char *line, size_t len, long lineno)
{
	(void)ctx;
	(void)line;
	(void)len;
	(void)lineno;
	return 0;
}

static void *call_main(void *arg)
{
	struct call *c = arg;
	struct http_request rq = {.method = HTTP_GET, .retry = HTTP_RETRY_IDEMPOTENT};
	struct http_mem_body mb;
	struct http_body body;
	char u[128], *mem = NULL;
	size_t big = 16u << 20;

	if (c->sleep_only) {
		c->rc = http_sleep_ms(60000);
		goto out;
	}
	url(u, sizeof(u), c->path);
	rq.url = u;
	rq.line_fn = discard_line;
	rq.stream = true;
	if (c->create) {
		mem = calloc(1, big);
		if (!mem) {
			c->rc = -ENOMEM;
			goto out;
		}
		http_mem_body_init(&mb, &body, mem, big);
		rq.method = HTTP_POST;
		rq.body = &body;
		rq.retry = HTTP_RETRY_CREATE;
		rq.line_fn = NULL;
		rq.stream = false;
	}
	c->rc = http_perform(c->h, &rq, NULL, &c->err);
out:
	c->ended = timefmt_mono_ms();
	free(mem);
	return NULL;
}

static bool wait_until(atomic_int *v, int want, int64_t ms)
{
	int64_t end = timefmt_mono_ms() + ms;

	while (atomic_load(v) < want) {
		if (timefmt_mono_ms() > end)
			return false;
		usleep(10000);
	}
	return true;
}

static void test_ok(struct http *h)
{
	struct buf resp = BUF_INIT(1024);
	struct bfs_err err = BFS_ERR_INIT;
	struct http_request rq = {.method = HTTP_GET, .retry = HTTP_RETRY_IDEMPOTENT};
	char u[128];
	int rc;

	url(u, sizeof(u), "/ok");
	rq.url = u;
	rq.resp = &resp;
	rc = http_perform(h, &rq, NULL, &err);
	is_int(rc, 0, "a plain GET works through the transfer loop (%s)", err.msg);
	is_str(resp.data, "hello", "with its body");
	buf_release(&resp);
}

/* A 429 whose wait is longer than the request may wait returns at once with err.retry_at. */
static void test_rate_limit(struct http *h)
{
	static const struct {
		const char *path;
		int64_t wait_ms;
		int requests;
	} cases[] = {
		{"/limited-long", 90000, 1},
		{"/limited-oai", 120500, 1},
		{"/limited-anth", 100000, 1},
		{"/limited-short", 20, 5}, /* short waits until the attempts run out */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bfs_err err = BFS_ERR_INIT;
		struct http_request rq = {.method = HTTP_GET, .retry = HTTP_RETRY_IDEMPOTENT};
		int before = atomic_load(&srv_requests);
		int64_t t0 = timefmt_now_ms(), left;
		char u[128];
		int rc;

		url(u, sizeof(u), cases[i].path);
		rq.url = u;
		rc = http_perform(h, &rq, NULL, &err);
		left = err.retry_at - t0;
		is_int(rc, -EIO, "%s: an error", cases[i].path);
		ok(!strncmp(err.msg, HTTP_RATE_LIMITED_MSG, strlen(HTTP_RATE_LIMITED_MSG)),
		   "%s: that says so (%s)", cases[i].path, err.msg);
		ok(left >= cases[i].wait_ms - 2000 && left <= cases[i].wait_ms + 2000,
		   "%s: retry_at %lld ms ahead", cases[i].path, (long long)left);
		is_int(atomic_load(&srv_requests) - before, cases[i].requests, "%s: requests",
		       cases[i].path);
	}
}

static void test_sleep(void)
{
	int64_t t0 = timefmt_mono_ms();
	int rc = http_sleep_ms(120);
	int64_t dt = timefmt_mono_ms() - t0;

	is_int(rc, 0, "http_sleep_ms sleeps");
	ok(dt >= 120 && dt < 1000, "for about as long as asked (%lld ms)", (long long)dt);
	is_int(http_sleep_ms(0), 0, "a zero sleep returns at once");
}

static void test_trickle(void)
{
	struct http_opts o = {.low_speed_time_s = 2, .max_attempts = 1};
	struct http *h = NULL;
	struct call c = {.path = "/trickle"};
	int64_t t0;

	if (http_new(&h, &o, NULL)) {
		ok(0, "http_new");
		return;
	}
	c.h = h;
	t0 = timefmt_mono_ms();
	call_main(&c);
	ok(c.rc == -EPROTO || c.rc == -ETIMEDOUT, "a body trickling 4 bytes/s fails (%d: %s)", c.rc,
	   c.err.msg);
	ok(c.ended - t0 < 8000, "within the progress deadline, not minutes (%lld ms)",
	   (long long)(c.ended - t0));
	ok(strstr(c.err.msg, "too slow") != NULL, "saying why: %s", c.err.msg);
	http_free(h);
}

static void test_upload_stall(void)
{
	struct http_opts o = {.low_speed_time_s = 2, .max_attempts = 1};
	struct http_request rq = {.method = HTTP_PUT, .retry = HTTP_RETRY_IDEMPOTENT};
	struct bfs_err err = BFS_ERR_INIT;
	struct http_mem_body mb;
	struct http_body body;
	struct http *h = NULL;
	size_t big = 16u << 20;
	char u[128], *mem = calloc(1, big);
	int64_t t0;
	int rc;

	if (!mem || http_new(&h, &o, NULL)) {
		ok(0, "set up");
		free(mem);
		return;
	}
	url(u, sizeof(u), "/upload");
	rq.url = u;
	http_mem_body_init(&mb, &body, mem, big);
	rq.body = &body;
	t0 = timefmt_mono_ms();
	rc = http_perform(h, &rq, NULL, &err);
	is_int(rc, -ETIMEDOUT, "an upload the server stops reading fails (%s)", err.msg);
	/* curl averages the speed over ~5 s, and the first megabytes went at once. */
	ok(timefmt_mono_ms() - t0 < 15000, "within the progress deadline (%lld ms)",
	   (long long)(timefmt_mono_ms() - t0));
	http_free(h);
	free(mem);
}

static void test_abort(struct http *h)
{
	struct call calls[] = {
		{.h = h, .path = "/stall"},
		{.h = h, .path = "/upload", .create = true},
		{.h = h, .path = "/busy"},
		{.h = h, .sleep_only = true},
	};
	size_t n = sizeof(calls) / sizeof(calls[0]);
	int before, holding0 = atomic_load(&srv_holding), requests0 = atomic_load(&srv_requests);
	struct bfs_err err = BFS_ERR_INIT;
	struct http_request rq = {.method = HTTP_GET, .retry = HTTP_RETRY_IDEMPOTENT};
	char u[128];
	int64_t t0;

	for (size_t i = 0; i < n; i++)
		pthread_create(&calls[i].tid, NULL, call_main, &calls[i]);
	ok(wait_until(&srv_holding, holding0 + 2, 10000),
	   "a download and an upload are stalled at the server");
	ok(wait_until(&srv_requests, requests0 + 3, 10000), "the 503 was answered");
	usleep(300000); /* the upload's buffers fill; the 503's backoff (30 s) starts */
	t0 = timefmt_mono_ms();
	http_abort_all();
	http_abort_all(); /* idempotent */
	ok(http_aborted(), "http_aborted() tells");
	for (size_t i = 0; i < n; i++) {
		pthread_join(calls[i].tid, NULL);
		ok(calls[i].ended - t0 < 500, "%s ended %lld ms after the abort",
		   calls[i].sleep_only ? "the sleep" : calls[i].path,
		   (long long)(calls[i].ended - t0));
	}
	is_int(calls[0].rc, -ECANCELED, "the stalled download: -ECANCELED");
	is_str(calls[0].err.msg, HTTP_CANCELLED_MSG, "with a clear message");
	is_int(calls[1].rc, -EAGAIN, "the stalled create that left: -EAGAIN (may have landed)");
	ok(strstr(calls[1].err.msg, HTTP_CANCELLED_MSG) != NULL, "saying why: %s",
	   calls[1].err.msg);
	is_int(calls[2].rc, -ECANCELED, "the backoff before a retry: -ECANCELED");
	is_int(calls[3].rc, -ECANCELED, "the sleep: -ECANCELED");

	before = atomic_load(&srv_requests);
	url(u, sizeof(u), "/ok");
	rq.url = u;
	t0 = timefmt_mono_ms();
	is_int(http_perform(h, &rq, NULL, &err), -ECANCELED, "a call after the abort is refused");
	ok(timefmt_mono_ms() - t0 < 100, "at once");
	usleep(100000);
	is_int(atomic_load(&srv_requests), before, "without sending anything");
	is_int(http_sleep_ms(10000), -ECANCELED, "a sleep after the abort returns at once");
}

int main(void)
{
	struct http *h = NULL;

	if (http_global_init() || srv_start() || http_new(&h, NULL, NULL)) {
		printf("Bail out! cannot set up\n");
		return 1;
	}
	ok(http_abort_fd() >= 0, "the stop descriptor exists");
	ok(!http_aborted(), "not stopping at start");
	test_ok(h);
	test_rate_limit(h);
	test_sleep();
	test_trickle();
	test_upload_stall();
	test_abort(h); /* last: the switch is one way */
	http_free(h);
	http_global_cleanup();
	return tap_done();
}
