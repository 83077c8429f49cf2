#!/usr/bin/env bash
# Installs the system packages the tests need, on Debian, when they are missing.
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
command -v sgdisk >/dev/null || need+=(gdisk)
command -v ssh-keygen >/dev/null || need+=(openssh-client)  # signed-commit tests
command -v gpg >/dev/null || need+=(gnupg)  # GPG-signed commit tests (tests/test_gitops_gpg.py)
# Host containers: podman with the runc runtime (crun fails on hybrid cgroups), its network stack
# named explicitly (not left to Recommends), and busybox-static to build the test images locally
# (no registry is reachable from CI). Engine options: examples/containers.conf (CONTAINERS_CONF).
command -v podman >/dev/null || need+=(podman netavark aardvark-dns iptables)
command -v runc >/dev/null || need+=(runc)
[ -x /bin/busybox ] || need+=(busybox-static)
# The real-host tests (tests/test_realhost.py) build a Debian host image with mmdebstrap
# (tests/realhost/build.py; cached after the first run) and boot it with podman.
# The admin and control images too (`reconciler images build`).
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
# Durability tests trace system calls.
command -v strace >/dev/null || need+=(strace)
# Host settings: the real programs read the files we render (containerd config dump, sysctl -p
# parsing, modprobe/kmod, openssl verify on the CA bundle, the system CA bundle itself).
command -v containerd >/dev/null || need+=(containerd)
command -v sysctl >/dev/null || need+=(procps)
command -v modprobe >/dev/null || need+=(kmod)
command -v openssl >/dev/null || need+=(openssl)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# OS updates: dm-verity trees (veritysetup) and the lz4 baseline of bench_image_write.
command -v veritysetup >/dev/null || need+=(cryptsetup-bin)
command -v lz4 >/dev/null || need+=(lz4)
# Fleet tests: a real etcd on loopback ports (reboot slots under leases).
command -v etcd >/dev/null || need+=(etcd-server)
# Metrics: promtool checks /metrics, and a real Prometheus server scrapes the daemon.
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing system packages: ${need[*]} (run as root or install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
