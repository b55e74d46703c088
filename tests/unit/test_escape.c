// SPDX-License-Identifier: MIT
/* Unit tests: custom_id <-> file name escaping and its reverse. */
#include <errno.h>
#include <string.h>

#include "escape.h"
#include "tap.h"

static void roundtrip(const char *id, size_t len, const char *want)
{
	char name[ESCAPE_NAME_SIZE], back[1024];
	int n = escape_name(id, len, name);
	int m;

	ok(n > 0, "escape '%s' succeeds", want);
	is_str(name, want, "escaped form of '%s'", want);
	m = unescape_name(name, back, sizeof(back));
	ok(m == (int)len && !memcmp(back, id, len), "'%s' unescapes to the original", want);
	ok(escape_is_valid(name), "'%s' is a valid escaped name", want);
}

int main(void)
{
	char name[ESCAPE_NAME_SIZE], back[1024], longid[301];
	int n;

	roundtrip("plain-id_1.x", 12, "plain-id_1.x");
	roundtrip("a/b", 3, "a%2Fb");
	roundtrip("..", 2, "%2E.");
	roundtrip(".hidden", 7, "%2Ehidden");
	roundtrip("a.b", 3, "a.b");
	roundtrip("two words", 9, "two%20words");
	roundtrip("caf\xc3\xa9", 5, "caf%C3%A9");
	roundtrip("100%", 4, "100%25");
	roundtrip("~tilde", 6, "%7Etilde");

	is_int(escape_name("", 0, name), -EINVAL, "an empty id is refused");

	memset(longid, 'x', 300);
	longid[300] = '\0';
	n = escape_name(longid, 300, name);
	ok(n > 0 && n <= ESCAPE_NAME_LIMIT, "a 300-byte id is cut to at most %d bytes (%d)",
	   ESCAPE_NAME_LIMIT, n);
	is_int(n, ESCAPE_NAME_LIMIT, "cut names use the whole limit when they can");
	ok(name[n - 17] == '~', "the cut name ends in '~' and 16 hex digits");
	is_int(unescape_name(name, back, sizeof(back)), -ENAMETOOLONG,
	       "a cut name cannot be reversed");
	ok(escape_is_valid(name), "a cut name is valid");
	{
		char other[ESCAPE_NAME_SIZE];

		longid[299] = 'y';
		escape_name(longid, 300, other);
		ok(strcmp(name, other) != 0, "ids differing after the cut get different names");
	}
	memset(longid, '/', 300);
	n = escape_name(longid, 300, name);
	ok(n <= ESCAPE_NAME_LIMIT && name[n - 17] == '~', "escaped long ids are cut too");
	ok(name[n - 18] != '%' && name[n - 19] != '%', "never inside a %%XX triple");
	ok(strlen(name) + strlen(".json") <= 255, "with .json it fits NAME_MAX");

	is_int(unescape_name("a%2", back, sizeof(back)), -EINVAL, "truncated %%XX is refused");
	is_int(unescape_name("a%41", back, sizeof(back)), -EINVAL,
	       "an escaped safe byte is not a name escape_name makes");
	is_int(unescape_name("a b", back, sizeof(back)), -EINVAL, "a raw space is refused");
	is_int(unescape_name(".x", back, sizeof(back)), -EINVAL, "a raw leading dot is refused");
	is_int(unescape_name("abcdef", back, 3), -ERANGE, "a short output buffer is -ERANGE");
	/* Found by fuzzing (tests/fuzz/corpus/fuzz_escape/id4): a name longer than any escaped
	 * one was unescaped, a second name for the file of a cut id. */
	memset(longid, 'x', 300);
	longid[300] = '\0';
	is_int(unescape_name(longid, back, sizeof(back)), -EINVAL,
	       "a name over ESCAPE_NAME_LIMIT is not one escape_name makes");
	ok(!escape_is_valid(longid), "nor valid");
	longid[ESCAPE_NAME_LIMIT] = '\0';
	is_int(unescape_name(longid, back, sizeof(back)), ESCAPE_NAME_LIMIT,
	       "one of exactly the limit is");
	return tap_done();
}
