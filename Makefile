# adlab developer commands. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast lint format demo bench clean

install: $(STAMP)

# The tested torch pair is pinned through constraints.txt; pyproject keeps ranges for users.
$(STAMP): pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e"

lint: install
	$(BIN)/ruff check adlab tests experiments hydra_plugins
	$(BIN)/ruff format --check adlab tests experiments hydra_plugins

format: install
	$(BIN)/ruff format adlab tests experiments hydra_plugins
	$(BIN)/ruff check --fix adlab tests experiments hydra_plugins

# RD4AD on the real solar-cell images shipped by elpv-dataset, small enough for a 2-core CPU.
demo: install
	$(BIN)/python -m adlab.run method=rd4ad dataset=elpv teacher=resnet18 image_size=128 \
		trainer.max_epochs=5 data.batch_size=16 eval.n_visuals=8

bench: install
	$(BIN)/python experiments/bench/rd4ad.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
