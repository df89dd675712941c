/*
 * fuzz_replay — run a libFuzzer target over every file of its corpus, so
 * that the corpus is a regression test in plain `make check`.
 *
 * The corpus directory is $MP_CORPUS_DIR/<target>, where <target> is the
 * program name without the "fuzz_" prefix and "_replay" suffix.  Extra
 * arguments are files to run as well (reproducing a crash).
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
	static uint8_t buf[1 << 20];
	FILE *f = fopen(path, "rb");
	size_t n;
	uint8_t *copy;

	if (!f) {
		perror(path);
		return -1;
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	/* An exact-size heap copy, so ASan catches a read past the end. */
	copy = malloc(n ? n : 1);
	if (!copy)
		return -1;
	memcpy(copy, buf, n);
	LLVMFuzzerTestOneInput(copy, n);
	free(copy);
	return 0;
}

int main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');
	const char *dir = getenv("MP_CORPUS_DIR");
	char target[64], path[4096];
	struct dirent *de;
	int count = 0;
	DIR *d;

	alarm(300);
	base = base ? base + 1 : argv[0];
	if (strncmp(base, "lt-", 3) == 0)
		base += 3;
	if (strncmp(base, "fuzz_", 5) == 0)
		base += 5;
	snprintf(target, sizeof(target), "%s", base);
	if (strstr(target, "_replay"))
		*strstr(target, "_replay") = '\0';
	for (int i = 1; i < argc; i++)
		if (run_file(argv[i]) == 0)
			count++;
	if (argc > 1)
		return 0;
	snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/corpus", target);
	d = opendir(path);
	if (!d) {
		fprintf(stderr, "fuzz_replay: no corpus at %s\n", path);
		return 1;
	}
	while ((de = readdir(d)) != NULL) {
		char file[8192];

		if (de->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
		if (run_file(file) != 0)
			return 1;
		count++;
	}
	closedir(d);
	printf("fuzz_replay %s: %d inputs, no crash\n", target, count);
	return count > 0 ? 0 : 1;
}
