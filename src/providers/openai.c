// SPDX-License-Identifier: MIT
/*
 * provider = openai: OpenAI's Batch API (https://platform.openai.com/docs/api-reference/batch).
 * What is OpenAI's alone: base_url as the official SDKs take it, the bearer API key, the
 * organization and project headers, its limits. The Batch and Files calls themselves are
 * openai_common.c's. The key lives only in struct provider's memory: never log it.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "err.h"
#include "http.h"
#include "providers/openai.h"
#include "providers/openai_common.h"
#include "result.h"

#define OAI_BASE_DEFAULT "https://api.openai.com/v1"

/*
 * OpenAI: base_url exactly as the official SDKs take it (default "https://api.openai.com/v1"):
 * paths such as /files are appended to it as given, nothing is added, so one OPENAI_BASE_URL
 * serves batchfs and the SDKs alike (a proxy at http://host:port answers http://host:port/files).
 */
static int openai_config(struct provider *p, const struct remote_conf *conf, struct bfs_err *err)
{
	const char *base = conf_get(conf, "base_url", NULL);
	const char *org = conf_get(conf, "organization", NULL);
	const char *project = conf_get(conf, "project", NULL);
	size_t path_at;

	if (!base || !*base)
		base = getenv("OPENAI_BASE_URL");
	if (!base || !*base)
		base = OAI_BASE_DEFAULT;
	if (oai_url_copy(base, p->base, sizeof(p->base), &path_at)) {
		err_set(err, "[%s] base_url '%.200s' is not an http:// or https:// URL", conf->name,
			base);
		return -EINVAL;
	}
	if ((org && http_has_ctl(org)) || (project && http_has_ctl(project))) {
		err_set(err, "[%s] organization and project must be one-line words", conf->name);
		return -EINVAL;
	}
	if ((org && *org && oai_header_dup(&p->hdr_org, "OpenAI-Organization", org)) ||
	    (project && *project && oai_header_dup(&p->hdr_project, "OpenAI-Project", project))) {
		err_set(err, "[%s] out of memory", conf->name);
		return -ENOMEM;
	}
	return 0;
}

/* A bearer API key (A.1); auth = ... is Azure's. */
static int openai_auth(struct provider *p, const struct remote_conf *conf, struct bfs_err *err)
{
	const char *auth = conf_get(conf, "auth", NULL);

	if (auth) {
		err_set(err, "[%s] auth = %.40s: %s", conf->name, auth,
			"not a key of provider openai");
		return -EINVAL;
	}
	return oai_api_key(p, conf, "OPENAI_API_KEY", "Authorization", "Bearer ", err);
}

static const struct oai_dialect openai_dialect = {
	.azure = false,
	.config = openai_config,
	.auth = openai_auth,
};

static int openai_open(struct provider **out, const struct remote_conf *conf, const char *state_dir,
		       struct bfs_err *err)
{
	return oai_open(out, conf, state_dir, &openai_dialect, err);
}

/* The config keys it reads (see include/providers/openai.h). */
static const char *const provider_openai_keys[] = {
	"base_url", "api_key_env",	   "api_key_command",	   "organization",
	"project",  "input_expires_after", "output_expires_after", NULL,
};

/* Request lines: the shared rules, in OpenAI's dialect. */
static int openai_validate_line(struct jsonl_validator *v, const cJSON *root, const char *custom_id,
				long lineno, struct bfs_err *err)
{
	return oai_validate_line(v, root, custom_id, lineno, false, err);
}

static struct cJSON *openai_prompt_native(const struct prompt_request *r)
{
	return oai_prompt_native(r, "/v1/chat/completions");
}

static const struct jsonl_format openai_format = {
	.name = "openai",
	.request_key = "body",
	.max_temperature = OAI_MAX_TEMPERATURE,
	.prompt_native = openai_prompt_native,
};

/*
 * Limits (A.9): 50,000 requests and 200 MB per input file, counted in decimal megabytes to be
 * on the safe side; blank lines count though they are not uploaded, so a file near the limit
 * fails here rather than at the provider.
 */
const struct provider_ops provider_openai_ops = {
	.name = "openai",
	.format = &openai_format,
	.validate_line = openai_validate_line,
	.state_from = oai_state_from,
	.env_key = "OPENAI_API_KEY",
	/* A line is one request: 50 MB of payload at most
	 * (https://platform.openai.com/docs/guides/images-vision). */
	.limits = {.max_requests = 50000,
		   .max_bytes = 200u * 1000 * 1000,
		   .max_line = 50u * 1000 * 1000},
	.keys = provider_openai_keys,
	.open = openai_open,
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
