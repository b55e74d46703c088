#!/usr/bin/env python3
"""Turns a directory of text files, or a CSV, into batchfs prompt lines (docs/semantics.md
"Prompt lines"), one per file or row, on standard output:

    make-prompts.py prompts/ > requests.jsonl                 # one line per regular file
    make-prompts.py --csv questions.csv --id-column id --prompt-column question > requests.jsonl
    cp requests.jsonl ~/batchfs/claude/run1/                  # close() translates and submits

custom_ids stay readable and fit every provider's rule (Anthropic's ^[a-zA-Z0-9_-]{1,64}$,
the strictest): the file name without its extension, or the row's key, with each run of other
characters made one "_" ("What is FUSE?" -> "What_is_FUSE"), cut to 64 characters; a name
that would repeat gets "-2", "-3", ... Without --id-column, rows are "row-1", "row-2", ...
--system, --model, --max-tokens and --temperature add those fields to every line (else the
remote's config keys apply). Python 3 standard library only.
"""
import argparse
import csv
import json
import os
import re
import sys

ID_MAX = 64


def readable_id(name, taken):
    """A custom_id from name: [A-Za-z0-9_-] kept, other runs -> "_", unique in taken."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "item"
    base = base[:ID_MAX]
    cid, n = base, 1
    while cid in taken:
        n += 1
        suffix = f"-{n}"
        cid = base[:ID_MAX - len(suffix)] + suffix
    taken.add(cid)
    return cid


def from_dir(path):
    """(name, text) for each regular file of path, in name order."""
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if entry.startswith(".") or not os.path.isfile(full):
            continue
        with open(full, encoding="utf-8") as f:
            yield os.path.splitext(entry)[0], f.read()


def from_csv(path, id_column, prompt_column):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for c in (id_column, prompt_column):
            if c is not None and c not in cols:
                sys.exit(f"make-prompts: {path} has no column '{c}' (it has: {', '.join(cols)})")
        for i, row in enumerate(reader, 1):
            yield (row[id_column] if id_column else f"row-{i}"), row[prompt_column]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", help="a directory of prompt files")
    ap.add_argument("--csv", help="a CSV file with a header row")
    ap.add_argument("--id-column", help="the CSV column naming each row (default: row-N)")
    ap.add_argument("--prompt-column", default="prompt", help="the CSV column of the prompt")
    ap.add_argument("--system")
    ap.add_argument("--model")
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--temperature", type=float)
    a = ap.parse_args()
    if bool(a.dir) == bool(a.csv):
        ap.error("give a directory or --csv FILE")
    items = from_csv(a.csv, a.id_column, a.prompt_column) if a.csv else from_dir(a.dir)
    taken = set()
    out = sys.stdout
    for name, text in items:
        if not text.strip():
            print(f"make-prompts: skipping '{name}': empty prompt", file=sys.stderr)
            continue
        line = {"custom_id": readable_id(name, taken), "prompt": text}
        for key, value in (("system", a.system), ("model", a.model),
                           ("max_tokens", a.max_tokens), ("temperature", a.temperature)):
            if value is not None:
                line[key] = value
        out.write(json.dumps(line, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
