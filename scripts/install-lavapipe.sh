#!/usr/bin/env bash
# Install Mesa's software Vulkan driver (lavapipe) and the Vulkan loader if no Vulkan ICD is
# present. Idempotent; needs root (or sudo) only when something must be installed.
set -euo pipefail
have_icd() {
    ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1 &&
        ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'
}
if have_icd; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "installing lavapipe (mesa-vulkan-drivers, libvulkan1)…" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
have_icd || { echo "lavapipe install failed: no Vulkan ICD found" >&2; exit 1; }
