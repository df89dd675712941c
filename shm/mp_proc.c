/*
 * mp_proc — see mp_proc.h.  Reads /proc/<pid>/stat with one open/read
 * (no stdio: callers include a reaper on the server's receive path).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mp_proc.h"

char *mp_proc_stat(pid_t pid, char *buf, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;

	if (pid > 0)
		snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/stat");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0) {
		errno = n < 0 ? errno : EIO;
		return NULL;
	}
	buf[n] = '\0';
	return strrchr(buf, ')');
}

int mp_proc_state(pid_t pid)
{
	char buf[512], *p = mp_proc_stat(pid, buf, sizeof(buf));

	if (!p)
		return errno == ENOENT ? -ESRCH : 0;
	/* "pid (comm) S ...": the state follows the last ')'. */
	if (p[1] != ' ' || !p[2])
		return 0;
	return (unsigned char)p[2];
}

int mp_proc_zombie(pid_t pid)
{
	int s = mp_proc_state(pid);

	return s == 'Z' || s == 'X';
}
