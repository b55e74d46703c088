// SPDX-License-Identifier: MIT
/*
 * The provider registry: maps a config's `provider = NAME` to its ops table (the only file
 * besides the providers themselves that includes provider_*.h), and the result-line intake
 * every HTTP provider shares.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "buf.h"
#include "err.h"
#include "http.h"
#include "jsonscan.h"
#include "jsonview.h"
#include "provider.h"
#include "providers/anthropic.h"
#include "providers/mock.h"
#include "providers/openai.h"
#include "providers/vertex.h"

/* How long a create waits out a rate limit before the poller takes it over (seconds). */
#define PROVIDER_RATE_LIMIT_WAIT_S 120.0

/* The order of messages (provider_names) and of the remotes made from the environment. */
static const struct provider_ops *const providers[] = {
	&provider_anthropic_ops, &provider_openai_ops, &provider_azure_ops,
	&provider_vertex_ops,	 &provider_mock_ops,
};

#define NPROVIDERS (sizeof(providers) / sizeof(providers[0]))

void provider_http_opts(const struct remote_conf *rc, struct http_opts *out)
{
	double wait = conf_get_double(rc, "rate_limit_wait", PROVIDER_RATE_LIMIT_WAIT_S) * 1000;

	memset(out, 0, sizeof(*out));
	/* A close waits this long for its create at most; polls and listings, which the
	 * poller may as well reschedule, a minute at most. */
	out->create_wait_ms = wait >= 1 ? (long)wait : 1;
	out->max_hint_ms = out->create_wait_ms < 60000 ? out->create_wait_ms : 60000;
}

int64_t provider_poll_ms(const struct provider_ops *ops, const struct remote_conf *rc)
{
	double min = conf_get_double(rc, "min_poll_interval", ops ? ops->min_poll_interval : 0);

	return (int64_t)((rc->poll_interval > min ? rc->poll_interval : min) * 1000.0);
}

const struct provider_ops *provider_lookup(const char *name)
{
	for (size_t i = 0; i < NPROVIDERS; i++)
		if (!strcmp(providers[i]->name, name))
			return providers[i];
	return NULL;
}

const struct provider_ops *provider_at(size_t i)
{
	return i < NPROVIDERS ? providers[i] : NULL;
}

void provider_names(char *out, size_t size)
{
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; i < NPROVIDERS && n < size; i++)
		n += (size_t)snprintf(out + n, size - n, "%s%s",
				      !i		   ? ""
				      : i + 1 < NPROVIDERS ? ", "
							   : " or ",
				      providers[i]->name);
}

void provider_results_init(struct provider_results *r, provider_result_fn fn,
			   provider_reset_fn reset, void *ctx, provider_retry_fn on_retry,
			   void *retry_ctx, struct bfs_err *line_err)
{
	memset(r, 0, sizeof(*r));
	r->fn = fn;
	r->reset = reset;
	r->ctx = ctx;
	r->line_err = line_err;
	r->on_retry = on_retry;
	r->retry_ctx = retry_ctx;
	err_clear(line_err);
}

/*
 * The result line being delivered on this thread, checked already: the ingest reads each
 * line's outcome, text and usage (result_parse, called from the delivery) without scanning
 * it a second time (a results download is CPU-bound on reading the lines).
 */
static _Thread_local const char *checked;

bool provider_results_checked(const char *line)
{
	return line && line == checked;
}

/* The custom_id string id decoded into small (or the heap: *big, to free), or NULL. */
static const char *id_decode(struct jv id, char *small, size_t size, char **big)
{
	size_t elen, n;
	const char *raw = jv_str_raw(id, &elen);
	char *out = small;

	*big = NULL;
	if (elen >= size && !(out = *big = malloc(elen + 1)))
		return NULL;
	n = jv_unescape(raw, elen, out);
	out[n] = '\0'; /* no \u0000 inside: the scan refuses one in the custom_id */
	return out;
}

int provider_results_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct provider_results *r = ctx;
	struct jsonscan_error je;
	long n = r->base_line + lineno; /* numbered on through the files, as downloaded */
	const char *bad = NULL, *id = NULL;
	char why[96], small[256], *big = NULL;
	struct jv root, idv;
	size_t i;
	int rc;

	r->last_line = lineno;
	if (!line) {
		/* Over the line cap: skipped by the splitter without being held in memory. */
		snprintf(why, sizeof(why),
			 "longer than the %u MiB a result line may have (%zu bytes)",
			 PROVIDER_RESULT_LINE_MAX >> 20, len);
		rc = r->fn(r->ctx, NULL, NULL, 0, n, why);
		if (!rc)
			r->delivered++;
		goto out;
	}
	for (i = 0; i < len && (line[i] == ' ' || line[i] == '\t'); i++)
		;
	if (i == len)
		return 0; /* blank */
	/*
	 * The request lines' strict scan: cJSON alone would cut a custom_id at \u0000 (two ids
	 * equal up to a NUL would become one file) and read the first of two custom_id keys. A
	 * line that fails is named and skipped: one bad line must not cost the other results.
	 * A line that passes is read in place (jsonview.h), as cJSON would read it.
	 */
	rc = jsonscan_line(line, len, &je);
	if (rc == -ENOMEM)
		goto out;
	root = jv_line(line, len);
	if (rc) {
		snprintf(why, sizeof(why), "not strict JSON at column %zu: %s", je.column, je.why);
		bad = why;
	} else if (!jv_is_object(root)) {
		bad = "not a JSON object";
	} else if (!jv_is_string(idv = jv_get(root, "custom_id"))) {
		bad = "no custom_id string";
	} else if (!(id = id_decode(idv, small, sizeof(small), &big))) {
		rc = -ENOMEM;
		goto out;
	} else if (!id[0]) {
		bad = "empty custom_id"; /* it could not be a file name (and no request has it) */
	}
	/* Checked: result_parse() need not scan it again (provider_results_checked). */
	checked = bad ? NULL : line;
	rc = r->fn(r->ctx, bad ? NULL : id, line, len, n, bad);
	checked = NULL;
	if (!rc)
		r->delivered++; /* bad lines too: a reset must forget them as well */
out:
	if (rc)
		err_set(r->line_err, "cannot keep result line %ld: %s", n, strerror(-rc));
	free(big);
	return rc;
}

int provider_results_reset(void *ctx)
{
	struct provider_results *r = ctx;
	int rc;

	if (r->before_file)
		return -ERESTART;
	/* Without a reset, lines already delivered would be delivered twice: give up. */
	rc = r->reset ? r->reset(r->ctx) : -ECANCELED;
	if (!rc)
		r->delivered = 0;
	return rc;
}

void provider_results_next_file(struct provider_results *r)
{
	r->before_file = r->delivered;
	r->base_line += r->last_line;
	r->last_line = 0;
}

int provider_results_restart(struct provider_results *r)
{
	int rc = r->reset ? r->reset(r->ctx) : -ECANCELED;

	if (!rc) {
		r->delivered = r->before_file = 0;
		r->base_line = r->last_line = 0;
	}
	err_clear(r->line_err);
	return rc;
}

bool provider_id_is_safe(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n >= PROVIDER_ID_MAX || id[0] == '.' || id[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static bool key_in(const char *key, const char *const *keys)
{
	for (; keys && *keys; keys++)
		if (!strcmp(key, *keys))
			return true;
	return false;
}

int provider_check_keys(const struct provider_ops *ops, const struct remote_conf *rc,
			struct bfs_err *err)
{
	static const char *const common[] = {
		"provider", "poll_interval", "list_interval", "reconcile_grace", "command_timeout",
		"max_requests", "max_bytes", "discover", "results_attempts", "max_concurrent_jobs",
		"cancel_confirm", "progress_timeout", "transfer_timeout", "transfer_min_rate",
		/* resubmitting after a quota failure (conf.c checks them) */
		"quota_retry", "quota_retry_delay", "quota_retry_attempts",
		/* rate limits and polling (conf.c checks them) */
		"rate_limit_wait", "list_full_interval", "min_poll_interval",
		/* prompt lines and cost (conf.c checks them) */
		"model", "max_tokens", "temperature", "max_cost", "price_file", NULL};

	for (size_t i = 0; i < rc->nkv; i++) {
		const char *key = rc->kv[i].key;
		struct buf known = BUF_INIT(1024);

		if (key_in(key, common) || key_in(key, ops->keys))
			continue;
		for (const char *const *k = ops->keys; k && *k; k++)
			(void)buf_addf(&known, "%s%s", known.len ? ", " : "", *k);
		err_set(err, "[%s] unknown key '%s' for provider %s (it reads: %s)", rc->name, key,
			ops->name, known.len ? known.data : "nothing else");
		buf_release(&known);
		return -EINVAL;
	}
	return 0;
}

/* One limit key: absent keeps the provider's; otherwise a whole number in (0, provider's]. */
static int limit_key(const struct provider_ops *ops, const struct remote_conf *rc, const char *key,
		     uint64_t provider_max, uint64_t *out, struct bfs_err *err)
{
	const char *v = conf_get(rc, key, NULL);
	unsigned long long n;
	char *end;

	*out = provider_max;
	if (!v)
		return 0;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || *end || *v == '-' || n == 0) {
		err_set(err, "[%s] %s = '%s' is not a positive whole number", rc->name, key, v);
		return -EINVAL;
	}
	if (provider_max && n > provider_max) {
		err_set(err,
			"[%s] %s = %llu is above the %s limit of %" PRIu64
			" per batch (it can only lower it)",
			rc->name, key, n, ops->name, provider_max);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

int provider_limits(const struct provider_ops *ops, const struct remote_conf *rc,
		    struct jsonl_limits *out, struct bfs_err *err)
{
	struct jsonl_limits lim;
	int rc2;

	rc2 = limit_key(ops, rc, "max_requests", ops->limits.max_requests, &lim.max_requests, err);
	if (!rc2)
		rc2 = limit_key(ops, rc, "max_bytes", ops->limits.max_bytes, &lim.max_bytes, err);
	if (rc2)
		return rc2;
	lim.max_line = ops->limits.max_line;
	*out = lim;
	return 0;
}

/* A whole number in [1, max] from key, or def when absent. */
static int positive_key(const struct remote_conf *rc, const char *key, long def, long max,
			long *out, struct bfs_err *err)
{
	const char *v = conf_get(rc, key, NULL);
	char *end;
	long n;

	*out = def;
	if (!v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < 1 || n > max) {
		err_set(err, "[%s] %s = '%s' is not a whole number from 1 to %ld", rc->name, key, v,
			max);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

int provider_http_new(const struct remote_conf *rc, struct http **out, struct bfs_err *err)
{
	struct http_opts o;
	int ret;

	provider_http_opts(rc, &o); /* the rate-limit waits; zero elsewhere: http.c's default */
	ret = positive_key(rc, "progress_timeout", 0, 86400, &o.low_speed_time_s, err);
	if (!ret)
		ret = positive_key(rc, "transfer_timeout", 0, 86400 * 7, &o.stream_base_s, err);
	if (!ret)
		ret = positive_key(rc, "transfer_min_rate", 0, 1L << 40, &o.stream_min_bps, err);
	return ret ? ret : http_new(out, &o, err);
}
