#!/bin/sh
# ctest `self_contained`: the build and the tests read nothing outside the repository.
# A fresh clone has no ../shared beside it (only CI lays one there), so any path that climbs
# out of the tree to reach data is a test that passes in CI and fails for a new user.
# Fails, listing the lines, when a build or test file names ../shared or /work/shared.
cd "$(dirname "$0")/../.." || exit 2
hits=$(grep -rnE '(\.\./shared|/work/shared)' CMakeLists.txt cmake src proto tasks include \
    tests scripts bench .ci 2>/dev/null | grep -v '^tests/tools/check_self_contained.sh:')
if [ -n "$hits" ]; then
    echo "files that read outside the repository:"
    echo "$hits"
    exit 1
fi
echo "no path outside the repository"
