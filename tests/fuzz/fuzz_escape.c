// SPDX-License-Identifier: MIT
/*
 * libFuzzer: custom_id <-> file name (escape.h). Any id escapes to a valid name that
 * unescapes back to the same bytes (unless cut); any name that unescapes escapes back to
 * itself; escape_is_valid() agrees with unescape_name().
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[ESCAPE_NAME_SIZE], again[ESCAPE_NAME_SIZE], *text;
	char back[4096];
	int n, m;

	n = escape_name((const char *)data, size, name);
	if (size == 0) {
		if (n != -EINVAL)
			abort();
	} else {
		if (n <= 0 || (size_t)n != strlen(name) || n > ESCAPE_NAME_LIMIT ||
		    !escape_is_valid(name))
			abort();
		m = unescape_name(name, back, sizeof(back));
		if (m == -ENAMETOOLONG) {
			if (!strchr(name, '~'))
				abort();
		} else if (m != (int)size || memcmp(back, data, size)) {
			abort();
		}
	}
	/* The input as a file name. */
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	m = unescape_name(text, back, sizeof(back));
	if (m >= 0) {
		if (!escape_is_valid(text))
			abort();
		if (m > 0 && (escape_name(back, (size_t)m, again) <= 0 || strcmp(again, text)))
			abort();
	}
	free(text);
	return 0;
}
