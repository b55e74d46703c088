// SPDX-License-Identifier: MIT
/*
 * custom_id <-> results/ file name (docs/semantics.md "results"): reversible %XX escaping of every byte
 * outside [A-Za-z0-9_.-] and of a leading '.', and a SHA-256-suffixed cut for long names so
 * every name fits NAME_MAX with ".json" added. Pure.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "escape.h"

#define HASH_SUFFIX_LEN 17 /* '~' + 16 hex digits */

static bool is_safe(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

static void hash_suffix(const char *id, size_t len, char out[HASH_SUFFIX_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(id, len, md, &mdlen, EVP_sha256(), NULL) || mdlen < 8)
		memset(md, 0, 8);
	out[0] = '~';
	for (int i = 0; i < 8; i++)
		snprintf(out + 1 + 2 * i, 3, "%02x", md[i]);
}

int escape_name(const char *id, size_t len, char out[ESCAPE_NAME_SIZE])
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	bool cut = false;

	if (len == 0)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)id[i];
		bool esc = !is_safe(c) || (i == 0 && c == '.');
		size_t need = esc ? 3 : 1;

		if (o + need > ESCAPE_NAME_LIMIT) {
			cut = true;
			break;
		}
		if (esc) {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			out[o++] = (char)c;
		}
	}
	if (cut) {
		char suffix[HASH_SUFFIX_LEN + 1];
		size_t keep = ESCAPE_NAME_LIMIT - HASH_SUFFIX_LEN;

		if (o > keep)
			o = keep;
		/* Never leave half of a %XX triple before the suffix. */
		if (o >= 1 && out[o - 1] == '%')
			o -= 1;
		else if (o >= 2 && out[o - 2] == '%')
			o -= 2;
		hash_suffix(id, len, suffix);
		memcpy(out + o, suffix, HASH_SUFFIX_LEN);
		o += HASH_SUFFIX_LEN;
	}
	out[o] = '\0';
	return (int)o;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int unescape_name(const char *name, char *out, size_t outsz)
{
	size_t o = 0;

	/* Longer than any escaped name: escape_name() would have cut it (found by fuzzing:
	 * such a name was read as its id, a second name for a cut one's file). */
	if (!*name || strnlen(name, ESCAPE_NAME_LIMIT + 1) > ESCAPE_NAME_LIMIT)
		return -EINVAL;
	if (strchr(name, '~'))
		return -ENAMETOOLONG;
	for (size_t i = 0; name[i]; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == '%') {
			int hi = hexval(name[i + 1]), lo = hi < 0 ? -1 : hexval(name[i + 2]);

			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (unsigned char)(hi * 16 + lo);
			/* Only bytes escape_name() escapes may appear escaped. */
			if (is_safe(c) && !(i == 0 && c == '.'))
				return -EINVAL;
			i += 2;
		} else if (!is_safe(c) || (i == 0 && c == '.')) {
			return -EINVAL;
		}
		if (o + 1 >= outsz)
			return -ERANGE;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return (int)o;
}

bool escape_is_valid(const char *name)
{
	char tmp[ESCAPE_NAME_SIZE];
	int rc = unescape_name(name, tmp, sizeof(tmp));

	if (rc == -ENAMETOOLONG) {
		size_t n = strlen(name);

		return n <= ESCAPE_NAME_LIMIT && n > HASH_SUFFIX_LEN &&
		       name[n - HASH_SUFFIX_LEN] == '~';
	}
	return rc >= 0;
}
