/* SPDX-License-Identifier: MIT */
/*
 * Reading members of parsed JSON (cJSON) the way every API answer needs it: absent, null and
 * wrong-typed values read as "not there", never as a crash or a garbage number. Pure.
 */
#ifndef BATCHFS_JSON_H
#define BATCHFS_JSON_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* The string member key of o, or NULL (o may be NULL). */
const char *json_str(const cJSON *o, const char *key);
/* As json_str(), but NULL for "" too. */
const char *json_nonempty(const cJSON *o, const char *key);
/* A count: a number in [0, 9e15), else 0. */
int64_t json_count(const cJSON *o, const char *key);
/* True when the member is present and not null. */
bool json_is_set(const cJSON *o, const char *key);

/*
 * True when the 8 bytes at p are printable ASCII other than '"' and '\\': bytes a JSON
 * string holds as they are. Eight at a time (SWAR), for the loops over every byte of a
 * submission's prompts; no alignment needed.
 */
static inline bool json_plain8(const char *p)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	uint64_t v, q, b;

	__builtin_memcpy(&v, p, 8);
	q = v ^ (ones * '"');
	b = v ^ (ones * '\\');
	/* any byte >= 0x80, < 0x20, == '"' or == '\\' (the "has less than" bit trick) */
	return !((v | ((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs);
}

/* Bytes beyond one that c takes in a JSON string as cJSON prints it: 1 for the two-byte
 * escapes, 5 for other control bytes (\u00XX); UTF-8 is kept raw. */
static inline unsigned json_escape_extra(unsigned char c)
{
	if (c >= 0x20)
		return c == '"' || c == '\\';
	return c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t' ? 1 : 5;
}

/*
 * Bytes of s as a JSON string as cJSON prints it, quotes included (this runs over every byte
 * of every message of a submission: one test for most bytes). s may be NULL ("").
 */
uint64_t json_string_bytes(const char *s);
/* Bytes of the number d as cJSON prints it. */
uint64_t json_number_bytes(double d);

#endif
