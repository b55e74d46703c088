/* SPDX-License-Identifier: MIT */
/*
 * Renders a batch's status file (CONTRACT "status"): one JSON object and a newline. Pure.
 */
#ifndef BATCHFS_STATUSFMT_H
#define BATCHFS_STATUSFMT_H

struct buf;
struct store_batch;

/* Appends the status JSON of b (provider is the remote's provider name) to out. 0 or -errno. */
int statusfmt_batch(const struct store_batch *b, const char *provider, struct buf *out);

#endif
