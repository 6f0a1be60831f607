#!/bin/bash
# The web page in a real browser (issues 4 and 5): Debian's headless chromium
# driven by playwright-core (tests/browser/page_test.js) against the real
# `dermal serve` on loopback, with a generated 7-class HAM10000-labelled model
# and a PIL-made lesion-like image.  Saves a screenshot of the explained
# upload to BUILD_DIR/artifacts/browser-gradcam.png (a visual check artefact).
# Skips, saying why, when chromium, node/npm or python3-onnx/PIL is missing.
# usage: tests/integration/test_browser.sh BUILD_DIR
set -u
O=${1:-build}
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
DERMAL=${DERMAL:-$ROOT/$O/dermal}
PY=/usr/bin/python3
B=tests/browser
skip() { echo "SKIP: $1"; echo "test_browser: 0 passed, 0 failed, 1 skipped"; exit 0; }
[ -x /usr/bin/chromium ] || skip "/usr/bin/chromium missing (apt-get install chromium, or scripts/install-deps)"
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || skip "node/npm missing"
$PY -c 'import onnx, numpy, PIL' 2>/dev/null || skip "python3-onnx/numpy/PIL missing"
"$DERMAL" serve --help >/dev/null 2>&1 || skip "$DERMAL has no 'serve' command"
if [ ! -f $B/node_modules/playwright-core/package.json ]; then
  # --ignore-scripts: playwright-core has no install script, and this makes
  # sure nothing ever downloads a browser; the test uses /usr/bin/chromium.
  (cd $B && npm ci --ignore-scripts --no-audit --no-fund >/dev/null 2>&1) || {
    echo "FAIL npm ci in $B (playwright-core from the npm registry)"
    echo "test_browser: 0 passed, 1 failed"; exit 1; }
fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
$PY tests/integration/make_server_models.py "$T" >/dev/null || {
  echo "FAIL model generation"; echo "test_browser: 0 passed, 1 failed"; exit 1; }
# A lesion-like picture: a dark irregular blob on skin tone, 400x300.
$PY - "$T/lesion.jpg" <<'PYEOF' || { echo "FAIL image generation"; echo "test_browser: 0 passed, 1 failed"; exit 1; }
import sys
from PIL import Image, ImageDraw, ImageFilter
im = Image.new("RGB", (400, 300), (224, 172, 150))
d = ImageDraw.Draw(im)
d.ellipse((120, 80, 290, 220), fill=(120, 70, 50))
d.ellipse((170, 100, 250, 170), fill=(70, 40, 30))
d.ellipse((260, 150, 310, 200), fill=(150, 90, 70))
im = im.filter(ImageFilter.GaussianBlur(6))
im.save(sys.argv[1], "JPEG", quality=90)
PYEOF
mkdir -p "$O/artifacts"
node $B/page_test.js "$DERMAL" "$T" "$ROOT/$O/artifacts/browser-gradcam.png"
st=$?
if [ $st -ne 0 ] && [ -n "${VERBOSE:-}" ]; then tail -n 30 "$T"/*.log; fi
exit $st
