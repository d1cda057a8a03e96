# The two commands a newcomer runs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint services-test clean

# The venv's own pip and setuptools are pinned too: Python 3.11's bundled setuptools 65.5
# has a known vulnerability (CVE-2022-40897).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3 setuptools==80.9.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@# Compile once, as pip does for what it installs: the suite's modules and the plugins'
	@# packages pytest rewrites for its assertions (schemathesis alone is 240 modules), so
	@# each test worker loads them instead of compiling them again (7.7 s -> 2.9 s each).
	env -u PYTHONDONTWRITEBYTECODE -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -q \
		--collect-only -p no:randomly tests > /dev/null
	touch $(STAMP)

# The demo talks to the embedded AWS stand-in with throwaway credentials. Its database,
# broker, logs and pidfiles are under PORTAL_VAR_DIR.
AWS_STANDIN_PORT ?= 5000
WEB_PORT ?= 8000
PORTAL_VAR_DIR ?= var
run: export AWS_STANDIN_PORT := $(AWS_STANDIN_PORT)
run: export WEB_PORT := $(WEB_PORT)
run: export SITE_URL := $(or $(SITE_URL),http://127.0.0.1:$(WEB_PORT))
run: export PORTAL_VAR_DIR := $(abspath $(PORTAL_VAR_DIR))
run: export AWS_ENDPOINT_URL := http://127.0.0.1:$(AWS_STANDIN_PORT)
run: export AWS_ACCESS_KEY_ID := demo
run: export AWS_SECRET_ACCESS_KEY := demo
run: export AWS_DEFAULT_REGION := us-east-1

# Stand-in, web, worker and beat as separate processes under supervisor, which starts again
# any that dies and prints it; Ctrl-C stops all of them (deploy/supervisord-dev.conf), and
# they end with supervisord however it ends. First, whatever an earlier run of this
# checkout left running is stopped, and named (deploy/stop_earlier_run.py).
run: $(STAMP)
	$(PY) deploy/stop_earlier_run.py
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(VENV)/bin/supervisord -c $(CURDIR)/deploy/supervisord-dev.conf

# The service and browser tiers need real services: .ci/run enables them.
# One pytest-xdist worker per core (TEST_WORKERS=0 runs in one process); the total wall
# time is printed last, and pytest's exit status is kept (5, nothing collected, fails).
# Each worker builds its test database from the models, not by running the 30 migrations
# (5 s of CPU per worker); tests/test_migrations.py checks the two agree, and the service
# tier migrates PostgreSQL for real.
TEST_WORKERS ?= auto
test: $(STAMP)
	@start=$$(date +%s.%N); \
	env -u DATABASE_URL -u REDIS_URL -u PYTHONDONTWRITEBYTECODE \
		$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=5 --nomigrations \
		-m "not services and not browser"; \
	status=$$?; \
	echo "make test: $$(awk "BEGIN { printf \"%.0f\", $$(date +%s.%N) - $$start }") s, exit status $$status"; \
	exit $$status


# ruff, then the import contracts in pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo --no-cache

clean:
	rm -rf $(VENV) var staticfiles
