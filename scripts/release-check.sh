#!/usr/bin/env bash
# Shows that `make release` is reproducible: builds the committed HEAD twice, in two clones at
# paths of different lengths, each with its own target directory, and fails unless the two
# binaries are the same bytes. Prints both SHA-256 sums and each build's time. Each build
# starts from nothing but Cargo's registry, so this takes two full release builds.
#
#   scripts/release-check.sh [WORK_DIR]   (default: a new directory under /tmp, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$(git rev-parse HEAD)

if [ $# -ge 1 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d /tmp/sextant-release-check.XXXXXX)
  trap 'rm -rf "$work"' EXIT
fi
first=$work/a/sextant
second=$work/second-checkout/src/sextant-release

declare -A sums
for dir in "$first" "$second"; do
  rm -rf "$dir"
  git -c advice.detachedHead=false clone -q --no-hardlinks "$PWD" "$dir"
  git -C "$dir" checkout -q "$commit"
  start=$SECONDS
  # This checkout's recipe on the clone's sources, into the clone's own target directory.
  env -u CARGO_TARGET_DIR -u RELEASE_DIR make -s -C "$dir" -f "$PWD/Makefile" release >/dev/null
  sums[$dir]=$(sha256sum "$dir/target/dist/release/sextant" | cut -d' ' -f1)
  echo "release-check: $commit at $dir: ${sums[$dir]} ($((SECONDS - start)) s)"
done

if [ "${sums[$first]}" != "${sums[$second]}" ]; then
  echo "release-check: the two builds differ" >&2
  exit 1
fi
echo "release-check: same bytes ($(stat -c %s "$first/target/dist/release/sextant") bytes)"
