// SPDX-License-Identifier: MIT
/*
 * libFuzzer: the Batch object parser (batch_from_json, with its errors.data reading) of
 * providers/openai_common.c, for OpenAI and for Azure (the first byte chooses), on a batch and on
 * each entry of a list page's "data". Included, as fuzz_anthropic.c explains.
 */
#include "providers/openai_common.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct provider p; /* no state dir: no line maps are found */
	cJSON *root;
	const cJSON *it, *list, *arr;
	struct bfs_err err = BFS_ERR_INIT;
	struct provider_batch b;

	if (!size)
		return 0;
	p.azure = data[0] & 1;
	snprintf(p.dir, sizeof(p.dir), "/nonexistent/batchfs-fuzz");
	root = cJSON_ParseWithLength((const char *)data + 1, size - 1);
	list = cJSON_GetObjectItemCaseSensitive(root, "data");
	arr = cJSON_IsArray(list) ? list : NULL;
	if (!batch_from_json(&p, root, &b, &err) && !provider_id_is_safe(b.id))
		abort();
	cJSON_ArrayForEach(it, arr) {
		if (!batch_from_json(&p, it, &b, &err) && !provider_id_is_safe(b.id))
			abort();
	}
	cJSON_Delete(root);
	return 0;
}
