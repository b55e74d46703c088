/* SPDX-License-Identifier: MIT */
/*
 * Members of one JSON line read in place, without building a tree: a result line is about
 * 3 KB of which the ingest needs a few fields, and a cJSON tree of it (a malloc and a copy
 * per value) cost more than everything else it does. Only for bytes jsonscan_line() accepted:
 * on those it reads what cJSON would (the first of repeated keys, strings decoded, a string
 * cut at its first \u0000 where cJSON's C strings are), and it never reads past the view on
 * any bytes. Pure.
 */
#ifndef BATCHFS_JSONVIEW_H
#define BATCHFS_JSONVIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One value's bytes (p NULL: absent). A string's include its quotes. */
struct jv {
	const char *p;
	size_t len;
};

/* The value of a whole checked line (leading and trailing blanks skipped). */
struct jv jv_line(const char *line, size_t len);
bool jv_is_object(struct jv v);
bool jv_is_array(struct jv v);
bool jv_is_string(struct jv v);
/* Present and not null (cJSON: an item that is not cJSON_NULL). */
bool jv_is_set(struct jv v);
/* The first member key of object o; absent when o is no object. */
struct jv jv_get(struct jv o, const char *key);
/* The next element of an array, or member value of an object (cJSON_ArrayForEach does both);
 * *pos starts at 0. False at the end, and for any other value. */
bool jv_next(struct jv c, size_t *pos, struct jv *out);
/* A string's escaped bytes between its quotes. */
const char *jv_str_raw(struct jv s, size_t *elen);
/* Decodes a string's escaped bytes (out has room for elen bytes; no NUL added); returns the
 * decoded length. */
size_t jv_unescape(const char *raw, size_t elen, char *out);
/* The next decoded unit of raw at *i (1 to 4 bytes into b; 0 for an escape cut by elen);
 * *i moves past it. */
size_t jv_unescape_next(const char *raw, size_t *i, size_t elen, char *b);
/* s is a string whose C-string reading (up to a \u0000) equals word. */
bool jv_str_is(struct jv s, const char *word);
/* s is a string whose C-string reading is not "". */
bool jv_str_nonempty(struct jv s);
/* The C-string reading of string s into out (cut to size - 1 bytes); false for no string. */
bool jv_str_copy(struct jv s, char *out, size_t size);
/* A number's value (as cJSON reads it); false for any other value. */
bool jv_number(struct jv v, double *out);
/* json_count() of the member key of o: a number in [0, 9e15), else 0. */
int64_t jv_count(struct jv o, const char *key);

#endif
