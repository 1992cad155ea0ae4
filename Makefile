# MCP Vault — the targets the team uses. See README.md.
GO       ?= go
BIN      := bin
TESTFLAGS ?= -count=1 -timeout 20m

.PHONY: run build test bench lint tidy clean

## build: compile the binaries (api, projector, vault, vaultctl) into ./bin
build:
	$(GO) build -o $(BIN)/ ./cmd/api ./cmd/projector ./cmd/vault ./cmd/vaultctl

## run: the whole vault on one machine (embedded JetStream unless VAULT_NATS_URL is set)
run: build
	./$(BIN)/vault run

## test: the whole suite (real JetStream in process, real SQLite files)
test:
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...

## bench: the benchmark run (see docs/benchmarks.md); BENCH_LARGE=1 adds the 1M-event rebuild
bench: build
	$(GO) run ./bench/cmd/vaultbench

## lint: formatting and vet
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

tidy:
	$(GO) mod tidy

clean:
	rm -rf $(BIN)
