/* SPDX-License-Identifier: MIT */
/*
 * What provider = openai and provider = azure share (src/providers/openai_common.c): one
 * Batch API on top of the Files API, so uploads, batch objects, listing, results and the
 * submission records are one implementation. openai.c and azure.c only configure a struct
 * provider (URLs, headers, auth) and give their ops tables; the few places where Azure's
 * service differs (ISO times, the endpoint without /v1, no has_more on file lists) test
 * p->azure here. Private to src/providers/: nothing else includes it.
 */
#ifndef BATCHFS_PROVIDERS_OPENAI_COMMON_H
#define BATCHFS_PROVIDERS_OPENAI_COMMON_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "provider.h"

struct oai_auth;

/*
 * A bearer token source (Azure's token_command or managed identity): *out gets the
 * "Authorization: Bearer ..." header (a secret, freed with conf_secret_free); renew asks for a
 * new token (the last one was refused). 0 or -errno with the reason in err.
 */
typedef int (*oai_bearer_fn)(struct provider *p, bool renew, char **out, struct bfs_err *err);

struct provider {
	bool azure;
	struct http *http;
	char remote[CONF_NAME_MAX];
	char base[1024];    /* up to and including the API's version segment, no trailing '/' */
	char version[128];  /* Azure dated API: "api-version=..." added to every URL; else "" */
	char dir[PATH_MAX]; /* state dir: uploads/<identity> records, lines/<file id> maps */
	char *hdr_key;	    /* "Authorization: Bearer ..." or "api-key: ..." (secret); NULL
			     * when bearer gives the header */
	char *hdr_org;	    /* "OpenAI-Organization: ...", NULL when not configured */
	char *hdr_project;  /* "OpenAI-Project: ...", NULL when not configured */
	int64_t file_wait_ms;
	long input_expires;  /* s: expires_after of uploads (anchor created_at) */
	long output_expires; /* s: output_expires_after of creates */
	/* A token source instead of hdr_key (azure.c), NULL when none; its state and how it
	 * is freed. */
	oai_bearer_fn bearer;
	struct oai_auth *auth;
	void (*auth_free)(struct oai_auth *a);
};

/*
 * The half of open() a provider supplies: config() sets the URLs and headers (before the
 * common keys are read, so its errors come first), auth() the key or token source (last,
 * as it may run a command). Each returns 0 or -errno with the reason in err.
 */
struct oai_dialect {
	bool azure;
	int (*config)(struct provider *p, const struct remote_conf *conf, struct bfs_err *err);
	int (*auth)(struct provider *p, const struct remote_conf *conf, struct bfs_err *err);
};

/* Builds a struct provider: the common keys, the state dir, the HTTP client, then d. */
int oai_open(struct provider **out, const struct remote_conf *conf, const char *state_dir,
	     const struct oai_dialect *d, struct bfs_err *err);
void oai_free(struct provider *p);

/* The API key (api_key_env, default env_default, or api_key_command) as header name: the
 * value prefix ("Authorization", "Bearer "; "api-key", ""). */
int oai_api_key(struct provider *p, const struct remote_conf *conf, const char *env_default,
		const char *name, const char *prefix, struct bfs_err *err);

/* Copies an http(s) URL without trailing '/' into out; *path_at: where its path starts. */
int oai_url_copy(const char *url, char *out, size_t size, size_t *path_at);
/* s ends with tail, ignoring case. */
bool oai_ends_with(const char *s, const char *tail);
/* *out = "name: value" (malloc'd). 0 or -ENOMEM. */
int oai_header_dup(char **out, const char *name, const char *value);

/* The Batch API endpoints OpenAI and Azure accept (docs/semantics.md: "url" of each line). */
bool oai_is_endpoint(const char *url);
/* Both providers' request line rules (jsonl_check_fn with the dialect): method POST, one
 * endpoint and one body.model per file; Azure's url may lack /v1, its model is a deployment. */
int oai_validate_line(struct jsonl_validator *v, const struct cJSON *root, const char *custom_id,
		      long lineno, bool azure, struct bfs_err *err);

/* Both providers' prompt_native (jsonl_format): {custom_id, method, url, body: {model,
 * max_completion_tokens, temperature?, messages: [system?, user]}} with this url. */
struct cJSON *oai_prompt_native(const struct prompt_request *r, const char *url);
/* The largest temperature of the Chat Completions API. */
#define OAI_MAX_TEMPERATURE 2

/* Both providers' status words (provider_ops.state_from). */
int oai_state_from(const char *status, bool cancel_initiated, enum batch_state *out);

/* The ops both providers share. */
int oai_submit(struct provider *p, const struct provider_submit *s, struct provider_batch *out,
	       provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err);
int oai_find(struct provider *p, const struct provider_submit *s, struct provider_batch *out,
	     struct bfs_err *err);
int oai_get(struct provider *p, const char *id, struct provider_batch *out,
	    provider_retry_fn on_retry, void *retry_ctx, struct bfs_err *err);
int oai_list(struct provider *p, provider_batch_fn fn, void *ctx, struct bfs_err *err);
int oai_cancel(struct provider *p, const char *id, struct provider_batch *out, struct bfs_err *err);
int oai_results(struct provider *p, const struct provider_batch *b, provider_result_fn fn,
		provider_reset_fn reset, void *ctx, provider_retry_fn on_retry, void *retry_ctx,
		struct bfs_err *err);
void oai_settled(struct provider *p, const struct provider_batch *b);

#endif
