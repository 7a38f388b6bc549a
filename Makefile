# Everything a fresh machine needs: `make quickstart` and `make test` install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; site installs (NGC containers) keep their own torch.
TORCH_SPEC ?= torch==2.13.0
QUICKSTART_DATA ?= data/quickstart
QUICKSTART_RUN ?= runs/quickstart
QUICKSTART_REPORT ?= reports/quickstart
CONDITIONAL_DATA ?= data/conditional
CONDITIONAL_RUN ?= runs/conditional
CONDITIONAL_REPORT ?= reports/conditional

.PHONY: install install-base quickstart conditional test clean

# install-base: the pipeline and its test tools; install adds Horovod, which the
# quickstart does not need (its build takes ~3-5 minutes of 2 cores the first time).
install-base: $(VENV)/.installed-base
install: $(VENV)/.installed

$(VENV)/.installed-base: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed: $(VENV)/.installed-base containers/build_horovod.sh
	# Horovod against this torch and the venv's MPICH; the wheel is cached in ~/.cache/cosmogan
	containers/build_horovod.sh $(PY)
	touch $@

# The main job on the embedded default: synthetic data, CPU training, validation report.
quickstart: install-base
	$(VENV)/bin/cosmogan make-data --config configs/quickstart.yaml --out $(QUICKSTART_DATA)
	$(VENV)/bin/cosmogan verify-data $(QUICKSTART_DATA)/train $(QUICKSTART_DATA)/validation $(QUICKSTART_DATA)/test
	$(VENV)/bin/cosmogan train --config configs/quickstart.yaml --data $(QUICKSTART_DATA) --run $(QUICKSTART_RUN)
	$(VENV)/bin/mpirun -n 2 $(VENV)/bin/cosmogan validate --run $(QUICKSTART_RUN) \
	    --reference $(QUICKSTART_DATA)/test --noise-floor $(QUICKSTART_DATA)/validation --n 2048 \
	    --out $(QUICKSTART_REPORT)

# The cosmology emulator: 25 training cosmologies, G(z, Omega_m, sigma_8) on the CPU, and a
# validation at 31 test cosmologies (25 training, 4 held-out, 2 on the edge), 1,024 maps each,
# of the last checkpoint: best.pt, picked on 64 validation maps per cosmology, was as good or
# worse in each of the four runs of this configuration measured (docs/training-notes.md, C16).
conditional: install-base
	$(VENV)/bin/cosmogan make-data --config configs/conditional.yaml --out $(CONDITIONAL_DATA)
	$(VENV)/bin/cosmogan verify-data $(CONDITIONAL_DATA)/train $(CONDITIONAL_DATA)/validation $(CONDITIONAL_DATA)/test
	$(VENV)/bin/cosmogan train --config configs/conditional.yaml --data $(CONDITIONAL_DATA) --run $(CONDITIONAL_RUN)
	$(VENV)/bin/mpirun -n 2 $(VENV)/bin/cosmogan validate --run $(CONDITIONAL_RUN) \
	    --checkpoint last --reference $(CONDITIONAL_DATA)/test --n 1024 --out $(CONDITIONAL_REPORT)

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
