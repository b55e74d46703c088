// SPDX-License-Identifier: MIT
/*
 * Small helpers on the mount's context: remote lookup and the draft locks.
 */
#include <string.h>

#include "bfs.h"
#include "conf.h"

pthread_mutex_t *bfs_draft_lock(struct bfs *b, int64_t batch_id)
{
	return &b->draft_locks[(uint64_t)batch_id % BFS_DRAFT_LOCKS];
}

void bfs_locks_init(struct bfs *b)
{
	pthread_mutex_init(&b->lock, NULL);
	pthread_mutex_init(&b->inflight_lock, NULL);
	for (size_t i = 0; i < BFS_DRAFT_LOCKS; i++)
		pthread_mutex_init(&b->draft_locks[i], NULL);
}

void bfs_locks_release(struct bfs *b)
{
	pthread_mutex_destroy(&b->lock);
	pthread_mutex_destroy(&b->inflight_lock);
	for (size_t i = 0; i < BFS_DRAFT_LOCKS; i++)
		pthread_mutex_destroy(&b->draft_locks[i]);
}

struct remote *bfs_remote(struct bfs *b, const char *name)
{
	for (size_t i = 0; i < b->nremotes; i++)
		if (!strcmp(b->remotes[i].conf->name, name))
			return &b->remotes[i];
	return NULL;
}
