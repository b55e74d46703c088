/* SPDX-License-Identifier: MIT */
/*
 * What jsonscan_tree() promises (jsonscan.h), checked against cJSON_Parse of the same line:
 * shared by the unit test (test_jsonl.c) and the fuzzer (fuzz_jsonl.c).
 */
#ifndef BATCHFS_TEST_TREE_CHECK_H
#define BATCHFS_TEST_TREE_CHECK_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* NULL when mine (jsonscan_tree's node at depth, the root being 1) matches ref, else what
 * differs. */
static inline const char *tree_diff(const cJSON *mine, const cJSON *ref, int depth)
{
	const cJSON *a, *b;
	const char *why;
	char *text;
	size_t n;

	if ((mine->type & 0xff) != (ref->type & 0xff))
		return "a type";
	if (!mine->string != !ref->string || (mine->string && strcmp(mine->string, ref->string)))
		return "a key";
	switch (ref->type & 0xff) {
	case cJSON_String:
		return strcmp(mine->valuestring, ref->valuestring) ? "a string" : NULL;
	case cJSON_Number:
		if (mine->valueint != ref->valueint)
			return "a number's valueint";
		return mine->valuedouble == ref->valuedouble ||
				       (isnan(mine->valuedouble) && isnan(ref->valuedouble))
			       ? NULL
			       : "a number";
	case cJSON_Array:
	case cJSON_Object:
		if (depth > 2) {
			if (!(mine->type & cJSON_IsReference) || mine->child)
				return "a container that should not be built";
			text = cJSON_PrintUnformatted(ref);
			n = text ? strlen(text) : 0;
			free(text);
			if ((double)n != mine->valuedouble)
				return "a container's printed size";
			return mine->valueint == cJSON_GetArraySize(ref) ? NULL
									 : "a container's count";
		}
		if (mine->type & cJSON_IsReference)
			return "a container that should be built";
		for (a = mine->child, b = ref->child; a && b; a = a->next, b = b->next) {
			why = tree_diff(a, b, depth + 1);
			if (why)
				return why;
		}
		return a || b ? "the members" : NULL;
	default:
		return NULL;
	}
}

#endif
