# edge: kernel-accelerated layer-4 edge proxy.
#   make            build build/edged, build/edgectl and the BPF object
#   make deps       install the Debian packages needed to build and test
#   make test       run the whole test suite (needs root for the kernel tests)
#   make fuzz       run each libFuzzer harness for a bounded time
#   make asan       build and run the unit tests under ASan/UBSan
#   make bench      run the benchmark suite (tests/bench/run)

BUILD    ?= build
CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
ARCH     := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
CFLAGS   ?= -O2 -g
override CFLAGS += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -Werror=implicit-function-declaration \
	    -D_GNU_SOURCE -Iinclude -Icontrol -I$(BUILD)
LDLIBS_EDGED := -lbpf -lelf -lz -lcyaml -lyaml -lpthread
FUZZ_SECONDS ?= 60

DEB_PKGS := make gcc libbpf-dev libelf-dev zlib1g-dev libcyaml-dev libyaml-dev clang llvm bpftool libclang-rt-14-dev \
	    pkg-config iproute2 python3 haproxy nginx-core libnginx-mod-stream python3-aiosmtpd \
	    openssl curl gnutls-bin netcat-openbsd socat iperf3 iptables ethtool procps psmisc sockperf gnuplot-nox clang-format \
	    postfix dovecot-imapd dovecot-managesieved systemd

CORE_SRCS := control/log.c control/config.c control/proxy.c control/tls.c control/util.c
EDGED_SRCS := $(CORE_SRCS) control/main.c control/loop.c control/listener.c control/flow.c \
	      control/sockmap.c control/relay.c control/ctl.c control/stats.c control/metrics.c control/health.c control/sys.c control/resolve.c
EDGECTL_SRCS := control/edgectl.c

.PHONY: all deps check-deps test unit asan fuzz bench clean format format-check

all: check-deps $(BUILD)/edged $(BUILD)/edgectl $(BUILD)/echo_check

check-deps:
	@missing=""; \
	for h in bpf/libbpf.h cyaml/cyaml.h libelf.h zlib.h yaml.h; do \
		[ -e /usr/include/$$h ] || missing="$$missing $$h"; done; \
	for t in $(CLANG) $(BPFTOOL) pkg-config; do \
		command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		echo "edge: missing build dependencies:$$missing" >&2; \
		echo "edge: install them with 'make deps' (apt-get install libbpf-dev libelf-dev zlib1g-dev libcyaml-dev clang llvm bpftool pkg-config)" >&2; \
		exit 1; fi

deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(DEB_PKGS)

$(BUILD):
	mkdir -p $(BUILD)

# vmlinux.h is generated from the running kernel's BTF, never committed.
$(BUILD)/vmlinux.h: | $(BUILD)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/edge.bpf.o: bpf/edge.bpf.c include/edge.h $(BUILD)/vmlinux.h
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -I$(BUILD) -Iinclude -c $< -o $@

$(BUILD)/edge.skel.h: $(BUILD)/edge.bpf.o
	$(BPFTOOL) gen skeleton $< name edge_bpf > $@.tmp && mv $@.tmp $@

$(BUILD)/%.o: control/%.c control/*.h include/edge.h | $(BUILD)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/sockmap.o: $(BUILD)/edge.skel.h

$(BUILD)/edged: $(patsubst control/%.c,$(BUILD)/%.o,$(EDGED_SRCS))
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS_EDGED)

$(BUILD)/edgectl: $(patsubst control/%.c,$(BUILD)/%.o,$(EDGECTL_SRCS))
	$(CC) $(CFLAGS) $^ -o $@

$(BUILD)/echo_check: tests/tools/echo_check.c | $(BUILD)
	$(CC) -std=gnu11 -O2 -g -Wall -Wextra -pthread $< -o $@

# Unit tests: tests/unit/test_X.c links the pure objects (no root, no libbpf).
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/%,$(wildcard tests/unit/test_*.c))
FUZZERS := $(patsubst tests/fuzz/%.c,$(BUILD)/%,$(wildcard tests/fuzz/fuzz_*.c))
$(BUILD)/test_%: tests/unit/test_%.c tests/unit/check.h $(patsubst control/%.c,$(BUILD)/%.o,$(CORE_SRCS))
	$(CC) $(CFLAGS) $(filter-out %.h,$^) -o $@ -lcyaml -lyaml

unit: $(UNIT_TESTS)
	@rc=0; for t in $(UNIT_TESTS); do $$t tests/unit/data || rc=1; done; exit $$rc

# ASan/UBSan build of everything; unit tests run under it, and
# EDGE_BUILD=build-asan tests/run ... runs the daemon tests against it.
asan:
	$(MAKE) BUILD=build-asan CC=clang CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" all unit

test: all $(UNIT_TESTS) $(FUZZERS)
	tests/run

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(CORE_SRCS) | $(BUILD)
	$(CLANG) -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude -Icontrol $^ -o $@ -lcyaml -lyaml

fuzz: $(FUZZERS)
	@for f in $(FUZZERS); do n=$${f##*/fuzz_}; d=$$(mktemp -d); \
		cp -r tests/fuzz/corpus/$$n/. $$d/ 2>/dev/null; \
		echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$d || exit 1; rm -rf $$d; done

bench: all
	tests/bench/run

format:
	clang-format -i control/*.c control/*.h include/*.h bpf/*.c

format-check:
	clang-format --dry-run --Werror control/*.c control/*.h include/*.h bpf/*.c

clean:
	rm -rf build build-asan
