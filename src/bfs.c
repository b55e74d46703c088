// SPDX-License-Identifier: MIT
/*
 * Small helpers on the mount's context. Owns nothing.
 */
#include <string.h>

#include "bfs.h"
#include "conf.h"

struct remote *bfs_remote(struct bfs *b, const char *name)
{
	for (size_t i = 0; i < b->nremotes; i++)
		if (!strcmp(b->remotes[i].conf->name, name))
			return &b->remotes[i];
	return NULL;
}
