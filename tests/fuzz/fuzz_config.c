// SPDX-License-Identifier: MIT
/*
 * fuzz_config.c - libFuzzer harness for the route file loader: libyaml
 * pass, upstream wrapping, libcyaml load, ${VAR} expansion, validation.
 * The input is written to a memfd and loaded by path; only IP literals
 * are resolved (no DNS). Any result is fine; crashes, leaks and UB are not.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct edge_config *cfg = NULL;
	struct strbuf errs;
	char path[64];
	int fd;

	config_literal_only = 1;
	setenv("EDGE_FUZZ_SET", "127.0.0.1:25", 1);
	fd = memfd_create("cfg", 0);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	sb_init(&errs);
	if (config_load(path, &cfg, &errs) == 0)
		config_free(cfg);
	sb_free(&errs);
	close(fd);
	return 0;
}
