// SPDX-License-Identifier: MIT
/* Unit tests: the streaming line splitter and the per-format request validator. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jsonl.h"
#include "jsonscan.h"
#include "price.h"
#include "tree_check.h"
#include "provider.h"
#include "providers/openai_common.h"
#include "tap.h"

struct collect {
	char text[4096]; /* lines joined with '|' */
	long last;
	int count;
};

static int collect_line(void *ctx, const char *line, size_t len, long lineno)
{
	struct collect *c = ctx;
	size_t n = strlen(c->text);

	if (n)
		c->text[n++] = '|';
	if (!line) /* skipped: over the cap */
		n += (size_t)snprintf(c->text + n, sizeof(c->text) - n, "<%zu>", len) - len;
	else
		memcpy(c->text + n, line, len);
	c->text[n + len] = '\0';
	c->last = lineno;
	c->count++;
	return 0;
}

/* Feeds data in chunks of `step` bytes (0: one chunk); skip: lines over the cap are skipped. */
static int split_skip(const char *data, size_t step, size_t cap, bool skip, struct collect *c,
		      struct bfs_err *err)
{
	struct jsonl_splitter s;
	size_t n = strlen(data), pos = 0;
	int rc = 0;

	memset(c, 0, sizeof(*c));
	jsonl_splitter_init(&s, cap, collect_line, c);
	s.skip_long = skip;
	while (!rc && pos < n) {
		size_t k = step && step < n - pos ? step : n - pos;

		rc = jsonl_splitter_feed(&s, data + pos, k, err);
		pos += k;
	}
	if (!rc)
		rc = jsonl_splitter_finish(&s, err);
	jsonl_splitter_release(&s);
	return rc;
}

static int split(const char *data, size_t step, size_t cap, struct collect *c, struct bfs_err *err)
{
	return split_skip(data, step, cap, false, c, err);
}

static void test_splitter_skip(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	struct collect c;

	for (size_t step = 0; step <= 13; step++) {
		is_int(split_skip("ok\n0123456789abc\nnext\n0123456789ab", step, 10, true, &c,
				  &err),
		       0, "skip mode in chunks of %zu", step);
		is_str(c.text, "ok|<13>|next|<12>",
		       "a line over the cap comes as NULL with its length (chunks of %zu)", step);
		is_int(c.last, 4, "and keeps its number (chunks of %zu)", step);
	}
	is_int(split_skip("0123456789\n", 1, 10, true, &c, &err), 0, "exactly the cap");
	is_str(c.text, "0123456789", "is a line, not skipped");
}

static void test_splitter(void)
{
	static const char *const input = "a\r\nbb\n\n ccc\r\nlast";
	struct bfs_err err = BFS_ERR_INIT;
	struct collect c;
	char big[300];

	for (size_t step = 0; step <= 7; step++) {
		is_int(split(input, step, 100, &c, &err), 0, "split in chunks of %zu", step);
		is_str(c.text, "a|bb|| ccc|last", "lines in chunks of %zu (CRLF split too)", step);
		is_int(c.last, 5, "5 lines numbered in chunks of %zu", step);
	}
	srand(7);
	for (int round = 0; round < 50; round++) {
		struct jsonl_splitter s;
		size_t n = strlen(input), pos = 0;

		memset(&c, 0, sizeof(c));
		jsonl_splitter_init(&s, 100, collect_line, &c);
		while (pos < n) {
			size_t k = (size_t)(rand() % 4) + 1;

			k = k < n - pos ? k : n - pos;
			jsonl_splitter_feed(&s, input + pos, k, &err);
			pos += k;
		}
		jsonl_splitter_finish(&s, &err);
		jsonl_splitter_release(&s);
		if (strcmp(c.text, "a|bb|| ccc|last"))
			break;
	}
	is_str(c.text, "a|bb|| ccc|last", "random chunk sizes give the same lines");

	is_int(split("x\ry\n", 0, 100, &c, &err), 0, "lone CR");
	is_str(c.text, "x\ry", "a lone CR stays in the line");

	memset(big, 'z', sizeof(big) - 2);
	big[sizeof(big) - 2] = '\n';
	big[sizeof(big) - 1] = '\0';
	err_clear(&err);
	is_int(split(big, 0, 100, &c, &err), -E2BIG, "a line over the cap is -E2BIG");
	is_int(err.line, 1, "the error names line 1");
	is_int(split(big, 13, 100, &c, &err), -E2BIG, "... also when it arrives in pieces");
	is_int(split("ok\n0123456789\n", 3, 10, &c, &err), 0, "a line of exactly the cap");
	is_int(split("ok\r\n0123456789\r\n", 5, 10, &c, &err), 0, "... with CRLF");
	is_str(c.text, "ok|0123456789", "CR is not counted against the cap");
	is_int(split("", 0, 10, &c, &err), 0, "empty input");
	is_int(c.count, 0, "gives no line");
}

#define A_OK "{\"custom_id\":\"a\",\"params\":{\"model\":\"m\",\"max_tokens\":5,\"messages\":[]}}"

/* The provider's line rules: the validator's provider hook. */
static jsonl_check_fn rules(const char *provider)
{
	return provider_lookup(provider)->validate_line;
}

static int check(const char *fmt, const char *const *lines, long *bad_line, char *msg,
		 uint64_t max_requests, uint64_t max_bytes)
{
	struct jsonl_limits lim = {max_requests, max_bytes, 0};
	struct jsonl_validator v;
	struct bfs_err err = BFS_ERR_INIT;
	int rc = 0;

	jsonl_validator_init(&v, provider_lookup(fmt)->format, rules(fmt), &lim);
	for (long i = 0; lines[i] && !rc; i++) {
		char *id = NULL;
		size_t idlen;

		rc = jsonl_validator_line(&v, lines[i], strlen(lines[i]), 1, i + 1, &id, &idlen,
					  &err);
		free(id);
	}
	if (!rc)
		rc = jsonl_validator_finish(&v, &err);
	*bad_line = err.line;
	strcpy(msg, err.msg);
	return rc;
}

struct vcase {
	const char *name;
	const char *fmt;
	const char *lines[4];
	long line;
	const char *word;
};

static const struct vcase cases[] = {
	{"not JSON", "anthropic", {A_OK, "{oops"}, 2, "not valid JSON"},
	{"not an object", "anthropic", {"[1]"}, 1, "object"},
	{"custom_id missing", "anthropic", {"{\"params\":{}}"}, 1, "custom_id is missing"},
	{"custom_id not a string", "anthropic", {"{\"custom_id\":1}"}, 1, "must be a string"},
	{"custom_id pattern",
	 "anthropic",
	 {"{\"custom_id\":\"a b\",\"params\":{\"model\":\"m\",\"max_tokens\":1,\"messages\":[]}}"},
	 1,
	 "^[a-zA-Z0-9_-]{1,64}$"},
	{"custom_id too long",
	 "anthropic",
	 {"{\"custom_id\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\","
	  "\"params\":{}}"},
	 1,
	 "1 to 64"},
	{"params missing", "anthropic", {"{\"custom_id\":\"a\"}"}, 1, "params is missing"},
	{"model wrong type",
	 "anthropic",
	 {"{\"custom_id\":\"a\",\"params\":{\"model\":1,\"max_tokens\":1,\"messages\":[]}}"},
	 1,
	 "params.model"},
	{"max_tokens zero",
	 "anthropic",
	 {"{\"custom_id\":\"a\",\"params\":{\"model\":\"m\",\"max_tokens\":0,\"messages\":[]}}"},
	 1,
	 "params.max_tokens must be an integer >= 1"},
	{"messages missing",
	 "anthropic",
	 {"{\"custom_id\":\"a\",\"params\":{\"model\":\"m\",\"max_tokens\":3}}"},
	 1,
	 "params.messages is missing"},
	{"unknown field beside params",
	 "anthropic",
	 {"{\"custom_id\":\"a\",\"params\":{\"model\":\"m\",\"max_tokens\":3,\"messages\":[]},"
	  "\"betas\":[]}"},
	 1,
	 "unexpected field 'betas'"},
	{"only blank lines", "anthropic", {"", "  "}, 1, "no requests"},
	{"openai bad method",
	 "openai",
	 {"{\"custom_id\":\"a\",\"method\":\"GET\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":"
	  "\"m\"}}"},
	 1,
	 "POST"},
	{"openai unknown endpoint",
	 "openai",
	 {"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/files\",\"body\":{\"model\":"
	  "\"m\"}}"},
	 1,
	 "not an endpoint"},
	{"openai mixed endpoints",
	 "openai",
	 {"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":"
	  "\"m\"}}",
	  "",
	  "{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":"
	  "{\"model\":\"m\"}}"},
	 3,
	 "on line 1"},
	{"openai body missing model",
	 "openai",
	 {"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}"},
	 1,
	 "body.model"},
	{"azure mixed models",
	 "azure",
	 {"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/chat/completions\",\"body\":"
	  "{\"model\":\"d1\"}}",
	  "{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":"
	  "{\"model\":\"d2\"}}"},
	 2,
	 "one deployment"},
	{"vertex request missing", "vertex", {"{\"custom_id\":\"a\"}"}, 1, "request"},
	{"vertex max_tokens",
	 "vertex",
	 {"{\"custom_id\":\"a\",\"request\":{\"messages\":[],\"max_tokens\":\"1\"}}"},
	 1,
	 "request.max_tokens"},
	{"vertex anthropic_version missing",
	 "vertex",
	 {"{\"custom_id\":\"a\",\"request\":{\"messages\":[],\"max_tokens\":1}}"},
	 1,
	 "request.anthropic_version is missing"},
	{"vertex anthropic_version not vertex-",
	 "vertex",
	 {"{\"custom_id\":\"a\",\"request\":{\"messages\":[],\"max_tokens\":1,"
	  "\"anthropic_version\":\"2023-06-01\"}}"},
	 1,
	 "vertex-2023-10-16"},
	{"vertex mixed models",
	 "vertex",
	 {"{\"custom_id\":\"a\",\"request\":{\"messages\":[],\"max_tokens\":1,"
	  "\"anthropic_version\":\"vertex-2023-10-16\"}}",
	  "{\"custom_id\":\"b\",\"request\":{\"messages\":[],\"max_tokens\":1,"
	  "\"anthropic_version\":\"vertex-2023-10-16\",\"model\":\"m1\"}}",
	  "{\"custom_id\":\"c\",\"request\":{\"messages\":[],\"max_tokens\":1,"
	  "\"anthropic_version\":\"vertex-2023-10-16\",\"model\":\"m2\"}}"},
	 3,
	 "on line 2"},
};

static void test_validator(void)
{
	const char *const many[] = {
		A_OK,
		"{\"custom_id\":\"b\",\"params\":{\"model\":\"m\",\"max_tokens\":"
		"5,\"messages\":[]}}",
		"{\"custom_id\":\"c\",\"params\":{\"model\":\"m\",\"max_tokens\":"
		"5,\"messages\":[]}}",
		NULL};
	const char *const good_openai[] = {
		"{\"custom_id\":\"a/b ..\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\","
		"\"body\":{\"model\":\"gpt\"}}",
		NULL};
	char msg[BFS_ERR_MSG_MAX];
	long line;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = check(cases[i].fmt, cases[i].lines, &line, msg, 0, 0);

		ok(rc == -EINVAL || rc == -ENODATA, "%s is refused", cases[i].name);
		is_int(line, cases[i].line, "%s names line %ld", cases[i].name, cases[i].line);
		ok(strstr(msg, cases[i].word) != NULL, "%s says '%s' (%s)", cases[i].name,
		   cases[i].word, msg);
	}
	is_int(check("anthropic", many, &line, msg, 0, 0), 0, "three good lines pass");
	is_int(check("anthropic", many, &line, msg, 2, 0), -EINVAL, "max_requests 2");
	is_int(line, 3, "too many requests names the first line over");
	ok(strstr(msg, "at most 2") != NULL, "and the limit (%s)", msg);
	is_int(check("anthropic", many, &line, msg, 0, 100), -EINVAL, "max_bytes 100");
	is_int(line, 2, "too many bytes names the line that crosses the limit");
	is_int(check("openai", good_openai, &line, msg, 0, 0), 0,
	       "openai custom_ids may be any string");
	ok(oai_is_endpoint("/v1/embeddings") && !oai_is_endpoint("/embeddings"),
	   "endpoint list is of /v1 urls");
}

/* The strict scan: each case as bytes (NULs included), the column it names and a word. */
struct scase {
	const char *name;
	const char *text;
	size_t len; /* 0: strlen(text) */
	size_t column;
	const char *word;
};

#define S(str) str, sizeof(str) - 1
#define IDP    "{\"custom_id\":\"a\",\"params\":{\"model\":\"m\",\"max_tokens\":1,\"messages\":[]}}"

static const struct scase strict_bad[] = {
	{"text after the object", S(IDP " x"), 71, "text after the JSON value"},
	{"two objects on a line", S(IDP IDP), 70, "text after the JSON value"},
	{"a NUL outside strings", S(IDP "\0"), 70, "a NUL byte"},
	{"a NUL inside a string", S("{\"custom_id\":\"a\0b\"}"), 16, "a NUL byte"},
	{"NUL padding (dd seek=)", S("\0\0\0\0"), 1, "a NUL byte"},
	{"a UTF-8 BOM", S("\xef\xbb\xbf" IDP), 1, "byte order mark"},
	{"lone CR line ends", S(IDP "\r" IDP), 70, "lone CR"},
	{"a CR between tokens", S("{\"custom_id\":\r\"a\"}"), 14, "lone CR"},
	{"invalid UTF-8", S("{\"custom_id\":\"\xff\"}"), 15, "invalid UTF-8"},
	{"an overlong '/'", S("{\"custom_id\":\"\xc0\xaf\"}"), 15, "overlong"},
	{"an overlong 3-byte form", S("{\"x\":\"\xe0\x80\xaf\"}"), 7, "overlong"},
	{"an overlong 4-byte form", S("{\"x\":\"\xf0\x80\x80\xaf\"}"), 7, "overlong"},
	{"a surrogate in UTF-8", S("{\"x\":\"\xed\xa0\x80\"}"), 7, "surrogate"},
	{"above U+10FFFF", S("{\"x\":\"\xf4\x90\x80\x80\"}"), 7, "invalid UTF-8"},
	{"a cut sequence", S("{\"x\":\"\xe2\x82\"}"), 7, "invalid UTF-8"},
	{"a lone high surrogate escape", S("{\"x\":\"\\ud800\"}"), 7, "surrogate"},
	{"a lone low surrogate escape", S("{\"x\":\"\\udc00\\ud800\"}"), 7, "surrogate"},
	{"custom_id with \\u0000", S("{\"custom_id\":\"a\\u0000b\"}"), 14, "\\u0000 in custom_id"},
	{"custom_id escaped, with \\u0000", S("{\"custom\\u005fid\":\"a\\u0000\"}"), 19,
	 "\\u0000 in custom_id"},
	{"a key with \\u0000", S("{\"custom_id\\u0000\":\"a\"}"), 2, "\\u0000 in a key"},
	{"duplicate custom_id", S("{\"custom_id\":\"a\",\"custom_id\":\"b\"}"), 18,
	 "duplicate key"},
	{"duplicate custom_id, escaped", S("{\"custom_id\":\"a\",\"custom\\u005Fid\":\"b\"}"), 18,
	 "duplicate key"},
	{"duplicate params", S("{\"params\":{},\"custom_id\":\"a\",\"params\":{}}"), 30,
	 "duplicate"},
	{"duplicate key inside params", S("{\"params\":{\"model\":\"a\",\"model\":\"b\"}}"), 24,
	 "duplicate"},
	{"duplicate key inside body", S("{\"body\":{\"model\":\"a\",\"model\":\"b\"}}"), 22,
	 "duplicate"},
	{"duplicate key inside request", S("{\"request\":{\"a\":1,\"a\":2}}"), 19, "duplicate"},
	{"a control character", S("{\"x\":\"\x01\"}"), 7, "control character"},
	{"a tab in a string", S("{\"x\":\"\t\"}"), 7, "control character"},
	{"form feed as whitespace", S("{\"x\":1,\f\"y\":2}"), 8, "expected a quoted key"},
	{"vertical tab as whitespace", S("\v" IDP), 1, "expected a value"},
	{"a bad escape", S("{\"x\":\"\\q\"}"), 7, "unknown escape"},
	{"a leading zero", S("{\"x\":01}"), 7, "expected ','"},
	{"a bare minus", S("{\"x\":-}"), 6, "bad number"},
	{"a trailing comma", S("{\"x\":1,}"), 8, "expected a quoted key"},
	{"an unterminated string", S("{\"x\":\"abc"), 6, "unterminated"},
	{"a cut object", S("{\"x\":"), 6, "cut short"},
	{"single quotes", S("{'x':1}"), 2, "expected a quoted key"},
	{"NaN", S("{\"x\":NaN}"), 6, "expected a value"},
};

static const char *const strict_good[] = {
	IDP,
	"  " IDP " \t ",
	"{\"custom_id\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",\"x\":\"\\ud83d\\ude00\"}",
	("{\"a\":[1,-0.5e+3,true,false,null,{\"a\":1,\"a\":2}],\"s\":\"\\\"\\\\\\/"
	 "\\b\\f\\n\\r\\t\"}"),
	"{\"other\":{\"k\":1,\"k\":2},\"msg\":\"a\\u0000b\"}",
	"[1]",
	"{}",
};

static void test_strict(void)
{
	struct jsonscan_error e;
	char deep[3000];

	for (size_t i = 0; i < sizeof(strict_bad) / sizeof(strict_bad[0]); i++) {
		const struct scase *c = &strict_bad[i];
		int rc = jsonscan_line(c->text, c->len, &e);

		is_int(rc, -EINVAL, "%s is refused", c->name);
		if (rc)
			ok(strstr(e.why, c->word) != NULL, "%s: says '%s' (%s)", c->name, c->word,
			   e.why);
		if (rc)
			is_int(e.column, c->column, "%s: at column %zu", c->name, c->column);
	}
	for (size_t i = 0; i < sizeof(strict_good) / sizeof(strict_good[0]); i++)
		is_int(jsonscan_line(strict_good[i], strlen(strict_good[i]), &e), 0, "accepted: %s",
		       strict_good[i]);
	memset(deep, '[', 1000);
	memset(deep + 1000, ']', 1000);
	is_int(jsonscan_line(deep, 2000, &e), 0, "1000 levels of nesting are accepted");
	memset(deep, '[', 1001);
	memset(deep + 1001, ']', 1001);
	is_int(jsonscan_line(deep, 2002, &e), -EINVAL, "1001 are not");
	is_int(jsonscan_line("", 0, &e), -EINVAL, "an empty line is no value");
}

/* Lines whose shallow tree (jsonscan_tree) must read as cJSON reads them. */
static const char *const tree_lines[] = {
	A_OK,
	"{\"custom_id\":\"r-1\",\"params\":{\"model\":\"claude\",\"max_tokens\":1024,"
	"\"temperature\":0.7,\"system\":\"Be \\\"brief\\\"\\n\",\"messages\":[{\"role\":"
	"\"user\",\"content\":\"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00 \\/ \\u0001 tab\\t end\"}],"
	"\"tools\":[{\"name\":\"t\",\"input_schema\":{\"type\":\"object\",\"n\":[1,2.5,-0,"
	"1e400,123456789012,1.0e-7,0.30000000000000004,2147483648,true,false,null]}}],\"metadata\":"
	"{}}}",
	"{\"custom_id\":\"o\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{"
	"\"model\":\"gpt\",\"n\":3,\"max_completion_tokens\":9,\"messages\":[{\"role\":"
	"\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
	"\"text\":\"cut \\u0000 here\"}]}]}}",
	("{\"custom_id\":\"v\",\"request\":{\"anthropic_version\":\"vertex-2023-10-16\","
	 "\"messages\":[],\"max_tokens\":1,\"x\":{\"k\":1,\"k\":2}},\"top\":[[[]],{}]}"),
	"  {\"a\" : [ 1 , { \"b\" : [ 2 ] } ] , \"s\" : \"\\u0041\\u0000b\" }  ",
	"[1,[2,[3]],{\"a\":{\"b\":{}}}]",
	"{\"long\":-44444444444444444444444444444444444444444444444444444444444444444444444444499e-"
	"3}",
	"{\"\\u006b\":\"a\\u0000b\",\"e\":\"\",\"z\":\"\\u00e9\\ud83d\\ude00\\\"\\\\/\",\"m\":1}",
	"\"a string\"",
	"-12.5e3",
	"{}",
};

static void test_tree(void)
{
	static const char *const provs[] = {"anthropic", "openai", "vertex"};
	struct jsonscan_error e;
	cJSON *mine, *ref;
	char big[64];

	for (size_t i = 0; i < sizeof(tree_lines) / sizeof(tree_lines[0]); i++) {
		const char *l = tree_lines[i];

		ref = cJSON_Parse(l);
		is_int(jsonscan_tree(l, strlen(l), &mine, &e), 0, "tree %zu built", i);
		ok(ref && mine, "tree %zu: both parsed", i);
		if (!ref || !mine) {
			cJSON_Delete(ref);
			cJSON_Delete(mine);
			continue;
		}
		ok(tree_diff(mine, ref, 1) == NULL, "tree %zu reads as cJSON's (%s)", i,
		   tree_diff(mine, ref, 1) ? tree_diff(mine, ref, 1) : "same");
		if (i) {
			const char *o = tree_lines[i - 1];

			ok(view_diff(jv_line(o, strlen(o)), ref) != NULL,
			   "view %zu: line %zu does not read the same", i, i - 1);
		}
		ok(view_diff(jv_line(l, strlen(l)), ref) == NULL, "view %zu reads as cJSON's (%s)",
		   i,
		   view_diff(jv_line(l, strlen(l)), ref) ? view_diff(jv_line(l, strlen(l)), ref)
							 : "same");
		/* The estimate reads sizes from it: the same figures as from the full tree. */
		for (size_t k = 0; k < sizeof(provs) / sizeof(provs[0]); k++) {
			struct price_estimate a, b;

			memset(&a, 0, sizeof(a));
			memset(&b, 0, sizeof(b));
			price_estimate_object(&a, provider_lookup(provs[k])->format, ref, "d");
			price_estimate_object(&b, provider_lookup(provs[k])->format, mine, "d");
			ok(a.n == b.n && !memcmp(a.m, b.m, sizeof(a.m)) &&
				   a.unbounded == b.unbounded,
			   "tree %zu: %s estimate as from cJSON's tree", i, provs[k]);
		}
		cJSON_Delete(ref);
		cJSON_Delete(mine);
	}
	is_int(jsonscan_tree("{\"a\":1} x", 9, &mine, &e), -EINVAL, "a bad line builds nothing");
	ok(mine == NULL, "and leaves NULL");
	/* A number longer than cJSON's 63-byte buffer is still read whole. */
	memset(big, '1', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	is_int(jsonscan_tree(big, strlen(big), &mine, &e), 0, "a 63-digit number");
	ok(mine && cJSON_IsNumber(mine) && mine->valuedouble > 1.1e62, "read whole");
	cJSON_Delete(mine);
}

/* Through the validator: the message has the line and the byte column. */
static void test_strict_message(void)
{
	const char *const lines[] = {A_OK, A_OK " {}", NULL};
	const char *const big[] = {
		"{\"custom_id\":\"a\",\"params\":{\"model\":\"m\",\"max_tokens\":1e300,"
		"\"messages\":[]}}",
		NULL};
	char msg[BFS_ERR_MSG_MAX];
	long line;

	is_int(check("anthropic", lines, &line, msg, 0, 0), -EINVAL, "trailing text refused");
	is_int(line, 2, "on line 2");
	is_str(msg, "line 2, column 71: text after the JSON value (one request per line)",
	       "the message names line and column");
	is_int(check("anthropic", big, &line, msg, 0, 0), -EINVAL, "max_tokens 1e300 refused");
	ok(strstr(msg, "max_tokens must be an integer") != NULL, "as out of range (%s)", msg);
}

int main(void)
{
	test_splitter();
	test_splitter_skip();
	test_validator();
	test_strict();
	test_strict_message();
	test_tree();
	return tap_done();
}
