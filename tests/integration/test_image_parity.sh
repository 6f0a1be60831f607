#!/bin/bash
# Parity of dermal's image pipeline with PIL/torchvision: decoded pixels of a
# generated sample set (CMYK, 16-bit, grayscale, palette, alpha, EXIF-rotated,
# progressive, WebP) and preprocessed tensors of the full-resolution HAM10000
# images in ../shared/data (skipped, saying so, when absent).
#
# usage: tests/integration/test_image_parity.sh [BUILD_DIR]   (default build)
# Builds BUILD_DIR/image_dump from tests/integration/image_dump.c against
# BUILD_DIR/libdermal.a (sanitizer flags follow the build variant), then runs
# tests/integration/image_parity.py.  Last line:
#   test_image_parity: N passed, N failed, N skipped
set -u
O=${1:-build}
cd "$(dirname "$0")/../.." || exit 2
PY=/usr/bin/python3
summary_fail() { echo "FAIL $1"; echo "test_image_parity: 0 passed, 1 failed, 0 skipped"; exit 1; }

if ! $PY -c 'import PIL, numpy, torch, torchvision' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 lacks PIL, numpy, torch or torchvision"
  echo "test_image_parity: 0 passed, 0 failed, 1 skipped"; exit 0
fi
[ -f "$O/libdermal.a" ] || summary_fail "$O/libdermal.a missing (run make first)"
case "$O" in
  *asan*) SAN="-fsanitize=address,undefined -fno-omit-frame-pointer" ;;
  *tsan*) SAN="-fsanitize=thread" ;;
  *) SAN="" ;;
esac
# shellcheck disable=SC2086  # SAN is a list of flags
cc -std=c11 -D_GNU_SOURCE -O1 -g $SAN -Iinclude tests/integration/image_dump.c \
  "$O/libdermal.a" -ldnnl -lgomp -lturbojpeg -lspng -lwebp -lm -lpthread \
  -o "$O/image_dump" || summary_fail "cannot build $O/image_dump"

exec $PY tests/integration/image_parity.py --dump "$PWD/$O/image_dump" \
  --data "$PWD/../shared/data"
