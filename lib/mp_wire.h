/*
 * mp_wire — the messip wire codec: one frame format for every TCP
 * connection (library <-> manager, client <-> server).  Pure encode and
 * decode: no I/O, no allocation, so it can be fuzzed on its own.
 *
 * Frame = 12-byte header in network byte order, then `len` payload bytes:
 *
 *     0        1        2                4                8               12
 *     +--------+--------+----------------+----------------+----------------+
 *     |version |   op   |     flags      |     reqid      |      len       |
 *     +--------+--------+----------------+----------------+----------------+
 *
 * The payload of each operation is a fixed sequence of fields, the ones
 * named in that operation's row of the field table (mp_wire.c), always in
 * this order:  a, b, c (int32, big-endian), u (uint64, big-endian),
 * name, id, addr (each: one length byte then that many bytes, no NUL; the
 * length must fit the field), then data (all remaining bytes).
 *
 * The decoder answers "need more bytes" (0), "a frame of n bytes" (n > 0),
 * or an error, and never reads past what it was given:
 *   -EPROTO    bad version, unknown operation, or a payload whose fields
 *              do not match the operation (missing, overlong string,
 *              trailing bytes on an operation without data);
 *   -EMSGSIZE  len over the limit given by the caller (checked on the
 *              header alone, before a byte of payload is needed).
 * Decoded strings are NUL-terminated copies in the struct; data points
 * into the input buffer (no copy).
 */
#ifndef MP_WIRE_H
#define MP_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define MP_WIRE_VERSION   1
#define MP_WIRE_HDR_SIZE  12
#define MP_WIRE_NAME_MAX  47   /* channel names */
#define MP_WIRE_ID_MAX    8    /* process ids (MESSIP_MAXLEN_ID) */
#define MP_WIRE_ADDR_MAX  63   /* "host:port", tokens */
/* Largest payload of a non-data operation: every fixed field present. */
#define MP_WIRE_FIXED_MAX (3 * 4 + 8 + 3 + MP_WIRE_NAME_MAX + MP_WIRE_ID_MAX + MP_WIRE_ADDR_MAX)

/*
 * Operations.  "->" is the direction; every request carries a reqid that
 * its answer repeats.  Unless noted, the answer is RESULT with a = 0 or a
 * positive errno value.
 *
 * Library <-> manager:
 *   HELLO        lib->mgr  id=process id, a=pid, u=resume token (0: new)
 *   WELCOME      mgr->lib  a=status, b=registration number, u=resume token,
 *                          addr=manager's host token (decimal u64)
 *   RESULT       both      a=status (0 or errno), b, c, u = values, per
 *                          request (documented where the request is)
 *   CH_CREATE    lib->mgr  name, a=max buffered (0: default), addr=the
 *                          server's "ip:port", u=server's host token,
 *                          data=the channel ticket (MP_AUTH_NONCE bytes);
 *                          RESULT b=channel handle, u=channel generation
 *   CH_DELETE    lib->mgr  name; RESULT b=clients still connected
 *   CH_CONNECT   lib->mgr  name, a=wait ms for LOCATE (-1 forever),
 *                          flags MP_WIRE_F_LOCATE; answered by CH_INFO
 *   CH_INFO      mgr->lib  a=status, b=channel handle, c=server's
 *                          registration number, u=server's host token,
 *                          name, id=server's id, addr=server "ip:port",
 *                          data=the channel ticket (a=0 only)
 *   CH_DISCONNECT lib->mgr b=channel handle
 *   BSEND        lib->mgr  b=channel handle, a=type, c=wait ms while full
 *                          (-1 forever), data; RESULT b=queued before
 *   BDELIVER     mgr->lib  b=channel handle, a=type, c=sender registration,
 *                          u=sequence number, id=sender id, data
 *   BACK         lib->mgr  b=channel handle, u=sequence number delivered
 *                          (acknowledges every record up to it; no answer);
 *                          with flags MP_WIRE_F_EVENT: every EVENT of that
 *                          channel up to event sequence number u
 *   EVENT        mgr->lib  b=channel handle, a=event (MESSIP_MSG_*),
 *                          c=registration it is about, id=its id,
 *                          u=event sequence number (grows per channel)
 *   DEATH_NOTIFY lib->mgr  a=0 off / 1 on
 *   PING         both      (answered by PONG, same reqid)
 *   PONG         both
 *   BYE          lib->mgr  ends the registration cleanly (RESULT, close)
 *
 * Client <-> server (direct):
 *   HELLO        cli->srv  name=channel, id=client id, c=client's
 *                          registration number; answered by WELCOME a=status
 *   SEND         cli->srv  a=type, data; answered by REPLY (same reqid)
 *   REPLY        srv->cli  a=answer, data
 *   CANCEL       cli->srv  reqid = the request withdrawn (no answer)
 *   PING/PONG    as above
 *   BYE          cli->srv  the client disconnects from the channel
 *
 * Authentication (library -> manager, when the manager has a secret;
 * lib/mp_auth.h, doc/protocol.md "Authentication"):
 *   CHALLENGE    mgr->lib  answers the first HELLO: data=the manager's
 *                          nonce (32 bytes); the HELLO is not handled
 *   AUTH         lib->mgr  data=client nonce (32) + client proof (32)
 *   AUTH         mgr->lib  a=status (0 or EACCES), data=server proof (32)
 *                          when a=0; then the library sends HELLO again
 * The same two operations open a direct client -> server link, keyed with
 * the channel ticket (doc/protocol.md, "Direct link authentication"): the
 * server sends CHALLENGE reqid=0 as soon as it accepts, before any HELLO.
 */
enum mp_wire_op {
	MP_OP_HELLO = 1,
	MP_OP_WELCOME,
	MP_OP_RESULT,
	MP_OP_CH_CREATE,
	MP_OP_CH_DELETE,
	MP_OP_CH_CONNECT,
	MP_OP_CH_INFO,
	MP_OP_CH_DISCONNECT,
	MP_OP_BSEND,
	MP_OP_BDELIVER,
	MP_OP_BACK,
	MP_OP_EVENT,
	MP_OP_DEATH_NOTIFY,
	MP_OP_PING,
	MP_OP_PONG,
	MP_OP_BYE,
	MP_OP_SEND,
	MP_OP_REPLY,
	MP_OP_CANCEL,
	MP_OP_CHALLENGE,
	MP_OP_AUTH,
	MP_OP_MAX_ /* one past the last */
};

/* Frame flags. */
#define MP_WIRE_F_LOCATE 0x0001 /* CH_CONNECT: wait for the name */
#define MP_WIRE_F_EVENT  0x0002 /* BACK: acknowledges events, not records */
#define MP_WIRE_F_PIPE   0x0004 /* BSEND: pipelined, its RESULT may be
				   folded into a later one's */

/* Field presence bits, per operation (mp_wire_fields()). */
#define MP_WF_A    0x01
#define MP_WF_B    0x02
#define MP_WF_C    0x04
#define MP_WF_U    0x08
#define MP_WF_NAME 0x10
#define MP_WF_ID   0x20
#define MP_WF_ADDR 0x40
#define MP_WF_DATA 0x80

struct mp_wire_hdr {
	uint8_t  version;
	uint8_t  op;
	uint16_t flags;
	uint32_t reqid;
	uint32_t len;
};

/* A decoded (or to-be-encoded) frame.  Fields the op does not carry are
 * ignored by encode and zeroed by decode. */
struct mp_wire_msg {
	uint8_t  op;
	uint16_t flags;
	uint32_t reqid;
	int32_t  a, b, c;
	uint64_t u;
	char     name[MP_WIRE_NAME_MAX + 1];
	char     id[MP_WIRE_ID_MAX + 1];
	char     addr[MP_WIRE_ADDR_MAX + 1];
	const void *data;     /* decode: points into the input */
	uint32_t datalen;
};

/* Field presence bits of op, or 0 for an unknown op. */
unsigned mp_wire_fields(unsigned op);

/* Name of op for logs ("BSEND"), "?" if unknown. */
const char *mp_wire_op_name(unsigned op);

/*
 * Decode the 12-byte header at buf.  Returns 0 (avail < 12: need more),
 * MP_WIRE_HDR_SIZE, -EPROTO (version or op), -EMSGSIZE (len over
 * max_data + MP_WIRE_FIXED_MAX for data ops, over MP_WIRE_FIXED_MAX for
 * the others).
 */
int mp_wire_decode_hdr(const void *buf, size_t avail, uint32_t max_data,
		       struct mp_wire_hdr *h);

/*
 * Decode one whole frame from buf[0..avail).  Returns the frame's size
 * (> 0), 0 when more bytes are needed, or -EPROTO / -EMSGSIZE as above
 * (also -EMSGSIZE when the data field alone exceeds max_data).
 */
int mp_wire_decode(const void *buf, size_t avail, uint32_t max_data,
		   struct mp_wire_msg *m);

/* Bytes the frame for m takes, data included; 0 if m->op is unknown. */
size_t mp_wire_size(const struct mp_wire_msg *m);

/*
 * Encode header and fixed fields of m (everything but the data bytes,
 * though the header's len counts m->datalen) into buf.  Returns the bytes
 * written (send m->data right after them, e.g. with writev), -EINVAL
 * (unknown op, string longer than its field), -ENOBUFS (bufsize too small;
 * MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX always suffices).
 */
int mp_wire_encode_head(const struct mp_wire_msg *m, void *buf, size_t bufsize);

/* Encode the whole frame, data included.  Bytes written, -EINVAL, -ENOBUFS. */
int mp_wire_encode(const struct mp_wire_msg *m, void *buf, size_t bufsize);

#endif
