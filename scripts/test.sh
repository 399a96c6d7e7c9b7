#!/usr/bin/env bash
# The whole test suite, GPU tests included: installs Mesa's software Vulkan driver (lavapipe)
# when no Vulkan driver is present, then makes a missing GPU adapter a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-lavapipe.sh

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
export WGPU_BACKEND=vulkan
export QFORGE_REQUIRE_GPU=1

cargo fmt --check
cargo test --no-fail-fast "$@"
