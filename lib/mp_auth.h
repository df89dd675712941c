/*
 * mp_auth — the shared-secret challenge-response of messip, used by the
 * library (to prove itself to a manager, and to check the manager's
 * proof) and by the manager (messip-mgr links this module, as it links
 * the wire codec: both ends must compute the very same proofs).
 *
 * The secret is the content of a file that only its owner can read (mode
 * without any group or other bit, owned by the reading user), trailing
 * white space removed, MP_AUTH_KEY_MIN to MP_AUTH_KEY_MAX bytes.
 *
 * The exchange (doc/protocol.md, "Authentication"): the verifier sends a
 * fresh random nonce ns; the prover answers with its own fresh nonce nc
 * and HMAC-SHA256(key, "messip-auth-1 client" || ns || nc); the verifier
 * answers with HMAC-SHA256(key, "messip-auth-1 server" || ns || nc), so
 * each side proves the key to the other.  The labels differ by role, so
 * a proof can never be reflected back as the other side's; ns is fresh
 * for every connection, so a recorded proof never verifies again.
 *
 * Cryptography is OpenSSL's libcrypto (HMAC, RAND_bytes, CRYPTO_memcmp);
 * nothing here is home-made but the framing of the MAC input.
 */
#ifndef MP_AUTH_H
#define MP_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define MP_AUTH_NONCE	32
#define MP_AUTH_MAC	32
#define MP_AUTH_KEY_MIN 16
#define MP_AUTH_KEY_MAX 256

enum mp_auth_role {
	MP_AUTH_CLIENT = 0, /* the side that connected */
	MP_AUTH_SERVER = 1, /* the side that sent the challenge */
};

struct mp_auth_key {
	size_t len; /* 0: no secret configured */
	uint8_t k[MP_AUTH_KEY_MAX];
};

/*
 * Read the secret from path into *key.  Refuses, with a message in err
 * (always NUL-terminated on failure) that says how to fix it:
 *   -ENOENT / -EACCES / other -errno   cannot open or read it;
 *   -EPERM    group or other permission bits set (chmod 600), or owned
 *             by another user than the reader;
 *   -EINVAL   not a regular file, or shorter than MP_AUTH_KEY_MIN or
 *             longer than MP_AUTH_KEY_MAX bytes (after trailing white
 *             space is removed).
 * The file is opened with O_NOFOLLOW and checked with fstat (no race
 * between the check and the read).
 */
int mp_auth_key_load(const char *path, struct mp_auth_key *key, char *err,
		     size_t errlen);

/*
 * Use len raw bytes as the key (a channel ticket, drawn with
 * mp_auth_nonce by the channel's server): 0, or -EINVAL when len is
 * outside MP_AUTH_KEY_MIN..MP_AUTH_KEY_MAX (*key is then cleared).
 */
int mp_auth_key_set(struct mp_auth_key *key, const void *k, size_t len);

/*
 * Open path for reading when it is a private file: a regular file (not
 * followed through a symbolic link), owned by the effective user, without
 * any group or other permission bit.  The descriptor (checked with fstat
 * after open, so there is no race between check and use), or the errors
 * of mp_auth_key_load() with a message in err that starts with what (e.g.
 * "secret file") and says how to fix it.  Also used for the TLS private
 * key (mp_tls).
 */
int mp_auth_open_private(const char *path, const char *what, char *err,
			 size_t errlen);

/* Wipe *key (OPENSSL_cleanse). */
void mp_auth_key_clear(struct mp_auth_key *key);

/* n fresh random bytes from the system's CSPRNG (RAND_bytes): 0 or -EIO. */
int mp_auth_nonce(uint8_t *n, size_t len);

/* The proof of role over (ns, nc) into out: 0, or -EIO (libcrypto). */
int mp_auth_proof(const struct mp_auth_key *key, enum mp_auth_role role,
		  const uint8_t ns[MP_AUTH_NONCE],
		  const uint8_t nc[MP_AUTH_NONCE], uint8_t out[MP_AUTH_MAC]);

/*
 * Check a received proof of role over (ns, nc) in constant time
 * (CRYPTO_memcmp).  0 when it matches; -EACCES when it does not, or when
 * len is not MP_AUTH_MAC; -EIO on a libcrypto failure.
 */
int mp_auth_check(const struct mp_auth_key *key, enum mp_auth_role role,
		  const uint8_t ns[MP_AUTH_NONCE],
		  const uint8_t nc[MP_AUTH_NONCE], const void *proof,
		  size_t len);

/*
 * The verifier's step: data is what the prover's AUTH carries (its nonce
 * nc then its proof over (ns, nc), MP_AUTH_NONCE + MP_AUTH_MAC bytes).
 * When it verifies, our own proof over (ns, nc) is written into out.
 * 0; -EACCES when len is wrong or the proof does not verify; -EIO on a
 * libcrypto failure.  Used by the manager and by a channel's server, so
 * both check AUTH the same way.
 */
int mp_auth_verify(const struct mp_auth_key *key,
		   const uint8_t ns[MP_AUTH_NONCE], const void *data,
		   size_t len, uint8_t out[MP_AUTH_MAC]);

#endif
