// SPDX-License-Identifier: MIT
/*
 * libFuzzer: what http.c reads from a server besides the body: response header lines
 * (header_cb: request ids, Location, Retry-After, Retry-After-Ms, x-should-retry), the retry
 * hint computed from them (retry_hint_ms), and an error body (describe_status). The input is
 * header lines, a blank line, then the body. Included, as fuzz_anthropic.c explains.
 */
#include "http.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct xfer x;
	const char *p = (const char *)data, *end = p + size;
	struct bfs_err err = BFS_ERR_INIT;
	bool spend_cap;
	long hint;

	memset(&x, 0, sizeof(x));
	headers_clear(&x);
	x.status = 429;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
		/* curl hands over one line with its CRLF, not NUL-terminated: copy it exactly. */
		char *line = malloc(n ? n : 1);

		if (!line)
			return 0;
		memcpy(line, p, n);
		p += n;
		if (n <= 2 && (line[0] == '\n' || line[0] == '\r')) {
			free(line);
			break;
		}
		if (header_cb(line, 1, n, &x) != n)
			abort();
		free(line);
	}
	hint = retry_hint_ms(&x);
	if (hint < 0 || hint > 1000000000L)
		abort();
	buf_init(&x.errbody, HTTP_ERRBODY_MAX);
	(void)buf_add(&x.errbody, p, (size_t)(end - p));
	describe_status(&x, &err, &spend_cap);
	if (!err.msg[0])
		abort();
	buf_release(&x.errbody);
	return 0;
}
