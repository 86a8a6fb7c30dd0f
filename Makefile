# `make demo` and `make test` each set up .venv (when missing or out of date) and the data first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test data photos bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

data:
	@scripts/get-data.sh

photos:  # the training photographs of the shipped photo models (aezoo/weights/README.md)
	@scripts/get-photos.sh data/photos

demo: $(STAMP) data
	$(BIN)/aezoo demo --out runs/demo

test: $(STAMP) data
	@scripts/get-chromium.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

bench: $(STAMP) data photos
	$(BIN)/python -m pip install -q -r requirements-bench.txt
	$(BIN)/python bench/ae_vs_pca.py
	$(BIN)/python bench/restore.py
	$(BIN)/python bench/photo_restore.py

clean:
	rm -rf $(VENV) runs
