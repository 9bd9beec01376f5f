#!/usr/bin/env bash
# Install the Debian packages that provide the given commands, where a command is missing.
#   tools/system-packages.sh java=default-jre-headless chromium=chromium
# Needs root for apt-get; without root it names what is missing and fails.
set -euo pipefail

missing=()
for pair in "$@"; do
    command="${pair%%=*}"
    package="${pair#*=}"
    command -v "$command" >/dev/null 2>&1 || [ -x "/usr/sbin/$command" ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing system packages: ${missing[*]} (install them with your package manager)" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
