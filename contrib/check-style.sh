#!/bin/sh
# Formatting (clang-format, kernel style) and the layering rules of docs/design.md "Layers", as greps.
set -eu
cd "$(dirname "$0")/.."
fail=0
if command -v clang-format >/dev/null 2>&1; then
	for f in src/*.c src/providers/*.c include/*.h include/providers/*.h; do
		if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
			echo "style: clang-format would change $f"
			fail=1
		fi
	done
fi
# The FUSE layer: fs.c (adapter), tree.c (inodes, read-only ops), vfile.c (virtual files),
# draft.c (draft rules, commit point), worker.c (commits and ctl off the FUSE threads).
fuse_files="src/fs.c src/tree.c src/vfile.c src/draft.c src/worker.c"
# It sees providers only through provider.h (via batch.h), never HTTP; nor do poller/batch.
if grep -nE '#include "(http|providers/[a-z_]+)\.h"' $fuse_files src/poller.c src/batch.c; then
	echo "layering: the FUSE layer, poller and batch must not include http.h or a providers/*.h"
	fail=1
fi
# Providers never include FUSE.
if grep -nE '#include <fuse' src/provider.c src/providers/*.c src/http.c 2>/dev/null; then
	echo "layering: providers and http must not include FUSE headers"
	fail=1
fi
# Only store.c speaks SQLite.
if grep -lE '#include <sqlite3.h>' src/*.c src/providers/*.c include/*.h include/providers/*.h | grep -v '^src/store.c$'; then
	echo "layering: only src/store.c may include sqlite3.h"
	fail=1
fi
# Read paths (tree.c, vfile.c) and the FUSE threads (fs.c, draft.c) only use the store: the
# worker thread is the one caller of batch.h in the FUSE layer.
if grep -nE '#include "batch\.h"' src/fs.c src/tree.c src/vfile.c src/draft.c; then
	echo "layering: only worker.c of the FUSE layer may include batch.h"
	fail=1
fi
# No provider op is called directly from the FUSE layer.
if grep -nE -- '->ops->|->prov\b' $fuse_files; then
	echo "layering: the FUSE layer must reach providers only through batch.h"
	fail=1
fi
# A virtual file is one entry of vfile.c's table: no name comparisons elsewhere.
if grep -nE '"(status|id|ctl|results|results\.jsonl)"' src/fs.c src/tree.c src/draft.c; then
	echo "layering: virtual file names belong in vfile.c's table"
	fail=1
fi
exit $fail
