#!/usr/bin/env bash
# Print the path of the test venv, creating it first if needed. The venv lives under
# ~/.cache/ftune/ and is keyed by the hash of tests/peers/requirements.txt, so it is built once
# per set of pinned versions (the torch wheel is large) and reused by every later run.
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/peers/requirements.txt
key=$(sha256sum "$req" | cut -c1-12)
dir="${FTUNE_CACHE:-$HOME/.cache/ftune}/venv-$key"
if [ ! -f "$dir/.complete" ]; then
  echo "ftune: creating the test venv $dir (once; downloads torch and the other peers)" >&2
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir" >&2
  "$dir/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  touch "$dir/.complete"
fi
# The extra peers (tests/peers/requirements-extra.txt): llama.cpp through llama-cpp-python, from a
# wheel built once and cached beside the venv, and mergekit. Stamped by the file's hash.
extra=tests/peers/requirements-extra.txt
xkey=$(cat "$extra" tools/llama-wheel.sh | sha256sum | cut -c1-12)
if [ ! -f "$dir/.extra-$xkey" ]; then
  bash tools/llama-wheel.sh "$dir" >&2
  wheels="${FTUNE_CACHE:-$HOME/.cache/ftune}/wheels"
  "$dir/bin/pip" install -q --disable-pip-version-check -c "$req" --find-links "$wheels" \
    -r <(grep -v '^#' "$extra") >&2
  touch "$dir/.extra-$xkey"
fi
echo "$dir"
