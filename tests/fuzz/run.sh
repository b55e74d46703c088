#!/bin/sh
# Builds the libFuzzer harnesses of tests/fuzz/ with clang (AddressSanitizer, LeakSanitizer,
# UndefinedBehaviorSanitizer with float-cast-overflow, every report fatal) and runs each for
# FUZZ_SECONDS (default 45), FUZZ_JOBS at a time (default 2), from the seeds in
# tests/fuzz/corpus/<harness>/. Fails on any crash, sanitizer report, leak or timeout, leaving
# the input in build-fuzz/artifacts/. Prints the executions of each harness.
# Usage: sh tests/fuzz/run.sh [harness...]     (FUZZ_SECONDS=0: build only)
set -eu
cd "$(dirname "$0")/../.."
out=${FUZZ_OUT:-build-fuzz}
secs=${FUZZ_SECONDS:-45}
jobs=${FUZZ_JOBS:-2}
cc=${FUZZ_CC:-clang}
pkgs="fuse3 libcurl libcjson sqlite3 inih libcrypto"
# harness: the module it includes (to reach static parsers), so not linked as an object
harnesses="fuzz_jsonl: fuzz_escape: fuzz_results: fuzz_conf: fuzz_anthropic:anthropic
fuzz_openai:openai_common fuzz_vertex:vertex fuzz_http:http"
[ $# -gt 0 ] && harnesses=$(for h in $harnesses; do for a; do
	[ "${h%%:*}" != "$a" ] || echo "$h"; done; done)

mkdir -p "$out/obj" "$out/bin" "$out/work" "$out/artifacts" "$out/logs"
# what meson.build's configure_file() writes, for a build without meson
{
	printf '#define BATCHFS_VERSION "fuzz"\n'
	printf '#define BATCHFS_DATADIR "%s"\n' "$PWD/contrib"
	printf '#define BATCHFS_SOURCE_PRICES "%s"\n' "$PWD/contrib/prices.tsv"
} >"$out/batchfs_build.h"
san="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all"
cflags="-g -O1 -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -DFUSE_USE_VERSION=314 $san
-Werror -Wall -Wextra -Iinclude -Isrc -I$out $(pkg-config --cflags $pkgs)"
libs="$(pkg-config --libs $pkgs) -lpthread -lm"

for src in src/*.c src/providers/*.c; do
	m=$(basename "$src" .c)
	[ "$m" = main ] && continue
	if [ ! -f "$out/obj/$m.o" ] || [ "$src" -nt "$out/obj/$m.o" ]; then
		# shellcheck disable=SC2086
		$cc $cflags -fsanitize=fuzzer-no-link -c "$src" -o "$out/obj/$m.o"
	fi
done
for h in $harnesses; do
	name=${h%%:*}
	inc=${h#*:}
	objs=$(for o in "$out"/obj/*.o; do [ "$(basename "$o" .o)" = "$inc" ] || echo "$o"; done)
	# shellcheck disable=SC2086
	$cc $cflags -fsanitize=fuzzer "tests/fuzz/$name.c" $objs $libs -o "$out/bin/$name"
done
[ "$secs" = 0 ] && exit 0

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fail=0
run_one() {
	name=$1
	mkdir -p "$out/work/$name"
	if "$out/bin/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-max_len=65536 -print_final_stats=1 -artifact_prefix="$out/artifacts/$name-" \
		"$out/work/$name" "tests/fuzz/corpus/$name" >"$out/logs/$name.log" 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/logs/$name.log")
		echo "fuzz: $name: ok, $runs executions in $secs s"
	else
		echo "fuzz: $name: FAILED (log: $out/logs/$name.log)"
		tail -n 40 "$out/logs/$name.log"
		return 1
	fi
}
# Two at a time: the machine has two cores and the whole CI run has a time budget.
set -- $(for h in $harnesses; do echo "${h%%:*}"; done)
while [ $# -gt 0 ]; do
	pids=""
	i=0
	while [ $# -gt 0 ] && [ $i -lt "$jobs" ]; do
		run_one "$1" &
		pids="$pids $!"
		shift
		i=$((i + 1))
	done
	for p in $pids; do
		wait "$p" || fail=1
	done
done
exit $fail
