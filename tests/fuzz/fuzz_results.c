// SPDX-License-Identifier: MIT
/*
 * libFuzzer: the result line reader every provider's download goes through
 * (provider_results_line behind the splitter), with a sink that checks what it is given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jsonl.h"
#include "provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sink(void *ctx, const char *custom_id, const char *line, size_t len, long lineno,
		const char *bad)
{
	(void)ctx;
	if ((!custom_id && !bad) || (custom_id && (bad || !custom_id[0])) || (len && !line) ||
	    lineno < 1)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bfs_err line_err = BFS_ERR_INIT, err = BFS_ERR_INIT;
	struct provider_results r;
	struct jsonl_splitter sp;

	provider_results_init(&r, sink, NULL, NULL, NULL, NULL, &line_err);
	/* Odd sizes: a short cap whose longer lines are skipped, as downloads do; even: a line
	 * over the cap is refused. */
	jsonl_splitter_init(&sp, size & 1 ? 1 << 10 : 1 << 16, provider_results_line, &r);
	sp.skip_long = size & 1;
	if (!jsonl_splitter_feed(&sp, (const char *)data, size, &err))
		(void)jsonl_splitter_finish(&sp, &err);
	jsonl_splitter_release(&sp);
	return 0;
}
