#!/bin/bash
# STYLE.md rules a machine can check: banned unsafe functions (curl's
# checksrc idea), every .c file opens with a comment block, oneDNN headers
# only in the oneDNN backend, public headers include only <stddef.h>,
# <stdint.h>, <stdbool.h> and other dermal headers, and clang-format clean
# (.clang-format) when clang-format is installed.
set -u
cd "$(dirname "$0")/../.." || exit 2
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
no() { fail=$((fail + 1)); echo "FAIL $1"; }
banned=$(grep -rnE "\b(atoi|atol|atof|sprintf|vsprintf|strcpy|strcat|gets|strtok)\s*\(" src include |
  grep -vE "\b(snprintf|vsnprintf)\s*\(")
[ -z "$banned" ] && ok "no banned functions" || no "banned functions: $banned"
missing=""
for f in $(git ls-files 'src/*.c' 'tests/unit/*.c' 'tests/conformance/*.c' 'tests/fuzz/*.c'); do
  head -c 2 "$f" | grep -q '/\*' || missing="$missing $f"
done
[ -z "$missing" ] && ok "every .c opens with a comment block" || no "no opening comment:$missing"
leak=$(grep -rln "dnnl" src include --include=*.h --include=*.c | grep -v "src/engine/backend_onednn" | grep -v "src/engine/onednn")
[ -z "$leak" ] && ok "oneDNN stays in the backend" || no "oneDNN outside the backend: $leak"
bad=$(grep -nE '^#include' include/dermal/*.h | grep -vE '<(stddef|stdint|stdbool)\.h>|"dermal/[a-z]+\.h"')
[ -z "$bad" ] && ok "public headers stay small" || no "public header includes: $bad"
if command -v clang-format >/dev/null; then
  unformatted=""
  for f in $(git ls-files 'src/*.[ch]' 'include/*.h' 'tests/unit/*.[ch]'); do
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || unformatted="$unformatted $f"
  done
  [ -z "$unformatted" ] && ok "clang-format clean" || no "not clang-formatted (make format):$unformatted"
fi
echo "test_style: $pass passed, $fail failed"
[ $fail -eq 0 ]
