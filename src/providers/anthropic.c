// SPDX-License-Identifier: MIT
/*
 * provider = anthropic: the Message Batches API
 * (https://docs.anthropic.com/en/api/creating-message-batches). Streams
 * the create body from the spool file, maps MessageBatch onto struct provider_batch, pages
 * through listings and streams results line by line. The API key lives only in this struct's
 * memory: it must never be logged, nor any header or body. A create whose answer may have
 * been lost is never sent again here: it returns -EAGAIN and the caller runs find().
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "buf.h"
#include "conf.h"
#include "err.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "prompt.h"
#include "providers/common.h"
#include "providers/anthropic.h"
#include "state.h"
#include "timefmt.h"

#define ANTH_BASE_DEFAULT     "https://api.anthropic.com"
#define ANTH_VERSION_DEFAULT  "2023-06-01"
#define ANTH_PATH	      "/v1/messages/batches"
#define ANTH_URL_MAX	      4096
#define ANTH_POLL_HINT_MAX_MS (60 * 60 * 1000) /* a poll's retry-after beyond: ignored */
#define ANTH_PAGE	      100 /* batches per listing page (the API allows 1..1000) */
#define ANTH_SKEW_MS	      (5 * 60 * 1000)	 /* our clock against the API's, for find() */
#define ANTH_FIND_PAGES_MAX   100		 /* find() gives up after this many newer batches */
#define ANTH_LIST_PAGES_MAX   100000		 /* a loop guard, not a limit anyone should reach */
#define ANTH_RESP_MAX	      (8u * 1024 * 1024) /* one JSON answer; a page of 100 is ~50 KiB */
#define ANTH_CHUNK	      (64 * 1024)
/* find() once the API's clock is known from its Date header: whole seconds, plus latency. */
#define ANTH_DATE_MARGIN_MS 2000
#define ANTH_NO_OFFSET	    INT64_MIN
/* Above this a create body relies on the low-speed timeout, not the total one: a 256 MB
 * upload on a slow link takes longer than any fixed deadline we would pick for JSON calls. */
#define ANTH_BIG_BODY	       (32 * 1024 * 1024)
#define ANTH_TOKEN_TTL_DEFAULT 3000	       /* s a plain bearer token is reused */
#define ANTH_TOKEN_EARLY_MS    (5 * 60 * 1000) /* refresh this long before a stated expiry */

struct provider {
	struct http *http;
	char base[1024];   /* base_url without trailing slash */
	char *hdr_key;	   /* "x-api-key: ..." (secret: wiped at free, never logged) */
	char *hdr_version; /* "anthropic-version: ..." */
	char *hdr_beta;	   /* "anthropic-beta: ...", NULL when not configured */
	/* NULL-terminated header lists, pointing at the strings above. */
	const char *hdr_json[6];    /* requests with a JSON body */
	const char *hdr_plain[5];   /* GET and bodiless POST, JSON answer */
	const char *hdr_results[4]; /* the results download */
	/*
	 * auth = bearer: api_key_command prints a short-lived token (workload identity
	 * federation), sent as "Authorization: Bearer" and fetched again on a 401 or at
	 * token_until. token_conf holds what conf_command_output() needs (name, timeout).
	 */
	bool bearer;
	char *token_cmd;
	struct remote_conf token_conf;
	int64_t token_ttl_ms;
	bool no_stream;		    /* stream_upload = off: every create is sent at the close */
	pthread_mutex_t token_lock; /* protects token and token_until; taken alone */
	char *token;		    /* secret, NULL before the first */
	int64_t token_until;	    /* monotonic ms */
};

/* Helpers */

/* The writer may pause this long while a create streams its part; then the stream gives up
 * (the create is made at the close, as without it). */
#define ANTH_STREAM_IDLE_MS (30 * 1000)

/* url = base + ANTH_PATH [+ "/" + id [+ tail]]. Returns 0 or -errno. */
static int batch_url(const struct provider *p, const char *id, const char *tail, struct buf *url)
{
	int rc = buf_addf(url, "%s%s", p->base, ANTH_PATH);

	if (!rc && id) {
		rc = buf_addstr(url, "/");
		if (!rc)
			rc = http_url_escape(id, url);
	}
	if (!rc && tail)
		rc = buf_addstr(url, tail);
	return rc;
}

/* A time field: ms since the epoch, 0 when null, absent or unreadable. */
static int64_t json_time(const cJSON *o, const char *key)
{
	const char *s = json_str(o, key);
	int64_t ms;

	return s && !timefmt_parse(s, &ms) ? ms : 0;
}

/* processing_status: in_progress, canceling, ended (canceled when a cancel was initiated). */
int anthropic_state_from(const char *processing_status, bool cancel_initiated,
			 enum batch_state *out)
{
	static const struct state_word map[] = {
		{"in_progress", BATCH_IN_PROGRESS},
		{"canceling", BATCH_CANCELING},
		{"ended", BATCH_COMPLETED},
	};
	int rc = state_map_word(map, sizeof(map) / sizeof(map[0]), processing_status, false, out);

	/* docs/semantics.md: Anthropic "ended" is canceled when a cancel was initiated. */
	if (!rc && *out == BATCH_COMPLETED && cancel_initiated)
		*out = BATCH_CANCELED;
	return rc;
}

/* MessageBatch (spec section 3) -> provider_batch. -EBADMSG when it is not one. */
static int batch_from_json(const cJSON *o, struct provider_batch *out, struct bfs_err *err)
{
	struct provider_batch b;
	const char *id = json_str(o, "id");
	const char *ps = json_str(o, "processing_status");
	const char *url = json_str(o, "results_url");
	const cJSON *rc = cJSON_GetObjectItemCaseSensitive(o, "request_counts");
	bool canceled = json_is_set(o, "cancel_initiated_at");
	bool archived = json_is_set(o, "archived_at");
	bool ended;

	if (!cJSON_IsObject(o) || !id || !ps) {
		err_set(err, "the answer is not a message batch");
		return -EBADMSG;
	}
	if (!provider_id_is_safe(id)) {
		err_set(err, "the batch id is not a safe file name");
		return -EBADMSG;
	}
	memset(&b, 0, sizeof(b));
	snprintf(b.id, sizeof(b.id), "%s", id);
	snprintf(b.provider_state, sizeof(b.provider_state), "%s", ps);
	if (anthropic_state_from(ps, canceled, &b.state)) {
		/* A word this version does not know: keep polling, show the word verbatim. */
		log_debug("anthropic: batch %s has unknown processing_status", b.id);
		b.state = BATCH_IN_PROGRESS;
	}
	b.counts.processing = json_count(rc, "processing");
	b.counts.succeeded = json_count(rc, "succeeded");
	b.counts.errored = json_count(rc, "errored");
	b.counts.canceled = json_count(rc, "canceled");
	b.counts.expired = json_count(rc, "expired");
	b.counts.total = b.counts.processing + b.counts.succeeded + b.counts.errored +
			 b.counts.canceled + b.counts.expired;
	/* An ended batch whose every request expired (the 24 h window passed) did not
	 * complete: it expired, as OpenAI's word for the same end says. */
	if (b.state == BATCH_COMPLETED && b.counts.total && b.counts.expired == b.counts.total)
		b.state = BATCH_EXPIRED;
	b.created_at = json_time(o, "created_at");
	b.ended_at = json_time(o, "ended_at");
	b.expires_at = json_time(o, "expires_at");
	ended = !strcmp(ps, "ended");
	/* Results stay downloadable from the end until archived_at is set (spec section 7). */
	b.results_available = ended && !archived;
	b.results_gone = archived;
	if (url && strlen(url) < sizeof(b.ref) && !http_has_ctl(url))
		snprintf(b.ref, sizeof(b.ref), "%s", url);
	*out = b;
	return 0;
}

/* Bearer tokens (auth = bearer) */

/*
 * expires_at as unix seconds or an RFC 3339 string, else expires_in seconds: ms of life left
 * (wall clock), 0 when neither is there.
 */
static int64_t token_life_ms(const cJSON *root)
{
	const cJSON *at = cJSON_GetObjectItemCaseSensitive(root, "expires_at");
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
	int64_t ms = 0;

	if (cJSON_IsNumber(at))
		return (int64_t)(at->valuedouble * 1000) - timefmt_now_ms();
	if (cJSON_IsString(at) && !timefmt_parse(at->valuestring, &ms))
		return ms - timefmt_now_ms();
	if (cJSON_IsNumber(in))
		return (int64_t)(in->valuedouble * 1000);
	if (cJSON_IsString(in))
		return (int64_t)(strtod(in->valuestring, NULL) * 1000);
	return 0;
}

/*
 * Runs api_key_command for a new token: a plain token (its first line), reused for
 * token_ttl, or JSON {access_token | token, expires_in | expires_at}, reused until shortly
 * before it expires. Called with token_lock held.
 */
static int token_fetch(struct provider *p, struct bfs_err *err)
{
	char *out = conf_command_output(&p->token_conf, "api_key_command", p->token_cmd, err);
	int64_t now = timefmt_mono_ms(), life = p->token_ttl_ms;
	cJSON *root = NULL;
	const char *tok = out;
	int rc = 0;

	if (!out)
		return -EACCES;
	if (out[0] == '{') {
		root = cJSON_Parse(out);
		tok = json_nonempty(root, "access_token");
		if (!tok)
			tok = json_nonempty(root, "token");
		if (token_life_ms(root)) {
			int64_t l = token_life_ms(root);

			life = l - (l / 4 < ANTH_TOKEN_EARLY_MS ? l / 4 : ANTH_TOKEN_EARLY_MS);
		}
	} else {
		out[strcspn(out, "\r\n")] = '\0';
	}
	if (!tok || !*tok || http_has_ctl(tok) || life <= 0) {
		err_set(err, "[%s] api_key_command printed no usable bearer token%s",
			p->token_conf.name, life <= 0 ? " (it has expired)" : "");
		rc = -EACCES;
		goto out;
	}
	conf_secret_free(p->token);
	p->token = strdup(tok);
	if (!p->token) {
		err_set(err, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	p->token_until = now + life;
	log_debug("remote '%s': new bearer token from api_key_command", p->token_conf.name);
out:
	if (root) {
		/* The parsed copy held the token too. */
		for (cJSON *c = root->child; c; c = c->next)
			if (c->valuestring)
				explicit_bzero(c->valuestring, strlen(c->valuestring));
		cJSON_Delete(root);
	}
	conf_secret_free(out);
	return rc;
}

/*
 * "Authorization: Bearer <token>" (malloc'd, a secret), fetched anew when stale, or when
 * refused (the header a 401 answered) still holds the current token: of several threads
 * refused at once, one runs the command and the others take its token.
 */
static int token_header(struct provider *p, const char *refused, char **hdr, struct bfs_err *err)
{
	const char *old = refused ? strrchr(refused, ' ') : NULL;
	int rc = 0;

	pthread_mutex_lock(&p->token_lock);
	if (!p->token || timefmt_mono_ms() >= p->token_until ||
	    (refused && (!old || !strcmp(old + 1, p->token))))
		rc = token_fetch(p, err);
	if (!rc && asprintf(hdr, "Authorization: Bearer %s", p->token) < 0) {
		*hdr = NULL;
		err_set(err, "out of memory");
		rc = -ENOMEM;
	}
	pthread_mutex_unlock(&p->token_lock);
	return rc;
}

/*
 * http_perform() with the credentials in front of rq's headers. With auth = bearer a 401
 * (had no effect: the token expired or was revoked early) runs the command again and tries
 * once more.
 */
static int anth_perform(struct provider *p, struct http_request *rq, struct http_response *rs,
			struct bfs_err *err)
{
	const char *const *base = rq->headers;
	struct http_response r = {0};
	char *auth = NULL, *refused = NULL;
	int rc = 0;

	if (!p->bearer)
		return http_perform(p->http, rq, rs, err);
	for (int i = 0; i < 2; i++) {
		const char *hdrs[8];
		size_t n = 0;

		rc = token_header(p, refused, &auth, err);
		if (rc)
			break;
		hdrs[n++] = auth;
		for (const char *const *h = base; h && *h && n + 1 < sizeof(hdrs) / sizeof(*hdrs);
		     h++)
			hdrs[n++] = *h;
		hdrs[n] = NULL;
		rq->headers = hdrs;
		r = (struct http_response){0};
		rc = http_perform(p->http, rq, &r, err);
		rq->headers = base;
		if (!(rc == -EACCES && r.status == 401))
			break;
		refused = auth; /* the next round needs a newer token than this */
		auth = NULL;
		log_debug("remote '%s': bearer token refused (HTTP 401); running api_key_command "
			  "again",
			  p->token_conf.name);
	}
	conf_secret_free(auth);
	conf_secret_free(refused);
	if (rs)
		*rs = r;
	return rc;
}

/* Performs a JSON call and parses the answer into *root (the caller frees it). */
static int call_json(struct provider *p, enum http_method m, const char *url,
		     const char *const *headers, const struct http_body *body,
		     enum http_retry retry, provider_retry_fn on_retry, void *retry_ctx,
		     struct http_response *rs, cJSON **root, struct bfs_err *err)
{
	struct http_request rq = {
		.method = m,
		.url = url,
		.headers = headers,
		.body = body,
		.retry = retry,
		.stream = body && body->length > ANTH_BIG_BODY,
		.on_retry = on_retry,
		.retry_ctx = retry_ctx,
	};

	return provider_call_json(p, anth_perform, &rq, ANTH_RESP_MAX, root, rs, err);
}

/* open / free */

static void anth_free(struct provider *p)
{
	if (!p)
		return;
	if (p->hdr_key) {
		explicit_bzero(p->hdr_key, strlen(p->hdr_key));
		free(p->hdr_key);
	}
	free(p->hdr_version);
	free(p->hdr_beta);
	conf_secret_free(p->token);
	free(p->token_cmd);
	pthread_mutex_destroy(&p->token_lock);
	http_free(p->http);
	free(p);
}

/* auth = bearer (else the x-api-key of api_key_env / api_key_command). */
static int bearer_config(struct provider *p, const struct remote_conf *conf, struct bfs_err *err)
{
	const char *auth = conf_get(conf, "auth", NULL);
	const char *cmd = conf_get(conf, "api_key_command", NULL);
	double ttl = conf_get_double(conf, "token_ttl", ANTH_TOKEN_TTL_DEFAULT);

	if (!auth)
		return 0;
	if (strcmp(auth, "bearer")) {
		err_set(err,
			"[%s] auth = %.40s: the only value is bearer (else api_key_env or "
			"api_key_command give an x-api-key)",
			conf->name, auth);
		return -EINVAL;
	}
	if (!cmd || !*cmd || conf_get(conf, "api_key_env", NULL)) {
		err_set(err,
			"[%s] auth = bearer needs api_key_command (and no api_key_env): it "
			"is run again for each new token",
			conf->name);
		return -EINVAL;
	}
	if (!(ttl > 0 && ttl < 1e7)) {
		err_set(err, "[%s] token_ttl must be a positive number of seconds", conf->name);
		return -EINVAL;
	}
	p->token_cmd = strdup(cmd);
	if (!p->token_cmd) {
		err_set(err, "[%s] out of memory", conf->name);
		return -ENOMEM;
	}
	snprintf(p->token_conf.name, sizeof(p->token_conf.name), "%s", conf->name);
	p->token_conf.command_timeout = conf->command_timeout;
	p->token_ttl_ms = (int64_t)(ttl * 1000);
	p->bearer = true;
	return 0;
}

static int anth_open(struct provider **out, const struct remote_conf *conf, const char *state_dir,
		     struct bfs_err *err)
{
	const char *base = conf_get(conf, "base_url", NULL);
	const char *version = conf_get(conf, "anthropic_version", ANTH_VERSION_DEFAULT);
	const char *beta = conf_get(conf, "anthropic_beta", NULL);
	const char *stream;
	struct provider *p = NULL;
	char *key = NULL;
	size_t n, scheme = 0;
	int rc, i;

	(void)state_dir; /* nothing to keep on disk: the API holds the batches */
	if (!base || !*base)
		base = getenv("ANTHROPIC_BASE_URL");
	if (!base || !*base)
		base = ANTH_BASE_DEFAULT;
	n = strlen(base);
	while (n && base[n - 1] == '/')
		n--;
	if (!strncasecmp(base, "http://", 7))
		scheme = 7;
	else if (!strncasecmp(base, "https://", 8))
		scheme = 8;
	if (!scheme || n <= scheme || n >= sizeof(p->base) || http_has_ctl(base) ||
	    strpbrk(base, "?#")) {
		err_set(err, "[%s] base_url '%.200s' is not an http:// or https:// URL", conf->name,
			base);
		return -EINVAL;
	}
	if (!*version || http_has_ctl(version) || (beta && http_has_ctl(beta))) {
		err_set(err, "[%s] anthropic_version and anthropic_beta must be one-line words",
			conf->name);
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		goto nomem;
	pthread_mutex_init(&p->token_lock, NULL);
	memcpy(p->base, base, n);
	p->base[n] = '\0';
	rc = bearer_config(p, conf, err);
	if (rc)
		goto fail;
	stream = conf_get(conf, "stream_upload", "on");
	if (strcmp(stream, "on") && strcmp(stream, "off")) {
		err_set(err, "[%s] stream_upload must be on or off, not '%.64s'", conf->name,
			stream);
		rc = -EINVAL;
		goto fail;
	}
	p->no_stream = !strcmp(stream, "off");
	if (p->bearer)
		goto headers;
	key = conf_secret(conf, "api_key_env", "api_key_command", "ANTHROPIC_API_KEY", err);
	if (!key) {
		rc = -EINVAL;
		goto fail;
	}
	if (!*key || http_has_ctl(key)) {
		err_set(err, "[%s] the API key is empty or spans lines", conf->name);
		rc = -EINVAL;
		goto fail;
	}
	if (asprintf(&p->hdr_key, "x-api-key: %s", key) < 0) {
		p->hdr_key = NULL;
		goto nomem;
	}
headers:
	if (asprintf(&p->hdr_version, "anthropic-version: %s", version) < 0) {
		p->hdr_version = NULL;
		goto nomem;
	}
	if (beta && *beta && asprintf(&p->hdr_beta, "anthropic-beta: %s", beta) < 0) {
		p->hdr_beta = NULL;
		goto nomem;
	}
	rc = provider_http_new(conf, &p->http, err);
	if (rc)
		goto fail;
	i = 0;
	if (p->hdr_key) /* else anth_perform() puts the bearer token first */
		p->hdr_results[i++] = p->hdr_key;
	p->hdr_results[i++] = p->hdr_version;
	if (p->hdr_beta)
		p->hdr_results[i++] = p->hdr_beta;
	p->hdr_results[i] = NULL;
	memcpy(p->hdr_plain, p->hdr_results, sizeof(p->hdr_results));
	p->hdr_plain[i] = "accept: application/json";
	memcpy(p->hdr_json, p->hdr_plain, sizeof(p->hdr_plain));
	p->hdr_json[i + 1] = "content-type: application/json";
	if (p->bearer) {
		/* Run the command now, as a key command runs at mount: fail early. */
		char *hdr = NULL;

		rc = token_header(p, NULL, &hdr, err);
		conf_secret_free(hdr);
		if (rc)
			goto fail;
	}
	conf_secret_free(key);
	*out = p;
	return 0;
nomem:
	err_set(err, "[%s] out of memory", conf->name);
	rc = -ENOMEM;
fail:
	if (key) {
		explicit_bzero(key, strlen(key));
		free(key);
	}
	anth_free(p);
	return rc;
}

/* submit: the create body, streamed from the spool file */

static const char body_head[] = "{\"requests\":[";
static const char body_tail[] = "]}";

/*
 * The create body produced on demand: the spool file's non-blank lines joined with ',' inside
 * {"requests":[...]}. Leading blanks of a line and the CR of a CRLF are dropped (JSON
 * whitespace either way); nothing else of a line changes.
 */
struct spool_body {
	struct provider_spool sp; /* the part's bytes */
	enum {
		SB_HEAD,
		SB_LINES,
		SB_TAIL,
		SB_DONE
	} phase;
	size_t lit;	 /* bytes of body_head or body_tail given */
	bool line_start; /* skipping the blanks that open a line */
	bool cr;	 /* a '\r' held back: dropped if a '\n' follows */
	bool comma;	 /* a ',' is owed before this line's first byte */
	uint64_t lines;	 /* non-blank lines begun */
	bool hold;	 /* a live body (stream): sp.end is not the part's end yet */
	/*
	 * A live body: the file may shrink under it until the commit (a truncate aborts the
	 * stream, but it may be read first), so a file that ends before sp.end is a failure,
	 * never the body's end; and the end goes only after exactly want_lines requests.
	 */
	bool live;
	uint64_t want_lines;
};

static int spool_rewind(void *ctx)
{
	struct spool_body *sb = ctx;

	sb->sp.off = sb->sp.start;
	sb->sp.in_len = sb->sp.in_pos = 0;
	sb->sp.eof = false;
	sb->phase = SB_HEAD;
	sb->lit = 0;
	sb->line_start = true;
	sb->cr = sb->comma = false;
	sb->lines = 0;
	return 0;
}

static size_t copy_lit(struct spool_body *sb, const char *lit, size_t litlen, char *dst, size_t n)
{
	size_t k = litlen - sb->lit < n ? litlen - sb->lit : n;

	memcpy(dst, lit + sb->lit, k);
	sb->lit += k;
	return k;
}

static long spool_read(void *ctx, char *dst, size_t n)
{
	struct spool_body *sb = ctx;
	size_t k = 0;

	while (k < n) {
		char c;

		switch (sb->phase) {
		case SB_HEAD:
			k += copy_lit(sb, body_head, sizeof(body_head) - 1, dst + k, n - k);
			if (sb->lit == sizeof(body_head) - 1) {
				sb->phase = SB_LINES;
				sb->lit = 0;
			}
			continue;
		case SB_TAIL:
			k += copy_lit(sb, body_tail, sizeof(body_tail) - 1, dst + k, n - k);
			if (sb->lit == sizeof(body_tail) - 1)
				sb->phase = SB_DONE;
			continue;
		case SB_DONE:
			return (long)k;
		case SB_LINES:
			break;
		}
		if (sb->sp.in_pos == sb->sp.in_len) {
			int r;

			if (sb->hold && sb->sp.off >= sb->sp.end)
				return (long)k; /* the rest is not written (checked) yet */
			if (sb->sp.eof && sb->live &&
			    (sb->sp.off < sb->sp.end || sb->lines != sb->want_lines))
				return -EIO; /* not the part that was checked: never end it */
			if (sb->sp.eof) {
				/* A CR still held back here ends the file: trailing space, dropped. */
				sb->phase = SB_TAIL;
				continue;
			}
			r = provider_spool_fill(&sb->sp);
			if (r)
				return r;
			continue;
		}
		c = sb->sp.in[sb->sp.in_pos];
		if (sb->line_start) {
			if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
				sb->sp.in_pos++;
				continue;
			}
			sb->line_start = false;
			sb->comma = sb->lines++ > 0;
		}
		if (sb->comma) {
			dst[k++] = ',';
			sb->comma = false;
		} else if (sb->cr) {
			sb->cr = false;
			if (c == '\n') {
				sb->sp.in_pos++;
				sb->line_start = true;
			} else {
				dst[k++] = '\r';
			}
		} else if (c == '\n') {
			sb->sp.in_pos++;
			sb->line_start = true;
		} else if (c == '\r') {
			sb->sp.in_pos++;
			sb->cr = true;
		} else {
			/* The common case: a run of ordinary bytes. */
			size_t room = n - k, avail = sb->sp.in_len - sb->sp.in_pos;
			size_t run = avail < room ? avail : room;
			const char *s = sb->sp.in + sb->sp.in_pos;
			const char *end = memchr(s, '\n', run);

			/* memchr: this runs over every byte of the upload */
			if (end)
				run = (size_t)(end - s);
			end = memchr(s, '\r', run);
			if (end)
				run = (size_t)(end - s); /* >= 1: s[0] is neither */
			memcpy(dst + k, s, run);
			k += run;
			sb->sp.in_pos += run;
		}
	}
	return (long)k;
}

/*
 * stream_*: the create sent while its part is written (provider.h). The body is the same
 * spool_body as submit's, its end (sp.end) moved by stream_more() and held back (hold) until
 * stream_end(); one thread per stream runs the POST, its read callback waiting for more
 * (HTTP_BODY_WAIT) in between. A body whose end was never sent creates nothing: an abort
 * or a crash leaves the server an incomplete chunked body.
 */
struct provider_stream {
	struct provider *p;
	pthread_mutex_t lock; /* protects what follows sb; taken alone */
	struct spool_body sb; /* the stream thread's only */
	int wake_fd;	      /* eventfd: made readable by more, end and abort */
	char *url;
	pthread_t th;
	int64_t avail;	     /* bytes of path that may be sent */
	int64_t more_ms;     /* when avail last moved (monotonic) */
	bool final;	     /* stream_end(): avail is the part's end */
	uint64_t want_lines; /* and the part's requests */
	bool aborted;
	bool done;     /* the thread's POST is over */
	bool body_end; /* the body's end was given to curl */
	long status;   /* of the answer, 0 when none */
	int rc;	       /* the POST's */
	struct provider_batch b;
	struct bfs_err err;
};

static void stream_wake(struct provider_stream *st)
{
	uint64_t one = 1;

	if (write(st->wake_fd, &one, sizeof(one)) < 0) {
		/* eventfd full (never: 2^64 - 2): it is readable anyway */
	}
}

static long stream_read(void *ctx, char *dst, size_t n)
{
	struct provider_stream *st = ctx;
	struct spool_body *sb = &st->sb;
	uint64_t drain;
	long k;
	int rc = 0;

	if (read(st->wake_fd, &drain, sizeof(drain)) < 0) {
		/* EAGAIN: nothing new was signalled; the state below says what there is */
	}
	pthread_mutex_lock(&st->lock);
	if (st->aborted)
		rc = -ECANCELED;
	else if (!st->final && timefmt_mono_ms() - st->more_ms > ANTH_STREAM_IDLE_MS)
		rc = -ETIMEDOUT;
	sb->sp.end = st->avail;
	sb->hold = !st->final;
	sb->want_lines = st->want_lines;
	pthread_mutex_unlock(&st->lock);
	if (rc)
		return rc; /* curl aborts: the body's end is never sent */
	k = spool_read(sb, dst, n);
	if (k == 0 && sb->phase != SB_DONE)
		return HTTP_BODY_WAIT;
	if (k == 0) {
		pthread_mutex_lock(&st->lock);
		st->body_end = true;
		pthread_mutex_unlock(&st->lock);
	}
	return k;
}

static void *stream_main(void *arg)
{
	struct provider_stream *st = arg;
	struct http_body body = {stream_read, NULL, st, -1};
	struct http_request rq = {
		.method = HTTP_POST,
		.url = st->url,
		.headers = st->p->hdr_json,
		.body = &body,
		.retry = HTTP_RETRY_CREATE,
		.live = true,
		.wake_fd = st->wake_fd,
	};
	struct http_response rs = {0};
	struct bfs_err err = BFS_ERR_INIT;
	struct provider_batch b;
	cJSON *root = NULL;
	int rc;

	rc = provider_call_json(st->p, anth_perform, &rq, ANTH_RESP_MAX, &root, &rs, &err);
	if (rc == -EBADMSG)
		rc = -EAGAIN; /* a 2xx: made, but which batch it is cannot be told */
	else if (!rc && batch_from_json(root, &b, &err))
		rc = -EAGAIN;
	cJSON_Delete(root);
	pthread_mutex_lock(&st->lock);
	st->rc = rc;
	st->err = err;
	st->status = rs.status;
	if (!rc)
		st->b = b;
	st->done = true;
	pthread_mutex_unlock(&st->lock);
	return NULL;
}

static void stream_free(struct provider_stream *st)
{
	if (st->sb.sp.fd >= 0)
		close(st->sb.sp.fd);
	if (st->wake_fd >= 0)
		close(st->wake_fd);
	pthread_mutex_destroy(&st->lock);
	free(st->url);
	free(st);
}

static int anth_stream_begin(struct provider *p, const char *path, struct provider_stream **out,
			     struct bfs_err *err)
{
	struct provider_stream *st;
	struct buf url = BUF_INIT(ANTH_URL_MAX);
	int rc;

	*out = NULL;
	if (p->no_stream) {
		err_set(err, "stream_upload = off");
		return -ENOTSUP;
	}
	if (p->bearer) {
		/* A refused token is tried again with a new one: a body cannot be sent twice. */
		err_set(err, "auth = bearer: no streamed create");
		return -ENOTSUP;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		err_set(err, "out of memory");
		return -ENOMEM;
	}
	st->p = p;
	pthread_mutex_init(&st->lock, NULL);
	st->sb.sp.fd = open(path, O_RDONLY | O_CLOEXEC);
	st->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	spool_rewind(&st->sb);
	st->sb.hold = st->sb.live = true;
	st->more_ms = timefmt_mono_ms();
	rc = st->sb.sp.fd < 0 || st->wake_fd < 0 ? -errno : batch_url(p, NULL, NULL, &url);
	if (!rc && !(st->url = strdup(url.data)))
		rc = -ENOMEM;
	buf_release(&url);
	if (!rc && (rc = -pthread_create(&st->th, NULL, stream_main, st)))
		err_set(err, "cannot start a thread: %s", strerror(-rc));
	else if (!rc)
		(void)pthread_setname_np(st->th, "bfs-stream"); /* top -H, perf, the bench */
	if (rc) {
		if (!err_is_set(err))
			err_set(err, "cannot start a streamed create: %s", strerror(-rc));
		stream_free(st);
		return rc;
	}
	*out = st;
	return 0;
}

static bool anth_stream_more(struct provider_stream *st, int64_t avail)
{
	bool alive;

	pthread_mutex_lock(&st->lock);
	if (avail > st->avail) {
		st->avail = avail;
		st->more_ms = timefmt_mono_ms();
	}
	alive = !st->done;
	pthread_mutex_unlock(&st->lock);
	stream_wake(st);
	return alive;
}

static void anth_stream_abort(struct provider_stream *st)
{
	if (!st)
		return;
	pthread_mutex_lock(&st->lock);
	st->aborted = true;
	pthread_mutex_unlock(&st->lock);
	stream_wake(st);
	pthread_join(st->th, NULL);
	stream_free(st);
}

static int anth_stream_end(struct provider_stream *st, const struct provider_submit *s,
			   struct provider_batch *out, struct bfs_err *err)
{
	bool fits;
	int rc;

	pthread_mutex_lock(&st->lock);
	fits = s->offset == 0 && s->length >= st->avail && s->nrequests;
	if (fits) {
		st->avail = s->length;
		st->want_lines = s->nrequests;
		st->final = true;
	}
	pthread_mutex_unlock(&st->lock);
	if (!fits) {
		anth_stream_abort(st);
		err_set(err, "the streamed create does not match the part");
		return -ESTALE;
	}
	stream_wake(st);
	pthread_join(st->th, NULL);
	rc = st->rc;
	*err = st->err;
	if (!st->body_end && !(st->status >= 200 && st->status <= 299)) {
		/* Its end never left: the server holds an incomplete body and made nothing. */
		rc = -ESTALE;
	} else if (rc && rc != -EAGAIN) {
		/*
		 * A refusal made nothing either (http.h); submit() sends the part again, from
		 * the start, with its retries: a refusal of this stream (a proxy's timeout of a
		 * slow body) is not taken for the part's.
		 */
		rc = -ESTALE;
	}
	if (!rc) {
		*out = st->b;
		log_debug("anthropic: created batch %s (streamed, %" PRIu64 " requests)", out->id,
			  st->sb.lines);
	} else if (rc == -EAGAIN) {
		err_prefix(err, "cannot create batch");
	}
	stream_free(st);
	return rc;
}

/* First pass: the exact body length and the number of requests, without keeping the body. */
static int spool_measure(struct spool_body *sb, int64_t *length, uint64_t *lines)
{
	char scratch[ANTH_CHUNK];
	int64_t total = 0;
	long k;

	spool_rewind(sb);
	while ((k = spool_read(sb, scratch, sizeof(scratch))) > 0)
		total += k;
	if (k < 0)
		return (int)k;
	*length = total;
	*lines = sb->lines;
	return spool_rewind(sb);
}

static int anth_submit(struct provider *p, const struct provider_submit *s,
		       struct provider_batch *out, provider_retry_fn on_retry, void *retry_ctx,
		       struct bfs_err *err)
{
	struct spool_body *sb = calloc(1, sizeof(*sb));
	struct buf url = BUF_INIT(ANTH_URL_MAX);
	struct http_body body = {spool_read, spool_rewind, sb, -1};
	struct provider_batch b;
	cJSON *root = NULL;
	uint64_t lines = 0;
	int rc;

	if (!sb) {
		err_set(err, "cannot create batch: out of memory");
		return -ENOMEM;
	}
	sb->sp.start = s->offset;
	sb->sp.end = s->offset + s->length;
	sb->sp.fd = open(s->path, O_RDONLY | O_CLOEXEC);
	if (sb->sp.fd < 0) {
		rc = -errno;
		err_set(err, "cannot create batch: cannot open '%s': %s", s->path, strerror(errno));
		goto out;
	}
	if (s->payload > 0 && s->nrequests) {
		/* Known from the planning pass: no first pass over the part. */
		body.length = (int64_t)(sizeof(body_head) - 1 + sizeof(body_tail) - 1) +
			      s->payload + (int64_t)s->nrequests - 1;
		lines = s->nrequests;
		rc = 0;
	} else {
		rc = spool_measure(sb, &body.length, &lines);
	}
	if (rc) {
		err_set(err, "cannot create batch: cannot read '%s': %s", s->path, strerror(-rc));
		goto out;
	}
	if (lines != s->nrequests) {
		err_set(err,
			"cannot create batch: '%s' has %" PRIu64 " requests, %" PRIu64
			" were validated",
			s->path, lines, s->nrequests);
		rc = -EIO;
		goto out;
	}
	rc = batch_url(p, NULL, NULL, &url);
	if (rc) {
		err_set(err, "cannot create batch: base_url too long");
		goto out;
	}
	rc = call_json(p, HTTP_POST, url.data, p->hdr_json, &body, HTTP_RETRY_CREATE, on_retry,
		       retry_ctx, NULL, &root, err);
	if (rc == -EBADMSG) {
		/* A 2xx came back: the batch exists, but we cannot tell which it is. */
		rc = -EAGAIN;
	} else if (!rc) {
		rc = batch_from_json(root, &b, err);
		if (rc)
			rc = -EAGAIN; /* as above */
	}
	if (rc) {
		err_prefix(err, "cannot create batch");
		goto out;
	}
	log_debug("anthropic: created batch %s (%" PRIu64 " requests, %" PRId64 " bytes)", b.id,
		  lines, body.length);
	*out = b;
out:
	cJSON_Delete(root);
	buf_release(&url);
	if (sb->sp.fd >= 0)
		close(sb->sp.fd);
	free(sb);
	return rc;
}

/* list / find */

/* The listing's pages (provider_list_pages): GET /v1/messages/batches?limit=&after_id=. */
struct list_ctx {
	struct buf url;
	int64_t *offset;
};

static int list_fetch(struct provider_pager *pg, long page, const char *cursor, cJSON **root,
		      const cJSON **items, struct bfs_err *err)
{
	struct list_ctx *lc = pg->ctx;
	struct http_response rs;
	int rc;

	buf_reset(&lc->url);
	rc = batch_url(pg->p, NULL, NULL, &lc->url);
	if (!rc)
		rc = buf_addf(&lc->url, "?limit=%d", ANTH_PAGE);
	if (!rc && cursor) {
		rc = buf_addstr(&lc->url, "&after_id=");
		if (!rc)
			rc = http_url_escape(cursor, &lc->url);
	}
	if (rc) {
		err_set(err, "base_url too long");
		return rc;
	}
	rc = call_json(pg->p, HTTP_GET, lc->url.data, pg->p->hdr_plain, NULL, HTTP_RETRY_IDEMPOTENT,
		       NULL, NULL, &rs, root, err);
	if (rc)
		return rc;
	/* Date has whole seconds and was stamped before we read it: a lower bound. */
	if (lc->offset && page == 0 && rs.date_ms && rs.local_ms)
		*lc->offset = rs.date_ms - rs.local_ms;
	*items = cJSON_GetObjectItemCaseSensitive(*root, "data");
	if (!cJSON_IsArray(*items)) {
		err_set(err, "the answer is not a page of batches");
		return -EBADMSG;
	}
	return 0;
}

static int list_item(struct provider_pager *pg, const cJSON *item, struct provider_batch *out)
{
	struct bfs_err berr = BFS_ERR_INIT;

	(void)pg;
	if (batch_from_json(item, out, &berr)) {
		log_warn("anthropic: skipping a listed batch: %s", berr.msg);
		return 1;
	}
	return 0;
}

static int list_next(struct provider_pager *pg, const cJSON *root, const char *cursor, char **next,
		     struct bfs_err *err)
{
	const char *last = json_str(root, "last_id");

	(void)pg;
	(void)err;
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "has_more")) || !last ||
	    !provider_id_is_safe(last) || (cursor && !strcmp(last, cursor)))
		return 0;
	*next = strdup(last);
	return *next ? 1 : -ENOMEM;
}

/*
 * Calls fn for each batch, newest first; fn returns < 0 to fail, > 0 to stop early. When
 * offset is not NULL and the first page has a Date header, *offset is set, before fn sees a
 * batch, to a lower bound of the API's clock minus ours (ms).
 */
static int list_pages(struct provider *p, provider_batch_fn fn, void *ctx, long max_pages,
		      int64_t *offset, struct bfs_err *err)
{
	struct list_ctx lc = {.url = BUF_INIT(ANTH_URL_MAX), .offset = offset};
	struct provider_pager pg = {
		.p = p,
		.ctx = &lc,
		.fetch = list_fetch,
		.item = list_item,
		.next = list_next,
		.max_pages = max_pages,
		.what = "batches",
	};
	int rc = provider_list_pages(&pg, fn, ctx, err);

	buf_release(&lc.url);
	return rc;
}

static int anth_list(struct provider *p, provider_batch_fn fn, void *ctx, struct bfs_err *err)
{
	int rc;

	err_clear(err);
	rc = list_pages(p, fn, ctx, ANTH_LIST_PAGES_MAX, NULL, err);
	if (rc && !err_is_set(err))
		err_set(err, "cannot list batches: %s", strerror(-rc));
	else if (rc)
		err_prefix(err, "cannot list batches");
	return rc;
}

struct find_ctx {
	const struct provider_submit *s;
	int64_t intent; /* by our clock */
	uint64_t n;
	int64_t offset; /* API clock minus ours, a lower bound; ANTH_NO_OFFSET when unknown */
	unsigned n_after, n_before; /* candidates at/after the intent, and just before it */
	struct provider_batch after, before; /* the last of each seen */
};

/*
 * The API keeps no identity, so a candidate is a batch with the submission's request count,
 * created at or after lo (the intent by the API's clock, from its Date header, less a margin;
 * without a date, the intent less a generous skew) and not owned by a batch directory here.
 * Exactly one candidate at or after the intent is ours; failing any, exactly one just before
 * it (our clock may run ahead of the API's). Two or more: nobody can tell which is ours, and
 * picking one could take another client's batch (and give its results to this directory).
 */
static int find_one(void *ctx, const struct provider_batch *b)
{
	struct find_ctx *f = ctx;
	bool known = f->offset != ANTH_NO_OFFSET;
	int64_t intent = known ? f->intent + f->offset : f->intent;
	int64_t lo = intent - (known ? ANTH_DATE_MARGIN_MS : ANTH_SKEW_MS);

	if (!b->created_at)
		return 0;
	if (b->created_at < lo)
		return 1; /* newest first: every later entry is older still */
	if (b->counts.total < 0 || (uint64_t)b->counts.total != f->n)
		return 0;
	if (f->s->owned && f->s->owned(f->s->owned_ctx, b->id))
		return 0;
	if (b->created_at >= intent) {
		f->n_after++;
		f->after = *b;
	} else if (!f->n_before++) {
		f->before = *b; /* newest first: the first seen is the newest */
	}
	return 0;
}

static int anth_find(struct provider *p, const struct provider_submit *s,
		     struct provider_batch *out, struct bfs_err *err)
{
	struct find_ctx f = {
		.s = s, .intent = s->intent_at, .n = s->nrequests, .offset = ANTH_NO_OFFSET};
	unsigned n;
	int rc = list_pages(p, find_one, &f, ANTH_FIND_PAGES_MAX, &f.offset, err);

	if (rc == -E2BIG && (f.n_after || f.n_before))
		rc = 0; /* the oldest were not all seen; those seen are the newest */
	if (rc) {
		err_prefix(err, "cannot look for the created batch");
		return rc;
	}
	n = f.n_after ? f.n_after : f.n_before;
	if (n == 0) {
		err_set(err, "no batch of %" PRIu64 " requests was created after the submission",
			s->nrequests);
		return -ENOENT;
	}
	if (n > 1) {
		err_set(err,
			"cannot tell which batch is ours: %u batches of %" PRIu64
			" requests made since the submission belong to no batch directory here",
			n, s->nrequests);
		return -ENOTUNIQ;
	}
	*out = f.n_after ? f.after : f.before;
	log_debug("anthropic: found batch %s for a lost create", out->id);
	return 0;
}

/* get / cancel */

static int one_batch(struct provider *p, const char *what, const char *id, const char *tail,
		     enum http_method m, provider_retry_fn on_retry, void *retry_ctx,
		     struct provider_batch *out, struct bfs_err *err)
{
	struct buf url = BUF_INIT(ANTH_URL_MAX);
	struct provider_batch b;
	struct http_response rs;
	cJSON *root = NULL;
	int rc;

	if (!provider_id_is_safe(id)) {
		err_set(err, "cannot %s batch: '%.*s' is not a batch id", what, 64, id);
		return -ENOENT;
	}
	rc = batch_url(p, id, tail, &url);
	if (rc) {
		err_set(err, "cannot %s batch '%s': base_url too long", what, id);
		goto out;
	}
	memset(&rs, 0, sizeof(rs));
	rc = call_json(p, m, url.data, p->hdr_plain, NULL, HTTP_RETRY_IDEMPOTENT, on_retry,
		       retry_ctx, &rs, &root, err);
	if (!rc)
		rc = batch_from_json(root, &b, err);
	if (rc) {
		err_prefix(err, "cannot %s batch '%s'", what, id);
		goto out;
	}
	/* The API hints retry-after on polls of a running batch: poll no sooner (spec 1.2). */
	if (rs.hint_ms > 0 && rs.hint_ms <= ANTH_POLL_HINT_MAX_MS)
		b.poll_after = timefmt_now_ms() + rs.hint_ms;
	*out = b;
out:
	cJSON_Delete(root);
	buf_release(&url);
	return rc;
}

static int anth_get(struct provider *p, const char *id, struct provider_batch *out,
		    provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err)
{
	return one_batch(p, "get", id, NULL, HTTP_GET, on_retry, retry_ctx, out, err);
}

static int anth_cancel(struct provider *p, const char *id, struct provider_batch *out,
		       struct bfs_err *err)
{
	/* Cancel is a POST without a body (the SDKs send none); repeating it is harmless. */
	return one_batch(p, "cancel", id, "/cancel", HTTP_POST, NULL, NULL, out, err);
}

/* results */

static int anth_results(struct provider *p, const struct provider_batch *b, provider_result_fn fn,
			provider_reset_fn reset, void *ctx, provider_retry_fn on_retry,
			void *retry_ctx, struct bfs_err *err)
{
	struct bfs_err line_err = BFS_ERR_INIT;
	struct provider_results r;
	struct buf url = BUF_INIT(ANTH_URL_MAX);
	struct http_request rq = {
		.method = HTTP_GET,
		.headers = p->hdr_results,
		.retry = HTTP_RETRY_IDEMPOTENT,
		.line_fn = provider_results_line,
		.max_line = PROVIDER_RESULT_LINE_MAX,
		.skip_long_lines = true,
		.line_ctx = &r,
		.reset = provider_results_reset,
		.stream = true,
		.on_retry = on_retry,
		.retry_ctx = retry_ctx,
	};
	int rc;

	provider_results_init(&r, fn, reset, ctx, on_retry, retry_ctx, &line_err);
	if (b->results_gone) {
		err_set(err, "the results of batch '%s' were archived by the provider", b->id);
		return -ENODATA;
	}
	if (!provider_id_is_safe(b->id)) {
		err_set(err, "cannot download results: '%.*s' is not a batch id", 64, b->id);
		return -ENOENT;
	}
	/* results_url is absolute; follow it only to the configured host (spec section 2.6). */
	if (b->ref[0] && http_is_same_origin(b->ref, p->base))
		rc = buf_addstr(&url, b->ref);
	else
		rc = batch_url(p, b->id, "/results", &url);
	if (rc) {
		err_set(err, "cannot download results of batch '%s': URL too long", b->id);
		goto out;
	}
	rq.url = url.data;
	rc = anth_perform(p, &rq, NULL, err);
	if (!rc)
		goto out;
	if (err_is_set(&line_err)) {
		err_set(err, "cannot download results of batch '%s': %s", b->id, line_err.msg);
	} else if (rc == -ENOENT && state_is_terminal(b->state)) {
		/*
		 * A 404 on the results of an ended batch: gone for good only when the batch says
		 * so (archived_at) or is gone itself. Right after the end it is a known transient
		 * (the SDKs' issue trackers report it): then it is a failed download, tried again
		 * with growing waits, never a permanent "unavailable" on its own.
		 */
		struct bfs_err gerr = BFS_ERR_INIT;
		struct provider_batch now;
		int grc = anth_get(p, b->id, &now, NULL, NULL, &gerr);

		if (grc == -ENOENT || (!grc && now.results_gone)) {
			rc = -ENODATA;
			err_prefix(err, "the results of batch '%s' are no longer available", b->id);
		} else {
			rc = -EAGAIN;
			err_set(err,
				"cannot download results of batch '%s': the API answered 404 "
				"though "
				"the batch has not been archived (a transient after its end); "
				"trying "
				"again",
				b->id);
		}
	} else {
		err_prefix(err, "cannot download results of batch '%s'", b->id);
	}
out:
	buf_release(&url);
	return rc;
}

static const char *const provider_anthropic_keys[] = {
	"base_url",	     "api_key_env",    "api_key_command",
	"anthropic_version", "anthropic_beta", "auth",
	"token_ttl",	     "stream_upload",  NULL,
};

/* Request lines */

/* Anthropic's custom_id rule: ^[a-zA-Z0-9_-]{1,64}$, length checked first (as the API). */
static int check_anthropic_id(const char *id, long lineno, struct bfs_err *err)
{
	size_t n = strlen(id);

	if (n == 0 || n > 64) {
		err_set_line(err, lineno,
			     "line %ld: custom_id must be 1 to 64 characters (has %zu)", lineno, n);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-')) {
			err_set_line(err, lineno,
				     "line %ld: custom_id '%.64s' is not accepted by the provider: "
				     "must match ^[a-zA-Z0-9_-]{1,64}$",
				     lineno, id);
			return -EINVAL;
		}
	}
	return 0;
}

/* A Message Batches request line (docs/semantics.md): custom_id and params, nothing else. */
int anthropic_validate_line(struct jsonl_validator *v, const cJSON *root, const char *custom_id,
			    long lineno, struct bfs_err *err)
{
	const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "params");
	const cJSON *it;
	int rc = check_anthropic_id(custom_id, lineno, err);

	(void)v;
	if (rc)
		return rc;
	/* The API refuses the whole batch for an unknown field beside custom_id and params. */
	cJSON_ArrayForEach(it, root) {
		if (strcmp(it->string, "custom_id") && strcmp(it->string, "params")) {
			err_set_line(err, lineno, "line %ld: unexpected field '%.64s' beside %s",
				     lineno, it->string, "custom_id and params");
			return -EINVAL;
		}
	}
	rc = jsonl_need_object(params, "params", lineno, err);
	if (!rc)
		rc = jsonl_need_string(cJSON_GetObjectItemCaseSensitive(params, "model"),
				       "params.model", lineno, err);
	if (!rc)
		rc = jsonl_need_max_tokens(cJSON_GetObjectItemCaseSensitive(params, "max_tokens"),
					   "params.max_tokens", lineno, err);
	if (!rc)
		rc = jsonl_need_array(cJSON_GetObjectItemCaseSensitive(params, "messages"),
				      "params.messages", lineno, err);
	return rc;
}

/* {custom_id, params: {model, max_tokens, temperature?, system?, messages}} */
static cJSON *anthropic_prompt_native(const struct prompt_request *r)
{
	cJSON *root = cJSON_CreateObject(), *params = NULL;

	if (cJSON_AddStringToObject(root, "custom_id", r->custom_id))
		params = cJSON_AddObjectToObject(root, "params");
	if (!params || !cJSON_AddStringToObject(params, "model", r->model) ||
	    !cJSON_AddNumberToObject(params, "max_tokens", r->max_tokens) ||
	    (r->temperature >= 0 &&
	     !cJSON_AddNumberToObject(params, "temperature", r->temperature)) ||
	    (r->system && !cJSON_AddStringToObject(params, "system", r->system)) ||
	    !prompt_add_messages(params, r, false)) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

/* Claude's temperature is 0 to 1 (https://docs.anthropic.com/en/api/messages). */
const struct jsonl_format anthropic_format = {
	.name = "anthropic",
	.request_key = "params",
	.max_temperature = 1,
	.prompt_native = anthropic_prompt_native,
};

const struct provider_ops provider_anthropic_ops = {
	.name = "anthropic",
	.format = &anthropic_format,
	.validate_line = anthropic_validate_line,
	.state_from = anthropic_state_from,
	.env_key = "ANTHROPIC_API_KEY",
	/*
	 * 100,000 requests and 256 MB per create body (spec section 4). The body adds at most
	 * 15 bytes to the file ({"requests":[ and ]} minus one terminator), hence the slack.
	 */
	/* A line is one Messages request: 32 MB at most ("Request size limits",
	 * https://docs.anthropic.com/en/api/overview). */
	.limits = {.max_requests = 100000,
		   .max_bytes = 256u * 1000 * 1000 - 16,
		   .max_line = 32u * 1000 * 1000},
	.keys = provider_anthropic_keys,
	.open = anth_open,
	.free = anth_free,
	.submit = anth_submit,
	.find = anth_find,
	.get = anth_get,
	.list = anth_list,
	.cancel = anth_cancel,
	.results = anth_results,
	.result_parse = result_parse_anthropic,
	.stream_begin = anth_stream_begin,
	.stream_more = anth_stream_more,
	.stream_end = anth_stream_end,
	.stream_abort = anth_stream_abort,
};
