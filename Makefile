# The two commands: `make run` and `make test`. Both bootstrap .venv from requirements.lock.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock | cksum | cut -d' ' -f1)

.PHONY: run test bench install lambdas checkov clean

$(STAMP): requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m app

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench

# build/lambda/code.zip and dependencies.zip (a layer) for infra/terraform; same source, same bytes.
lambdas: $(STAMP)
	$(PY) infra/build_lambdas.py --out build/lambda

clean:
	rm -rf $(VENV) build .pytest_cache
