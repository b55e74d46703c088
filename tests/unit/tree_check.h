/* SPDX-License-Identifier: MIT */
/*
 * What jsonscan_tree() (jsonscan.h) and the in-place reads of jsonview.h promise, checked
 * against cJSON_Parse of the same line: shared by the unit test (test_jsonl.c) and the fuzzer
 * (fuzz_jsonl.c).
 */
#ifndef BATCHFS_TEST_TREE_CHECK_H
#define BATCHFS_TEST_TREE_CHECK_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jsonview.h"

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

/* NULL when the in-place view v of a line jsonscan_line() accepted reads as ref, cJSON's
 * parse of it, at every depth: kinds, strings as C strings (cut at a \u0000), numbers,
 * members by key (the first of repeated keys) and in order. Else what differs. */
static inline const char *view_diff(struct jv v, const cJSON *ref)
{
	const cJSON *c;
	const char *why;
	struct jv e;
	size_t pos = 0, elen;
	double d;
	bool same;
	char *buf;

	switch (ref->type & 0xff) {
	case cJSON_NULL:
		return jv_is_set(v) ? "a null" : NULL;
	case cJSON_True:
	case cJSON_False:
		if (!jv_is_set(v) || jv_is_string(v) || jv_is_object(v) || jv_is_array(v))
			return "a boolean";
		return (v.p[0] == 't') == ((ref->type & 0xff) == cJSON_True) ? NULL : "a boolean";
	case cJSON_Number:
		if (!jv_number(v, &d))
			return "a number";
		return d == ref->valuedouble || (isnan(d) && isnan(ref->valuedouble))
			       ? NULL
			       : "a number's value";
	case cJSON_String:
		if (!jv_str_raw(v, &elen))
			return "a string";
		buf = malloc(elen + 1);
		same = buf && jv_str_copy(v, buf, elen + 1) && !strcmp(buf, ref->valuestring) &&
		       jv_str_is(v, ref->valuestring) &&
		       jv_str_nonempty(v) == (ref->valuestring[0] != '\0');
		free(buf);
		return same ? NULL : "a string's value";
	case cJSON_Array:
	case cJSON_Object:
		if ((ref->type & 0xff) == cJSON_Array ? !jv_is_array(v) : !jv_is_object(v))
			return "a container";
		for (c = ref->child; c; c = c->next) {
			if (!jv_next(v, &pos, &e))
				return "a container's members: too few";
			why = view_diff(e, c);
			if (why)
				return why;
			if (c->string && cJSON_GetObjectItemCaseSensitive(ref, c->string) == c) {
				why = view_diff(jv_get(v, c->string), c);
				if (why)
					return why;
			}
		}
		return jv_next(v, &pos, &e) ? "a container's members: too many" : NULL;
	default:
		return "a kind cJSON has not";
	}
}

#endif
