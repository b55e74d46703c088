/* SPDX-License-Identifier: MIT */
/*
 * RFC 3339 time stamps <-> int64 milliseconds since the epoch (UTC). Providers send 'Z' or
 * '+00:00' offsets with 0-9 fractional digits (Anthropic spec section 3); status prints 'Z'.
 */
#ifndef BATCHFS_TIMEFMT_H
#define BATCHFS_TIMEFMT_H

#include <stdint.h>

#define TIMEFMT_SIZE 32

/* Parses "YYYY-MM-DDTHH:MM:SS[.frac](Z|z|+hh:mm|-hh:mm)" ('t' and ' ' also accepted as the
 * separator). Returns 0 and sets *ms, or -EINVAL. Pure. */
int timefmt_parse(const char *s, int64_t *ms);
/* Formats ms as "YYYY-MM-DDTHH:MM:SSZ" (milliseconds dropped) into out. Pure. */
void timefmt_format(int64_t ms, char out[TIMEFMT_SIZE]);
/* Current wall-clock time in milliseconds. */
int64_t timefmt_now_ms(void);
/* Monotonic clock in milliseconds, for deadlines. */
int64_t timefmt_mono_ms(void);

#endif
