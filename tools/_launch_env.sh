# Sourced by the dist_* and slurm_* scripts: ROOT (the repository), PYTHON (the repository's
# .venv/bin/python when present, else python) and PYTHONPATH starting with ROOT.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
else
    PYTHON=python
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# torchrun GPUS processes on this node, each running tools/SCRIPT ARGS...
# env: NNODES (1), NODE_RANK (0), PORT (29500), MASTER_ADDR (127.0.0.1)
torchrun_tool() {
    local gpus=$1 script=$2
    shift 2
    exec "$PYTHON" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$gpus" \
        --master_port="${PORT:-29500}" \
        "$ROOT/tools/$script" "$@"
}
