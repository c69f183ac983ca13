#!/usr/bin/env bash
# Test on GPUS processes per node with torchrun (CPU-only machines use gloo, see tools/test.py).
# usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
# env: NNODES (1), NODE_RANK (0), PORT (29500), MASTER_ADDR (127.0.0.1)
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py options]" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_launch_env.sh"
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
torchrun_tool "$GPUS" test.py "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
