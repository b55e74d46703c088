/* SPDX-License-Identifier: MIT */
/*
 * What the HTTP providers share beyond provider.h (src/providers/common.c): one JSON call and
 * one paged-listing loop, so each provider writes only what is its own (credentials, URLs,
 * the names of its page fields). Private to src/providers/.
 */
#ifndef BATCHFS_PROVIDERS_COMMON_H
#define BATCHFS_PROVIDERS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "http.h"
#include "provider.h"

struct cJSON;

/*
 * A provider's http_perform(): its credentials in front of rq->headers (NULL-terminated, may
 * be NULL), a fresh token and one more try after a 401 where it has tokens; rq->headers is as
 * it was on return. rs (may be NULL) gets the status and headers.
 */
typedef int (*provider_perform_fn)(struct provider *p, struct http_request *rq,
				   struct http_response *rs, struct bfs_err *err);

/*
 * A part of a validated spool file read in chunks, for the upload bodies that stream it (each
 * provider rewrites the lines byte by byte in its own way; the reading is the same).
 */
#define PROVIDER_SPOOL_CHUNK (64 * 1024)

struct provider_spool {
	int fd;
	off_t start, end; /* the part: file bytes [start, end) */
	off_t off;	  /* next file byte to read */
	char in[PROVIDER_SPOOL_CHUNK];
	size_t in_len, in_pos; /* bytes in in[], the next one to use */
	bool eof;	       /* the part's end was reached */
};

/* Refills in[] from off, at most up to end (in_pos = 0): 0 (eof set when nothing was left to
 * read) or -errno. */
int provider_spool_fill(struct provider_spool *s);

/*
 * One JSON call: rq as the caller set it (method, url, headers, body, retry, on_retry, ...;
 * not resp) performed by perform into a buffer of at most max bytes, the answer parsed into
 * *root (the caller frees it). 0, the call's -errno, or -EBADMSG ("the answer is not JSON").
 */
int provider_call_json(struct provider *p, provider_perform_fn perform, struct http_request *rq,
		       size_t max, struct cJSON **root, struct http_response *rs,
		       struct bfs_err *err);

/*
 * A listing, page by page, newest first (provider_ops.list): the provider says how to fetch a
 * page and read its entries, the loop does the rest the same way for all: each batch to fn,
 * fn's PROVIDER_LIST_KNOWN counted (a page of only known batches ends the walk: incremental
 * discovery), fn's > 0 stops early without error, its < 0 fails.
 */
struct provider_pager {
	struct provider *p;
	void *ctx; /* the provider's, for its hooks */
	/*
	 * GETs page number page (0 first) after cursor (NULL for the first): *root the answer
	 * (freed by the loop), *items its array of entries (NULL: an empty page).
	 */
	int (*fetch)(struct provider_pager *pg, long page, const char *cursor, struct cJSON **root,
		     const struct cJSON **items, struct bfs_err *err);
	/* One entry: 0 with out filled, > 0 to skip it (logged by the hook if worth it). */
	int (*item)(struct provider_pager *pg, const struct cJSON *item,
		    struct provider_batch *out);
	/*
	 * After a page not all known: 1 with *next the cursor of the page after (malloc'd), 0
	 * after the last page, -errno with err set for a cursor that cannot be used.
	 */
	int (*next)(struct provider_pager *pg, const struct cJSON *root, const char *cursor,
		    char **next, struct bfs_err *err);
	long max_pages; /* beyond it: -E2BIG "more than N pages of WHAT" */
	const char *what;
};

int provider_list_pages(struct provider_pager *pg, provider_batch_fn fn, void *ctx,
			struct bfs_err *err);

#endif
