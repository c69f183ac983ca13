#!/usr/bin/env bash
# The GPU measurements of the README, in one go on a machine with torch, timm and einops:
#   1. each fused kernel against the eager path (kernel_ablation.py --check); a kernel that fails
#      is turned off (VHEAT_MM_DISABLE_KERNELS) for the rest and named in check.txt;
#   2. benchmark.py: vheat_mm against timm's Swin and the official code, every target case;
#   3. the kernel tests on the GPU (tests/test_kernels.py);
#   4. kernel_ablation.py: what each kernel contributes, and a profile of the deployed vHeat-T.
# Usage: bash tools/analysis_tools/benchmark_gpu.sh OFFICIAL_CHECKOUT OUT_DIR [QUICK]
# (QUICK=quick: tiny sizes and few rounds, to try the script itself, also on the CPU.)
set -uo pipefail
official=$1
out=$2
quick=${3:-}
python=${PYTHON:-python3}
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$out"

device=cuda
cases=(
    classifier:deploy:224:128:tiny:f32
    classifier:deploy:224:128:tiny:bf16:models=vheat_mm,swin
    classifier:deploy:224:128:small:bf16:models=vheat_mm,swin
    classifier:deploy:224:128:base:bf16:models=vheat_mm,swin
    classifier:deploy:448:32:tiny:bf16:models=vheat_mm,swin
    classifier:deploy:896:8:tiny:bf16:models=vheat_mm,swin
    classifier:deploy:1344:2:tiny:bf16:models=vheat_mm,swin
    classifier:train:224:128:tiny:bf16:models=vheat_mm,swin
    classifier:deploy:224:128:tiny:bf16:compile:models=vheat_mm,swin
    backbone:eval:800x1344:2:tiny:f32:models=vheat_mm,official
)
timing=(--rounds 4 --warmup 5 --round-seconds 0.75)
ablation=(--batch 128 --size 224 --rounds 3)
if [[ $quick == quick ]]; then
    device=$($python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
    cases=(classifier:deploy:224:2:tiny:bf16 classifier:train:224:2:tiny:bf16:models=vheat_mm,swin
           classifier:deploy:224:1:tiny:bf16:compile:models=vheat_mm,swin)
    timing=(--rounds 1 --warmup 1 --round-seconds 0.1)
    ablation=(--batch 2 --size 64 --rounds 1 --round-seconds 0.1 --arch '{"depths":[1,1,1,1],"dims":8}')
fi

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  $python -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
} | tee "$out/device.txt"

echo "== kernel check"
failed=$($python tools/analysis_tools/kernel_ablation.py --device "$device" --check 2>&1 \
         | tee "$out/check.txt" | tail -n 1)
export VHEAT_MM_DISABLE_KERNELS=$failed
echo "kernels turned off: ${failed:-none}" | tee -a "$out/check.txt"

echo "== benchmark"
$python tools/analysis_tools/benchmark.py --device "$device" --swin timm \
    --official "$official" "${timing[@]}" --out-dir "$out" --cases "${cases[@]}" \
    2>&1 | tee "$out/benchmark.log"

echo "== kernel tests"
timeout 60 $python -m pytest -q -p no:cacheprovider tests/test_kernels.py 2>&1 | tail -n 5 \
    | tee "$out/tests.txt"

echo "== kernel ablation"
timeout 60 $python tools/analysis_tools/kernel_ablation.py --device "$device" "${ablation[@]}" \
    --profile 2>&1 | tee "$out/ablation.md"
