/* SPDX-License-Identifier: MIT */
/*
 * The strict syntax check of one JSON Lines request line, shared by every provider: RFC 8259
 * JSON with the I-JSON rules of RFC 7493 (valid UTF-8, no surrogates, no duplicate keys) that
 * cJSON does not enforce (it skips every byte <= 0x20 as whitespace, accepts text after the
 * value and cuts strings at \u0000). Single pass, pure: no I/O, no global state.
 */
#ifndef BATCHFS_JSONSCAN_H
#define BATCHFS_JSONSCAN_H

#include <stddef.h>

/* Deepest nesting accepted: cJSON's own limit (CJSON_NESTING_LIMIT). */
#define JSONSCAN_DEPTH_MAX 1000

struct jsonscan_error {
	size_t column;	  /* 1-based byte column of the offending byte */
	const char *why;  /* static text, e.g. "text after the JSON value" */
	char detail[128]; /* "" or more about it (a duplicate key's name) */
};

/*
 * Checks that line[0, len) (its "\n" or "\r\n" already removed) is exactly one JSON value,
 * followed by nothing but spaces and tabs: no NUL byte, no byte order mark, no lone CR, valid
 * UTF-8 (no overlong forms, no surrogates, escaped or not). In the objects batchfs reads (the
 * top level, and the "params", "body" and "request" objects in it) keys must be unique and
 * free of \u0000, and so must the top-level "custom_id" string. Returns 0, -EINVAL with *e
 * filled, or -ENOMEM. May be called on any bytes.
 */
int jsonscan_line(const char *line, size_t len, struct jsonscan_error *e);

/*
 * jsonscan_line() and, when the line passes, its tree in *root for the validators, built in
 * the same pass: the line's value and the values in it, and the values in those, are nodes as
 * cJSON_Parse would make them (a string ends at a decoded \u0000, as cJSON's C string does).
 * Objects and arrays one level deeper (a request's "messages") are not built: each is a node
 * of its type flagged cJSON_IsReference, with no children, valuedouble the bytes cJSON would
 * print it in (unformatted) and valueint its count of members. Free with cJSON_Delete().
 * Returns as jsonscan_line(); *root is NULL on failure.
 */
struct cJSON;
int jsonscan_tree(const char *line, size_t len, struct cJSON **root, struct jsonscan_error *e);

#endif
