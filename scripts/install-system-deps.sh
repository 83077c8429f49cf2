#!/usr/bin/env bash
# Installs the system packages the tests need, on Debian, when they are missing.
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
command -v sgdisk >/dev/null || need+=(gdisk)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing system packages: ${need[*]} (run as root or install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
