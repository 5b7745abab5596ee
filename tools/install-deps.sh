#!/usr/bin/env bash
# Installs the Debian packages dfqlab needs to build, test and run (root or sudo).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config meson ninja-build \
    libglib2.0-dev libyaml-dev libjson-glib-dev \
    libopenblas-dev libopenblas-openmp-dev \
    dataset-fashion-mnist python3 >/dev/null
