# The two commands of the README: `make demo` (set up, then the main job) and `make test`.
PYTHON := .venv/bin/python

.PHONY: setup demo test
setup:
	bash tools/setup_env.sh

demo: setup
	$(PYTHON) tools/shapes_demo.py

test: setup
	$(PYTHON) -m pytest
