# d2fab: plain Makefile. `make` builds ./d2fab; objects live under build/.
# Targets: all test demo bench sanitize valgrind fuzz clean deps data

PKGS     := fftw3f libpng assimp libcjson plplot zlib
CC       ?= cc
OPT      ?= -O3 -march=x86-64-v2 -mtune=generic
# -fcx-limited-range where the compiler has it (gcc; clang 14 does not).
CFLAGS_MATH := $(shell $(CC) -fcx-limited-range -Werror -x c -c -o /dev/null /dev/null \
                 2>/dev/null && echo -fcx-limited-range) -fno-math-errno
CFLAGS   ?= $(OPT) -g
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
CPPFLAGS += -D_GNU_SOURCE -I. -MMD -MP
ifeq ($(MPI),no)
BUILD    ?= build-nompi
BIN      ?= build-nompi/d2fab
endif
BUILD    ?= build
# The program; the sanitizer build puts its own into build-san/.
BIN      ?= d2fab

HAVE_PKGS := $(shell pkg-config --exists $(PKGS) 2>/dev/null && echo yes)
ifeq ($(HAVE_PKGS),yes)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS)) -lfftw3f_threads
endif
# MPI (Open MPI, pkg-config ompi-c) when found: the same binary then runs as
# one process or as the ranks of mpirun / srun. MPI=no builds without it (into
# build-nompi/ unless BUILD is given, so the two builds never share objects).
MPI      ?= auto
ifneq ($(MPI),no)
HAVE_MPI := $(shell pkg-config --exists ompi-c 2>/dev/null && echo yes)
ifeq ($(HAVE_MPI),yes)
PKG_CFLAGS += $(shell pkg-config --cflags ompi-c) -DD2_HAVE_MPI
PKG_LIBS   += $(shell pkg-config --libs ompi-c)
endif
endif
LDLIBS   += $(PKG_LIBS) -lpthread -lm

LIB_SRC  := $(wildcard core/*.c optics/*.c train/*.c export/*.c mesh/*.c mask/*.c calibrate/*.c tolerance/*.c run/*.c)
CLI_SRC  := $(wildcard cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
BENCH_SRC:= $(wildcard bench/bench_*.c)
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
FUZZ_NAMES := $(FUZZ_SRC:fuzz/fuzz_%.c=%)
FUZZ_BINS  := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)
# The fuzz targets' checking functions, without their libFuzzer entry points,
# for tests/test_fuzz_regress.c.
FUZZ_REG_OBJ := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz-regress/%.o) $(BUILD)/fuzz-regress/fuzzlib.o

.PHONY: all test demo bench sanitize valgrind fuzz fuzz-build clean deps data check-pkgs tests
all: check-pkgs $(BIN)

check-pkgs:
	@pkg-config --exists $(PKGS) 2>/dev/null || { \
	  echo "d2fab: missing build dependencies (pkg-config: $(PKGS))."; \
	  echo "  Debian packages: libfftw3-dev libpng-dev libassimp-dev libcjson-dev libplplot-dev plplot-driver-cairo zlib1g-dev pkg-config"; \
	  echo "  run: scripts/install-deps   (as root, or it prints the apt command)"; exit 1; }

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(PKG_CFLAGS) $(CFLAGS) $(CFLAGS_MATH) $(WARN) -c $< -o $@

$(BUILD)/libd2fab.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(BUILD)/libd2fab.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libd2fab.a $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/tests/testlib.o $(BUILD)/libd2fab.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/tests/testlib.o $(BUILD)/libd2fab.a $(LDLIBS)

$(BUILD)/fuzz-regress/%.o: fuzz/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DD2_FUZZ_REGRESS $(PKG_CFLAGS) $(CFLAGS) $(CFLAGS_MATH) $(WARN) -c $< -o $@

$(BUILD)/tests/test_fuzz_regress: $(BUILD)/tests/test_fuzz_regress.o $(BUILD)/tests/testlib.o \
  $(FUZZ_REG_OBJ) $(BUILD)/libd2fab.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/tests/testlib.o $(FUZZ_REG_OBJ) \
	  $(BUILD)/libd2fab.a $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/bench/benchlib.o $(BUILD)/libd2fab.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/bench/benchlib.o $(BUILD)/libd2fab.a $(LDLIBS)

tests: check-pkgs $(BIN) $(TESTS)

deps:
	@scripts/install-deps --if-missing

data:
	@scripts/fetch-data

# The README's test command: installs what is missing, fetches MNIST, builds,
# runs every tests/test_*.c program and prints the total. Tests that run the
# program itself take it from $D2FAB_BIN.
test: deps
	@$(MAKE) --no-print-directory tests
	@scripts/fetch-data
	@D2FAB_BIN=./$(BIN) scripts/run-tests $(BUILD)/tests

# Tests (and the program they run) under AddressSanitizer and
# UndefinedBehaviorSanitizer, in build-san/.
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build-san BIN=build-san/d2fab \
	  OPT="-O1 -fno-omit-frame-pointer $(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS)" tests
	@scripts/fetch-data
	@D2FAB_SANITIZE=1 D2FAB_BIN=build-san/d2fab ASAN_OPTIONS=detect_leaks=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1 \
	  scripts/run-tests build-san/tests

bench: deps
	@$(MAKE) --no-print-directory all $(BENCHES)
	@scripts/fetch-data
	@for b in $(BENCHES); do echo "== $$b"; $$b || exit 1; done

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/fetch-data
	./d2fab run --out demo-out

# The tests under valgrind: memory errors and definite or indirect leaks fail
# (still-reachable memory of system libraries at exit is fine; what PLplot's
# libltdl and fontconfig lose is suppressed in tests/valgrind.supp). Long
# training tests run shortened (D2FAB_TEST_QUICK=1).
VALGRIND := valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
  --show-leak-kinds=definite,indirect --error-exitcode=99 \
  --suppressions=$(CURDIR)/tests/valgrind.supp
valgrind: deps
	@$(MAKE) --no-print-directory tests
	@scripts/fetch-data
	@D2FAB_TEST_QUICK=1 D2FAB_BIN=./$(BIN) D2FAB_TEST_WRAP="$(VALGRIND)" \
	  scripts/run-tests $(BUILD)/tests

# libFuzzer targets fuzz/fuzz_*.c, built with clang under ASan and UBSan into
# build-fuzz/ and run one after another for FUZZ_SECONDS each (at nice 19) by
# scripts/fuzz-run, which prints executions and coverage per target.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 600
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz-run build-fuzz/fuzz $(FUZZ_NAMES)

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=$(FUZZ_CC) \
	  OPT="-O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link $(FUZZ_SAN)" \
	  $(FUZZ_NAMES:%=build-fuzz/fuzz/fuzz_%)

$(FUZZ_BINS): $(BUILD)/fuzz/%: $(BUILD)/fuzz/%.o $(BUILD)/fuzz/fuzzlib.o $(BUILD)/libd2fab.a
	$(CC) $(CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(LDLIBS)

clean:
	rm -rf build build-san build-fuzz d2fab

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TESTS:=.d) $(BENCHES:=.d) $(BUILD)/tests/testlib.d $(BUILD)/bench/benchlib.d \
  $(FUZZ_REG_OBJ:.o=.d) $(FUZZ_BINS:=.d) $(BUILD)/fuzz/fuzzlib.d
