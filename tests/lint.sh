#!/bin/sh
# make lint: the committed .clang-format, and calls we do not use.
set -u
cd "$(dirname "$0")/.."
rc=0
files=$(git ls-files 'app/*.c' 'app/*.h' 'handlers/*.c' 'clients/*.c' 'clients/*.h' 'include/*.h' \
    'tests/unit/*.c' 'tests/fuzz/*.c' 2>/dev/null)
[ -n "$files" ] || files=$(ls app/*.c handlers/*.c clients/*.c include/*.h)
if ! clang-format --dry-run --Werror $files 2>lint.out; then
	head -40 lint.out
	echo "lint: clang-format differences (run clang-format -i on the files above)"
	rc=1
fi
rm -f lint.out
banned='\b(sprintf|vsprintf|strcpy|strcat|atoi|atol|gets|strtok)[[:space:]]*\('
if grep -nE "$banned" $files; then
	echo "lint: banned calls above (use snprintf, buf_*, strtol, strtok_r)"
	rc=1
fi
[ $rc -eq 0 ] && echo "lint: ok"
exit $rc
