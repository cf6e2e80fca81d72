# gcrelay: one GNU Makefile.  `make run` and `make check` install missing
# Debian packages first (deploy/deps.sh), then build and do their job.

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build/release
PKGS     = libcurl jansson openssl libconfig sqlite3 libpq
SAN     ?=

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CC      ?= cc
OPT     ?= -O2
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Werror \
           -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -fno-strict-aliasing -Iinclude $(PKG_CFLAGS) -MMD -MP
LDLIBS  += $(PKG_LIBS) -lfcgi -lm
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

MAINS     = app/main.c app/gcrelayctl.c
LIB_SRCS  = $(filter-out $(MAINS),$(wildcard app/*.c app/*/*.c handlers/*.c clients/*.c))
LIB_OBJS  = $(LIB_SRCS:%.c=$(BUILD)/%.o)
UNIT_SRCS = $(wildcard tests/unit/test_*.c)
UNIT_BINS = $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
BINS      = $(BUILD)/gcrelay $(BUILD)/gcrelayctl

.PHONY: all deps run check asan valgrind lint fuzz bench install clean \
        unit integration

all: $(BINS) $(UNIT_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libgcrelay.a: $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/gcrelay: $(BUILD)/app/main.o $(BUILD)/libgcrelay.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/gcrelayctl: $(BUILD)/app/gcrelayctl.o $(BUILD)/libgcrelay.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libgcrelay.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

deps:
	@sh deploy/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/run_demo.py --build $(BUILD) $(if $(PORT),--port $(PORT))

check: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/runner.py --build $(BUILD) --valgrind-pass \
	   $(if $(SUITES),--suites $(SUITES))

asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 OPT=-O1 all
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 python3 tests/runner.py --build build/asan --sanitizers \
	   $(if $(SUITES),--suites $(SUITES))

valgrind: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/runner.py --build $(BUILD) --valgrind \
	   $(if $(SUITES),--suites $(SUITES))

unit integration: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/runner.py --build $(BUILD) --suites $@

lint:
	@sh tests/lint.sh

fuzz: deps
	@$(MAKE) --no-print-directory -f tests/fuzz/fuzz.mk

bench: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/bench/bench.py --build $(BUILD) $(BENCH_ARGS)

install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/gcrelay
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 deploy/gcrelay.conf.example nginx/gcrelay.conf \
	   nginx/gcrelay-locations.conf deploy/gcrelay.service \
	   deploy/gcrelay.socket README.md $(DESTDIR)$(PREFIX)/share/gcrelay/

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
