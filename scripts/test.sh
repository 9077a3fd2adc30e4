#!/usr/bin/env bash
# Runs every tandem test. On a fresh Debian 12 machine it first installs what
# the tests need (it is quick when everything is present). CI runs exactly
# this script (.ci/run); so should you before you push.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:/usr/sbin:/sbin"

# Debian packages the tests use. Installed only when missing. iproute2 (ip)
# and nftables (nft) give the robustness suite its network namespaces and
# partitions (as root; CI runs as root and must not skip them). etcd-server
# (Debian's etcd 3.4) is the real external store for --store-endpoints tests.
packages=(ca-certificates dnsutils etcd-server iproute2 nftables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if [ "${CI:-}" = "true" ]; then
  for tool in ip nft etcd; do
    command -v "$tool" >/dev/null || { echo "CI: $tool is missing after the install step" >&2; exit 1; }
  done
fi

command -v go >/dev/null || { echo "Go is not installed: install Go 1.26 from the Go module proxy's toolchain or your distribution" >&2; exit 1; }

echo "== gofmt and go vet"
unformatted=$(gofmt -l cmd internal test)
if [ -n "$unformatted" ]; then
  echo "gofmt would change these files (run gofmt -w on them):"
  echo "$unformatted"
  exit 1
fi
go vet ./...
echo "== unit tests (race detector)"
go test -race -count=1 -timeout 20m ./internal/...
echo "== system tests (real clusters, real processes)"
go test -count=1 -timeout 40m ./test/...
