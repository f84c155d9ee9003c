# dexec: `make demo` and `make test` each do all set-up on a fresh Debian 12
# machine (packages, build), then run.
BAZEL ?= bazel
# Extra flags for bazel build/test, e.g. BAZEL_FLAGS=--config=asan
BAZEL_FLAGS ?=

.PHONY: deps build test demo bench clean sanitize python install fuzz format

deps:
	./bazel/install-deps.sh

build: deps
	$(BAZEL) build $(BAZEL_FLAGS) //...

# -k: every test target runs and reports, so .ci/run counts them all.
# Then the Python suite (python/tests, against the binaries just built),
# its results in PYTEST_XML for .ci/count_tests.py. Then the fuzz smoke
# runs (fuzz/smoke.sh: each target ~5 s on its seed corpus), their results
# in bazel-testlogs-fuzz/<target>/test.xml.
PYTEST_XML ?= $(CURDIR)/bazel-testlogs-python/pytest.xml
test: build python
	$(BAZEL) test -k $(BAZEL_FLAGS) //...; rc=$$?; \
	mkdir -p $(dir $(PYTEST_XML)); \
	/usr/bin/python3 -m pytest -q python/tests --junitxml=$(PYTEST_XML); \
	prc=$$?; \
	./fuzz/smoke.sh; frc=$$?; \
	[ $$rc = 0 ] && [ $$prc = 0 ] && [ $$frc = 0 ]

# The Python package's generated stubs (python/dexec/_proto); then
# PYTHONPATH=$(CURDIR)/python /usr/bin/python3 -c 'import dexec' works.
python: deps
	./python/gen_protos.sh

# The binaries, the client and worker libraries with their headers,
# pkg-config and CMake files and systemd units (packaging/), into
# $(DESTDIR)$(PREFIX). For production: BAZEL_FLAGS=--config=opt.
PREFIX ?= /usr/local
install: deps
	$(BAZEL) build $(BAZEL_FLAGS) //packaging:dexec-dist
	./packaging/install.sh bazel-bin/packaging/dexec-dist.tar "$(PREFIX)" "$(DESTDIR)"

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

# The libFuzzer targets (fuzz/, built with clang by fuzz/build.sh), each
# for FUZZ_SECONDS on its seed corpus; new inputs are not kept, a crash is
# (fuzz/out/crash-*). FUZZ_SECONDS=5 is what `make test` runs.
FUZZ_SECONDS ?= 60
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./fuzz/smoke.sh

# clang-format over every C++ source (tools/format.sh); .ci/run checks it.
format:
	./tools/format.sh
