// SPDX-License-Identifier: MIT
/* Reading members of parsed JSON: see include/json.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

uint64_t json_string_bytes(const char *s)
{
	size_t len = s ? strlen(s) : 0, i = 0;
	uint64_t n = 2 + len;

	for (; i < len; i++) {
		while (i + 8 <= len && json_plain8(s + i))
			i += 8;
		if (i < len)
			n += json_escape_extra((unsigned char)s[i]);
	}
	return n;
}

/* cJSON's print_number (1.7.15): %1.15g unless it reads back further than DBL_EPSILON from d,
 * then %1.17g (-0 is "-0", 0.1 + 0.2 is "0.3"); "null" for what JSON cannot write. */
uint64_t json_number_bytes(double d)
{
	char tmp[32];
	double back;
	int n;

	if (isnan(d) || isinf(d))
		return 4;
	n = snprintf(tmp, sizeof(tmp), "%1.15g", d);
	back = strtod(tmp, NULL);
	if (fabs(back - d) > fmax(fabs(back), fabs(d)) * 2.2204460492503131e-16)
		n = snprintf(tmp, sizeof(tmp), "%1.17g", d);
	return (uint64_t)n;
}
