# dermal — top-level build.  `make` builds build/dermal; `make check` installs
# what is missing (scripts/install-deps), builds, and runs every test with one
# combined summary line; `make run` serves/benches the default model.
#
# Variants build out of tree: O=build (release), O=build-asan, O=build-tsan.

O        ?= build
CC       ?= cc
PKGS     := dnnl
WARN     := -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wstrict-prototypes \
            -Wmissing-prototypes -Wvla -Wformat=2 -Wnull-dereference
# _GNU_SOURCE: MAP_POPULATE/madvise in the ONNX reader and
# pthread_setaffinity-free CPU queries; everything else is POSIX 2008.
STD      := -std=c11 -D_GNU_SOURCE
MODE     ?= release
ifeq ($(MODE),release)
OPT      := -O2 -DNDEBUG -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
LDOPT    := -pie -Wl,-z,relro,-z,now
else ifeq ($(MODE),asan)
OPT      := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDOPT    := -fsanitize=address,undefined
else ifeq ($(MODE),tsan)
OPT      := -O1 -g -fsanitize=thread
LDOPT    := -fsanitize=thread
endif
WERROR   ?=
CFLAGS   := $(STD) $(WARN) $(WERROR) $(OPT) -Iinclude -MMD -MP $(EXTRA_CFLAGS)
LDLIBS   := -ldnnl -lgomp -lturbojpeg -lspng -lwebp -ljansson -lmicrohttpd \
            -lsqlite3 -lm -lpthread

LIB_SRC  := $(wildcard src/common/*.c src/onnx/*.c src/engine/*.c src/image/*.c \
              src/model/*.c src/explain/*.c src/store/*.c src/server/*.c)
CLI_SRC  := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/unit/test_*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(O)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(O)/%.o)
TESTS    := $(TEST_SRC:tests/unit/%.c=$(O)/tests/%) $(O)/tests/conformance

.PHONY: all check check-all asan tsan run bench fuzz deps clean format lint models
all: $(O)/dermal

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(O)/libdermal.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(O)/dermal: $(CLI_OBJ) $(O)/libdermal.a
	$(CC) $(LDOPT) $^ $(LDLIBS) -o $@

$(O)/tests/%: tests/unit/%.c $(O)/libdermal.a $(O)/src/cli/npy.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Isrc/engine $(LDOPT) $< $(O)/src/cli/npy.o $(O)/libdermal.a $(LDLIBS) -o $@

$(O)/tests/conformance: tests/conformance/conformance.c $(O)/libdermal.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDOPT) $< $(O)/libdermal.a $(LDLIBS) -o $@

tests: $(TESTS)

deps:
	scripts/install-deps

# Every test, one summary line at the end.  Installs missing packages first.
# Builds three variants: release (build/), ASan+UBSan (build-asan/) and TSan
# (build-tsan/, the concurrent-inference test only).
check: deps
	$(MAKE) all tests
	$(MAKE) O=build-asan MODE=asan all tests
	$(MAKE) O=build-tsan MODE=tsan build-tsan/tests/test_engine
	tests/run-all.sh $(O)

# Also the slow parity tests on all 13 torchvision architectures.
check-all: deps
	$(MAKE) all tests
	$(MAKE) O=build-asan MODE=asan all tests
	$(MAKE) O=build-tsan MODE=tsan build-tsan/tests/test_engine
	ALL_ARCHS=1 tests/run-all.sh $(O)

asan:
	$(MAKE) O=build-asan MODE=asan all tests
	O=build-asan tests/run-all.sh build-asan

tsan:
	$(MAKE) O=build-tsan MODE=tsan all tests

run: deps all
	scripts/run-default

bench: deps all
	test -d bench/node_modules/onnxruntime-node || (cd bench && npm ci --ignore-scripts)
	bash bench/compare.sh

fuzz:
	$(MAKE) -C tests/fuzz

format:
	clang-format -i $(LIB_SRC) $(CLI_SRC) $(TEST_SRC) include/dermal/*.h src/*/*.h

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
