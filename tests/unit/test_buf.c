// SPDX-License-Identifier: MIT
/* Unit tests: the capped buffer. */
#include <errno.h>
#include <stdlib.h>

#include "buf.h"
#include "tap.h"

int main(void)
{
	struct buf b = BUF_INIT(10);
	char *s;
	size_t len;

	is_int(buf_addstr(&b, "hello"), 0, "add within the cap");
	is_int(buf_add(&b, "world!", 6), -EFBIG, "add past the cap is -EFBIG");
	is_str(b.data, "hello", "a refused add leaves the buffer as it was");
	is_int(buf_addf(&b, "%d", 12345), 0, "formatted add up to the cap");
	is_int(b.len, 10, "length counts the bytes");
	is_int(buf_addf(&b, "x"), -EFBIG, "formatted add past the cap is -EFBIG");
	buf_reset(&b);
	is_int(b.len, 0, "reset empties");
	is_int(buf_add_json_string(&b, "a\"\n"), 0, "json string");
	is_str(b.data, "\"a\\\"\\n\"", "json string is escaped and quoted");
	s = buf_detach(&b, &len);
	is_str(s, "\"a\\\"\\n\"", "detach hands the text out");
	is_int(b.len, 0, "detach resets");
	free(s);
	s = buf_detach(&b, &len);
	is_str(s, "", "detach of an empty buffer is an empty string");
	free(s);
	buf_release(&b);
	buf_release(&b);
	ok(1, "release twice is safe");
	return tap_done();
}
