// SPDX-License-Identifier: MIT
/*
 * libFuzzer: the config file parser (conf_load, inih underneath) and what a provider reads
 * of a section (provider_limits), on the input as a file (a memfd, no disk).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "err.h"
#include "jsonl.h"
#include "provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bfs_err err = BFS_ERR_INIT;
	struct conf *c = NULL;
	char path[64];
	int fd = memfd_create("batchfs-fuzz-conf", MFD_CLOEXEC);

	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (!conf_load(&c, path, &err)) {
		for (size_t i = 0; i < c->nremotes; i++) {
			const struct provider_ops *ops = provider_lookup(c->remotes[i].provider);
			struct jsonl_limits lim;

			if (ops)
				(void)provider_limits(ops, &c->remotes[i], &lim, &err);
		}
		conf_free(c);
	} else if (!err.msg[0]) {
		abort();
	}
	close(fd);
	return 0;
}
