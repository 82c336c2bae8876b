#!/usr/bin/env bash
# Builds the Debian package: target/debian/streamsink_<version>_<arch>.deb, with
# /usr/bin/streamsink, the unit (shipped disabled) and /etc/streamsink/streamsink.env (a
# conffile, mode 0600). Installs cargo-deb first if it is missing. Extra arguments go to
# cargo-deb (e.g. --deb-revision 2, or --no-build after a release build).
#
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version whose systemd-units and conf-files behaviour the unit and vm-test.sh rely on
# (autoscripts: try-restart on upgrade, stop on removal, no enable, no start).
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
    echo "package: installing cargo-deb $CARGO_DEB_VERSION (once)" >&2
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
# dpkg-shlibdeps (dpkg-dev) computes the package's Depends from the binary's libraries.
if ! command -v dpkg-shlibdeps >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "package: installing dpkg-dev" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dpkg-dev
fi
# A plain release build (never the test hooks), its debug info stripped. cargo-deb prints
# the .deb's path on stdout, its progress on stderr.
deb=$(cargo deb --locked --strip "$@" | tail -n 1)
[ -f "$deb" ] || { echo "package: cargo deb produced no .deb ($deb)" >&2; exit 1; }
echo "$deb"
