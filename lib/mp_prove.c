/*
 * mp_prove — prover's side of the mp_auth exchange on a link (see
 * mp_prove.h).
 *
 * Invariant: stage only moves forward on one link (WAIT -> SENT -> DONE);
 * a frame that does not fit the current stage is an error, never
 * skipped, so a verifier cannot make us answer two challenges or accept
 * a proof for another nonce.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "messip.h"
#include "mp_log.h"
#include "mp_prove.h"

void mp_prove_reset(struct mp_prove *p)
{
	memset(p, 0, sizeof(*p));
}

static int answer_challenge(struct mp_prove *p, const struct mp_auth_key *key,
			    struct mp_link *l, const struct mp_wire_msg *m,
			    uint32_t auth_reqid, int64_t deadline)
{
	uint8_t proof[MP_AUTH_MAC];
	struct iovec iov[2];
	struct mp_wire_msg r;
	int rc;

	memcpy(p->ns, m->data, MP_AUTH_NONCE);
	if (mp_auth_nonce(p->nc, MP_AUTH_NONCE) < 0 ||
	    mp_auth_proof(key, MP_AUTH_CLIENT, p->ns, p->nc, proof) < 0)
		return -EACCES;
	memset(&r, 0, sizeof(r));
	r.op = MP_OP_AUTH;
	r.reqid = p->auth_reqid = auth_reqid;
	iov[0].iov_base = p->nc;
	iov[0].iov_len = MP_AUTH_NONCE;
	iov[1].iov_base = proof;
	iov[1].iov_len = MP_AUTH_MAC;
	r.datalen = MP_AUTH_NONCE + MP_AUTH_MAC;
	rc = mp_link_send(l, &r, iov, 2, deadline);
	if (rc < 0)
		return rc;
	p->stage = MP_PROVE_SENT;
	return 1;
}

int mp_prove_step(struct mp_prove *p, const struct mp_auth_key *key,
		  struct mp_link *l, const struct mp_wire_msg *m,
		  uint32_t challenge_reqid, uint32_t auth_reqid,
		  int64_t deadline, const char *who)
{
	if (m->op == MP_OP_CHALLENGE) {
		if (!key->len) {
			mp_log(MESSIP_LOG_ERROR, "MESSIP-AUTH",
			       "%s requires a key and none is set", who);
			return -EACCES;
		}
		if (p->stage != MP_PROVE_WAIT || m->reqid != challenge_reqid ||
		    m->datalen != MP_AUTH_NONCE)
			return -EPROTO;
		return answer_challenge(p, key, l, m, auth_reqid, deadline);
	}
	if (m->op != MP_OP_AUTH)
		return 0;
	if (p->stage != MP_PROVE_SENT || m->reqid != p->auth_reqid)
		return -EPROTO;
	if (m->a != 0 || mp_auth_check(key, MP_AUTH_SERVER, p->ns, p->nc,
				       m->data, m->datalen) < 0) {
		mp_log(MESSIP_LOG_ERROR, "MESSIP-AUTH", "%s %s", who,
		       m->a ? "refused our proof (wrong key?)"
			    : "sent a wrong proof (wrong key, or not who it "
			      "claims to be)");
		return -EACCES;
	}
	p->stage = MP_PROVE_DONE;
	return 1;
}
