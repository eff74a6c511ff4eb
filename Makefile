# The README's two commands: `make demo` and `make test`. Both install what is missing
# (scripts/install-deps.sh), configure and build in Release, then run. `make bench-compare`
# times onestep against the Python twin (bench/python) on DEVICE (scripts/bench-compare.sh).
# `make test-sanitize` builds the suite with ASan and UBSan in SANITIZE_BUILD and runs it.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
DEVICE ?= cpu
SANITIZE_BUILD ?= build-sanitize

.PHONY: deps build demo test test-sanitize bench bench-compare clean

deps:
	bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)

# Trains the default one-step model (MeanFlow) on checkerboard and writes its samples: the
# shipped recipe shortened to 5,000 of its 16,000 steps (about 3 to 5 minutes on 2 cores).
demo: build
	./$(BUILD)/onestep train -c configs/toy/meanflow-checkerboard.toml train.steps=5000

test: build
	bash scripts/install-deps.sh scripts/packages-browser.txt
	cd $(BUILD) && ctest -j $(JOBS) --output-on-failure

# Our code instrumented (-O1 -g), LibTorch as Debian built it; any report fails the test. Leaks
# inside LibTorch are suppressed by name (tests/lsan.supp). The short training runs that test
# sample quality (SANITIZE_SKIP) are left out: they run the code paths of the registry's
# round-trip tests, for minutes each. `make test-sanitize SANITIZE_SKIP=` runs them too.
SANITIZE_SKIP ?= FlowMatchingOnCheckerboardImprovesWithNfe|ConditionalMeanFlowPutsOneNfeSamplesOnTheRequestedMode|ShortRun|Drifting[.](RecoversAllModes|CoversAllEightModes)
test-sanitize: deps
	bash scripts/install-deps.sh scripts/packages-browser.txt
	cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
	  -DONESTEP_SANITIZE=ON -DONESTEP_BUILD_BENCH=OFF $(CMAKE_ARGS)
	cmake --build $(SANITIZE_BUILD) -j $(JOBS)
	cd $(SANITIZE_BUILD) && LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp ASAN_OPTIONS=abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1 ctest -j $(JOBS) --output-on-failure $(if $(SANITIZE_SKIP),-E '$(SANITIZE_SKIP)')

bench: build
	./$(BUILD)/onestep_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

bench-compare: build
	bash scripts/bench-compare.sh $(BUILD) $(DEVICE)

clean:
	rm -rf $(BUILD) $(SANITIZE_BUILD)
