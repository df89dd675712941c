/*
 * mp_prove — the prover's side of the challenge-response of mp_auth on a
 * framed link: the one implementation used by the library on both of the
 * links it opens, to the manager (key = the shared secret, mp_cnx.c) and
 * to a channel's server (key = the channel ticket, mp_cli.c).
 *
 * The exchange (doc/protocol.md, "Authentication" and "Direct link
 * authentication"): the verifier sends CHALLENGE data=ns; the prover
 * answers AUTH data=nc || proof(client); the verifier answers AUTH a=0
 * data=proof(server), or a=EACCES and closes.  The prover checks the
 * verifier's proof, so it knows it reached the holder of the key.
 *
 * State per link attempt: reset it (mp_prove_reset) whenever a new link
 * is opened; ns and nc are then fresh, so a recorded exchange never
 * verifies again.
 */
#ifndef MP_PROVE_H
#define MP_PROVE_H

#include <stdint.h>

#include "mp_auth.h"
#include "mp_link.h"
#include "mp_wire.h"

enum mp_prove_stage {
	MP_PROVE_WAIT = 0, /* waiting for CHALLENGE */
	MP_PROVE_SENT = 1, /* AUTH sent, waiting for the verifier's */
	MP_PROVE_DONE = 2, /* the verifier proved the key too */
};

struct mp_prove {
	enum mp_prove_stage stage;
	uint32_t auth_reqid; /* of our AUTH */
	uint8_t ns[MP_AUTH_NONCE], nc[MP_AUTH_NONCE];
};

/* Back to MP_PROVE_WAIT (a new link). */
void mp_prove_reset(struct mp_prove *p);

/*
 * One frame m on link l, with key:
 *   - CHALLENGE whose reqid is challenge_reqid, in MP_PROVE_WAIT: our AUTH
 *     (reqid auth_reqid, nonce fresh from mp_auth_nonce) is sent before
 *     deadline; returns 1 (stage MP_PROVE_SENT);
 *   - AUTH answering ours, in MP_PROVE_SENT: checked; returns 1 (stage
 *     MP_PROVE_DONE: the caller sends its HELLO now);
 *   - any other operation: returns 0 (not ours; untouched).
 * Errors: -EACCES (no key, the verifier refused our proof, or its proof
 * is wrong: logged MESSIP-AUTH naming `who`); -EPROTO (out of sequence,
 * wrong reqid or length); a send error of mp_link_send (-EPIPE,
 * -ETIMEDOUT).  On any error the caller closes the link.
 */
int mp_prove_step(struct mp_prove *p, const struct mp_auth_key *key,
		  struct mp_link *l, const struct mp_wire_msg *m,
		  uint32_t challenge_reqid, uint32_t auth_reqid,
		  int64_t deadline, const char *who);

#endif
