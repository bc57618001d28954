# Developer and operator entry points. `make run` starts everything in one process;
# `make test` runs every test, starting its own NATS JetStream server.

CARGO ?= cargo
JWT_SECRET ?= dev-secret

.PHONY: cluster run build test fuzz fuzz-smoke test-unit lint fmt interop-deps sdk test-sdk bench bench-full bench-churn bench-fanout bench-delivery bench-capacity bench-aggregator bench-partitions bench-idle bench-failover bench-persister bench-history chaos check-infra replay-rebuild replay-timeline replay-metrics

run: ## presence standalone on 127.0.0.1:3000 (admin :9100), development settings
	JWT_SECRET=$(JWT_SECRET) PRESENCE_ENV=development $(CARGO) run --release -p presence -- standalone

cluster: ## the compose topology as local processes: NATS, PostgreSQL, aggregator, persister, 2 edges behind HAProxy on :3000
	scripts/cluster.sh

build:
	$(CARGO) build --workspace --all-targets

interop-deps: ## the official socket.io-client and playwright-core, for the interop and browser tests
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error

sdk: ## the browser SDK: sdk/dist (ES modules + type declarations)
	cd sdk && npm ci --no-audit --no-fund --loglevel=error && npm run build

test-sdk: sdk ## the SDK's unit tests (leader election, backoff)
	cd sdk && npm test

test: build interop-deps test-sdk fuzz-smoke ## every test: unit, SDK, fuzz smoke, end-to-end (real NATS + PostgreSQL), interop, browser (Chromium)
	scripts/with-services.sh $(CARGO) test --workspace

fuzz: ## every fuzz target of fuzz/ for FUZZ_SECONDS each (default 300); needs cargo-fuzz
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),300)

fuzz-smoke: ## every fuzz target for 5 s (part of make test)
	scripts/fuzz.sh 5

test-unit:
	$(CARGO) test --workspace --lib

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml

bench: ## the benchmark suite at 1k and 10k connections (standalone and cluster), aggregator and replay, persister
	$(CARGO) build --release -p presence -p presence-bench
	scripts/with-services.sh scripts/bench.sh quick

bench-full: ## the suite plus the largest runs: 19,000 connections on one edge, 50,000 over three edges
	$(CARGO) build --release -p presence -p presence-bench
	scripts/with-services.sh scripts/bench.sh full

bench-fanout: ## steady fan-out at 10,000 connections (15 users/s churning): deliveries per CPU-second, propagation; PRESENCE_PREV_BIN=<previous build> adds it side by side
	$(CARGO) build --release -p presence -p presence-bench
	scripts/with-services.sh scripts/bench.sh fanout

bench-delivery: ## the delivery modes side by side at 10,000 connections: broadcast, broadcast + batch, subscriptions (50 each) + batch
	$(CARGO) build --release -p presence -p presence-bench
	scripts/with-services.sh scripts/bench.sh delivery

bench-capacity: ## connections held: 19,000 on one edge, 50,000 over three edges, light fan-out
	$(CARGO) build --release -p presence -p presence-bench
	scripts/with-services.sh scripts/bench.sh capacity

bench-churn: ## five minutes of churn and silent users at 10,000 connections: ghost-seconds and false offlines
	$(CARGO) build --release -p presence -p presence-bench
	scripts/with-services.sh scripts/bench.sh churn

bench-aggregator: ## heartbeats/s folded by the aggregator from a pre-filled stream, and the replay rate
	$(CARGO) build --release -p presence -p presence-bench
	PRESENCE_BIN=target/release/presence scripts/with-services.sh sh -c '\
	  target/release/presence-bench-aggregator 100000 20 && \
	  target/release/presence-bench-aggregator 100000 20 1 1 && \
	  target/release/presence-bench-aggregator 100000 20 4 1 && \
	  target/release/presence-bench-aggregator 100000 20 4 2'

bench-partitions: ## the cost of partitioning: 10,000 heartbeating connections on 1 and on 4 partitions (edge and aggregator CPU)
	$(CARGO) build --release -p presence -p presence-bench
	scripts/with-services.sh scripts/bench.sh partitions

bench-idle: ## idle cost: 10k and 19k heartbeating connections, 60 s steady (CPU per heartbeat of edge, aggregator, NATS; RSS per connection); PRESENCE_PREV_BIN=<previous build> adds it side by side
	$(CARGO) build --release -p presence -p presence-bench
	scripts/with-services.sh scripts/bench.sh idle

bench-failover: ## failover time over 20 SIGKILLs of the busiest of 3 aggregators (p50 / max)
	$(CARGO) build --release -p presence -p presence-bench
	PRESENCE_BIN=target/release/presence scripts/with-services.sh target/release/presence-bench-failover 20

bench-history: ## what a history costs: 0, 100k and 1M users ever seen besides 10,000 online (RSS, a new edge's ready time, queries of offline users, aggregator restarts)
	$(CARGO) build --release -p presence -p presence-bench
	PRESENCE_BIN=target/release/presence scripts/with-services.sh target/release/presence-bench-history

chaos: ## the chaos suite: 2,000 users behind HAProxy, every role killed one at a time (3 NATS nodes, PostgreSQL); writes the table to docs/reliability.md
	$(CARGO) build --release -p presence -p presence-e2e --bin presence --bin presence-chaos
	PRESENCE_BIN=target/release/presence NATS_SERVER_BIN=$$(scripts/nats-server.sh) \
	  target/release/presence-chaos --users 2000 --write docs/reliability.md

bench-persister: ## rows/s of the persister on a burst of 10,000 changes (real NATS + PostgreSQL)
	$(CARGO) build --release -p presence -p presence-bench
	PRESENCE_BIN=target/release/presence scripts/with-services.sh target/release/presence-bench-persister 10000

check-infra: ## the compose file, the load balancer, Prometheus (alert rules and their unit tests), the Grafana dashboard and the Kubernetes manifests are valid
	docker-compose -f infra/docker-compose.yml config -q
	haproxy -c -q -f infra/haproxy.cfg
	promtool check config infra/prometheus/prometheus.yml
	cd infra/prometheus && promtool test rules alerts.test.yml
	python3 -m json.tool infra/grafana/presence.json > /dev/null
	scripts/check-k8s.sh

# Operator replays against the cluster at NATS_URL / PRESENCE_NAMESPACE (DATABASE_URL for
# rebuild). ARGS narrows the range, e.g. ARGS="--from-seq 1000 --tenant default".
replay-rebuild: ## rebuild the presence projection from the stream (DRY_RUN=1 to only show)
	$(CARGO) run --release -q -p presence -- replay $(ARGS) rebuild $(if $(DRY_RUN),--dry-run)

replay-timeline: ## one user's events and changes: make replay-timeline USER_ID=ayse
	$(CARGO) run --release -q -p presence -- replay $(ARGS) timeline --user $(USER_ID)

replay-metrics: ## a customer's count and EMA per tick: make replay-metrics CUSTOMER=shop-42
	$(CARGO) run --release -q -p presence -- replay $(ARGS) metrics --customer $(CUSTOMER)
