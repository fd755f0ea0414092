# Two commands: `make demo` and `make test`. Each creates .venv when missing.
# torch==2.13.0 is installed first: on these machines it resolves to a local CPU
# wheel, while a bare `torch` requirement would download GBs of CUDA packages.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: demo test bench clean venv gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) -m opdsl.demo

test: $(STAMP)
	$(VPY) -m pytest -n 2 -p no:cacheprovider

bench: $(STAMP)
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[bench]' || echo "peer libraries unavailable; their rows will be skipped"
	$(VPY) -m benchmarks.run
	$(VPY) -m benchmarks.plot

# The catalogue and benchmark rows on a CUDA GPU (benchmarks/gpu_check.py; docs/backends.md, "GPU check").
# No venv and no install: GPU machines have torch/JAX but no network; opdsl is imported from this tree.
# Without a GPU it says so and exits 0; DRY=1 runs the same steps on the CPU (small sizes).
GPU_PY ?= $(if $(wildcard $(VPY)),$(VPY),$(PY))
gpu-check:
	$(GPU_PY) -m benchmarks.gpu_check $(if $(DRY),--dry-run,) $(if $(OUTPUT),--output $(OUTPUT),)

clean:
	rm -rf $(VENV) build *.egg-info
