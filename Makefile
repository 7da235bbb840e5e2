# herd — see README.md. `make demo` runs a local cluster; `make test` is what CI runs.
GO ?= go
BIN := bin

.PHONY: all build demo test bench check generate generate-check lint fmt vet clean

all: build

build:
	$(GO) build -o $(BIN)/herd-front ./cmd/front
	$(GO) build -o $(BIN)/herd-node ./cmd/node
	$(GO) build -o $(BIN)/herdctl ./cmd/ctl

# A local cluster on loopback: 1 front, 3 nodes, examples/hello deployed.
demo: build
	bash scripts/demo.sh

# gofmt, go vet, and every test with the race detector (including the
# integration tests that run the real binaries).
test: fmt vet
	$(GO) test -race -count=1 -timeout 15m ./...

# herd-front against nginx on the same backend, CPU-pinned (installs nginx
# and wrk from Debian's packages if missing); see scripts/bench.sh.
bench:
	bash scripts/bench.sh

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Regenerate internal/gen from proto/ with the buf and plugins pinned in go.mod.
generate:
	$(GO) tool buf generate

lint:
	$(GO) tool buf lint

# CI: generated code is current, buf lint is clean, and the API has no
# breaking change against the previous commit.
generate-check: lint
	bash scripts/check-generated.sh

clean:
	rm -rf $(BIN)
