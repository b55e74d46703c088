#!/bin/sh
# Turns a directory of prompt files into an Anthropic requests.jsonl (one request per file,
# custom_id = file name without extension), ready to cp into a batch directory:
#   sh make-requests.sh prompts/ > requests.jsonl
#   mkdir ~/batchfs/claude/run1 && cp requests.jsonl ~/batchfs/claude/run1/
set -eu
dir=${1:?usage: make-requests.sh DIR [MODEL]}
model=${2:-claude-3-5-haiku-latest}
for f in "$dir"/*; do
	[ -f "$f" ] || continue
	id=$(basename "$f" | sed 's/\.[^.]*$//; s/[^A-Za-z0-9_-]/_/g' | cut -c1-64)
	jq -cn --arg id "$id" --arg model "$model" --rawfile text "$f" \
		'{custom_id: $id, params: {model: $model, max_tokens: 1024,
		  messages: [{role: "user", content: $text}]}}'
done
