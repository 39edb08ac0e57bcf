# The two commands of the README:
#   make demo   - set up .venv and run the live demo on embedded Redis
#   make test   - set up .venv (+ system parts the tests need) and run the suite
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv system clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/emotion-stream demo

system:
	scripts/install-system-deps.sh

test: $(STAMP) system
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
