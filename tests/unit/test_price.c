// SPDX-License-Identifier: MIT
/*
 * Unit tests: the price table (parsing, header, errors, lookup with snapshot dates and Vertex
 * resource names), pricing of usage, the upper-bound estimate and its JSON, and the actual
 * cost from usage at the prices the estimate recorded (price_status_json()).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "price.h"
#include "provider.h"
#include "tap.h"

/* The line format of a provider. */
#define FMT(provider) (provider_lookup(provider)->format)

static char path[] = "/tmp/batchfs-test-price-XXXXXX";

static void write_table(const char *text)
{
	FILE *f = fopen(path, "w");

	fputs(text, f);
	fclose(f);
}

static bool near(double a, double b)
{
	return fabs(a - b) <= 1e-12 * (fabs(a) + fabs(b) + 1);
}

static void test_load(void)
{
	struct bfs_err err = BFS_ERR_INIT;
	struct price_table *t = NULL;
	const struct price_row *r;
	int rc;

	write_table("# date: 2026-01-01\n# source: https://example.invalid/a\n# source: second\n\n"
		    "m-one\t1\t2\t3\t4\n  m-two \t 0.5\t1.5\t0\t0.05\r\n");
	rc = price_table_load(&t, path, &err);
	is_int(rc, 0, "a table loads (%s)", err.msg);
	is_int(t ? t->n : 0, 2, "two rows");
	is_str(t->date, "2026-01-01", "date from the header");
	is_str(t->source, "https://example.invalid/a", "first source from the header");
	r = price_lookup(t, "m-two");
	ok(r && near(r->input, 0.5) && near(r->output, 1.5) && near(r->cache_read, 0.05),
	   "fields trimmed, CRLF ok");
	ok(price_lookup(t, "m-one-20250101") == &t->rows[0], "-YYYYMMDD snapshot: the undated row");
	ok(price_lookup(t, "m-one@20250101") == &t->rows[0], "@YYYYMMDD (Vertex): the undated row");
	ok(price_lookup(t, "m-one-2025-01-01") == &t->rows[0], "-YYYY-MM-DD (OpenAI): undated row");
	ok(price_lookup(t, "publishers/anthropic/models/m-one@20250101") == &t->rows[0],
	   "a Vertex resource name: its model id");
	ok(!price_lookup(t, "m-one-mini"), "a longer name is another model, never a guess");
	ok(!price_lookup(t, "m-on"), "a prefix is another model");
	ok(!price_lookup(t, "m-one-2025010"), "not a date: no row");
	ok(!price_lookup(NULL, "m-one"), "no table: no row");
	price_table_free(t);

	write_table("m\t1\t2\t3\n");
	rc = price_table_load(&t, path, &err);
	is_int(rc, -EINVAL, "four columns refused");
	ok(strstr(err.msg, ":1:") != NULL, "the error names the line: %s", err.msg);
	write_table("# x\nm\t1\t2\t3\t-4\n");
	is_int(price_table_load(&t, path, &err), -EINVAL, "a negative price refused");
	ok(strstr(err.msg, ":2:") != NULL, "line 2 named: %s", err.msg);
	write_table("m\t1\t2\tx\t4\n");
	is_int(price_table_load(&t, path, &err), -EINVAL, "a non-number refused");
	is_int(price_table_load(&t, "/nonexistent/prices.tsv", &err), -ENOENT, "missing file");
	ok(strstr(err.msg, "/nonexistent/prices.tsv") != NULL, "names the file: %s", err.msg);
}

static void test_cost(void)
{
	struct price_row p = {"m", 3, 15, 3.75, 0.3};
	struct bfs_usage u = {"m", 1, 1000000, 2000, 400, 10000};

	ok(near(price_cost(&p, &u), 3 + 2000 * 15 / 1e6 + 400 * 3.75 / 1e6 + 10000 * 0.3 / 1e6),
	   "cost = sum of tokens x price per million");
}

static cJSON *parse(struct buf *b)
{
	cJSON *o = cJSON_Parse(b->data);

	ok(o != NULL, "valid JSON: %s", b->data ? b->data : "(none)");
	return o;
}

static void test_estimate(void)
{
	const char *l1 =
		"{\"custom_id\":\"a\",\"params\":{\"model\":\"m-one\",\"max_tokens\":10,"
		"\"system\":\"sys\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}";
	const char *l2 = "{\"custom_id\":\"b\",\"params\":{\"model\":\"m-two-20250101\","
			 "\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}";
	const char *msgs1 = "[{\"role\":\"user\",\"content\":\"hi\"}]";
	const char *msgs2 = "[{\"role\":\"user\",\"content\":\"x\"}]";
	struct price_estimate e;
	struct bfs_err err = BFS_ERR_INIT;
	struct price_table *t = NULL;
	struct buf out = BUF_INIT(1 << 16);
	char why[256];
	double usd = 0, want;
	cJSON *o;

	write_table("# date: d\nm-one\t1\t2\t0\t0\nm-two\t10\t20\t0\t0\n");
	is_int(price_table_load(&t, path, &err), 0, "table");
	memset(&e, 0, sizeof(e));
	price_estimate_line(&e, FMT("anthropic"), l1, strlen(l1), NULL);
	price_estimate_line(&e, FMT("anthropic"), l1, strlen(l1), NULL);
	price_estimate_line(&e, FMT("anthropic"), l2, strlen(l2), NULL);
	price_estimate_line(&e, FMT("anthropic"), "not json", 8, NULL);
	is_int(e.n, 2, "two models");
	is_int(e.m[0].results, 2, "two requests of the first");
	is_int(e.m[0].input_tokens, 2 * (strlen(msgs1) + strlen("\"sys\"")),
	       "input bound: bytes of messages and system as JSON");
	is_int(e.m[0].output_tokens, 20, "output bound: max_tokens summed");
	is_int(e.m[1].input_tokens, strlen(msgs2), "second model's input");
	is_int(price_estimate_json(&e, t, NULL, &out, &usd, why, sizeof(why)), 0, "priced");
	want = (2 * (strlen(msgs1) + 5) * 1.0 + 20 * 2.0 + strlen(msgs2) * 10.0 + 5 * 20.0) / 1e6;
	ok(near(usd, want), "total %.12g = hand computation %.12g", usd, want);
	is_str(why, "", "no reason");
	o = parse(&out);
	ok(near(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "usd")), want), "usd in the JSON");
	ok(cJSON_IsNull(cJSON_GetObjectItem(o, "reason")), "reason null");
	{
		struct bfs_usage u[2] = {{"m-one-20250101", 1, 100, 10, 0, 0},
					 {"m-two", 1, 1000, 0, 0, 0}};
		struct buf st = BUF_INIT(1 << 16);
		cJSON *s, *a;

		is_int(price_status_json(out.data, u, 2, true, &st), 0, "status with actual");
		s = parse(&st);
		a = cJSON_GetObjectItem(s, "actual");
		ok(near(cJSON_GetNumberValue(cJSON_GetObjectItem(a, "usd")),
			(100 * 1.0 + 10 * 2.0 + 1000 * 10.0) / 1e6),
		   "actual: usage at the recorded prices");
		ok(cJSON_IsObject(cJSON_GetObjectItem(s, "estimate")), "estimate kept");
		cJSON_Delete(s);
		buf_reset(&st);
		strcpy(u[1].model, "m-three");
		is_int(price_status_json(out.data, u, 2, true, &st), 0, "status, unknown model");
		s = parse(&st);
		a = cJSON_GetObjectItem(s, "actual");
		ok(cJSON_IsNull(cJSON_GetObjectItem(a, "usd")),
		   "actual null for a model not priced");
		ok(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(a, "reason")), "m-three") !=
			   NULL,
		   "reason names it");
		cJSON_Delete(s);
		buf_reset(&st);
		is_int(price_status_json(out.data, NULL, 0, false, &st), 0, "status, no usage yet");
		s = parse(&st);
		ok(cJSON_IsNull(cJSON_GetObjectItem(s, "actual")), "actual null until results");
		cJSON_Delete(s);
		buf_reset(&st);
		is_int(price_status_json("", NULL, 0, false, &st), 0, "no estimate");
		is_str(st.data, "null", "cost null without an estimate");
		buf_release(&st);
	}
	cJSON_Delete(o);

	/* A model missing from the table: null and the reason, never a guess. */
	buf_reset(&out);
	price_estimate_line(&e, FMT("anthropic"),
			    "{\"custom_id\":\"c\",\"params\":{\"model\":\"zzz\",\"max_tokens\":1,"
			    "\"messages\":[]}}",
			    75, NULL);
	is_int(price_estimate_json(&e, t, NULL, &out, &usd, why, sizeof(why)), 0, "priced");
	ok(usd < 0, "no total");
	ok(strstr(why, "no price for model zzz in ") && strstr(why, path), "reason: %s", why);
	o = parse(&out);
	ok(cJSON_IsNull(cJSON_GetObjectItem(o, "usd")), "usd null");
	cJSON_Delete(o);

	/* OpenAI: body.model, max_completion_tokens; a line without a cap has no bound. */
	memset(&e, 0, sizeof(e));
	buf_reset(&out);
	{
		const char *a =
			"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/"
			"completions\",\"body\":{\"model\":\"m-one\",\"max_completion_tokens\""
			":7,\"messages\":[]}}";
		const char *b = "{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/chat/"
				"completions\",\"body\":{\"model\":\"m-one\",\"messages\":[]}}";

		price_estimate_line(&e, FMT("openai"), a, strlen(a), NULL);
		is_int(e.m[0].output_tokens, 7, "max_completion_tokens is the output bound");
		const char *c = "{\"custom_id\":\"c\",\"method\":\"POST\",\"url\":\"/v1/chat/"
				"completions\",\"body\":{\"model\":\"m-one\",\"max_tokens\":5,"
				"\"n\":3,\"messages\":[]}}";

		price_estimate_line(&e, FMT("openai"), c, strlen(c), NULL);
		is_int(e.m[0].output_tokens, 7 + 15, "n completions: n times the cap");
		price_estimate_line(&e, FMT("openai"), b, strlen(b), NULL);
		is_int(e.unbounded, 1, "a request without a cap is unbounded");
		is_int(price_estimate_json(&e, t, NULL, &out, &usd, why, sizeof(why)), 0, "json");
		ok(usd < 0 && strstr(why, "no upper bound"), "no estimate: %s", why);
	}

	/* Vertex: the remote's model when the line has none. */
	memset(&e, 0, sizeof(e));
	{
		const char *v =
			"{\"custom_id\":\"a\",\"request\":{\"anthropic_version\":\"vertex-x\","
			"\"max_tokens\":3,\"messages\":[]}}";

		price_estimate_line(&e, FMT("vertex"), v, strlen(v), "m-two@20250101");
		is_str(e.m[0].model, "m-two@20250101", "the default model");
		ok(price_lookup(t, e.m[0].model) != NULL, "priced through its undated row");
	}

	/* One model, results naming it otherwise (Azure: deployment vs model): that model. */
	{
		struct bfs_usage u1 = {"gpt-4o-mini-2024-07-18", 1, 1000, 100, 0, 0};
		struct buf one = BUF_INIT(1 << 16), st = BUF_INIT(1 << 16);
		cJSON *s;

		memset(&e, 0, sizeof(e));
		price_estimate_line(&e, FMT("anthropic"), l1, strlen(l1), NULL);
		is_int(price_estimate_json(&e, t, NULL, &one, &usd, why, sizeof(why)), 0,
		       "one model");
		is_int(price_status_json(one.data, &u1, 1, true, &st), 0, "status");
		s = parse(&st);
		ok(near(cJSON_GetNumberValue(
				cJSON_GetObjectItem(cJSON_GetObjectItem(s, "actual"), "usd")),
			(1000 * 1.0 + 100 * 2.0) / 1e6),
		   "priced at the batch's one model");
		cJSON_Delete(s);
		buf_release(&one);
		buf_release(&st);
	}

	/* An estimate whose JSON does not fit: the total is still known (for max_cost). */
	{
		struct buf small = BUF_INIT(64);

		memset(&e, 0, sizeof(e));
		price_estimate_line(&e, FMT("anthropic"), l1, strlen(l1), NULL);
		is_int(price_estimate_json(&e, t, NULL, &small, &usd, why, sizeof(why)), -EFBIG,
		       "-EFBIG past the cap");
		ok(near(usd, ((strlen(msgs1) + 5) * 1.0 + 10 * 2.0) / 1e6), "usd still set");
		buf_release(&small);
	}

	/* No table at all. */
	buf_reset(&out);
	is_int(price_estimate_json(&e, NULL, "cannot read X", &out, &usd, why, sizeof(why)), 0,
	       "no table");
	ok(usd < 0 && !strcmp(why, "cannot read X"), "the load error is the reason");
	buf_release(&out);
	price_table_free(t);
}

/* The table shipped with batchfs: parses, is dated and sourced, prices each provider's ids. */
static void test_shipped(void)
{
	static const char *const ids[] = {"claude-sonnet-4-20250514", "claude-3-5-haiku@20241022",
					  "publishers/anthropic/models/claude-sonnet-4-5@20250929",
					  "gpt-4o-mini-2024-07-18", "gpt-4.1"};
	const char *root = getenv("BATCHFS_SOURCE_ROOT");
	struct bfs_err err = BFS_ERR_INIT;
	struct price_table *t = NULL;
	char file[4096];

	if (!root) {
		ok(1, "# SKIP BATCHFS_SOURCE_ROOT not set (run through meson test)");
		return;
	}
	snprintf(file, sizeof(file), "%s/contrib/prices.tsv", root);
	is_int(price_table_load(&t, file, &err), 0, "contrib/prices.tsv loads (%s)", err.msg);
	if (!t)
		return;
	ok(t->n >= 10, "it has rows (%zu)", t->n);
	ok(t->date[0] && !strncmp(t->source, "https://", 8), "dated and sourced");
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		ok(price_lookup(t, ids[i]) != NULL, "priced: %s", ids[i]);
	for (size_t i = 0; i < t->n; i++)
		ok(t->rows[i].output >= t->rows[i].input &&
			   t->rows[i].cache_read <= t->rows[i].input,
		   "%s: output >= input >= cache read", t->rows[i].model);
	price_table_free(t);
}

int main(void)
{
	int fd = mkstemp(path);

	if (fd < 0)
		return 1;
	close(fd);
	test_load();
	test_cost();
	test_estimate();
	test_shipped();
	unlink(path);
	return tap_done();
}
