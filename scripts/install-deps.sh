#!/usr/bin/env bash
# Installs what imagegen needs on a Debian machine, only what is missing.
#   scripts/install-deps.sh run    what `make run` needs (Redis)
#   scripts/install-deps.sh test   what `make test` needs (Redis, OpenSSH, QEMU, ..., and the
#                                  real Keystone and Glance the OpenStack driver is tested against,
#                                  with the openstack client that checks what a build left)
set -euo pipefail
what=${1:-test}

run_pkgs=(redis-server)
test_pkgs=(git redis-server redis-sentinel openssh-server openssh-client qemu-system-x86 qemu-utils busybox-static linux-image-cloud-amd64 e2fsprogs cpio kmod cloud-init chromium
  keystone glance python3-openstackclient)

case "$what" in
run) pkgs=("${run_pkgs[@]}") ;;
test) pkgs=("${test_pkgs[@]}") ;;
*) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$what" = test ]; then
  # Real GitHub webhook payloads for the server's tests.
  examples=.cache/octokit
  if [ ! -f "$examples/node_modules/@octokit/webhooks-examples/package.json" ]; then
    mkdir -p "$examples"
    npm install --silent --no-audit --no-fund --prefix "$examples" @octokit/webhooks-examples@7.6.1 >/dev/null 2>&1 \
      || npm install --no-audit --no-fund --prefix "$examples" @octokit/webhooks-examples@7.6.1
  fi
fi
