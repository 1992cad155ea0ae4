# MCP Vault — the targets the team uses. See README.md.
GO       ?= go
BIN      := bin
TESTFLAGS ?= -count=1 -timeout 20m
SHELL    := /bin/bash

.PHONY: run build test test-cluster cluster walkthrough install bench lint tidy clean fuzz

PREFIX   ?= /usr/local

## build: compile every command (api, projector, vault, …) into ./bin
build:
	$(GO) build -o $(BIN)/ ./cmd/...

## run: the whole vault on one machine (embedded JetStream unless VAULT_NATS_URL is set)
run: build
	./$(BIN)/vault run

## test: the whole suite (real JetStream in process, real SQLite files)
test:
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...

## test-cluster: the multi-node tests (3 nats-server processes, 2 replicas, nodes killed)
test-cluster:
	$(GO) test -tags cluster $(TESTFLAGS) -v ./clustertest/ 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|CLUSTER |_test.go:'; test $${PIPESTATUS[0]} -eq 0

## cluster: three NATS nodes and two vault replicas on loopback, in the foreground
cluster: build
	./$(BIN)/vault cluster

## walkthrough: run the README walk-through against examples/mcpserver on loopback
walkthrough: build
	./scripts/walkthrough.sh

## install: the binaries into $(PREFIX)/lib/mcp-vault (the paths of deploy/systemd)
install: build
	install -d $(DESTDIR)$(PREFIX)/lib/mcp-vault
	install -m 0755 $(BIN)/* $(DESTDIR)$(PREFIX)/lib/mcp-vault/

## fuzz: every fuzz target for FUZZTIME each, one after another (seeds: <pkg>/testdata/fuzz).
## A run that ends in a bare "context deadline exceeded" without writing a failing input is
## Go 1.26's fuzz coordinator racing its own -fuzztime deadline (golang/go#75804, fixed in
## Go 1.27): that target runs once more. A real finding writes its input and fails again.
FUZZTIME ?= 20s
FUZZ_TARGETS := ./httpapi:FuzzServerBody ./httpapi:FuzzCredentialBody ./httpapi:FuzzTestBody \
	./httpapi:FuzzListParams ./httpapi:FuzzHeaderValues ./upstream:FuzzHeaderRules \
	./upstream:FuzzBlockedReason ./upstream:FuzzServerURL ./events:FuzzUnmarshal
FUZZLOG  ?= $(BIN)/fuzz
fuzz:
	@set -e; mkdir -p $(FUZZLOG); for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$fn ($$pkg, $(FUZZTIME))"; \
		for try in 1 2; do \
			if $(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) $$pkg > $(FUZZLOG)/$$fn.log 2>&1; then break; fi; \
			if [ $$try = 1 ] && tail -4 $(FUZZLOG)/$$fn.log | grep -qx '    context deadline exceeded' && \
				! grep -q 'Failing input written' $(FUZZLOG)/$$fn.log; then \
				echo "   $$fn: context deadline exceeded, no failing input (golang/go#75804); running it again"; continue; fi; \
			cat $(FUZZLOG)/$$fn.log; exit 1; \
		done; \
		grep 'fuzz: elapsed' $(FUZZLOG)/$$fn.log | tail -1; \
	done

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
