#!/bin/sh
# The whole test suite: installs what is missing, checks style and layering, then
#  - gcc, AddressSanitizer + UndefinedBehaviorSanitizer (+ float-cast-overflow): C unit tests;
#  - clang, the same plus LeakSanitizer, UBSan reports fatal: C unit tests and the pytest
#    mount suite (which starts the fake providers on 127.0.0.1);
#  - the libFuzzer harnesses of tests/fuzz/ (clang), FUZZ_SECONDS each (default 45), two at
#    a time; FUZZ_SECONDS=0 only builds them.
# Arguments go to the clang `meson test` (e.g. --suite unit). Usage: bash contrib/test.sh
set -eu
cd "$(dirname "$0")/.."
sh contrib/deps.sh
sh contrib/check-style.sh
# gcc's -fsanitize=undefined leaves float-cast-overflow out (clang's has it): ask for it.
ubsan_extra="-fsanitize=float-cast-overflow"
if [ ! -d build-san ]; then
	meson setup build-san -Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args="$ubsan_extra" -Dc_link_args="$ubsan_extra"
fi
if [ ! -d build-clang ]; then
	CC=clang meson setup build-clang -Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args="$ubsan_extra -fno-sanitize-recover=undefined" -Dc_link_args="$ubsan_extra"
fi
meson compile -C build-san
meson compile -C build-clang
# LeakSanitizer runs with ASan at exit of every process (the daemon's leaks fail its test).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
meson test -C build-san --print-errorlogs --suite unit
meson test -C build-clang --print-errorlogs "$@"
sh tests/fuzz/run.sh
