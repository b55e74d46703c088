// SPDX-License-Identifier: MIT
/*
 * libFuzzer: the strict line scan and the per-format request validator, fed as a requests
 * file through the splitter in two chunks. Checks beyond "no crash": what the scan accepts
 * cJSON parses, and both the validators' shallow tree and jsonview's in-place reads see it as
 * cJSON does (else batchfs would read a line differently from the scan), an error's column
 * lies inside the line, and a custom_id handed out holds no NUL.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jsonl.h"
#include "jsonscan.h"
#include "../unit/tree_check.h"
#include "provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct ctx {
	struct jsonl_validator v;
	struct jsonl_splitter sp;
	struct bfs_err err;
};

static int on_line(void *p, const char *line, size_t len, long lineno)
{
	struct ctx *c = p;
	char *id = NULL;
	size_t n = 0;
	int rc = jsonl_validator_line(&c->v, line, len, c->sp.term, lineno, &id, &n, &c->err);

	if (!rc && id && (strlen(id) != n || !n))
		abort();
	if (rc && !c->err.msg[0])
		abort(); /* every refusal says why */
	free(id);
	return 0; /* go on: every line of the input is checked */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct jsonscan_error e;
	size_t cut = size ? data[0] % (size + 1) : 0;

	if (!jsonscan_line(text, size, &e)) {
		cJSON *o = cJSON_ParseWithLength(text, size), *t = NULL;

		/* The validators' shallow tree reads the line as cJSON does (jsonscan.h). */
		if (!o || jsonscan_tree(text, size, &t, &e) || tree_diff(t, o, 1))
			abort();
		/* And the in-place view the ingest reads result lines with (jsonview.h). */
		if (view_diff(jv_line(text, size), o))
			abort();
		cJSON_Delete(t);
		cJSON_Delete(o);
	} else if (e.column < 1 || e.column > size + 1 || !e.why) {
		abort();
	} else {
		cJSON *t = NULL;

		if (jsonscan_tree(text, size, &t, &e) != -EINVAL || t)
			abort();
	}
	/* Every provider's line rules, the mock's included. */
	for (size_t i = 0; provider_at(i); i++) {
		const struct provider_ops *ops = provider_at(i);
		struct jsonl_limits lim = {1000, 1 << 20, 0};
		struct ctx c;

		memset(&c, 0, sizeof(c));
		jsonl_validator_init(&c.v, ops->format, ops->validate_line, &lim);
		jsonl_splitter_init(&c.sp, 1 << 16, on_line, &c);
		if (!jsonl_splitter_feed(&c.sp, text, cut, &c.err) &&
		    !jsonl_splitter_feed(&c.sp, text + cut, size - cut, &c.err))
			(void)jsonl_splitter_finish(&c.sp, &c.err);
		(void)jsonl_validator_finish(&c.v, &c.err);
		jsonl_splitter_release(&c.sp);
	}
	return 0;
}
