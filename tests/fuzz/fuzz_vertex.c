// SPDX-License-Identifier: MIT
/*
 * libFuzzer: the Vertex AI parsers of providers/vertex.c: a batchPredictionJob (job_from_json)
 * alone and in a list page, the page token (next_page), an uploaded object's metadata
 * (check_object) and gs:// URIs (parse_gs) found in the input. Included, as
 * fuzz_anthropic.c explains.
 */
#include "providers/vertex.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void try_gs(const cJSON *v)
{
	char bucket[256];
	struct buf path;

	if (!cJSON_IsString(v))
		return;
	buf_init(&path, 4096);
	(void)parse_gs(v->valuestring, bucket, sizeof(bucket), &path);
	buf_release(&path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cJSON *root = cJSON_ParseWithLength((const char *)data, size);
	const cJSON *it, *list = cJSON_GetObjectItemCaseSensitive(root, "batchPredictionJobs");
	struct bfs_err err = BFS_ERR_INIT;
	const cJSON *arr = cJSON_IsArray(list) ? list : NULL;
	const cJSON *obj = cJSON_IsObject(root) ? root : NULL;
	struct provider_batch b;
	char *token = NULL;

	(void)job_from_json(root, &b, &err);
	cJSON_ArrayForEach(it, arr) {
		(void)job_from_json(it, &b, &err);
		try_gs(cJSON_GetObjectItemCaseSensitive(
			cJSON_GetObjectItemCaseSensitive(it, "outputInfo"), "gcsOutputDirectory"));
	}
	(void)next_page(root, &token, &err);
	free(token);
	(void)check_object(root, (int64_t)size, &err);
	cJSON_ArrayForEach(it, obj) {
		try_gs(it);
	}
	cJSON_Delete(root);
	return 0;
}
