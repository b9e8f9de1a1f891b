# Developer entry points; CI runs `make test` through .ci/run. `make help` lists targets.
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help run ui test fmt lint unit generate generate-check fuzz cluster-up cluster-down

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## start the server on the embedded default (SQLite + ./mlartifacts) on port 5000
	$(CARGO) run --release -- server

ui: ## fetch MLflow's web UI (from the pinned mlflow wheel) into the folder the server serves by default
	bash scripts/fetch-ui.sh

test: ## the whole suite: installs Postgres, the mlflow venv and the e2e cluster when missing
	bash e2e/test-all.sh

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## formatting and clippy, as CI checks them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

unit: ## Rust tests only (Postgres tests skip unless FERROFLOW_TEST_PG_URL is set)
	$(CARGO) test --locked

generate: ## regenerate checked-in generated files: crds/ and config/argocd/ from `ferroflow crd`, the Argo CD snippet, the charts' CRDs, values table and golden manifests
	$(CARGO) run --quiet --locked -- crd --output-dir crds --argocd-dir config/argocd
	bash config/argocd/generate.sh
	bash charts/generate.sh

generate-check: generate ## fail when generated files differ from what is committed
	git diff --exit-code -- crds charts config
	@untracked=$$(git ls-files --others --exclude-standard -- crds charts config); \
	if [ -n "$$untracked" ]; then echo "generated but not committed: $$untracked"; exit 1; fi

fuzz: ## fuzz the search filter parser for 10 minutes (needs the nightly toolchain)
	cd fuzz && $(CARGO) +nightly fuzz run filter -- -max_total_time=600

cluster-up: ## start the e2e Kubernetes control plane (builds it when the cache is cold)
	bash e2e/cluster/up.sh

cluster-down: ## stop it
	bash e2e/cluster/down.sh
