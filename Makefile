# Two commands from a fresh clone (see README):
#   make demo   set up, generate a CRM history, train, register in the local MLflow, serve with BentoML
#   make test   set up and run the whole test suite (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DATA ?= data/demo
DEMO_DEALS ?= 20000
PORT ?= 3000

.PHONY: setup demo demo-data train serve test browser bench clean

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

serve: setup
	LEADSCORE_DATA=$(DEMO_DATA) $(BIN)/leadscore serve --port $(PORT)

demo: train serve

# Debian's chromium renders the HTML reports in the browser tests
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: install Debian's chromium package for the browser tests"; fi; }

test: setup browser
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .leadscore data .pytest_cache
