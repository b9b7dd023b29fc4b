#!/usr/bin/env bash
# Install the Debian packages the project runs, where their command is missing:
#   scripts/system-packages.sh COMMAND:PACKAGE ...   (e.g. nginx:nginx-light)
# Services are never started by the install (a policy-rc.d refuses them): the project starts
# its own, bound to 127.0.0.1, only when asked.
set -euo pipefail
missing=()
for pair in "$@"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  # Debian keeps PostgreSQL's server programs (initdb, pg_ctl) under /usr/lib/postgresql/*/bin
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] \
    || compgen -G "/usr/lib/postgresql/*/bin/$cmd" >/dev/null || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install as root: apt-get install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: install ${missing[*]} with your package manager" >&2; exit 1; }
policy=/usr/sbin/policy-rc.d
added=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added=1
fi
trap '[ -n "$added" ] && $sudo rm -f "$policy"' EXIT
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
