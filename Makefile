# Two commands: `make demo` and `make test`. Each creates .venv when missing.
# torch==2.13.0 is installed first: on these machines it resolves to a local CPU
# wheel, while a bare `torch` requirement would download GBs of CUDA packages.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: demo test bench clean venv

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

clean:
	rm -rf $(VENV) build *.egg-info
