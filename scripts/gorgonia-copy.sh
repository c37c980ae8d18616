#!/usr/bin/env bash
# Rebuilds third_party/gorgonia from the pinned module and the project's
# patch, or (with --check) only compares: the copy must be exactly
# gorgonia.org/gorgonia v0.9.18's root package, internal/encoding and cuda
# (their non-test files), the CUDA kernels' sources (cuda modules/src), go.mod,
# go.sum and LICENSE, with third_party/gorgonia.patch applied, then gofmt.
# Needs Go and patch(1).
#
#   scripts/gorgonia-copy.sh           # rewrite third_party/gorgonia
#   scripts/gorgonia-copy.sh --check   # exit 1 if the copy differs
set -euo pipefail
cd "$(dirname "$0")/.."
version=v0.9.18
command -v patch >/dev/null || { echo "gorgonia-copy: patch(1) is needed" >&2; exit 2; }
src=$(GOFLAGS=-mod=mod go mod download -json gorgonia.org/gorgonia@$version | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -d "$src" ] || { echo "gorgonia-copy: gorgonia.org/gorgonia@$version not found in the module cache" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/gorgonia
for dir in . internal/encoding cuda "cuda modules/src"; do
	mkdir -p "$out/$dir"
	for f in "$src/$dir"/*.go "$src/$dir"/*.s "$src/$dir"/*.cu; do
		[ -f "$f" ] || continue
		case $f in *_test.go) continue ;; esac
		cp "$f" "$out/$dir/"
	done
done
cp "$src/go.mod" "$src/go.sum" "$src/LICENSE" "$out/"
cp third_party/gorgonia/ATTNLAB.md "$out/"
chmod -R u+w "$out"
patch -s -p1 -d "$out" < third_party/gorgonia.patch
gofmt -w "$out" && gofmt -w "$out" # as today's gofmt prints it (go:build lines, doc comments; a second pass settles one comment); nothing else changes
if [ "${1:-}" = --check ]; then
	if diff -r "$out" third_party/gorgonia >/dev/null; then
		echo "third_party/gorgonia is gorgonia $version with third_party/gorgonia.patch"
	else
		diff -r "$out" third_party/gorgonia | head -20 >&2
		echo "gorgonia-copy: third_party/gorgonia differs from gorgonia $version + the patch" >&2
		exit 1
	fi
else
	rm -rf third_party/gorgonia
	cp -r "$out" third_party/gorgonia
	echo "third_party/gorgonia rewritten from gorgonia $version + third_party/gorgonia.patch"
fi
