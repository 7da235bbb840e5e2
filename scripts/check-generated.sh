#!/usr/bin/env bash
# Fails if `buf generate` would change the committed code, or if the API
# broke compatibility with the previous commit.
set -euo pipefail
cd "$(dirname "$0")/.."

go tool buf generate
if ! git diff --exit-code --stat -- internal/gen; then
	echo "internal/gen is stale: run 'make generate' and commit the result" >&2
	exit 1
fi
untracked=$(git ls-files --others --exclude-standard -- internal/gen)
if [ -n "$untracked" ]; then
	echo "internal/gen has files that are not committed: $untracked" >&2
	exit 1
fi

# buf breaking against the previous commit, when it had an API to break.
if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:proto 2>/dev/null; then
	go tool buf breaking --against '.git#ref=HEAD~1'
else
	echo "buf breaking: no previous commit with proto/; skipped"
fi
