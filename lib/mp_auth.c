/*
 * mp_auth — shared secret and HMAC-SHA256 proofs (see mp_auth.h).
 *
 * Invariant: a key with len > 0 came from a file that passed every check
 * of mp_auth_key_load(); proofs are only ever compared with
 * CRYPTO_memcmp, so the time taken tells nothing about where a wrong
 * proof differs.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "mp_auth.h"

static const char *const labels[] = {
	[MP_AUTH_CLIENT] = "messip-auth-1 client",
	[MP_AUTH_SERVER] = "messip-auth-1 server",
};

int mp_auth_open_private(const char *path, const char *what, char *err,
			 size_t errlen)
{
	struct stat st;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(-rc));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s %s: not a regular file", what, path);
		rc = -EINVAL;
		goto fail;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen,
			 "%s %s: mode %04o lets group or others "
			 "access it; make it readable by its owner only "
			 "(chmod 600 %s)",
			 what, path, (unsigned)(st.st_mode & 07777), path);
		rc = -EPERM;
		goto fail;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen,
			 "%s %s: owned by uid %u, not by the user "
			 "reading it (uid %u); chown it",
			 what, path, (unsigned)st.st_uid, (unsigned)geteuid());
		rc = -EPERM;
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return rc;
}

int mp_auth_key_load(const char *path, struct mp_auth_key *key, char *err,
		     size_t errlen)
{
	/* One byte more than the largest key (plus room for a newline)
	 * tells an overlong file from a full one. */
	uint8_t buf[MP_AUTH_KEY_MAX + 64];
	size_t len = 0;
	int fd, rc = 0;

	fd = mp_auth_open_private(path, "secret file", err, errlen);
	if (fd < 0)
		return fd;
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			snprintf(err, errlen, "secret file %s: %s", path,
				 strerror(-rc));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	while (len && isspace(buf[len - 1]))
		len--;
	if (len < MP_AUTH_KEY_MIN || len > MP_AUTH_KEY_MAX) {
		snprintf(err, errlen,
			 "secret file %s: the secret must be %d to %d bytes "
			 "(e.g. head -c 32 /dev/urandom | base64 > %s)",
			 path, MP_AUTH_KEY_MIN, MP_AUTH_KEY_MAX, path);
		rc = -EINVAL;
		goto out;
	}
	memcpy(key->k, buf, len);
	key->len = len;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return rc;
}

int mp_auth_key_set(struct mp_auth_key *key, const void *k, size_t len)
{
	mp_auth_key_clear(key);
	if (!k || len < MP_AUTH_KEY_MIN || len > MP_AUTH_KEY_MAX)
		return -EINVAL;
	memcpy(key->k, k, len);
	key->len = len;
	return 0;
}

void mp_auth_key_clear(struct mp_auth_key *key)
{
	OPENSSL_cleanse(key, sizeof(*key));
}

int mp_auth_nonce(uint8_t *n, size_t len)
{
	return RAND_bytes(n, (int)len) == 1 ? 0 : -EIO;
}

int mp_auth_proof(const struct mp_auth_key *key, enum mp_auth_role role,
		  const uint8_t ns[MP_AUTH_NONCE],
		  const uint8_t nc[MP_AUTH_NONCE], uint8_t out[MP_AUTH_MAC])
{
	const char *label = labels[role == MP_AUTH_SERVER];
	uint8_t msg[32 + 2 * MP_AUTH_NONCE];
	size_t ll = strlen(label);
	unsigned outlen = 0;

	if (!key->len)
		return -EIO;
	memcpy(msg, label, ll);
	memcpy(msg + ll, ns, MP_AUTH_NONCE);
	memcpy(msg + ll + MP_AUTH_NONCE, nc, MP_AUTH_NONCE);
	if (!HMAC(EVP_sha256(), key->k, (int)key->len, msg,
		  ll + 2 * MP_AUTH_NONCE, out, &outlen) ||
	    outlen != MP_AUTH_MAC)
		return -EIO;
	return 0;
}

int mp_auth_check(const struct mp_auth_key *key, enum mp_auth_role role,
		  const uint8_t ns[MP_AUTH_NONCE],
		  const uint8_t nc[MP_AUTH_NONCE], const void *proof,
		  size_t len)
{
	uint8_t want[MP_AUTH_MAC];
	int rc;

	if (len != MP_AUTH_MAC || !proof)
		return -EACCES;
	rc = mp_auth_proof(key, role, ns, nc, want);
	if (rc == 0 && CRYPTO_memcmp(want, proof, MP_AUTH_MAC) != 0)
		rc = -EACCES;
	OPENSSL_cleanse(want, sizeof(want));
	return rc;
}

int mp_auth_verify(const struct mp_auth_key *key,
		   const uint8_t ns[MP_AUTH_NONCE], const void *data,
		   size_t len, uint8_t out[MP_AUTH_MAC])
{
	const uint8_t *d = data;
	int rc;

	if (len != MP_AUTH_NONCE + MP_AUTH_MAC || !d)
		return -EACCES;
	rc = mp_auth_check(key, MP_AUTH_CLIENT, ns, d, d + MP_AUTH_NONCE,
			   MP_AUTH_MAC);
	if (rc == 0)
		rc = mp_auth_proof(key, MP_AUTH_SERVER, ns, d, out);
	return rc;
}
