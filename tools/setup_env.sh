#!/usr/bin/env bash
# Create or update .venv at the repository root with the OpenMMLab stack and vheat_mm (editable).
# Idempotent: when nothing that defines the environment changed, it returns in about a second.
# The mmcv 2.1.0 wheel (a source-only release, built with its compiled ops) is cached under
# $VHEAT_MM_CACHE (default ~/.cache/vheat_mm), keyed by torch version, and reused by later set-ups.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3.11}
torch_version=2.14.1
torchvision_version=0.29.1
mmcv_version=2.1.0
cache=${VHEAT_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vheat_mm}
stamp="$venv/.vheat_mm_setup"

fingerprint=$(cat "$root/tools/setup_env.sh" "$root/setup.py" "$root"/requirements/*.txt | sha256sum | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$fingerprint" ]]; then
    exit 0
fi

log() { printf '[setup] %s\n' "$*" >&2; }

[[ -x "$venv/bin/python" ]] || { log "creating $venv"; "$python" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)

log "build tools"
"${pip[@]}" install -q 'setuptools>=77.0.3,<81' wheel ninja
log "torch $torch_version, torchvision $torchvision_version"
"${pip[@]}" install -q "torch==$torch_version" "torchvision==$torchvision_version"

wheel_dir="$cache/mmcv-$mmcv_version-torch-$torch_version"
if ! compgen -G "$wheel_dir/mmcv-$mmcv_version-*.whl" >/dev/null; then
    log "building mmcv $mmcv_version with its compiled ops (about 12 minutes on 2 cores); cached in $wheel_dir"
    src=$(mktemp -d)
    "${pip[@]}" download -q --no-deps --no-binary :all: -d "$src" "mmcv==$mmcv_version"
    tar -xzf "$src/mmcv-$mmcv_version.tar.gz" -C "$src"
    # mmcv 2.1.0 pins its C++ extension to -std=c++17; torch >= 2.10 headers need C++20.
    sed -i 's/-std=c++17/-std=c++20/g' "$src/mmcv-$mmcv_version/setup.py"
    rm -rf "$wheel_dir.tmp" && mkdir -p "$wheel_dir.tmp"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${pip[@]}" wheel -q --no-build-isolation --no-deps \
        -w "$wheel_dir.tmp" "$src/mmcv-$mmcv_version"
    rm -rf "$wheel_dir" "$src" && mv "$wheel_dir.tmp" "$wheel_dir"
fi
log "mmcv from $wheel_dir"
"${pip[@]}" install -q "$wheel_dir"/mmcv-$mmcv_version-*.whl

log "OpenMMLab toolboxes and test tools"
"${pip[@]}" install -q -r "$root/requirements/runtime.txt" -r "$root/requirements/tests.txt" \
    "torch==$torch_version" "torchvision==$torchvision_version" "mmcv==$mmcv_version"
log "vheat_mm (editable)"
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$root"

"$venv/bin/python" -c 'import torch, mmcv.ops, mmdet, mmseg, mmpretrain' \
    || { log "the environment does not import; see the messages above"; exit 1; }
echo "$fingerprint" > "$stamp"
log "ready: $venv"
