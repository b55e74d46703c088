// SPDX-License-Identifier: MIT
/*
 * Unit tests: prompt lines into each format's native line (exact bytes, key order), the
 * remote's defaults and the line's own values, refusals with the line number, native lines
 * left alone, and the validator hook (a prompt line checked as its translation).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jsonl.h"
#include "price.h"
#include "prompt.h"
#include "provider.h"
#include "tap.h"

/* The line format of a provider. */
#define FMT(provider) (provider_lookup(provider)->format)

static int tr(struct prompt_ctx *c, const struct jsonl_format *fmt, const char *in,
	      const char **out, struct bfs_err *err)
{
	size_t len = strlen(in);

	*out = in;
	return prompt_line(c, fmt, out, &len, 7, err);
}

static void test_formats(void)
{
	const char *in = "{\"custom_id\":\"q1\",\"prompt\":\"Hi \\\"you\\\"\",\"system\":\"S\"}";
	struct bfs_err err = BFS_ERR_INIT;
	struct prompt_ctx c;
	const char *out;

	prompt_ctx_init(&c);
	c.remote = "r";
	c.model = "m";
	c.max_tokens = 64;
	is_int(tr(&c, FMT("anthropic"), in, &out, &err), 0, "anthropic");
	is_str(out,
	       "{\"custom_id\":\"q1\",\"params\":{\"model\":\"m\",\"max_tokens\":64,\"system\":"
	       "\"S\","
	       "\"messages\":[{\"role\":\"user\",\"content\":\"Hi \\\"you\\\"\"}]}}",
	       "anthropic params, system apart");
	ok(c.translated, "flagged");
	is_int(tr(&c, FMT("openai"), in, &out, &err), 0, "openai");
	is_str(out,
	       "{\"custom_id\":\"q1\",\"method\":\"POST\",\"url\":\"/v1/chat/"
	       "completions\",\"body\":"
	       "{\"model\":\"m\",\"max_completion_tokens\":64,\"messages\":[{\"role\":\"system\","
	       "\"content\":\"S\"},{\"role\":\"user\",\"content\":\"Hi \\\"you\\\"\"}]}}",
	       "openai chat body, system as a message");
	is_int(tr(&c, FMT("azure"), in, &out, &err), 0, "azure");
	ok(strstr(out, "\"url\":\"/chat/completions\"") != NULL, "azure url as its samples");
	is_int(tr(&c, FMT("vertex"), in, &out, &err), 0, "vertex");
	is_str(out,
	       "{\"custom_id\":\"q1\",\"request\":{\"anthropic_version\":\"vertex-2023-10-16\","
	       "\"max_tokens\":64,\"system\":\"S\",\"messages\":[{\"role\":\"user\",\"content\":"
	       "\"Hi \\\"you\\\"\"}]}}",
	       "vertex: no model (the job's)");
	is_int(tr(&c, FMT("vertex"),
		  "{\"custom_id\":\"a\",\"prompt\":\"p\",\"model\":\"x@1\",\"max_tokens\":3,"
		  "\"temperature\":0.5}",
		  &out, &err),
	       0, "vertex with the line's model");
	is_str(out,
	       "{\"custom_id\":\"a\",\"request\":{\"model\":\"x@1\",\"anthropic_version\":\"vertex-"
	       "2023-10-16\",\"max_tokens\":3,\"temperature\":0.5,\"messages\":[{\"role\":\"user\","
	       "\"content\":\"p\"}]}}",
	       "the line's model, max_tokens and temperature win");
	is_int(c.nprompts, 5, "five translated");

	c.model = NULL;
	c.max_tokens = 0;
	is_int(tr(&c, FMT("anthropic"), "{\"custom_id\":\"a\",\"prompt\":\"p\",\"model\":\"z\"}",
		  &out, &err),
	       0, "no defaults");
	ok(strstr(out, "\"max_tokens\":1024") != NULL, "max_tokens defaults to %d",
	   PROMPT_MAX_TOKENS_DEFAULT);
	c.temperature = 1.5;
	is_int(tr(&c, FMT("openai"), "{\"custom_id\":\"a\",\"prompt\":\"p\",\"model\":\"z\"}", &out,
		  &err),
	       0, "the remote's temperature 1.5 suits OpenAI");
	ok(strstr(out, "\"temperature\":1.5") != NULL, "and is applied: %s", out);
	is_int(tr(&c, FMT("anthropic"), "{\"custom_id\":\"a\",\"prompt\":\"p\",\"model\":\"z\"}",
		  &out, &err),
	       -EINVAL, "but not Claude");
	ok(strstr(err.msg, "[r]") != NULL, "naming the remote: %s", err.msg);
	c.temperature = -1;
	is_int(tr(&c, FMT("openai"), "{\"custom_id\":\"a\",\"prompt\":\"p\"}", &out, &err), -EINVAL,
	       "no model anywhere");
	is_int(err.line, 7, "refused with its line");
	ok(strstr(err.msg, "line 7") && strstr(err.msg, "[r]"), "says where to set it: %s",
	   err.msg);
	prompt_ctx_release(&c);
}

static void test_refusals_and_native(void)
{
	static const char *const bad[] = {
		"{\"custom_id\":\"a\",\"prompt\":\"\"}",
		"{\"custom_id\":\"a\",\"prompt\":5}",
		"{\"custom_id\":\"a\",\"prompt\":\"p\",\"system\":1}",
		"{\"custom_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":1.5}",
		"{\"custom_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":0}",
		"{\"custom_id\":\"a\",\"prompt\":\"p\",\"temperature\":1.2}",
		"{\"custom_id\":\"a\",\"prompt\":\"p\",\"messages\":[]}",
		"{\"custom_id\":\"a\",\"prompt\":\"p\",\"model\":\"\"}",
	};
	static const char *const native[] = {
		/* OpenAI's legacy completions endpoint has a "prompt" in its body */
		("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":"
		 "{\"model\":\"m\",\"prompt\":\"p\"}}"),
		"{\"custom_id\":\"a\",\"params\":{\"model\":\"m\"},\"prompt\":\"p\"}",
		"{\"custom_id\":\"a\",\"params\":{}}",
		"not json \"prompt\"",
		"   ",
	};
	struct bfs_err err = BFS_ERR_INIT;
	struct prompt_ctx c;
	const char *out;

	prompt_ctx_init(&c);
	c.model = "m";
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err.msg[0] = '\0';
		is_int(tr(&c, FMT("anthropic"), bad[i], &out, &err), -EINVAL, "refused: %s",
		       bad[i]);
		ok(err.line == 7 && strstr(err.msg, "line 7"), "with its line: %s", err.msg);
	}
	for (size_t i = 0; i < sizeof(native) / sizeof(native[0]); i++) {
		is_int(tr(&c, FMT("openai"), native[i], &out, &err), 0, "left alone: %s",
		       native[i]);
		ok(out == native[i] && !c.translated, "not translated");
	}
	prompt_ctx_release(&c);
}

static void test_validator_hook(void)
{
	const char *line = "{\"custom_id\":\"q1\",\"prompt\":\"hi\"}";
	struct bfs_err err = BFS_ERR_INIT;
	struct jsonl_validator v;
	struct prompt_ctx c;
	char *id = NULL;
	size_t idlen = 0;

	prompt_ctx_init(&c);
	c.model = "m";
	jsonl_validator_init(&v, FMT("openai"), provider_lookup("openai")->validate_line, NULL);
	is_int(jsonl_validator_line(&v, line, strlen(line), 1, 1, &id, &idlen, &err), -EINVAL,
	       "without the hook a prompt line is not a native line");
	v.prompt = &c;
	v.bytes = 0;
	is_int(jsonl_validator_line(&v, line, strlen(line), 1, 2, &id, &idlen, &err), 0,
	       "with it, accepted (%s)", err.msg);
	is_str(id, "q1", "its custom_id");
	is_str(v.model, "m", "validated as the translation: its model is the batch's");
	is_str(v.endpoint, "/v1/chat/completions", "and its endpoint");
	is_int(v.bytes, c.native.len + 1, "byte limits count the translation");
	ok(c.translated, "flagged as translated");
	free(id);
	id = NULL;
	line = "{\"custom_id\":\"n1\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\","
	       "\"body\":{\"model\":\"m\",\"messages\":[]}}";
	is_int(jsonl_validator_line(&v, line, strlen(line), 1, 3, &id, &idlen, &err), 0,
	       "a native line after it (%s)", err.msg);
	ok(!c.translated, "is not flagged as translated (the caller copies it as written)");
	free(id);
	id = NULL;
	line = "{\"custom_id\":\"bad\",\"prompt\":\"hi\"} trailing";
	is_int(jsonl_validator_line(&v, line, strlen(line), 1, 4, &id, &idlen, &err), -EINVAL,
	       "a prompt line is strict JSON too");
	ok(strstr(err.msg, "text after the JSON value") != NULL, "says why: %s", err.msg);
	err_clear(&err);
	line = "{\"custom_id\":\"q2\",\"prompt\":\"hi\",\"model\":\"other\"}";
	is_int(jsonl_validator_line(&v, line, strlen(line), 1, 5, &id, &idlen, &err), -EINVAL,
	       "one model per OpenAI batch holds for prompt lines too");
	is_int(err.line, 5, "line 5");
	free(id);
	prompt_ctx_release(&c);
}

/*
 * A fifth provider's format, defined here as a new provider would in its own file: prompt
 * lines and the estimate follow it with no change to prompt.c or price.c.
 */
static cJSON *fifth_prompt_native(const struct prompt_request *r)
{
	cJSON *root = cJSON_CreateObject(), *in = NULL;

	if (cJSON_AddStringToObject(root, "custom_id", r->custom_id))
		in = cJSON_AddObjectToObject(root, "input");
	if (!in || !cJSON_AddStringToObject(in, "model", r->model) ||
	    !cJSON_AddNumberToObject(in, "max_output_tokens", r->max_tokens) ||
	    !cJSON_AddStringToObject(in, "text", r->prompt)) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

static void test_fifth_format(void)
{
	static const struct jsonl_format fifth = {
		.name = "fifth",
		.request_key = "input",
		.max_temperature = 1.5,
		.prompt_native = fifth_prompt_native,
	};
	struct bfs_err err = BFS_ERR_INIT;
	struct price_estimate e;
	struct prompt_ctx c;
	const char *out;

	prompt_ctx_init(&c);
	c.model = "f-1";
	c.max_tokens = 9;
	is_int(tr(&c, &fifth, "{\"custom_id\":\"x\",\"prompt\":\"hello\"}", &out, &err), 0,
	       "a new format's prompt line");
	is_str(out,
	       "{\"custom_id\":\"x\",\"input\":{\"model\":\"f-1\",\"max_output_tokens\":9,"
	       "\"text\":\"hello\"}}",
	       "built by the format's own prompt_native");
	memset(&e, 0, sizeof(e));
	price_estimate_line(&e, &fifth, out, strlen(out), NULL);
	is_int((int)e.n, 1, "the estimate finds the request under the format's request_key");
	is_str(e.m[0].model, "f-1", "with its model");
	is_int((int)e.m[0].output_tokens, 9, "and its output cap");
	is_int(tr(&c, &fifth, "{\"custom_id\":\"x\",\"prompt\":\"p\",\"temperature\":1.6}", &out,
		  &err),
	       -EINVAL, "the format's temperature bound");
	ok(strstr(err.msg, "0 to 1.5") != NULL, "named in the reason: %s", err.msg);
	err_clear(&err);
	c.temperature = 1.4;
	is_int(tr(&c, &fifth, "{\"custom_id\":\"x\",\"prompt\":\"p\"}", &out, &err), 0,
	       "a remote's temperature under the bound");
	is_int(tr(&c, NULL, "{\"custom_id\":\"x\",\"prompt\":\"p\"}", &out, &err), 0,
	       "no format: no translation");
	ok(!c.translated, "left for the native validator");
	prompt_ctx_release(&c);
}

int main(void)
{
	test_formats();
	test_refusals_and_native();
	test_validator_hook();
	test_fifth_format();
	return tap_done();
}
