#!/usr/bin/env bash
# Create or update a venv at the repository root with the OpenMMLab stack and vheat_mm (editable).
# VHEAT_MM_TORCH picks the torch (default 2.14.1, in .venv; 2.1.2, the torch of OpenMMLab's prebuilt
# mmcv 2.1.0, in .venv-torch2.1.2); torchvision follows it (torchvision_for).
# Idempotent: when nothing that defines the environment changed, it returns in a few seconds (one import of torch, for the mmcv build plan).
# The mmcv 2.1.0 wheel (a source-only release, built with its compiled ops) is cached under
# $VHEAT_MM_CACHE (default ~/.cache/vheat_mm), keyed by the torch version, its CUDA version and
# the GPU architectures, and reused by later set-ups. Where nvidia-smi lists a GPU, mmcv is built
# with its CUDA ops (FORCE_CUDA=1) for TORCH_CUDA_ARCH_LIST (default: the visible GPU's), which
# needs nvcc; without a GPU, with its CPU ops only. VHEAT_MM_SETUP_PLAN=1 prints that plan (venv,
# torch, cache folder, build flags and source patch) and changes nothing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3.11}
default_torch=2.14.1
torch_version=${VHEAT_MM_TORCH:-$default_torch}
mmcv_version=2.1.0
cache=${VHEAT_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vheat_mm}

# The torchvision release made for each torch this set-up knows.
torchvision_for() {
    case $1 in
        2.14.1) echo 0.29.1 ;;
        2.1.2) echo 0.16.2 ;;
        *) return 1 ;;
    esac
}
torchvision_version=$(torchvision_for "$torch_version") || {
    printf '[setup] VHEAT_MM_TORCH=%s: choose 2.14.1 or 2.1.2 (the torch versions this set-up pairs with a torchvision)\n' "$torch_version" >&2
    exit 2
}
if [[ $torch_version == "$default_torch" ]]; then
    venv="$root/.venv"
else
    venv="$root/.venv-torch$torch_version"
fi
stamp="$venv/.vheat_mm_setup"

# mmcv 2.1.0 pins its C++ extension to -std=c++17; the headers of torch >= 2.10 need C++20.
torch_minor=${torch_version#*.}
torch_minor=${torch_minor%%.*}
if (( ${torch_version%%.*} > 2 || torch_minor >= 10 )); then
    cxx_patch=1
else
    cxx_patch=0
fi

log() { printf '[setup] %s\n' "$*" >&2; }

gpu_present() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }

# How mmcv is built here, from the torch of $1 (a python): sets mmcv_cuda, mmcv_arch, wheel_dir.
mmcv_build_plan() {
    local py=$1
    mmcv_cuda=cpu
    mmcv_arch=
    if gpu_present; then
        if ! command -v nvcc >/dev/null 2>&1; then
            log "nvidia-smi lists a GPU but nvcc, the CUDA compiler, is not on PATH: mmcv's CUDA"
            log "ops (RoIAlign, NMS, ...) cannot be built. Install the CUDA toolkit of torch's CUDA"
            log "version ($("$py" -c 'import torch; print(torch.version.cuda)' 2>/dev/null || echo '?'))"
            log "or put its bin/ on PATH, then run this again."
            return 3
        fi
        mmcv_cuda=$("$py" -c 'import torch; print(torch.version.cuda or "cpu")')
        if [[ $mmcv_cuda == cpu ]]; then
            log "nvidia-smi lists a GPU but this torch is a CPU build: mmcv gets CPU ops only"
        else
            mmcv_arch=${TORCH_CUDA_ARCH_LIST:-$("$py" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
        fi
    fi
    local key="torch-$torch_version-$([[ $mmcv_cuda == cpu ]] && echo cpu || echo "cu$mmcv_cuda-sm${mmcv_arch// /_}")"
    wheel_dir="$cache/mmcv-$mmcv_version-$key"
}

if [[ ${VHEAT_MM_SETUP_PLAN:-0} == 1 ]]; then
    # Only a GPU node asks the venv's torch (its CUDA version and the GPU's architecture).
    if gpu_present && [[ ! -x "$venv/bin/python" ]]; then
        log "VHEAT_MM_SETUP_PLAN needs $venv on a GPU node (run the set-up once)"; exit 2
    fi
    mmcv_build_plan "$venv/bin/python" || exit $?
    echo "venv: $venv"
    echo "torch $torch_version, torchvision $torchvision_version"
    echo "mmcv wheel cache: $wheel_dir"
    if [[ $mmcv_cuda == cpu ]]; then
        echo "mmcv build: MMCV_WITH_OPS=1 (CPU ops)"
    else
        echo "mmcv build: MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$mmcv_arch (CUDA $mmcv_cuda)"
    fi
    if (( cxx_patch )); then
        echo "mmcv source: -std=c++17 patched to -std=c++20 (torch >= 2.10 headers)"
    else
        echo "mmcv source: as released (-std=c++17)"
    fi
    exit 0
fi

# What defines the environment: these files and the mmcv build this machine needs ($1, the
# wheel folder of mmcv_build_plan), so that a .venv set up on a CPU node is set up again on a GPU
# node.
fingerprint() {
    { cat "$root/tools/setup_env.sh" "$root/pyproject.toml" "$root"/requirements/*.txt; echo "$1"; } \
        | sha256sum | cut -d' ' -f1
}
if [[ -x "$venv/bin/python" && -f "$stamp" ]]; then
    mmcv_build_plan "$venv/bin/python" || exit $?
    [[ "$(cat "$stamp")" == "$(fingerprint "$wheel_dir")" ]] && exit 0
fi

[[ -x "$venv/bin/python" ]] || { log "creating $venv"; "$python" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)

log "build tools"
"${pip[@]}" install -q 'setuptools>=77.0.3,<81' wheel ninja
# torch with its CUDA libraries (pip's CUDA builds, also on a CPU-only machine) fills about 6 GB
# of the venv: say so before pip runs out of space part-way through.
installed_torch=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
if [[ $installed_torch != "$torch_version" ]]; then
    need_gb=7
    free_gb=$(df --output=avail -B1G "$venv" | tail -1 | tr -d ' ')
    if (( free_gb < need_gb )); then
        log "torch $torch_version and its CUDA libraries need about $need_gb GB in $venv; its file system has $free_gb GB free: free some space and run this again"
        exit 1
    fi
fi
log "torch $torch_version, torchvision $torchvision_version"
"${pip[@]}" install -q "torch==$torch_version" "torchvision==$torchvision_version"

mmcv_build_plan "$venv/bin/python" || exit $?
build_env=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}")
[[ $mmcv_cuda == cpu ]] || build_env+=(FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$mmcv_arch")
if ! compgen -G "$wheel_dir/mmcv-$mmcv_version-*.whl" >/dev/null; then
    log "building mmcv $mmcv_version with its compiled ops (${build_env[*]}; the CPU ops take 5 (torch 2.1) to 12 (torch 2.14) minutes on 2 cores); cached in $wheel_dir"
    src=$(mktemp -d)
    trap 'rm -rf "$src" "$wheel_dir.tmp"' EXIT  # the build tree (hundreds of MB), also on failure
    "${pip[@]}" download -q --no-deps --no-binary :all: -d "$src" "mmcv==$mmcv_version"
    tar -xzf "$src/mmcv-$mmcv_version.tar.gz" -C "$src"
    if (( cxx_patch )); then
        sed -i 's/-std=c++17/-std=c++20/g' "$src/mmcv-$mmcv_version/setup.py"
    fi
    rm -rf "$wheel_dir.tmp" && mkdir -p "$wheel_dir.tmp"
    env "${build_env[@]}" "${pip[@]}" wheel -q --no-build-isolation --no-deps \
        -w "$wheel_dir.tmp" "$src/mmcv-$mmcv_version"
    rm -rf "$wheel_dir" "$src" && mv "$wheel_dir.tmp" "$wheel_dir"
fi
log "mmcv from $wheel_dir"
"${pip[@]}" install -q "$wheel_dir"/mmcv-$mmcv_version-*.whl

log "OpenMMLab toolboxes and test tools"
"${pip[@]}" install -q -r "$root/requirements/runtime.txt" -r "$root/requirements/tests.txt" \
    "torch==$torch_version" "torchvision==$torchvision_version" "mmcv==$mmcv_version"
log "openmim 0.3.9 without its dependency opendatalab (requirements/tests.txt says why)"
"${pip[@]}" install -q --no-deps openmim==0.3.9
log "vheat_mm (editable)"
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$root"

"$venv/bin/python" -c 'import torch, mmcv.ops, mmdet, mmseg, mmpretrain' \
    || { log "the environment does not import; see the messages above"; exit 1; }
fingerprint "$wheel_dir" > "$stamp"
log "ready: $venv"
