#!/usr/bin/env bash
# Builds the Debian package: target/debian/streamsink_<version>_<arch>.deb, with
# /usr/bin/streamsink, the unit (shipped disabled) and /etc/streamsink/streamsink.env (a
# conffile, mode 0600). Installs cargo-deb first if it is missing. Extra arguments go to
# cargo-deb (e.g. --deb-revision 2, or --no-build after a release build).
#
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "package: installing cargo-deb (once)" >&2
    cargo install cargo-deb --locked --quiet
fi
command -v dpkg-shlibdeps >/dev/null || {
    echo "package: installing dpkg-dev (dependency detection)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >/dev/null
}
# A plain release build (never the test hooks), its debug info stripped. cargo-deb prints
# the .deb's path on stdout, its progress on stderr.
deb=$(cargo deb --locked --strip "$@" | tail -n 1)
[ -f "$deb" ] || { echo "package: cargo deb produced no .deb ($deb)" >&2; exit 1; }
echo "$deb"
