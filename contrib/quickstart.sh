#!/bin/sh
# Quick start: installs what is missing, builds batchfs, mounts it (the offline 'mock'
# remote when no API key is set), runs a tiny demo batch on mock, and says what to try.
# Usage: bash contrib/quickstart.sh [MOUNTPOINT]     (default ~/batchfs)
set -eu
cd "$(dirname "$0")/.."
sh contrib/deps.sh
[ -d build ] || meson setup build --buildtype=release >/dev/null
meson compile -C build >/dev/null
mnt="${1:-$HOME/batchfs}"
mkdir -p "$mnt"
if grep -q " $(realpath "$mnt") " /proc/self/mountinfo; then
	fusermount3 -u "$mnt"
fi
./build/src/batchfs "$mnt"
i=0
until grep -q " $(realpath "$mnt") " /proc/self/mountinfo; do
	i=$((i + 1)); [ $i -gt 100 ] && { echo "batchfs did not mount"; exit 1; }
	sleep 0.1
done
echo "batchfs is mounted on $mnt; remotes: $(ls "$mnt" | tr '\n' ' ')"
if [ -d "$mnt/mock" ]; then
	b="$mnt/mock/demo-$(date +%H%M%S)"
	mkdir "$b"
	for q in "What is FUSE?" "Say hello" "Name a prime"; do
		printf '{"custom_id":"q%s","params":{"model":"mock","max_tokens":64,"messages":[{"role":"user","content":"%s"}]}}\n' \
			"$(echo "$q" | tr -cd 'A-Za-z0-9')" "$q"
	done > "$b/requests.jsonl"
	echo "submitted $b:"; cat "$b/status"
	# wait blocks until the batch has ended and its results are in, then prints status;
	# timeout keeps the demo from hanging (Ctrl-C works as well)
	if ! timeout 60 cat "$b/wait" > /dev/null; then
		echo "no results yet; see $b/status"; exit 1
	fi
	echo "results:"; ls -l "$b/results"; cat "$b/results.jsonl"
	echo "the answers (text/, one file per succeeded request):"
	for f in "$b"/text/*.txt; do printf '%s: ' "$(basename "$f" .txt)"; cat "$f"; done
	echo "to send again (retry.jsonl, the requests that did not succeed):"
	cat "$b/retry.jsonl"
fi
cat <<MSG

Try:
  mkdir $mnt/mock/mine && cp your-requests.jsonl $mnt/mock/mine/requests.jsonl
  cat $mnt/mock/mine/wait | jq -e '.state == "completed"'   # blocks until done
  cat $mnt/mock/mine/text/*.txt;  ls $mnt/mock/mine/results/
  mkdir $mnt/mock/again && cp $mnt/mock/mine/retry.jsonl $mnt/mock/again/requests.jsonl
  echo cancel > $mnt/mock/mine/ctl
Set ANTHROPIC_API_KEY (or OPENAI_API_KEY, or a config file) and remount for real batches.
Unmount with: fusermount3 -u $mnt
MSG
