// SPDX-License-Identifier: MIT
/*
 * provider = azure: Azure OpenAI's Batch API (global batch,
 * https://learn.microsoft.com/azure/ai-services/openai/how-to/batch). What is Azure's alone:
 * the endpoint with its deployment-named models and api-version (or the v1 API), the api-key
 * header, Entra ID tokens (token_command, or a managed identity through the instance metadata
 * endpoint), its limits and its poll guidance. The Batch and Files calls themselves are
 * openai_common.c's. Tokens live only in struct oai_auth's memory: never log them.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "conf.h"
#include "err.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "providers/openai.h"
#include "providers/openai_common.h"
#include "result.h"
#include "timefmt.h"

#define AZ_VERSION_DEFAULT   "2024-10-21" /* first GA api-version with Files and Batches (B.1) */
#define AZ_URL_MAX	     4096
#define AZ_TOKEN_TTL_DEFAULT 3000 /* s a token_command's token is reused */
#define AZ_MI_RESOURCE	     "https://cognitiveservices.azure.com"
#define AZ_MI_IMDS	     "http://169.254.169.254/metadata/identity/oauth2/token"
#define AZ_MI_EARLY_MS	     (5 * 60 * 1000) /* refresh this long before expires_on */
#define AZ_MI_RESP_MAX	     (64 * 1024)
#define AZ_MI_WAIT_MAX_MS    (64 * 1000) /* 1+2+...+64 s: past IMDS's 70 s of 410s */
#define AZ_MI_WAIT_404_MS    2000	 /* 1+2 s */

/* Entra ID: a token_command (a private one-key config, run on demand) or a managed identity. */
struct oai_auth {
	bool has_token_cmd;
	struct remote_conf token_conf;
	struct conf_kv token_kv;
	int64_t token_ttl_ms;
	pthread_mutex_t token_lock; /* protects token, token_at and token_until; taken alone */
	char *token;		    /* the last token (secret), NULL before the first */
	int64_t token_at;	    /* monotonic ms it was fetched */
	/* Managed identity (auth = managed_identity): the token endpoint and its header
	 * ("Metadata: true", or App Service's X-IDENTITY-HEADER, a secret). */
	char *mi_url;
	char *mi_hdr;
	int64_t token_until; /* managed identity: monotonic ms to fetch anew */
};

static double mi_number(const cJSON *v)
{
	return cJSON_IsString(v) ? strtod(v->valuestring, NULL) : v->valuedouble;
}

/*
 * A managed identity's token (auth = managed_identity): IMDS answers {access_token,
 * expires_in, expires_on, ...} with numbers as strings, App Service {access_token, expires_on}.
 * Called with token_lock held; never logs the answer.
 */
static int mi_fetch(struct provider *p, struct bfs_err *err)
{
	struct oai_auth *a = p->auth;
	const char *hdrs[] = {a->mi_hdr, "Accept: application/json", NULL};
	struct buf resp = BUF_INIT(AZ_MI_RESP_MAX);
	struct http_request rq = {
		.method = HTTP_GET,
		.url = a->mi_url,
		.headers = hdrs,
		.retry = HTTP_RETRY_IDEMPOTENT,
		.resp = &resp,
	};
	int64_t now = timefmt_mono_ms(), wall = timefmt_now_ms(), life_ms = 0;
	const cJSON *in, *on;
	cJSON *root = NULL;
	const char *tok;
	int rc;

	/*
	 * IMDS answers 410 while it updates (for up to 70 s, Microsoft's managed-identity
	 * guidance) and 404 while an identity is being assigned: wait those out too, the 404
	 * briefly (a wrong identity_endpoint must not hold the mount for minutes).
	 */
	for (int64_t wait = 1000;; wait *= 2) {
		struct http_response r = {0};

		rc = http_perform(p->http, &rq, &r, err);
		if (rc &&
		    ((r.status == 410 && wait <= AZ_MI_WAIT_MAX_MS) ||
		     (r.status == 404 && wait <= AZ_MI_WAIT_404_MS)) &&
		    !http_sleep_ms(wait))
			continue;
		break;
	}
	if (rc) {
		err_prefix(err, "[%s] managed identity", p->remote);
		goto out;
	}
	root = cJSON_ParseWithLength(resp.data, resp.len);
	tok = json_nonempty(root, "access_token");
	in = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
	on = cJSON_GetObjectItemCaseSensitive(root, "expires_on");
	/* Seconds as numbers or, as IMDS sends them, strings of digits. */
	if (cJSON_IsString(in) || cJSON_IsNumber(in))
		life_ms = (int64_t)(mi_number(in) * 1000);
	else if (cJSON_IsString(on) || cJSON_IsNumber(on))
		life_ms = (int64_t)(mi_number(on) * 1000) - wall;
	if (!tok || http_has_ctl(tok) || life_ms <= 0) {
		err_set(err, "[%s] managed identity: the answer has no usable access_token/expiry",
			p->remote);
		rc = -EACCES;
		goto out;
	}
	conf_secret_free(a->token);
	a->token = strdup(tok);
	if (!a->token) {
		err_set(err, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	a->token_at = now;
	a->token_until =
		now + life_ms - (life_ms / 4 < AZ_MI_EARLY_MS ? life_ms / 4 : AZ_MI_EARLY_MS);
	log_debug("remote '%s': new Entra ID token (managed identity)", p->remote);
out:
	cJSON_Delete(root);
	if (resp.data)
		explicit_bzero(resp.data, resp.len);
	buf_release(&resp);
	return rc;
}

/* The bearer header from token_command or the managed identity, renewed when old or refused. */
static int token_header(struct provider *p, bool renew, char **out, struct bfs_err *err)
{
	struct oai_auth *a = p->auth;
	int rc = 0;

	pthread_mutex_lock(&a->token_lock);
	if (a->mi_url) {
		if (renew || !a->token || timefmt_mono_ms() >= a->token_until)
			rc = mi_fetch(p, err);
		if (rc)
			goto out;
	} else if (renew || !a->token || timefmt_mono_ms() - a->token_at > a->token_ttl_ms) {
		struct bfs_err e = BFS_ERR_INIT;
		char *t = conf_secret(&a->token_conf, NULL, "token_command", NULL, &e);

		if (!t || !*t || http_has_ctl(t)) {
			err_set(err, "[%s] token_command: %s", p->remote,
				t ? "the token is empty or spans lines" : e.msg);
			conf_secret_free(t);
			rc = -EACCES;
			goto out;
		}
		conf_secret_free(a->token);
		a->token = t;
		a->token_at = timefmt_mono_ms();
	}
	if (asprintf(out, "Authorization: Bearer %s", a->token) < 0) {
		*out = NULL;
		err_set(err, "out of memory");
		rc = -ENOMEM;
	}
out:
	pthread_mutex_unlock(&a->token_lock);
	return rc;
}

/*
 * auth = managed_identity (Azure): App Service's IDENTITY_ENDPOINT / IDENTITY_HEADER when set,
 * else the instance metadata endpoint (identity_endpoint overrides its URL, for tests and
 * proxies); managed_identity_client_id picks a user-assigned identity.
 */
static int mi_config(struct provider *p, const struct remote_conf *conf, struct bfs_err *err)
{
	struct oai_auth *a = p->auth;
	const char *url = conf_get(conf, "identity_endpoint", NULL);
	const char *cid = conf_get(conf, "managed_identity_client_id", NULL);
	const char *app = getenv("IDENTITY_ENDPOINT"), *secret = getenv("IDENTITY_HEADER");
	const char *ver = "2018-02-01";
	struct buf u = BUF_INIT(AZ_URL_MAX);
	int rc;

	if (!url && app && *app && secret && *secret) {
		url = app;
		ver = "2019-08-01";
		rc = http_has_ctl(secret) ? -EINVAL : 0;
		if (!rc && asprintf(&a->mi_hdr, "X-IDENTITY-HEADER: %s", secret) < 0) {
			a->mi_hdr = NULL;
			rc = -ENOMEM;
		}
	} else {
		a->mi_hdr = strdup("Metadata: true");
		rc = a->mi_hdr ? 0 : -ENOMEM;
	}
	if (!url || !*url)
		url = AZ_MI_IMDS;
	if (!rc && (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8)))
		rc = -EINVAL;
	if (!rc)
		rc = buf_addf(&u, "%s%capi-version=%s&resource=", url, strchr(url, '?') ? '&' : '?',
			      ver);
	if (!rc)
		rc = http_url_escape(AZ_MI_RESOURCE, &u);
	if (!rc && cid && *cid) {
		rc = buf_addstr(&u, "&client_id=");
		if (!rc)
			rc = http_url_escape(cid, &u);
	}
	if (!rc)
		a->mi_url = buf_detach(&u, NULL);
	buf_release(&u);
	if (rc)
		err_set(err, "[%s] auth = managed_identity: %s", p->remote,
			rc == -EINVAL
				? "the identity endpoint is not an http(s) URL (or its header "
				  "spans lines)"
				: "the endpoint URL is too long");
	return rc;
}

/*
 * Azure (B.1): {endpoint}/openai/... with ?api-version=, or the v1 API {endpoint}/openai/v1/...
 * (api_version = v1, or an endpoint ending in /openai/v1) without one.
 */
static int azure_config(struct provider *p, const struct remote_conf *conf, struct bfs_err *err)
{
	const char *ep = conf_get(conf, "endpoint", NULL);
	const char *ver = conf_get(conf, "api_version", NULL);
	size_t path_at;
	bool v1;

	if (!ep || !*ep)
		ep = getenv("AZURE_OPENAI_ENDPOINT");
	if (!ep || !*ep) {
		err_set(err, "[%s] endpoint is not set (https://RESOURCE.openai.azure.com)",
			conf->name);
		return -EINVAL;
	}
	if (!ver || !*ver)
		ver = getenv("OPENAI_API_VERSION");
	if (!ver || !*ver)
		ver = AZ_VERSION_DEFAULT;
	if (strlen(ver) > 64 ||
	    strspn(ver, "abcdefghijklmnopqrstuvwxyz0123456789-.") != strlen(ver)) {
		err_set(err, "[%s] api_version '%.64s' is not a version like %s", conf->name, ver,
			AZ_VERSION_DEFAULT);
		return -EINVAL;
	}
	if (oai_url_copy(ep, p->base, sizeof(p->base) - 16, &path_at)) {
		err_set(err, "[%s] endpoint '%.200s' is not an http:// or https:// URL", conf->name,
			ep);
		return -EINVAL;
	}
	v1 = !strcmp(ver, "v1") || oai_ends_with(p->base, "/openai/v1");
	if (oai_ends_with(p->base, "/openai/v1"))
		p->base[strlen(p->base) - 3] = '\0';
	if (!oai_ends_with(p->base, "/openai"))
		strcat(p->base, "/openai");
	if (v1)
		strcat(p->base, "/v1");
	else
		snprintf(p->version, sizeof(p->version), "api-version=%s", ver);
	return 0;
}

static void az_auth_free(struct oai_auth *a)
{
	if (!a)
		return;
	conf_secret_free(a->token);
	free(a->mi_url);
	conf_secret_free(a->mi_hdr);
	free(a->token_kv.key);
	free(a->token_kv.value);
	pthread_mutex_destroy(&a->token_lock);
	free(a);
}

/* api-key (B.2), or an Entra ID bearer token: a managed identity or a token_command. */
static int azure_auth(struct provider *p, const struct remote_conf *conf, struct bfs_err *err)
{
	const char *tcmd = conf_get(conf, "token_command", NULL);
	const char *auth = conf_get(conf, "auth", NULL);
	struct oai_auth *a;
	char *hdr = NULL;
	int rc;

	if (auth && strcmp(auth, "managed_identity")) {
		err_set(err, "[%s] auth = %.40s: %s", conf->name, auth,
			"the only value is managed_identity (else api_key_env, "
			"api_key_command or token_command)");
		return -EINVAL;
	}
	if (!auth && !(tcmd && *tcmd))
		return oai_api_key(p, conf, "AZURE_OPENAI_API_KEY", "api-key", "", err);
	a = calloc(1, sizeof(*a));
	if (!a) {
		err_set(err, "[%s] out of memory", conf->name);
		return -ENOMEM;
	}
	pthread_mutex_init(&a->token_lock, NULL);
	p->auth = a;
	p->auth_free = az_auth_free;
	p->bearer = token_header;
	a->token_ttl_ms =
		(int64_t)(conf_get_double(conf, "token_ttl", AZ_TOKEN_TTL_DEFAULT) * 1000);
	if (auth) {
		/* Entra ID without a CLI: the token is fetched now, to fail at mount. */
		rc = mi_config(p, conf, err);
		if (!rc)
			rc = token_header(p, true, &hdr, err);
		goto out;
	}
	/* Entra ID (B.2): the command prints a bearer token; run it now to fail early. */
	a->has_token_cmd = true;
	snprintf(a->token_conf.name, sizeof(a->token_conf.name), "%s", conf->name);
	a->token_kv.key = strdup("token_command");
	a->token_kv.value = strdup(tcmd);
	if (!a->token_kv.key || !a->token_kv.value) {
		err_set(err, "[%s] out of memory", conf->name);
		rc = -ENOMEM;
		goto out;
	}
	a->token_conf.kv = &a->token_kv;
	a->token_conf.nkv = 1;
	a->token_conf.command_timeout = conf->command_timeout;
	rc = token_header(p, true, &hdr, err);
out:
	conf_secret_free(hdr);
	return rc;
}

static const struct oai_dialect azure_dialect = {
	.azure = true,
	.config = azure_config,
	.auth = azure_auth,
};

static int azure_open(struct provider **out, const struct remote_conf *conf, const char *state_dir,
		      struct bfs_err *err)
{
	return oai_open(out, conf, state_dir, &azure_dialect, err);
}

/* The config keys it reads (see include/providers/openai.h). */
static const char *const provider_azure_keys[] = {
	"endpoint",
	"api_version",
	"api_key_env",
	"api_key_command",
	"token_command",
	"token_ttl",
	"file_wait",
	"auth",
	"identity_endpoint",
	"managed_identity_client_id",
	"input_expires_after",
	"output_expires_after",
	NULL,
};

/* Request lines: the shared rules, in Azure's dialect. */
static int azure_validate_line(struct jsonl_validator *v, const cJSON *root, const char *custom_id,
			       long lineno, struct bfs_err *err)
{
	return oai_validate_line(v, root, custom_id, lineno, true, err);
}

/* Azure's samples all write "/chat/completions" (the validator takes both forms). */
static struct cJSON *azure_prompt_native(const struct prompt_request *r)
{
	return oai_prompt_native(r, "/chat/completions");
}

static const struct jsonl_format azure_format = {
	.name = "azure",
	.request_key = "body",
	.max_temperature = OAI_MAX_TEMPERATURE,
	.prompt_native = azure_prompt_native,
};

/*
 * Limits (B.8): 100,000 requests and 200 MB per input file, counted in decimal megabytes to be
 * on the safe side; blank lines count though they are not uploaded, so a file near the limit
 * fails here rather than at the provider.
 */
const struct provider_ops provider_azure_ops = {
	.name = "azure",
	.format = &azure_format,
	.validate_line = azure_validate_line,
	.state_from = oai_state_from,
	.env_key = "AZURE_OPENAI_API_KEY",
	.env_endpoint = "AZURE_OPENAI_ENDPOINT",
	.limits = {.max_requests = 100000,
		   .max_bytes = 200u * 1000 * 1000,
		   .max_line = 50u * 1000 * 1000},
	.keys = provider_azure_keys,
	/* "Recommended polling interval >= 60 s" (learn.microsoft.com, Azure OpenAI batch). */
	.min_poll_interval = 60,
	.open = azure_open,
	.free = oai_free,
	.submit = oai_submit,
	.find = oai_find,
	.get = oai_get,
	.list = oai_list,
	.cancel = oai_cancel,
	.results = oai_results,
	.result_parse = result_parse_openai,
	.settled = oai_settled,
};
