# Developer and operator entry points. `make run` starts everything in one process;
# `make test` runs every test, starting its own NATS JetStream server.

CARGO ?= cargo
JWT_SECRET ?= dev-secret

.PHONY: run build test test-unit lint fmt interop-deps bench-persister check-infra

run: ## presence standalone on 127.0.0.1:3000 (admin :9100), development settings
	JWT_SECRET=$(JWT_SECRET) PRESENCE_ENV=development $(CARGO) run --release -p presence -- standalone

build:
	$(CARGO) build --workspace --all-targets

interop-deps: ## the official socket.io-client, for the interop test
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error

test: build interop-deps ## every test: unit, end-to-end (real NATS), interop (socket.io-client)
	scripts/with-services.sh $(CARGO) test --workspace

test-unit:
	$(CARGO) test --workspace --lib

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench-persister: ## rows/s of the persister on a burst of 10,000 changes (real NATS + PostgreSQL)
	$(CARGO) build --release -p presence -p presence-e2e
	PRESENCE_BIN=target/release/presence scripts/with-services.sh target/release/presence-bench-persister 10000

check-infra: ## the compose file and the load balancer configuration are valid
	docker-compose -f infra/docker-compose.yml config -q
	haproxy -c -q -f infra/haproxy.cfg
