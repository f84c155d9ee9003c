# dexec: `make demo` and `make test` each do all set-up on a fresh Debian 12
# machine (packages, build), then run.
BAZEL ?= bazel
# Extra flags for bazel build/test, e.g. BAZEL_FLAGS=--config=asan
BAZEL_FLAGS ?=

.PHONY: deps build test demo bench clean sanitize

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

# Every test under AddressSanitizer + UndefinedBehaviorSanitizer (as CI
# does), then ThreadSanitizer (with suppressions for Debian's uninstrumented
# gRPC/Abseil/protobuf/ZeroMQ/OpenSSL).
sanitize: deps
	$(BAZEL) test -k --config=asan_ubsan --test_env=LSAN_OPTIONS=suppressions=$(CURDIR)/bazel/lsan.supp //...
	$(BAZEL) test -k --config=tsan --test_env=TSAN_OPTIONS=suppressions=$(CURDIR)/bazel/tsan.supp //...

# The benchmark suite (bench/README.md): every workload on dexec and right
# after it on the peers (ProcessPool, ThreadPool, Dask, Celery), then the
# micro-suite; installs the peers' Debian packages; ~14 min on 2 cores.
# Results land in bench/results/. BENCH_QUICK=1: small N, to /tmp; PEERS=0:
# dexec alone; ONLY="a b micro": some phases.
bench: deps
	./bench/run.sh
