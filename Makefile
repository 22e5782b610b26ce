# parley — the two commands a user needs:
#   make run    install deps, build, start a single-node parleyd on ./parley-data
#   make test   install deps, build, run the test suite (ctest; closing line has counts)
# More: make run-cluster (a local 3-node cluster: tools/run-cluster.sh),
#       make test-long (slow tiers: long simulations, hundreds of crash cycles),
#       make asan (sanitizer build + tests), make fuzz, make bench.
BUILD ?= build
TYPE ?= Release
JOBS ?= $(shell nproc)
CTEST_FLAGS ?= --output-on-failure

.PHONY: all deps build test test-long asan fuzz bench run run-cluster clean

all: build

deps:
	@bash tools/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(TYPE)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest $(CTEST_FLAGS) -j $(JOBS) -LE long

test-long: build
	cd $(BUILD) && PARLEY_LONG=1 ctest $(CTEST_FLAGS) -j $(JOBS)

asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Asan
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest $(CTEST_FLAGS) -j $(JOBS) -LE long

fuzz: deps
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DPARLEY_FUZZ=ON
	cmake --build build-fuzz -j $(JOBS)
	cd build-fuzz && ctest $(CTEST_FLAGS) -L fuzz -LE long

bench: build
	$(BUILD)/bench/parley-bench --help

# run builds only parleyd, parley and parleyctl (not the tests), quietly; see
# tools/run-dev.sh for the ports (PARLEY_PORT, PARLEY_TLS_PORT, PARLEY_ADMIN_PORT).
run: deps
	@TYPE=$(TYPE) JOBS=$(JOBS) bash tools/run-dev.sh $(BUILD)

# run-cluster: the same for a local cluster of 3 (PARLEY_CLUSTER_NODES=5: 5)
# parleyd nodes with mutual TLS between them; see tools/run-cluster.sh.
run-cluster: deps
	@TYPE=$(TYPE) JOBS=$(JOBS) bash tools/run-cluster.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
