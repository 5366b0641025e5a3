#!/usr/bin/env bash
# Install OpenLDAP's server (slapd) and client tools for the test suite. Safe to run again.
#
# The tests start their own throw-away slapd (tests/ldap_server.py) on a free port, with their own
# configuration and database in a temporary directory; they never use the system daemon. Debian
# starts a system slapd when the package is installed, so this script stops it.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

if [ ! -x /usr/sbin/slapd ] || ! command -v ldapadd >/dev/null 2>&1; then
  echo "install-slapd: installing slapd and ldap-utils"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends slapd ldap-utils >/dev/null
else
  echo "install-slapd: slapd and ldap-utils are already installed"
fi

# Stop the distribution's daemon; without an init system, kill it by its pid file.
$SUDO service slapd stop >/dev/null 2>&1 || true
for pidfile in /run/slapd/slapd.pid /var/run/slapd/slapd.pid; do
  if [ -r "$pidfile" ]; then
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      $SUDO kill "$pid" 2>/dev/null || true
    fi
  fi
done

/usr/sbin/slapd -VV 2>&1 | head -n 1 || true
