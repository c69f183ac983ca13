# Sourced by the dist_* and slurm_* scripts: ROOT (the repository), PYTHON (the repository's
# .venv/bin/python when present, else python) and PYTHONPATH starting with ROOT.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
else
    PYTHON=python
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
