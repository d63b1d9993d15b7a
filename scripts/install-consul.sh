#!/usr/bin/env bash
# Installs a Consul binary for the Consul registry tests, as root, on Debian
# bookworm. Bookworm has no `consul` package; bullseye does (1.8.x). Rather
# than adding bullseye to the system's apt sources (which would offer every
# bullseye package to later upgrades), this uses a private apt configuration
# under $ROOT/consul/apt that knows only the bullseye suite, downloads the
# .deb with `apt-get download` and unpacks it with `dpkg -x`. Nothing is
# registered with dpkg, so the system's package state is untouched.
#
# Result: $PILOTFISH_TEST_ROOT/bin/consul (default /opt/pilotfish-test/bin/consul),
# a symlink into $ROOT/consul/pkg/usr/bin/consul, where the tests look for it
# (unless PILOTFISH_CONSUL names another binary). Idempotent: does nothing
# when a working binary is already there.
set -euo pipefail

ROOT=${PILOTFISH_TEST_ROOT:-/opt/pilotfish-test}
DEST=$ROOT/bin/consul
WORK=$ROOT/consul
SUITE=bullseye

say() { echo "install-consul: $*"; }

if [[ -x "$DEST" ]] && "$DEST" version >/dev/null 2>&1; then
    say "$("$DEST" version | head -n1) already at $DEST"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-consul: must run as root (writes under $ROOT)" >&2
    exit 1
fi

# Reuse the Debian mirror host this machine already uses, if any.
# Only live entries count: `URIs:` fields (deb822) and `deb` lines, not comments.
mirror=$( (grep -rhE '^[[:space:]]*(URIs:|deb[[:space:]])' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true) \
    | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v -- '-security' | head -n1 | tr -d ' ' || true)
mirror=${mirror%/}
mirror=${mirror:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $keyring ]] || { echo "install-consul: $keyring missing (package debian-archive-keyring)" >&2; exit 1; }

install -d -m 0755 "$ROOT" "$ROOT/bin" "$WORK"
apt_dir=$WORK/apt
install -d "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/parts" "$apt_dir/prefs"
echo "deb [signed-by=$keyring] $mirror $SUITE main" >"$apt_dir/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/parts"
    -o "Dir::Etc::PreferencesParts=$apt_dir/prefs"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::State::status=/dev/null"
    -o "APT::Sandbox::User=root"
)
say "apt-get update for $mirror $SUITE (private lists in $apt_dir)"
apt-get "${apt_opts[@]}" --error-on=any update -qq

cd "$WORK"
rm -f consul_*.deb
say "apt-get download consul"
apt-get "${apt_opts[@]}" download consul
deb=$(ls consul_*.deb | head -n1)
rm -rf "$WORK/pkg"
dpkg -x "$deb" "$WORK/pkg"
say "unpacked $deb into $WORK/pkg"

ln -sfn "$WORK/pkg/usr/bin/consul" "$DEST"
chmod 0755 "$ROOT" "$ROOT/bin" "$WORK"
say "$("$DEST" version | head -n1) at $DEST"
