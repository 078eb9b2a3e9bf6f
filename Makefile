# d2fab: plain Makefile. `make` builds ./d2fab; objects live under build/.
# Targets: all test demo bench sanitize fuzz clean deps data

PKGS     := fftw3f libpng assimp libcjson plplot
CC       ?= cc
OPT      ?= -O3 -march=x86-64-v2 -mtune=generic
CFLAGS_MATH := -fcx-limited-range -fno-math-errno
CFLAGS   ?= $(OPT) -g
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
CPPFLAGS += -D_GNU_SOURCE -I. -MMD -MP
BUILD    ?= build

HAVE_PKGS := $(shell pkg-config --exists $(PKGS) 2>/dev/null && echo yes)
ifeq ($(HAVE_PKGS),yes)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS)) -lfftw3f_threads
endif
LDLIBS   += $(PKG_LIBS) -lpthread -lm

LIB_SRC  := $(wildcard core/*.c train/*.c export/*.c mesh/*.c run/*.c)
CLI_SRC  := $(wildcard cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
BENCH_SRC:= $(wildcard bench/bench_*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test demo bench sanitize fuzz clean deps data check-pkgs tests
all: check-pkgs d2fab

check-pkgs:
	@pkg-config --exists $(PKGS) 2>/dev/null || { \
	  echo "d2fab: missing build dependencies (pkg-config: $(PKGS))."; \
	  echo "  Debian packages: libfftw3-dev libpng-dev libassimp-dev libcjson-dev libplplot-dev plplot-driver-cairo pkg-config"; \
	  echo "  run: scripts/install-deps   (as root, or it prints the apt command)"; exit 1; }

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(PKG_CFLAGS) $(CFLAGS) $(CFLAGS_MATH) $(WARN) -c $< -o $@

$(BUILD)/libd2fab.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

d2fab: $(CLI_OBJ) $(BUILD)/libd2fab.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libd2fab.a $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/tests/testlib.o $(BUILD)/libd2fab.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/tests/testlib.o $(BUILD)/libd2fab.a $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libd2fab.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libd2fab.a $(LDLIBS)

tests: check-pkgs d2fab $(TESTS)

# Fashion-MNIST JSON -> IDX converter, run by scripts/fetch-data.
$(BUILD)/tools/fashion2idx: $(BUILD)/scripts/fashion2idx.o $(BUILD)/libd2fab.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libd2fab.a $(LDLIBS)

deps:
	@scripts/install-deps --if-missing

data:
	@scripts/fetch-data

# The README's test command: installs what is missing, fetches MNIST, builds,
# runs every tests/test_*.c program and prints the total.
test: deps
	@$(MAKE) --no-print-directory tests
	@scripts/fetch-data
	@scripts/run-tests $(BUILD)/tests

# Tests under AddressSanitizer and UndefinedBehaviorSanitizer, in build-san/.
sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build-san \
	  OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" tests
	@scripts/fetch-data
	@D2FAB_SANITIZE=1 ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1 \
	  scripts/run-tests build-san/tests

bench: deps
	@$(MAKE) --no-print-directory all $(BENCHES)
	@scripts/fetch-data
	@for b in $(BENCHES); do echo "== $$b"; $$b || exit 1; done

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/fetch-data
	./d2fab run --out demo-out

clean:
	rm -rf build build-san d2fab

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TESTS:=.d) $(BENCHES:=.d) $(BUILD)/tests/testlib.d \
  $(BUILD)/scripts/fashion2idx.d
