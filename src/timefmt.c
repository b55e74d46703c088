// SPDX-License-Identifier: MIT
/*
 * RFC 3339 time stamps <-> milliseconds since the epoch. Accepts what providers send ('Z',
 * '+00:00', any offset, 0-9 fraction digits); prints UTC with 'Z'. Pure but for the clocks.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "timefmt.h"

/* Reads exactly n digits at *p into *v, advancing *p. */
static int digits(const char **p, int n, int *v)
{
	int x = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -EINVAL;
		x = x * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*v = x;
	return 0;
}

static int expect(const char **p, char c)
{
	if (**p != c)
		return -EINVAL;
	(*p)++;
	return 0;
}

int timefmt_parse(const char *s, int64_t *ms)
{
	const char *p = s;
	int y, mo, d, h, mi, sec, frac_ms = 0, off = 0;
	struct tm tm;
	time_t t;

	if (!s)
		return -EINVAL;
	if (digits(&p, 4, &y) || expect(&p, '-') || digits(&p, 2, &mo) || expect(&p, '-') ||
	    digits(&p, 2, &d))
		return -EINVAL;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return -EINVAL;
	p++;
	if (digits(&p, 2, &h) || expect(&p, ':') || digits(&p, 2, &mi) || expect(&p, ':') ||
	    digits(&p, 2, &sec))
		return -EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -EINVAL;
	if (*p == '.') {
		int n = 0, scale = 100;

		p++;
		while (isdigit((unsigned char)*p)) {
			if (n < 3)
				frac_ms += (*p - '0') * scale;
			scale /= 10;
			n++;
			p++;
		}
		if (n == 0 || n > 9)
			return -EINVAL;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1, oh, om;

		p++;
		if (digits(&p, 2, &oh) || expect(&p, ':') || digits(&p, 2, &om) || oh > 23 ||
		    om > 59)
			return -EINVAL;
		off = sign * (oh * 60 + om) * 60;
	} else {
		return -EINVAL;
	}
	if (*p)
		return -EINVAL;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1 && !(y == 1969 && mo == 12 && d == 31))
		return -EINVAL;
	*ms = ((int64_t)t - off) * 1000 + frac_ms;
	return 0;
}

void timefmt_format(int64_t ms, char out[TIMEFMT_SIZE])
{
	time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm)) {
		snprintf(out, TIMEFMT_SIZE, "1970-01-01T00:00:00Z");
		return;
	}
	strftime(out, TIMEFMT_SIZE, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int64_t timefmt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t timefmt_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
