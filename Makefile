# The two commands of the README: `make demo` (set up, then the main job) and `make test`;
# `make test-torch21` sets up .venv-torch2.1.2 (torch 2.1.2, the torch of OpenMMLab's prebuilt
# mmcv 2.1.0) and runs there the part of the suite that tests/torch21.txt lists.
PYTHON := .venv/bin/python
TORCH21 := 2.1.2
TORCH21_PYTHON := .venv-torch$(TORCH21)/bin/python

.PHONY: setup setup-torch21 demo test test-torch21
setup:
	bash tools/setup_env.sh

setup-torch21:
	VHEAT_MM_TORCH=$(TORCH21) bash tools/setup_env.sh

demo: setup
	$(PYTHON) tools/shapes_demo.py

test: setup
	$(PYTHON) -m pytest

# set -f: the node ids' parameter brackets stay as they are (no file-name expansion)
test-torch21: setup-torch21
	set -f; $(TORCH21_PYTHON) -m pytest -m 'not slow' $$(sed 's/#.*//' tests/torch21.txt)
