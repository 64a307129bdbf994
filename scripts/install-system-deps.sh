#!/usr/bin/env bash
# Installs the Debian packages gearshift's interop tests and benchmarks use, when missing.
set -euo pipefail
need=()
command -v /usr/sbin/gearmand >/dev/null || need+=(gearman-job-server)
command -v gearman >/dev/null && command -v gearadmin >/dev/null || need+=(gearman-tools)
[ -e /usr/include/libgearman-1.0/gearman.h ] || need+=(libgearman-dev)
php -m 2>/dev/null | grep -qi '^gearman$' || need+=(php-cli php-gearman)
[ -e /usr/share/perl5/Gearman/Server.pm ] || need+=(gearman-server)
perl -MGearman::Client -e1 2>/dev/null || need+=(libgearman-client-perl)
# The dashboard test drives Debian's Chromium through Playwright (never `playwright install`).
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-system-deps: need root to apt-get install ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
