# The three commands of the README: `make setup`, `make repro`, `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# A Debian package the set-up needs, installed only as root (CI runs as root on a clean Debian machine).
apt_install = { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1); }

.PHONY: setup repro repro-all sweep-full science exps test test-all e2e

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pipeline.numba_cache  # compile librosa's numba kernels once, before anything runs them in parallel
# offline `dvc plots`: the pinned vega, vega-lite, vega-embed (web/package-lock.json) inlined into the page
# that .dvc/config names as plots.html_template
	command -v npm >/dev/null || $(call apt_install,npm) || { echo "npm is needed for the offline plots page: apt-get install npm (as root)" >&2; exit 1; }
	npm ci --prefix web --ignore-scripts --omit=optional --no-audit --no-fund --loglevel=error
	$(BIN)/python -m pipeline offline-plots
# headless Chromium for the tests of the offline pages (dvc plots, reports/index.html): they fail without it
	command -v chromium >/dev/null || $(call apt_install,chromium) || echo "no chromium (installing needs root): the browser tests will fail; BGM_SKIP_BROWSER=1 skips them"

# The stages run `python -m stages.<name>`: the venv goes first on PATH so that `python` is its interpreter.
repro:
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# Every baseline of every table (params.yaml's baselines.variants is the cheap default subset): a DVC
# experiment with baselines.variants set to every registered variant, applied to the workspace.
repro-all:
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc exp run -S "baselines.variants=$$($(BIN)/python -m pipeline.models.baselines --names)"

# The finer KL sweep (8 weights x weak and strong x 3 seeds = 48 student runs; the default is 5 x weak = 15):
sweep-full:
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc exp run -S "sweep.kl_weights=[0,0.1,1,4,10,40,100,400]" \
		-S "sweep.schemes=[weak,strong]"

# Experiments at a glance: `dvc exp show` lists every param, metric and dependency (about 340 columns here);
# this keeps the experiment, the KL weight and the headline numbers of the student and CMVAE (< 200 columns).
exps:
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc exp show --no-pager --drop '.*' \
		--keep 'Experiment|student\.kl_weight|(student|cmvae)\.(weak/truth/ndcg|t_diverse/full/recall)@25'

# A pre-registered science grid (SCIENCE: configs/science.yaml, the v1 grid of reports/findings.md, or
# configs/science_v2.yaml): every cell queued as a DVC experiment, run one at a time, then
# reports/<name>.md, .png and .json collected.
SCIENCE ?= configs/science_v2.yaml
science:
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipeline science queue --config $(SCIENCE)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc queue start -j 1
	while PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc queue status | grep -qE 'Queued|Running'; do sleep 60; done
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipeline science collect --config $(SCIENCE)

# Fast tests in parallel, then one end-to-end `dvc repro` on a tiny params file (tests/e2e), local-vs-Ray
# (extraction, training), and the edges through `dvc repro` (a failed or killed ingest, media.on_error: skip from
# ingest to split).
test:
	$(BIN)/python -m pytest -q -n 2 -m "not slow"
	$(BIN)/python -m pytest -q -m slow tests/test_e2e.py tests/features/test_backend.py tests/test_train_backend.py \
		tests/test_dvc_edges.py

test-all:
	$(BIN)/python -m pytest -q -n 2
