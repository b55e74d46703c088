// SPDX-License-Identifier: MIT
/* Unit tests: RFC 3339 parsing and formatting. */
#include <errno.h>
#include <stdint.h>

#include "tap.h"
#include "timefmt.h"

static int64_t parse(const char *s, int *rc)
{
	int64_t ms = -1;

	*rc = timefmt_parse(s, &ms);
	return ms;
}

int main(void)
{
	char out[TIMEFMT_SIZE];
	int64_t base = 1738160740LL * 1000; /* 2025-01-29T14:25:40Z */
	int rc;

	is_int(parse("2025-01-29T14:25:40Z", &rc), base, "Z");
	is_int(rc, 0, "Z parses");
	is_int(parse("2025-01-29T14:25:40.141141+00:00", &rc), base + 141, "+00:00, 6 digits");
	is_int(parse("2025-01-29T14:25:40.1Z", &rc), base + 100, "1 fraction digit");
	is_int(parse("2025-01-29T14:25:40.123456789Z", &rc), base + 123, "9 fraction digits");
	is_int(parse("2025-01-29T09:25:40-05:00", &rc), base, "-05:00 offset");
	is_int(parse("2025-01-29T20:55:40+06:30", &rc), base, "+06:30 offset");
	is_int(parse("2025-01-29t14:25:40z", &rc), base, "lower-case t and z");
	is_int(parse("2025-01-29 14:25:40Z", &rc), base, "space separator");
	parse("2025-01-29T14:25:40", &rc);
	is_int(rc, -EINVAL, "missing offset is refused");
	parse("2025-01-29T14:25:40.Z", &rc);
	is_int(rc, -EINVAL, "empty fraction is refused");
	parse("2025-01-29T14:25:40.1234567890Z", &rc);
	is_int(rc, -EINVAL, "10 fraction digits are refused");
	parse("2025-13-29T14:25:40Z", &rc);
	is_int(rc, -EINVAL, "month 13 is refused");
	parse("2025-01-29T14:25:40Zjunk", &rc);
	is_int(rc, -EINVAL, "trailing junk is refused");
	parse("", &rc);
	is_int(rc, -EINVAL, "empty string is refused");
	parse(NULL, &rc);
	is_int(rc, -EINVAL, "NULL is refused");

	timefmt_format(base + 999, out);
	is_str(out, "2025-01-29T14:25:40Z", "format drops milliseconds, ends in Z");
	timefmt_format(0, out);
	is_str(out, "1970-01-01T00:00:00Z", "epoch");
	ok(timefmt_now_ms() > base, "now is after 2025");
	ok(timefmt_mono_ms() > 0, "monotonic clock runs");
	return tap_done();
}
