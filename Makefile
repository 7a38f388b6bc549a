# Everything a fresh machine needs: `make quickstart` and `make test` install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; site installs (NGC containers) keep their own torch.
TORCH_SPEC ?= torch==2.13.0
QUICKSTART_DATA ?= data/quickstart

.PHONY: install quickstart test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml containers/build_horovod.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	# Horovod against this torch and the venv's MPICH; the wheel is cached in ~/.cache/cosmogan
	containers/build_horovod.sh $(PY)
	touch $@

quickstart: install
	$(VENV)/bin/cosmogan make-data --config configs/quickstart.yaml --out $(QUICKSTART_DATA)
	$(VENV)/bin/cosmogan verify-data $(QUICKSTART_DATA)/train $(QUICKSTART_DATA)/validation $(QUICKSTART_DATA)/test

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
