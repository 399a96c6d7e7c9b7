#!/bin/sh
# Install Mesa's software Vulkan driver (lavapipe) so wgpu has a Vulkan adapter on machines
# without a GPU (CI, containers). Idempotent: does nothing when a Vulkan ICD is already present.
# Usage: scripts/install-lavapipe.sh        (needs root or sudo for apt-get)
set -eu

icd_present() {
    # The loader reads ICD manifests from these directories (plus VK_ICD_FILENAMES overrides).
    for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
        if ls "$d"/*.json >/dev/null 2>&1; then
            return 0
        fi
    done
    return 1
}

loader_present() {
    ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' && return 0
    for f in /usr/lib/x86_64-linux-gnu/libvulkan.so.1 /usr/lib/aarch64-linux-gnu/libvulkan.so.1 \
             /usr/lib/libvulkan.so.1 /usr/lib64/libvulkan.so.1; do
        [ -e "$f" ] && return 0
    done
    return 1
}

if icd_present && loader_present; then
    echo "install-lavapipe: a Vulkan ICD and loader are already present; nothing to do"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-lavapipe: no Vulkan ICD found and apt-get is unavailable;" \
         "install Mesa's Vulkan drivers (lavapipe) with your package manager" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
    mesa-vulkan-drivers libvulkan1

if ! icd_present; then
    echo "install-lavapipe: packages installed but no Vulkan ICD manifest appeared" >&2
    exit 1
fi
echo "install-lavapipe: Vulkan ICDs:" /usr/share/vulkan/icd.d/*.json
