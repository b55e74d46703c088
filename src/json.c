// SPDX-License-Identifier: MIT
/* Reading members of parsed JSON: see include/json.h. */
#include "json.h"

const char *json_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

const char *json_nonempty(const cJSON *o, const char *key)
{
	const char *s = json_str(o, key);

	return s && s[0] ? s : NULL;
}

int64_t json_count(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	/* Below 2^53: exact in a double, and far beyond any real count. */
	return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15
		       ? (int64_t)v->valuedouble
		       : 0;
}

bool json_is_set(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return v && !cJSON_IsNull(v);
}
