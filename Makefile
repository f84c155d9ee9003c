# dexec: `make demo` and `make test` each do all set-up on a fresh Debian 12
# machine (packages, build), then run.
BAZEL ?= bazel
# Extra flags for bazel build/test, e.g. BAZEL_FLAGS=--config=asan
BAZEL_FLAGS ?=

.PHONY: deps build test demo bench clean

deps:
	./bazel/install-deps.sh

build: deps
	$(BAZEL) build $(BAZEL_FLAGS) //...

# -k: every test target runs and reports, so .ci/run counts them all.
test: build
	$(BAZEL) test -k $(BAZEL_FLAGS) //...

demo: build
	./examples/demo.sh

clean:
	$(BAZEL) clean
