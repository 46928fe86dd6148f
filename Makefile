# The two commands: `make run` and `make test`. Both bootstrap .venv from requirements.lock.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock | cksum | cut -d' ' -f1)

.PHONY: run test test-fast lint typecheck docs bench install lambdas checkov clean

# .venv from requirements.lock, then the project itself (editable, no dependencies: the lock has them),
# which installs the `validate` console script (pyproject [project.scripts]).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m app

# The gates first (seconds), then the suite.
test: lint typecheck docs checkov
	$(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: the tests that need no embedded AWS and start no process of their own (the
# `stack` mark, tests/conftest.py), no gates.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not stack" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

# The docs site (mkdocs.yml) into build/site; --strict fails on any warning (a broken link or anchor).
# Quiet unless it fails: mkdocs' own --quiet would hide the warnings that --strict counts.
docs: $(STAMP)
	@mkdir -p build
	@NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site > build/docs.log 2>&1 \
		|| { cat build/docs.log; exit 1; }

bench: $(STAMP)
	$(PY) -m bench

# checkov (policy checks over infra/terraform) in its own venv: it pins packages the app's lock does not allow.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := build/checkov-venv
$(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	@touch $@

checkov: $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
	$(CHECKOV_VENV)/bin/checkov --directory infra/terraform --framework terraform --skip-download --compact --quiet

# build/lambda/code.zip and dependencies.zip (a layer) for infra/terraform; same source, same bytes.
lambdas: $(STAMP)
	$(PY) infra/build_lambdas.py --strict --out build/lambda

clean:
	rm -rf $(VENV) build .pytest_cache *.egg-info
