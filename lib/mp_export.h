/*
 * mp_export — symbol visibility for libmessip.
 *
 * The library is compiled with -fvisibility=hidden so that every internal
 * symbol (mp_*, and the shm/ and wire codec convenience libraries linked
 * into it) stays private; each public messip_* definition is marked
 * MESSIP_EXPORT.  The macro lives here, not in messip.h, so that nothing
 * but the prototypes leaks into user code.
 */
#ifndef MP_EXPORT_H
#define MP_EXPORT_H

#define MESSIP_EXPORT __attribute__((visibility("default")))

#endif
