# Fuzz targets for the parsers of untrusted input (libFuzzer, clang).
# Standalone; run from the repository root:
#
#   make -f tests/fuzz/fuzz.mk                    # build, run each 60 s
#   make -f tests/fuzz/fuzz.mk FUZZ_SECONDS=600   # longer
#   make -f tests/fuzz/fuzz.mk build              # build only
#   make -f tests/fuzz/fuzz.mk clean              # drop binaries, corpora
#
# Each target runs on build/fuzz/corpus-<name>/, seeded from
# tests/fuzz/corpus/<name>/ (what the fuzzer finds is kept there between
# runs).  Any crash, leak, undefined behaviour, timeout or out-of-memory
# fails the run; the input is saved as build/fuzz/artifacts-<name>/*.
# Reproduce one with: build/fuzz/fuzz_<name> <file>

CLANG        ?= clang
FUZZ_SECONDS ?= 60
FUZZ_OUT     ?= build/fuzz
FUZZ_FLAGS   ?=
PKGS          = jansson openssl

SAN_CFLAGS  = -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror \
              -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
              $(SAN_CFLAGS) -Iinclude $(shell pkg-config --cflags $(PKGS))
FUZZ_LIBS   = $(shell pkg-config --libs $(PKGS))

# Sources of each target, listed explicitly.
event_SRCS     = tests/fuzz/fuzz_event.c app/event.c app/payload.c \
                 app/email.c app/phone.c
event_HDRS     = include/event.h include/payload.h include/email.h \
                 include/phone.h include/gc_err.h
event_MAXLEN   = 8192
sigheader_SRCS = tests/fuzz/fuzz_sigheader.c app/webhook.c app/crypto.c
sigheader_HDRS = include/webhook.h include/crypto.h include/gc_err.h
sigheader_MAXLEN = 1024

TARGETS = event sigheader
BINS    = $(TARGETS:%=$(FUZZ_OUT)/fuzz_%)

ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: all build run clean $(TARGETS:%=run-%)

all: run

build: $(BINS)

run: $(TARGETS:%=run-%)

.SECONDEXPANSION:
$(BINS): $(FUZZ_OUT)/fuzz_%: $$($$*_SRCS) $$($$*_HDRS) tests/fuzz/fuzz.mk
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -o $@ $($*_SRCS) $(FUZZ_LIBS)

$(TARGETS:%=run-%): run-%: $(FUZZ_OUT)/fuzz_%
	@mkdir -p $(FUZZ_OUT)/corpus-$* $(FUZZ_OUT)/artifacts-$*
	cp tests/fuzz/corpus/$*/* $(FUZZ_OUT)/corpus-$*/
	$(ASAN_ENV) $(FUZZ_OUT)/fuzz_$* -max_total_time=$(FUZZ_SECONDS) \
	    -max_len=$($*_MAXLEN) -timeout=10 -rss_limit_mb=2048 \
	    -dict=tests/fuzz/$*.dict -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_OUT)/artifacts-$*/ $(FUZZ_FLAGS) \
	    $(FUZZ_OUT)/corpus-$*

clean:
	rm -rf $(FUZZ_OUT)
