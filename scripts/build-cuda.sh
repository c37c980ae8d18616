#!/usr/bin/env bash
# Builds bin/trainer-cuda: the trainer with Gorgonia's CUDA backend
# (-tags cuda), on a machine without a GPU, for the lent NVIDIA H200
# (driver 580, CUDA 13). The default build and CI are untouched: this build
# alone uses a temporary go.mod (-modfile) whose replace directives point at
#   - third_party/gorgonia with third_party/gorgonia-cuda.patch applied
#     (no cuDNN: the engine created a cuDNN handle nothing uses, and cu/dnn
#     builds against neither Debian's headers nor the device's cuDNN 9; the
#     engine's context made current before its cuBLAS handle is created,
#     without which cuBLAS ran in another context, unordered with the
#     engine's copies, and products came back partly unwritten; plain
#     device memory instead of managed memory for its pool; inputs kept
#     on the GPU across runs, KeepOnDevice: see
#     third_party/gorgonia/ATTNLAB.md), and
#   - gorgonia.org/cu v0.9.6 from the module cache, with third_party/cu.patch
#     applied (cuBLAS's math mode, for TF32 products: model option tf32).
# The PTX of Gorgonia's kernels is committed (gpu/stdlib_ptx_cuda.go,
# scripts/gen-ptx.sh), so no nvcc is needed here.
#
# Linking: Debian ships cuBLAS 11, whose every symbol carries the version
# libcublas.so.11, while the device has cuBLAS 13. The binary is linked
# against a stub with no symbol versions and the soname libcublas.so.13,
# made here from the cuBLAS functions the binary calls, so that on the
# device the dynamic loader finds the real cuBLAS 13 by its soname.
#
# Needs: Go, gcc, patch, objdump (binutils), the CUDA headers and the
# driver library to link against (Debian bookworm: add "contrib non-free"
# to the Components of /etc/apt/sources.list.d/debian.sources, then
# apt-get install nvidia-cuda-dev; nvidia-cuda-toolkit only for gen-ptx.sh).
#
#   scripts/build-cuda.sh        # -> bin/trainer-cuda, then prints how to run it
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "build-cuda: $*" >&2; exit 2; }
for tool in go gcc patch objdump readelf; do
	command -v $tool >/dev/null || die "$tool not found (Debian: apt-get install golang gcc patch binutils)"
done
hint="enable Debian's contrib and non-free components and apt-get install nvidia-cuda-dev"
for h in cuda.h cublas_v2.h; do
	[ -f /usr/include/$h ] || [ -f /usr/local/cuda/include/$h ] || die "CUDA header $h not found: $hint"
done
found=
for f in /usr/lib/x86_64-linux-gnu/libcuda.so /usr/lib/x86_64-linux-gnu/stubs/libcuda.so /usr/local/cuda/lib64/stubs/libcuda.so; do
	[ -e "$f" ] && found=$f
done
[ -n "$found" ] || die "libcuda.so (the CUDA driver library, or its stub) not found: $hint"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r third_party/gorgonia "$work/gorgonia"
patch -s -p1 -d "$work/gorgonia" < third_party/gorgonia-cuda.patch
cu=$(GOFLAGS=-mod=mod go mod download -json gorgonia.org/cu@v0.9.6 | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -d "$cu" ] || die "could not fetch gorgonia.org/cu v0.9.6 (module proxy)"
cp -r "$cu" "$work/cu"
chmod -R u+w "$work"
patch -s -p1 -d "$work/cu" < third_party/cu.patch # Standard.SetTF32: the handle's math mode
cp go.sum "$work/go.sum"
sed "s|=> ./third_party/gorgonia|=> $work/gorgonia|" go.mod > "$work/go.mod"
grep -q "=> $work/gorgonia" "$work/go.mod" || die "go.mod has no replace for third_party/gorgonia"
printf '\nreplace gorgonia.org/cu => %s\n' "$work/cu" >> "$work/go.mod"
go mod edit -require=gorgonia.org/cu@v0.9.6 "$work/go.mod" # graph/op_cuda.go launches kernels through it

build() { CGO_ENABLED=1 go build -modfile="$work/go.mod" -tags cuda -trimpath "$@" ./cmd/trainer; }
echo "build-cuda: first link (against the local cuBLAS) to list the cuBLAS functions used"
build -o "$work/first"
objdump -T "$work/first" | awk '$NF ~ /^cublas/ {print $NF}' | sort -u > "$work/cublas.syms"
[ -s "$work/cublas.syms" ] || die "the first link calls no cuBLAS function: is -tags cuda in effect?"
mkdir -p "$work/stub"
sed 's/.*/void &(void) {}/' "$work/cublas.syms" > "$work/stub/cublas.c"
gcc -shared -fPIC -o "$work/stub/libcublas.so" -Wl,-soname,libcublas.so.13 "$work/stub/cublas.c"
echo "build-cuda: final link against a stub libcublas.so.13 ($(wc -l < "$work/cublas.syms") functions)"
mkdir -p bin
CGO_LDFLAGS="-L$work/stub" build -ldflags="-s -w" -o bin/trainer-cuda
needed=$(readelf -d bin/trainer-cuda | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | paste -sd' ' -)
case " $needed " in
*" libcublas.so.13 "*) ;;
*) die "bin/trainer-cuda needs [$needed], not libcublas.so.13: the stub was not used" ;;
esac
echo "build-cuda: bin/trainer-cuda ($(du -h bin/trainer-cuda | cut -f1)), needs: $needed"
echo "run it on the GPU machine (carry bin/): bin/trainer-cuda gpucheck"
