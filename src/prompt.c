// SPDX-License-Identifier: MIT
/*
 * Prompt lines into native request lines. The translation is a pure function of the line and
 * the remote's defaults, in a fixed field order, so the same file under the same config always
 * gives the same bytes (batch.c records the translated copy before anything is sent).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "prompt.h"

/* A translated line is the prompt line plus a fixed frame of keys: twice is ample. */
#define PROMPT_NATIVE_CAP(len) (2 * (len) + 4096)

void prompt_ctx_init(struct prompt_ctx *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->temperature = -1;
	buf_init(&ctx->native, 0);
}

void prompt_ctx_release(struct prompt_ctx *ctx)
{
	buf_release(&ctx->native);
}

static const char *const prompt_keys[] = {"custom_id", "prompt",     "system",
					  "model",     "max_tokens", "temperature"};
/* Keys of a native line: a line with one of them is native, whatever else it holds. */
static const char *const native_keys[] = {"params", "body", "request", "method", "url"};

static bool has_key(const cJSON *o, const char *const *keys, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (cJSON_GetObjectItemCaseSensitive(o, keys[i]))
			return true;
	return false;
}

static bool is_prompt_key(const char *k)
{
	for (size_t i = 0; i < sizeof(prompt_keys) / sizeof(prompt_keys[0]); i++)
		if (!strcmp(k, prompt_keys[i]))
			return true;
	return false;
}

/* The checks of a prompt line's own fields; the custom_id is the native validator's job. */
static int check_fields(const cJSON *root, enum jsonl_format fmt, long lineno, struct bfs_err *err)
{
	const cJSON *it, *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
	const cJSON *sys = cJSON_GetObjectItemCaseSensitive(root, "system");
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "temperature");
	double tmax = fmt == JSONL_OPENAI || fmt == JSONL_AZURE ? 2 : 1;

	cJSON_ArrayForEach(it, root) {
		if (!is_prompt_key(it->string)) {
			err_set_line(
				err, lineno,
				"line %ld: unexpected field '%.64s' in a prompt line (custom_id, "
				"prompt, system, model, max_tokens, temperature)",
				lineno, it->string);
			return -EINVAL;
		}
	}
	if (!cJSON_IsString(p) || !p->valuestring[0]) {
		err_set_line(err, lineno, "line %ld: prompt must be a non-empty string", lineno);
		return -EINVAL;
	}
	if (sys && (!cJSON_IsString(sys) || !sys->valuestring[0])) {
		err_set_line(err, lineno, "line %ld: system must be a non-empty string", lineno);
		return -EINVAL;
	}
	if (model && (!cJSON_IsString(model) || !model->valuestring[0])) {
		err_set_line(err, lineno, "line %ld: model must be a non-empty string", lineno);
		return -EINVAL;
	}
	if (mt && (!cJSON_IsNumber(mt) || mt->valuedouble < 1 || mt->valuedouble > 1e9 ||
		   mt->valuedouble != floor(mt->valuedouble))) {
		err_set_line(err, lineno, "line %ld: max_tokens must be an integer >= 1", lineno);
		return -EINVAL;
	}
	if (t && (!cJSON_IsNumber(t) || t->valuedouble < 0 || t->valuedouble > tmax)) {
		err_set_line(err, lineno, "line %ld: temperature must be a number from 0 to %g",
			     lineno, tmax);
		return -EINVAL;
	}
	return 0;
}

static cJSON *user_messages(const char *system, const char *prompt, bool system_in_messages)
{
	cJSON *msgs = cJSON_CreateArray(), *m;

	if (!msgs)
		return NULL;
	if (system && system_in_messages) {
		m = cJSON_CreateObject();
		if (!m || !cJSON_AddItemToArray(msgs, m) ||
		    !cJSON_AddStringToObject(m, "role", "system") ||
		    !cJSON_AddStringToObject(m, "content", system))
			goto fail;
	}
	m = cJSON_CreateObject();
	if (!m || !cJSON_AddItemToArray(msgs, m) || !cJSON_AddStringToObject(m, "role", "user") ||
	    !cJSON_AddStringToObject(m, "content", prompt))
		goto fail;
	return msgs;
fail:
	cJSON_Delete(msgs);
	return NULL;
}

/*
 * The native line, keys in a fixed order:
 * Anthropic, mock: {custom_id, params: {model, max_tokens, temperature?, system?, messages}}
 * OpenAI, Azure:   {custom_id, method, url, body: {model, max_completion_tokens,
 *                   temperature?, messages: [system?, user]}}
 * Vertex:          {custom_id, request: {model?, anthropic_version, max_tokens, temperature?,
 *                   system?, messages}}
 */
static cJSON *build(enum jsonl_format fmt, const char *id, const char *model, double max_tokens,
		    double temperature, const char *system, const char *prompt)
{
	bool openai = fmt == JSONL_OPENAI || fmt == JSONL_AZURE;
	cJSON *root = cJSON_CreateObject(), *req = cJSON_CreateObject(), *msgs;
	const char *slot = fmt == JSONL_VERTEX ? "request" : openai ? "body" : "params";
	bool ok = root && req && cJSON_AddStringToObject(root, "custom_id", id);

	if (ok && openai) {
		/*
		 * Azure's samples all write "/chat/completions" (the validator takes both forms);
		 * max_completion_tokens replaces the deprecated max_tokens, which reasoning models
		 * refuse (https://platform.openai.com/docs/api-reference/chat/create).
		 */
		ok = cJSON_AddStringToObject(root, "method", "POST") &&
		     cJSON_AddStringToObject(root, "url",
					     fmt == JSONL_AZURE ? "/chat/completions"
								: "/v1/chat/completions");
	}
	if (ok)
		ok = cJSON_AddItemToObject(root, slot, req);
	else
		cJSON_Delete(req);
	if (ok && model)
		ok = cJSON_AddStringToObject(req, "model", model) != NULL;
	if (ok && fmt == JSONL_VERTEX)
		ok = cJSON_AddStringToObject(req, "anthropic_version", PROMPT_VERTEX_VERSION);
	if (ok)
		ok = cJSON_AddNumberToObject(req, openai ? "max_completion_tokens" : "max_tokens",
					     max_tokens);
	if (ok && temperature >= 0)
		ok = cJSON_AddNumberToObject(req, "temperature", temperature) != NULL;
	if (ok && system && !openai)
		ok = cJSON_AddStringToObject(req, "system", system) != NULL;
	msgs = ok ? user_messages(system, prompt, openai) : NULL;
	if (!msgs || !cJSON_AddItemToObject(req, "messages", msgs)) {
		cJSON_Delete(msgs);
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

int prompt_line(struct prompt_ctx *ctx, enum jsonl_format fmt, const char **line, size_t *len,
		long lineno, struct bfs_err *err)
{
	static const char needle[] = "\"prompt\"";
	const cJSON *id, *sys, *model, *mt, *t;
	const char *use_model;
	cJSON *root = NULL, *native = NULL;
	char *text = NULL;
	int rc = 0;

	ctx->translated = false;
	/* Most native lines never spell the key: spare them a second parse. */
	if (!memmem(*line, *len, needle, sizeof(needle) - 1))
		return 0;
	root = cJSON_ParseWithLength(*line, *len);
	if (!cJSON_IsObject(root) || !cJSON_GetObjectItemCaseSensitive(root, "prompt") ||
	    has_key(root, native_keys, sizeof(native_keys) / sizeof(native_keys[0])))
		goto out; /* native, or not JSON: the validator says what is wrong */
	id = cJSON_GetObjectItemCaseSensitive(root, "custom_id");
	if (!cJSON_IsString(id))
		goto out; /* the validator names the custom_id problem */
	rc = check_fields(root, fmt, lineno, err);
	if (rc)
		goto out;
	sys = cJSON_GetObjectItemCaseSensitive(root, "system");
	model = cJSON_GetObjectItemCaseSensitive(root, "model");
	mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
	t = cJSON_GetObjectItemCaseSensitive(root, "temperature");
	if (!t && ctx->temperature > (fmt == JSONL_OPENAI || fmt == JSONL_AZURE ? 2 : 1)) {
		err_set_line(
			err, lineno,
			"line %ld: temperature %g of [%s] is above what this provider takes (0 "
			"to 1)",
			lineno, ctx->temperature, ctx->remote ? ctx->remote : "the remote");
		rc = -EINVAL;
		goto out;
	}
	use_model = model ? model->valuestring : ctx->model && *ctx->model ? ctx->model : NULL;
	if (!use_model) {
		err_set_line(err, lineno,
			     "line %ld: prompt line without a model: give \"model\" on the line or "
			     "set 'model' in [%s]",
			     lineno, ctx->remote ? ctx->remote : "the remote's section");
		rc = -EINVAL;
		goto out;
	}
	/* Vertex: the job's model comes from the config; a line names one only if it says so. */
	native = build(fmt, id->valuestring, fmt == JSONL_VERTEX && !model ? NULL : use_model,
		       mt ? mt->valuedouble
			  : (double)(ctx->max_tokens ? ctx->max_tokens : PROMPT_MAX_TOKENS_DEFAULT),
		       t ? t->valuedouble : ctx->temperature, sys ? sys->valuestring : NULL,
		       cJSON_GetObjectItemCaseSensitive(root, "prompt")->valuestring);
	text = native ? cJSON_PrintUnformatted(native) : NULL;
	if (!text) {
		rc = -ENOMEM;
		goto out;
	}
	buf_release(&ctx->native);
	buf_init(&ctx->native, PROMPT_NATIVE_CAP(*len));
	rc = buf_addstr(&ctx->native, text);
	if (rc) {
		err_set_line(err, lineno, "line %ld: cannot translate the prompt line: %s", lineno,
			     strerror(-rc));
		goto out;
	}
	*line = ctx->native.data;
	*len = ctx->native.len;
	ctx->translated = true;
	ctx->nprompts++;
out:
	cJSON_free(text);
	cJSON_Delete(native);
	cJSON_Delete(root);
	return rc;
}
