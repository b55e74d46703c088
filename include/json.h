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

#endif
