#!/usr/bin/env bash
# Installs the Debian 12 packages dexec builds and tests with, if missing.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap
  build-essential
  clang libclang-rt-14-dev clang-format
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libzmq3-dev cppzmq-dev librocksdb-dev
  libabsl-dev
  libsodium-dev libssl-dev
  libcurl4-openssl-dev
  # http.get's plain path parses responses with it (worker/http1.h)
  libhttp-parser-dev
  # dexec-worker's allocator (bazel/BUILD, "tcmalloc")
  libgoogle-perftools-dev
  # the --http_listen server (metrics, JSON API, dashboard)
  libcpp-httplib-dev
  # http.get tests and bench: a local server answering after 1 s
  nginx libnginx-mod-http-echo python3-aiohttp
  libgtest-dev libgmock-dev libbenchmark-dev
  pkg-config cmake python3 iproute2 procps openssl
  # tests/browser: the dashboard in a real browser (playwright-core from npm
  # drives it; node and npm are needed too, Debian's or NodeSource's)
  chromium
  python3-grpcio python3-protobuf python3-zmq python3-pytest python3-cloudpickle
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
# tests/browser also needs node and npm: Debian's, unless another node (for
# example NodeSource's) is on PATH already.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  for p in nodejs npm; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
fi
if ((${#missing[@]} == 0)); then
  echo "deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "deps: installing ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed ${#missing[@]} packages"
