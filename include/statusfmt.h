/* SPDX-License-Identifier: MIT */
/*
 * Renders a batch's status file (docs/semantics.md "status"): one JSON object and a newline. Pure.
 */
#ifndef BATCHFS_STATUSFMT_H
#define BATCHFS_STATUSFMT_H

#include <stddef.h>

struct buf;
struct store_batch;
struct store_part;

/*
 * Appends the status JSON of b (provider is the remote's provider name) to out, with a
 * "parts" array of its n parts (in file order) when it has any. 0 or -errno.
 */
int statusfmt_batch(const struct store_batch *b, const struct store_part *parts, size_t n,
		    const char *provider, struct buf *out);
/* The id file: one provider id per line, in part order (parts not yet created: none). */
int statusfmt_ids(const struct store_part *parts, size_t n, struct buf *out);

#endif
