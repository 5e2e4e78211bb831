#!/usr/bin/env bash
# Tools the test suite runs beside PostgreSQL and RabbitMQ, from the
# distribution's packages: libfaketime (the clock-jump fault test moves the
# daemon's wall clock while it runs) and Prometheus (the metrics test scrapes
# the daemon and evaluates the dashboard and alert rules).  Installs only what
# is missing.
set -euo pipefail

missing=()
command -v faketime >/dev/null || missing+=(faketime)
command -v prometheus >/dev/null || missing+=(prometheus)

if ((${#missing[@]})); then
  echo "test-tools: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "test-tools: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "test-tools: faketime and prometheus are installed"
