# The README's two commands: `make demo` and `make test`. Both install what is missing
# (scripts/install-deps.sh), configure and build in Release, then run. `make bench-compare`
# times onestep against the Python twin (bench/python) on DEVICE (scripts/bench-compare.sh).
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
DEVICE ?= cpu

.PHONY: deps build demo test bench bench-compare clean

deps:
	bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)

# Trains the default one-step model (MeanFlow) on checkerboard and writes its samples: the
# shipped recipe shortened to 5,000 of its 48,000 steps (about 5 minutes on 2 cores).
demo: build
	./$(BUILD)/onestep train -c configs/toy/meanflow-checkerboard.toml train.steps=5000

test: build
	bash scripts/install-deps.sh scripts/packages-browser.txt
	cd $(BUILD) && ctest -j $(JOBS) --output-on-failure

bench: build
	./$(BUILD)/onestep_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

bench-compare: build
	bash scripts/bench-compare.sh $(BUILD) $(DEVICE)

clean:
	rm -rf $(BUILD)
