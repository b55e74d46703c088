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
static int check_fields(const cJSON *root, const struct jsonl_format *fmt, long lineno,
			struct bfs_err *err)
{
	const cJSON *it, *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
	const cJSON *sys = cJSON_GetObjectItemCaseSensitive(root, "system");
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "temperature");
	double tmax = fmt->max_temperature;

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

/* {"role": role, "content": content} added to msgs; false when memory runs out. */
static bool add_message(cJSON *msgs, const char *role, const char *content)
{
	cJSON *m = cJSON_CreateObject();

	if (!m || !cJSON_AddItemToArray(msgs, m)) {
		cJSON_Delete(m);
		return false;
	}
	return cJSON_AddStringToObject(m, "role", role) &&
	       cJSON_AddStringToObject(m, "content", content);
}

bool prompt_add_messages(cJSON *req, const struct prompt_request *r, bool system_in_messages)
{
	cJSON *msgs = cJSON_AddArrayToObject(req, "messages");

	return msgs &&
	       (!r->system || !system_in_messages || add_message(msgs, "system", r->system)) &&
	       add_message(msgs, "user", r->prompt);
}

int prompt_line(struct prompt_ctx *ctx, const struct jsonl_format *fmt, const char **line,
		size_t *len, long lineno, struct bfs_err *err)
{
	static const char needle[] = "\"prompt\"";
	const cJSON *id, *sys, *model, *mt, *t;
	struct prompt_request r;
	cJSON *root = NULL, *native = NULL;
	char *text = NULL;
	int rc = 0;

	ctx->translated = false;
	/* Most native lines never spell the key: spare them a second parse. */
	if (!fmt || !fmt->prompt_native || !memmem(*line, *len, needle, sizeof(needle) - 1))
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
	if (!t && ctx->temperature > fmt->max_temperature) {
		err_set_line(
			err, lineno,
			"line %ld: temperature %g of [%s] is above what this provider takes (0 "
			"to %g)",
			lineno, ctx->temperature, ctx->remote ? ctx->remote : "the remote",
			fmt->max_temperature);
		rc = -EINVAL;
		goto out;
	}
	r.model = model ? model->valuestring : ctx->model && *ctx->model ? ctx->model : NULL;
	if (!r.model) {
		err_set_line(err, lineno,
			     "line %ld: prompt line without a model: give \"model\" on the line or "
			     "set 'model' in [%s]",
			     lineno, ctx->remote ? ctx->remote : "the remote's section");
		rc = -EINVAL;
		goto out;
	}
	r.custom_id = id->valuestring;
	r.model_on_line = model != NULL;
	r.max_tokens = mt ? mt->valuedouble
			  : (double)(ctx->max_tokens ? ctx->max_tokens : PROMPT_MAX_TOKENS_DEFAULT);
	r.temperature = t ? t->valuedouble : ctx->temperature;
	r.system = sys ? sys->valuestring : NULL;
	r.prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt")->valuestring;
	native = fmt->prompt_native(&r);
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
