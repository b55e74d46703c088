// SPDX-License-Identifier: MIT
/*
 * The provider registry: maps a config's `provider = NAME` to its ops table (the only file
 * besides the providers themselves that includes provider_*.h), and the result-line intake
 * every HTTP provider shares.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "buf.h"
#include "err.h"
#include "http.h"
#include "provider.h"
#include "provider_anthropic.h"
#include "provider_mock.h"
#include "provider_openai.h"
#include "provider_vertex.h"

/* How long a create waits out a rate limit before the poller takes it over (seconds). */
#define PROVIDER_RATE_LIMIT_WAIT_S 120.0

static const struct provider_ops *const providers[] = {
	&provider_mock_ops,  &provider_anthropic_ops, &provider_openai_ops,
	&provider_azure_ops, &provider_vertex_ops,
};

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
	for (size_t i = 0; i < sizeof(providers) / sizeof(providers[0]); i++)
		if (!strcmp(providers[i]->name, name))
			return providers[i];
	return NULL;
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

int provider_results_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct provider_results *r = ctx;
	const cJSON *id;
	cJSON *o;
	size_t i;
	int rc;

	for (i = 0; i < len && (line[i] == ' ' || line[i] == '\t'); i++)
		;
	if (i == len)
		return 0; /* blank */
	o = cJSON_ParseWithLength(line, len);
	id = cJSON_GetObjectItemCaseSensitive(o, "custom_id");
	if (!cJSON_IsString(id)) {
		err_set(r->line_err, "result line %ld is not a JSON object with a custom_id",
			lineno);
		cJSON_Delete(o);
		return -EBADMSG;
	}
	rc = r->fn(r->ctx, id->valuestring, line, len);
	if (rc)
		err_set(r->line_err, "cannot keep result line %ld: %s", lineno, strerror(-rc));
	else
		r->delivered++;
	cJSON_Delete(o);
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
}

int provider_results_restart(struct provider_results *r)
{
	int rc = r->reset ? r->reset(r->ctx) : -ECANCELED;

	if (!rc)
		r->delivered = r->before_file = 0;
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
		"cancel_confirm", "rate_limit_wait", "list_full_interval", "min_poll_interval",
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
	*out = lim;
	return 0;
}
