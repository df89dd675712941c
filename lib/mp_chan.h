/*
 * mp_chan — channel handles: create, delete, connect, locate, disconnect,
 * and the allocation that holds a messip_channel_t with its private half.
 *
 * A client connection asks the manager for the channel (CH_CONNECT ->
 * CH_INFO with the server's address and the channel ticket); its own TCP
 * link to the server, the ticket's proof and the HELLO there, wait for
 * its first send or ping (mp_cli.h), so that a
 * look-up is one manager round trip.  One connection holds one client
 * handle per channel name: connecting again returns it with a reference
 * more, and only the last disconnect tells the manager and closes the
 * link.
 */
#ifndef MP_CHAN_H
#define MP_CHAN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "mp_priv.h"
#include "mp_wire.h"

/* The private half of a valid handle, else NULL. */
struct messip_channel_priv *mp_chan_get(messip_channel_t *ch);

/* Close a handle's descriptors and free it (no manager request).  A
 * client handle says BYE to its server first, without waiting. */
void mp_chan_destroy(struct messip_channel_priv *c);

/*
 * A client handle's channel handle for a request to the manager (BSEND),
 * valid for the current registration.  After a new registration (manager
 * restarted) the client re-connects its channels by name; a channel whose
 * server had not created it again yet is looked for (CH_CONNECT LOCATE)
 * until MP_RELOCATE_MS after that, up to deadline: found -> its handle;
 * the deadline first -> -ETIMEDOUT (still looked for by the next call);
 * MP_RELOCATE_MS over -> -ESRCH for good.  Also -ESHUTDOWN, -ENOMEM,
 * -EPROTO.
 */
int mp_chan_cli_handle(struct messip_channel_priv *c, int64_t deadline);

/* How long after a new registration a client keeps looking for its
 * channel's server (the manager's default resume grace period). */
#define MP_RELOCATE_MS 5000

/*
 * The channel ticket (doc/protocol.md, "Direct link authentication").
 * mp_chan_ticket_iov: point *iov at a server's ticket, for CH_CREATE;
 * returns its length.  mp_chan_take_ticket: keep the ticket a CH_INFO
 * answer carries (mp_cnx_rpc), for the client's direct link: 0, or
 * -EPROTO when it carries none of the right size.
 */
size_t mp_chan_ticket_iov(struct messip_channel_priv *c, struct iovec *iov);
int mp_chan_take_ticket(struct messip_channel_priv *c,
			const struct mp_wire_msg *ans);

/* Check a channel name: 0, -EINVAL (NULL or empty), -ENAMETOOLONG. */
int mp_chan_check_name(const char *name);

#endif
