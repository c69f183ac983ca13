#!/usr/bin/env bash
# Train on GPUS processes per node with torchrun (CPU-only machines use gloo, see tools/train.py).
# usage: tools/dist_train.sh CONFIG GPUS [train.py options]
# env: NNODES (1), NODE_RANK (0), PORT (29500), MASTER_ADDR (127.0.0.1)
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG GPUS [train.py options]" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_launch_env.sh"
CONFIG=$1
GPUS=$2
torchrun_tool "$GPUS" train.py "$CONFIG" --launcher pytorch "${@:3}"
