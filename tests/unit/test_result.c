// SPDX-License-Identifier: MIT
/*
 * Unit tests: result lines of each provider read for their outcome, text and usage
 * (result.h), from the shapes the providers document: Anthropic's result.message, OpenAI's
 * output and error files (cached_tokens counted as cache reads, out of the input), Vertex's
 * prediction lines.
 */
#include <string.h>

#include "result.h"
#include "tap.h"

#define S(x) x, sizeof(x) - 1

static void test_anthropic(void)
{
	struct result_info r;

	is_int(result_parse_anthropic(
		       S("{\"custom_id\":\"a\",\"result\":{\"type\":\"succeeded\",\"message\":{"
			 "\"model\":\"claude-x\",\"content\":[{\"type\":\"text\",\"text\":\"one "
			 "\"},"
			 "{\"type\":\"tool_use\",\"id\":\"t\"},{\"type\":\"text\",\"text\":\"two\"}"
			 "],"
			 "\"usage\":{\"input_tokens\":10,\"output_tokens\":3,"
			 "\"cache_creation_input_tokens\":4,\"cache_read_input_tokens\":5}}}}"),
		       &r),
	       0, "anthropic: parsed");
	is_int(r.type, RESULT_SUCCEEDED, "succeeded");
	is_str(r.text, "one two", "text blocks joined, other blocks skipped");
	is_int(r.text_len, 7, "text length");
	is_str(r.usage.model, "claude-x", "model");
	is_int(r.usage.input_tokens, 10, "input");
	is_int(r.usage.output_tokens, 3, "output");
	is_int(r.usage.cache_creation_tokens, 4, "cache writes");
	is_int(r.usage.cache_read_tokens, 5, "cache reads");
	result_info_release(&r);
	is_int(result_parse_anthropic(S("{\"custom_id\":\"a\",\"result\":{\"type\":\"errored\","
					"\"error\":{}}}"),
				      &r),
	       0, "errored parsed");
	is_int(r.type, RESULT_ERRORED, "errored");
	ok(!r.text, "no text");
	is_int(result_parse_anthropic(S("{\"result\":{\"type\":\"expired\"}}"), &r), 0, "expired");
	is_int(r.type, RESULT_EXPIRED, "expired type");
	is_int(result_parse_anthropic(S("{\"result\":{\"type\":\"canceled\"}}"), &r), 0,
	       "canceled");
	is_int(r.type, RESULT_CANCELED, "canceled type");
	is_int(result_parse_anthropic(S("not json"), &r), 0, "not JSON");
	is_int(r.type, RESULT_UNKNOWN, "unknown, never succeeded");
}

static void test_openai(void)
{
	struct result_info r;

	is_int(result_parse_openai(
		       S("{\"id\":\"b\",\"custom_id\":\"c\",\"response\":{\"status_code\":200,"
			 "\"body\":{\"model\":\"gpt-4o-mini\",\"choices\":[{\"message\":{\"role\":"
			 "\"assistant\",\"content\":\"hi there\"}}],\"usage\":{\"prompt_tokens\":"
			 "100,\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":"
			 "64}}}},\"error\":null}"),
		       &r),
	       0, "openai: parsed");
	is_int(r.type, RESULT_SUCCEEDED, "succeeded");
	is_str(r.text, "hi there", "choices[0].message.content");
	is_int(r.usage.input_tokens, 36, "cached tokens taken out of the input");
	is_int(r.usage.cache_read_tokens, 64, "and counted as cache reads");
	is_int(r.usage.output_tokens, 7, "output");
	result_info_release(&r);
	is_int(result_parse_openai(S("{\"custom_id\":\"c\",\"response\":{\"status_code\":400,"
				     "\"body\":{\"error\":{}}},\"error\":null}"),
				   &r),
	       0, "400 parsed");
	is_int(r.type, RESULT_ERRORED, "a 400 is errored");
	is_int(result_parse_openai(S("{\"custom_id\":\"c\",\"response\":null,\"error\":{\"code\":"
				     "\"batch_expired\",\"message\":\"m\"}}"),
				   &r),
	       0, "expired parsed");
	is_int(r.type, RESULT_EXPIRED, "batch_expired");
	is_int(result_parse_openai(S("{\"custom_id\":\"c\",\"response\":null,\"error\":{\"code\":"
				     "\"batch_cancelled\",\"message\":\"m\"}}"),
				   &r),
	       0, "cancelled parsed");
	is_int(r.type, RESULT_CANCELED, "batch_cancelled");
	is_int(result_parse_openai(
		       S("{\"custom_id\":\"c\",\"response\":{\"status_code\":200,\"body\":{"
			 "\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\","
			 "\"text\":\"r\"}]}],\"usage\":{\"input_tokens\":5,\"output_tokens\":1,"
			 "\"input_tokens_details\":{\"cached_tokens\":2}}}},\"error\":null}"),
		       &r),
	       0, "responses API parsed");
	is_str(r.text, "r", "output_text");
	is_int(r.usage.input_tokens, 3, "input less cached");
	result_info_release(&r);
}

static void test_vertex(void)
{
	struct result_info r;

	is_int(result_parse_vertex(
		       S("{\"custom_id\":\"v\",\"request\":{},\"response\":{\"type\":\"message\","
			 "\"content\":[{\"type\":\"text\",\"text\":\"echo\"}],\"usage\":{"
			 "\"input_tokens\":2,\"output_tokens\":1}},\"status\":\"\"}"),
		       &r),
	       0, "vertex: parsed");
	is_int(r.type, RESULT_SUCCEEDED, "succeeded");
	is_str(r.text, "echo", "text");
	is_int(r.usage.input_tokens, 2, "input");
	result_info_release(&r);
	is_int(result_parse_vertex(S("{\"custom_id\":\"v\",\"request\":{},\"status\":\"Bad "
				     "Request\"}"),
				   &r),
	       0, "error parsed");
	is_int(r.type, RESULT_ERRORED, "a non-empty status is an error");
}

int main(void)
{
	test_anthropic();
	test_openai();
	test_vertex();
	return tap_done();
}
