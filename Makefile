# gcrelay: one GNU Makefile.  `make run` and `make check` install missing
# Debian packages first (deploy/deps.sh), then build and do their job.

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
DATADIR ?= $(PREFIX)/share/gcrelay
DOCDIR  ?= $(PREFIX)/share/doc/gcrelay
MANDIR  ?= $(PREFIX)/share/man
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
BUILD   ?= build/release
PKGS     = libcurl jansson openssl libconfig sqlite3 libpq
SAN     ?=

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# Hardening: Debian's own build flags (_FORTIFY_SOURCE, stack protector,
# full RELRO, PIE), the ones the .deb gets.  CFLAGS, CPPFLAGS or LDFLAGS
# given on the command line or in the environment (dpkg-buildpackage's
# debhelper exports them) win, as usual.
HARDENING = DEB_BUILD_MAINT_OPTIONS=hardening=+all
ifneq ($(shell command -v dpkg-buildflags 2>/dev/null),)
HARDEN_CFLAGS   := $(shell $(HARDENING) dpkg-buildflags --get CFLAGS)
HARDEN_CPPFLAGS := $(shell $(HARDENING) dpkg-buildflags --get CPPFLAGS)
HARDEN_LDFLAGS  := $(shell $(HARDENING) dpkg-buildflags --get LDFLAGS)
else
HARDEN_CFLAGS   := -g -O2 -fstack-protector-strong -Wformat \
                   -Werror=format-security -fPIE
HARDEN_CPPFLAGS := -D_FORTIFY_SOURCE=2
HARDEN_LDFLAGS  := -pie -Wl,-z,relro -Wl,-z,now
endif
ifeq ($(origin CFLAGS),undefined)
CFLAGS   = $(HARDEN_CFLAGS)
endif
ifeq ($(origin CPPFLAGS),undefined)
CPPFLAGS = $(HARDEN_CPPFLAGS)
endif
ifeq ($(origin LDFLAGS),undefined)
LDFLAGS  = $(HARDEN_LDFLAGS)
endif

# Beyond what this dpkg-buildflags gives (newer ones add them too): stack
# clash protection (no -fcf-protection: Debian 12's crt files lack the
# IBT/SHSTK notes, so the linked programs could not use it).
HARDEN_MORE := $(foreach f,-fstack-clash-protection,\
    $(shell $(CC) $(f) -Werror -E -x c /dev/null >/dev/null 2>&1 && echo $(f)))

# Warnings are errors for CI (CI=true) and in `make check` / `make asan`,
# not for someone building a release with a newer compiler.
WERROR  ?= $(if $(filter true 1,$(CI)),1)

CC      ?= cc
OPT     ?= -O2
CFLAGS  += $(HARDEN_MORE) -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra \
           $(if $(filter 1,$(WERROR)),-Werror) \
           -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -fno-strict-aliasing -Iinclude $(PKG_CFLAGS) -MMD -MP
LDLIBS  += $(PKG_LIBS) -lfcgi -lm
ifeq ($(SAN),1)
# ASan checks the plain libc calls it intercepts, not _FORTIFY_SOURCE's
# checked variants.
CPPFLAGS += -U_FORTIFY_SOURCE
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
        unit integration test-bins deb FORCE

# The programs only: the unit tests (and libcmocka) are for `make check`,
# `make asan` and `make valgrind`, or `make test-bins`.
all: $(BINS)

test-bins: $(UNIT_BINS)

# Objects are rebuilt when the flags that shape them change (SAN, OPT,
# CFLAGS...), not only when a source does.  -Werror shapes nothing: `make
# install` or `make run` after `make check` rebuild nothing.
FLAGS_NOW = $(CC) $(CPPFLAGS) $(filter-out -Werror,$(CFLAGS)) $(LDFLAGS) \
            $(LDLIBS)
$(BUILD)/flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@

$(BUILD)/%.o: %.c $(BUILD)/flags
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/libgcrelay.a: $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/gcrelay: $(BUILD)/app/main.o $(BUILD)/libgcrelay.a $(BUILD)/flags
	$(CC) $(LDFLAGS) -o $@ $(filter-out %/flags,$^) $(LDLIBS)

$(BUILD)/gcrelayctl: $(BUILD)/app/gcrelayctl.o $(BUILD)/libgcrelay.a \
                     $(BUILD)/flags
	$(CC) $(LDFLAGS) -o $@ $(filter-out %/flags,$^) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libgcrelay.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# The systemd unit with this PREFIX's paths.
$(BUILD)/gcrelay.service: deploy/gcrelay.service.in FORCE
	@mkdir -p $(BUILD)
	sed -e '/^#@/d' -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
	    deploy/gcrelay.service.in > $@.tmp && mv $@.tmp $@

# For editors and clang tools: every compile command of `make all` and
# the unit tests, recorded by bear when it is there.
compile_commands.json: FORCE
	@command -v bear >/dev/null 2>&1 || \
	    { echo "compile_commands.json needs bear (apt-get install bear)"; \
	      exit 1; }
	bear --output $@ -- $(MAKE) --no-print-directory -B \
	    BUILD=build/compdb all test-bins

deps:
	@sh deploy/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/run_demo.py --build $(BUILD) $(if $(PORT),--port $(PORT))

check: deps
	@$(MAKE) --no-print-directory WERROR=1 all test-bins
	@python3 tests/runner.py --build $(BUILD) --valgrind-pass \
	   $(if $(SUITES),--suites $(SUITES))

asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 OPT=-O1 WERROR=1 \
	    all test-bins
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 python3 tests/runner.py --build build/asan --sanitizers \
	   $(if $(SUITES),--suites $(SUITES))

valgrind: deps
	@$(MAKE) --no-print-directory all test-bins
	@python3 tests/runner.py --build $(BUILD) --valgrind \
	   $(if $(SUITES),--suites $(SUITES))

unit integration: deps
	@$(MAKE) --no-print-directory all $(if $(filter unit,$@),test-bins)
	@python3 tests/runner.py --build $(BUILD) --suites $@

lint:
	@sh tests/lint.sh

fuzz: deps
	@$(MAKE) --no-print-directory -f tests/fuzz/fuzz.mk

bench: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/bench/bench.py --build $(BUILD) $(BENCH_ARGS)

# PREFIX=/usr/local: /usr/local/sbin/gcrelay, /usr/local/bin/gcrelayctl,
# the units in /usr/local/lib/systemd/system (where systemd looks), the
# config example and nginx files in share/gcrelay, man pages when there.
install: $(BINS) $(BUILD)/gcrelay.service
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) \
	   $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 0755 $(BUILD)/gcrelay $(DESTDIR)$(SBINDIR)/
	install -m 0755 $(BUILD)/gcrelayctl $(DESTDIR)$(BINDIR)/
	install -m 0644 $(BUILD)/gcrelay.service deploy/gcrelay.socket \
	   $(DESTDIR)$(SYSTEMDUNITDIR)/
	install -m 0644 deploy/gcrelay.conf.example nginx/gcrelay.conf \
	   nginx/gcrelay-locations.conf deploy/openapi.yaml \
	   deploy/prometheus/gcrelay-rules.yml \
	   deploy/grafana/gcrelay-dashboard.json $(DESTDIR)$(DATADIR)/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	@for m in $(wildcard deploy/man/*.[0-9]); do \
	    s=$${m##*.}; \
	    echo install -D -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; \
	    install -D -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/$${m##*/} || exit 1; \
	done

# gcrelay_<version>_<arch>.deb in $(DEB_OUT), built by dpkg-buildpackage
# from deploy/debian in a temporary copy of the tree.
DEB_OUT ?= build
deb:
	@sh deploy/build-deb.sh $(DEB_OUT)

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
