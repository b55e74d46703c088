/* SPDX-License-Identifier: MIT */
/*
 * Background threads, one per remote: poll unfinished batches when due, fetch results of ended
 * ones, reconcile interrupted submissions, list the provider every list_interval. The only
 * threads that talk to providers on their own.
 */
#ifndef BATCHFS_POLLER_H
#define BATCHFS_POLLER_H

struct bfs;
struct bfs_err;
struct poller;

/* Starts the threads. Returns 0 or -errno. */
int poller_start(struct poller **out, struct bfs *b, struct bfs_err *err);
/* Wakes every thread so it looks at due batches now (after a commit, refresh, first look). */
void poller_kick(struct poller *p);
/* Stops and joins the threads, frees p. NULL-safe. Call http_abort_all() first so an HTTP call
 * in flight ends at once. */
void poller_stop(struct poller *p);

#endif
