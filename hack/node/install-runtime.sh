#!/usr/bin/env bash
# Installs the node's runtime pieces from Debian's packages when one is missing:
# containerd and runc (the container runtime), the CNI plugins (bridge, host-local,
# loopback, portmap), iptables and conntrack (kube-proxy's service routing).
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables conntrack)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "make node: missing Debian packages ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} from Debian..." >&2
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
# Another apt run on the machine holds the lock for a while: wait for it, do not fail.
apt_opts=(-q -y -o DPkg::Lock::Timeout=600 --no-install-recommends)
if ! apt-get "${apt_opts[@]}" install "${missing[@]}" >&2; then
  apt-get -q -o DPkg::Lock::Timeout=600 update >&2
  apt-get "${apt_opts[@]}" install "${missing[@]}" >&2
fi
# Debian starts containerd as a system service on install; the node runs its own.
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl stop containerd || true
fi
echo "installed ${missing[*]} in $((SECONDS - start))s" >&2
