# Entry points. `make run` and `make test` set up everything on a fresh Debian machine.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
RUN_ARGS ?=

.PHONY: all deps configure build run test test-all bench clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD_DIR)/build.ninja: | deps
	cmake --preset release

configure: $(BUILD_DIR)/build.ninja

build: deps configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The main job: a default attention problem, timed and checked against the double reference.
run: build
	$(BUILD_DIR)/bin/burst run $(RUN_ARGS)

# The default test suite (everything except the `heavy` label).
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -LE heavy --timeout 900

test-all: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 3600

bench: build
	scripts/bench.sh

clean:
	rm -rf $(BUILD_DIR)
