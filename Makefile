# Two commands from a fresh clone (see README):
#   make demo   set up, generate a CRM history, train, register in the local MLflow, serve with BentoML
#   make test   set up and run the whole test suite (what .ci/run calls)
#   make test-fast  the same without the `slow` tests (servers, browser, notebook, full trainings)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DATA ?= data/demo
DEMO_DEALS ?= 20000
PORT ?= 3000
# BentoML's model and bento store stays inside the project, like the MLflow store
export BENTOML_HOME ?= $(CURDIR)/.leadscore/bentoml
ifeq ($(strip $(LEADSCORE_API_KEYS)),)
API_KEY := $(shell $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(24))")
else
API_KEY := $(LEADSCORE_API_KEYS)
endif

.PHONY: setup check-port demo demo-data train bento serve serve-source test test-fast browser postgres bench clean

$(BIN)/leadscore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip check
	touch $@

setup: $(BIN)/leadscore

demo-data: setup
	$(BIN)/leadscore generate --deals $(DEMO_DEALS) --seed 0 --out $(DEMO_DATA)

train: demo-data
	$(BIN)/leadscore train --data $(DEMO_DATA) --metrics-out $(DEMO_DATA)/metrics.json

# the champion -> BentoML model store -> a Bento (service + code + model)
bento: setup
	$(BIN)/python -m serving.loader export
	$(BIN)/bentoml build --output tag

# a busy port is one line and exit code 2 before any long step (stdlib only: runs before setup)
check-port:
	@env -u LEADSCORE_DATA $(PYTHON) -m serving.server --port $(PORT)

# serve the built Bento (what `make demo` ends with)
serve:
	@LEADSCORE_DATA=$(abspath $(DEMO_DATA)) $(PYTHON) -m serving.server --port $(PORT)
	@echo "API key for this run: $(API_KEY)"
	@echo "  curl -s -H 'Authorization: Bearer $(API_KEY)' -H 'Content-Type: application/json' \\"
	@echo "       -d @docs/score_request.json http://127.0.0.1:$(PORT)/score"
	LEADSCORE_API_KEYS=$(API_KEY) LEADSCORE_DATA=$(abspath $(DEMO_DATA)) \
	  $(BIN)/bentoml serve leadscore:latest --host 127.0.0.1 --port $(PORT)

# serve from the source tree and the MLflow registry instead of a built Bento
serve-source: check-port setup
	LEADSCORE_API_KEYS=$(API_KEY) LEADSCORE_DATA=$(DEMO_DATA) $(BIN)/leadscore serve --port $(PORT)

demo: check-port train bento serve

# Debian's chromium renders the HTML reports in the browser tests
# (a failed install is reported loudly; the browser tests then skip and say why)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	    echo "WARNING: could not install chromium: the browser tests will be skipped"; \
	  else echo "WARNING: chromium missing: install Debian's chromium package for the browser tests"; fi; }

# Debian's postgresql: the store tests start a throwaway server from its binaries
# (a failed install is reported loudly; the PostgreSQL store tests then fail and say why)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } || \
	    echo "WARNING: could not install postgresql: the PostgreSQL store tests will fail"; \
	  else echo "WARNING: PostgreSQL server missing: install Debian's postgresql package (the PostgreSQL store tests fail without it)"; fi; }

test: setup browser postgres
	$(BIN)/python -m pytest -q

# no server processes, browser, executed notebook or full training: under 2 minutes
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .leadscore data .pytest_cache
