// SPDX-License-Identifier: MIT
/*
 * libFuzzer: the Message Batches answer parser (batch_from_json) of providers/anthropic.c,
 * on a batch object and on each entry of a list page's "data". The provider file is included
 * so its static parser is reached without widening its interface; the build links every
 * other module but this one.
 */
#include "providers/anthropic.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cJSON *root = cJSON_ParseWithLength((const char *)data, size);
	const cJSON *it, *list = cJSON_GetObjectItemCaseSensitive(root, "data");
	struct bfs_err err = BFS_ERR_INIT;
	const cJSON *arr = cJSON_IsArray(list) ? list : NULL;
	struct provider_batch b;

	if (!batch_from_json(root, &b, &err) && !provider_id_is_safe(b.id))
		abort();
	cJSON_ArrayForEach(it, arr) {
		if (!batch_from_json(it, &b, &err) && !provider_id_is_safe(b.id))
			abort();
	}
	cJSON_Delete(root);
	return 0;
}
