#!/bin/sh
# Formatting (clang-format, kernel style) and the layering rules of STYLE.md, as greps.
set -eu
cd "$(dirname "$0")/.."
fail=0
if command -v clang-format >/dev/null 2>&1; then
	for f in src/*.c include/*.h; do
		if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
			echo "style: clang-format would change $f"
			fail=1
		fi
	done
fi
# fs.c sees providers only through provider.h (via batch.h), never HTTP.
if grep -nE '#include "(http|provider_[a-z]+)\.h"' src/fs.c src/poller.c src/batch.c; then
	echo "layering: fs/poller/batch must not include http.h or a provider_*.h"
	fail=1
fi
# Providers never include FUSE.
if grep -nE '#include <fuse' src/provider*.c src/http.c 2>/dev/null; then
	echo "layering: providers and http must not include FUSE headers"
	fail=1
fi
# Only store.c speaks SQLite.
if grep -lE '#include <sqlite3.h>' src/*.c include/*.h | grep -v '^src/store.c$'; then
	echo "layering: only src/store.c may include sqlite3.h"
	fail=1
fi
# Read paths of fs.c never call a provider op directly.
if grep -nE -- '->ops->|r->prov' src/fs.c; then
	echo "layering: fs.c must reach providers only through batch.h"
	fail=1
fi
exit $fail
