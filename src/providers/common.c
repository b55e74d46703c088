// SPDX-License-Identifier: MIT
/*
 * What the HTTP providers share (include/providers/common.h): the JSON call around each one's
 * perform, and the paged-listing loop with incremental discovery. Bounded: one answer of at
 * most the caller's max bytes, one page at a time.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "providers/common.h"

int provider_call_json(struct provider *p, provider_perform_fn perform, struct http_request *rq,
		       size_t max, cJSON **root, struct http_response *rs, struct bfs_err *err)
{
	struct buf resp = BUF_INIT(max);
	int rc;

	rq->resp = &resp;
	rc = perform(p, rq, rs, err);
	rq->resp = NULL;
	if (rc)
		goto out;
	*root = resp.data ? cJSON_ParseWithLength(resp.data, resp.len) : NULL;
	if (!*root) {
		err_set(err, "the answer is not JSON");
		rc = -EBADMSG;
	}
out:
	buf_release(&resp);
	return rc;
}

int provider_list_pages(struct provider_pager *pg, provider_batch_fn fn, void *ctx,
			struct bfs_err *err)
{
	char *cursor = NULL, *next = NULL;
	cJSON *root = NULL;
	int rc = 0;

	for (long page = 0; page < pg->max_pages; page++) {
		const cJSON *items = NULL, *item;
		long seen = 0, known = 0; /* batches of this page given to fn, known ones */

		rc = pg->fetch(pg, page, cursor, &root, &items, err);
		if (rc)
			goto out;
		cJSON_ArrayForEach(item, items) {
			struct provider_batch b;

			/* One odd entry must not hide every other batch. */
			if (pg->item(pg, item, &b))
				continue;
			rc = fn(ctx, &b);
			seen++;
			if (rc == PROVIDER_LIST_KNOWN) {
				known++;
				rc = 0;
			} else if (rc) {
				rc = rc > 0 ? 0 : rc;
				goto out;
			}
		}
		/* A page of batches all known and unchanged: the older pages hold nothing new. */
		if (seen && known == seen)
			goto out;
		rc = pg->next(pg, root, cursor, &next, err);
		if (rc <= 0)
			goto out;
		free(cursor);
		cursor = next;
		next = NULL;
		cJSON_Delete(root);
		root = NULL;
	}
	err_set(err, "more than %ld pages of %s", pg->max_pages, pg->what);
	rc = -E2BIG;
out:
	cJSON_Delete(root);
	free(cursor);
	free(next);
	return rc;
}

int provider_spool_fill(struct provider_spool *s)
{
	size_t want =
		s->end - s->off < (off_t)sizeof(s->in) ? (size_t)(s->end - s->off) : sizeof(s->in);
	ssize_t r;

	do
		r = pread(s->fd, s->in, want, s->off);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	s->eof = r == 0;
	s->in_len = (size_t)r;
	s->in_pos = 0;
	s->off += r;
	return 0;
}
