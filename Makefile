# The two set-up commands (README): `make demo` and `make test`. Both create .venv first,
# from the hash-locked requirements (requirements/*.lock; `make lock` updates them).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TS := clients/typescript
# The app's OpenAPI document on stdout (an in-memory database; no server needed)
OPENAPI := $(BIN)/python -c 'import json, sys; from modelbank.api import create_app; from modelbank.config import load_settings; from modelbank.db.engine import make_engine; app = create_app(load_settings(database_url="sqlite://"), engine=make_engine("sqlite://")); json.dump(app.openapi(), sys.stdout, indent=2, sort_keys=True)'
LOCK := $(BIN)/uv pip compile pyproject.toml requirements/build.in --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock" --quiet $(if $(UPGRADE),--upgrade)

.PHONY: demo test lint install install-test lock clients check-clients test-ts clean

# Exact versions with their sha256 (--require-hashes): a release swapped or poisoned on the
# index after the lock (LiteLLM 1.82.7/1.82.8) fails the install instead of running. The
# project itself goes in without dependencies and without build isolation (hatchling is
# locked too).
$(BIN)/modelbank: pyproject.toml requirements/runtime.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/runtime.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(BIN)/modelbank

$(VENV)/.test-installed: $(BIN)/modelbank requirements/test.lock
	$(BIN)/pip install --quiet --require-hashes -r requirements/test.lock
	touch $@

install-test: $(VENV)/.test-installed

# Update the locks after a change of pyproject.toml's dependencies (new pins only; the
# others stay); `make lock UPGRADE=1` moves every pin to the newest allowed release.
lock: install
	$(BIN)/pip install --quiet --require-hashes -r requirements/tools.lock
	$(LOCK) -o requirements/runtime.lock
	$(LOCK) --extra test -o requirements/test.lock

demo: install
	$(BIN)/modelbank demo

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -n auto

# The TypeScript client (clients/typescript): its types are generated from the app's
# OpenAPI document; `make clients` regenerates them, check-clients fails when they are stale.
$(TS)/node_modules/.package-lock.json: $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund

clients: install $(TS)/node_modules/.package-lock.json
	$(OPENAPI) > $(TS)/openapi.json
	cd $(TS) && npm run --silent generate

check-clients: install $(TS)/node_modules/.package-lock.json
	@tmp=$$(mktemp -d) && $(OPENAPI) > $$tmp/openapi.json \
	&& (cd $(TS) && OPENAPI_JSON=$$tmp/openapi.json SCHEMA_OUT=$$tmp/schema.d.ts npm run --silent generate >/dev/null) \
	&& if diff -u $(TS)/src/schema.d.ts $$tmp/schema.d.ts > $$tmp/stale.diff; then rm -rf $$tmp; \
	else head -40 $$tmp/stale.diff; rm -rf $$tmp; \
	echo "$(TS)/src/schema.d.ts is stale (the API changed): run make clients and commit it"; exit 1; fi

test-ts: check-clients
	cd $(TS) && MODELBANK_BIN=$(abspath $(BIN))/modelbank npm test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis modelbank.db* $(TS)/node_modules $(TS)/dist
