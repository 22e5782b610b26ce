#!/usr/bin/env bash
# install-deps.sh — install the Debian packages parley needs to build, test,
# run and benchmark. Idempotent: it only calls apt-get when a package is
# missing, so `make test` and `make run` can call it every time.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  liburing-dev libxxhash-dev libzstd-dev libssl-dev libcriterion-dev
  libedit-dev                    # line editing in the terminal client (BSD licence)
  clang libclang-rt-14-dev       # libFuzzer targets and sanitizers
  openssl                        # dev certificates for `make run`
  iproute2 nftables              # cluster tests in network namespaces
  redis-server libhiredis-dev    # peer in benchmarks (and its C client)
  nats-server                    # peer in delivery benchmarks
  fortunes-min                   # chat-like text corpus for compression tests
  fortunes fortunes-de fortunes-es  # several MB of real text for the storage bench
  liblz4-dev                     # storage bench: Cassandra's default LZ4 compression
  python3                        # bench plots and helper scripts
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
