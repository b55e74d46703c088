#!/bin/sh
# The whole test suite: installs what is missing, builds with AddressSanitizer and
# UndefinedBehaviorSanitizer, checks style and layering, runs the C unit tests and the pytest
# mount suite (which starts the fake providers on 127.0.0.1). Usage: bash contrib/test.sh
set -eu
cd "$(dirname "$0")/.."
sh contrib/deps.sh
sh contrib/check-style.sh
if [ ! -d build-san ]; then
	meson setup build-san -Db_sanitize=address,undefined -Db_lundef=false
fi
meson compile -C build-san
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
meson test -C build-san --print-errorlogs "$@"
