# Portcullis. `make run` and `make test` are all a newcomer needs; see README.md.

CARGO ?= cargo
BIN   := target/release/portcullis

.PHONY: build run keys test lint fmt openapi bench

## build: the release binary, target/release/portcullis
build:
	$(CARGO) build --release --locked --bin portcullis

## run: build, generate a development key into keys/ if there is none, and serve on the defaults
run: build keys
	$(BIN) serve

## keys: a development signing key in keys/, unless one exists
keys: build
	@if ls keys/*.pem >/dev/null 2>&1; then echo "keys/ has a key"; else $(BIN) keys generate; fi

## test: every unit and integration test, on SQLite files, PostgreSQL and Redis. Uses TEST_DATABASE_URL and
## TEST_REDIS_URL if set, else what answers on the standard ports, else private throwaway servers.
test:
	tests/with-services.sh $(CARGO) test --workspace --locked

## bench: start the release server on SQLite and on PostgreSQL+Redis and measure every hot path against
## this machine's own limits (argon2id, RS256); BENCH_SECONDS sets each scenario's length, and
## BENCH_BASELINE=path/to/portcullis measures every row on that build too, side by side
bench:
	$(CARGO) build --release --locked --bin portcullis --example bench
	tests/with-services.sh sh -c 'BENCH_DATABASE_URL=$${BENCH_DATABASE_URL:-$$TEST_DATABASE_URL} BENCH_REDIS_URL=$${BENCH_REDIS_URL:-$$TEST_REDIS_URL} target/release/examples/bench'

## lint: formatting and clippy, warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## openapi: print the OpenAPI document of a running server (make run first)
openapi:
	@curl -fsS http://127.0.0.1:8080/openapi.json
