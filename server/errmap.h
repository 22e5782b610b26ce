/*
 * errmap.h — the one table from parleyd's internal error codes to the
 * wire codes of docs/PROTOCOL.md section 8 (private to server/).
 *
 * Internal codes are 0 / negative: -PARLEY_E* (common/parley_common.h)
 * or -errno. Every one maps to a code the spec lists, with the
 * retry_after_ms an ERROR for it carries by default; nothing outside the
 * table reaches the wire (unknown codes and -errno are IO, -ENOMEM is
 * NOMEM). Pure; any thread.
 */
#ifndef PARLEYD_ERRMAP_H
#define PARLEYD_ERRMAP_H

#include <stdint.h>

/* retry_after_ms of every ERROR NOMEM that refuses a request (the
 * connection lives): one value on every path (docs/SERVER.md, "Errors
 * and allocation failure", class 1); conn.c puts it on any non-fatal
 * NOMEM whatever its caller passed, so no path can drift. */
#define SRV_NOMEM_RETRY_MS 100u
/* retry_after_ms of the fatal ERROR NOMEM that closes a connection whose
 * partial inbound frame cannot be kept (class 2): reconnect later. */
#define SRV_NOMEM_CLOSE_RETRY_MS 1000u

struct srv_wire_err {
	uint32_t code;           /* PARLEY_E* as listed in PROTOCOL.md */
	uint32_t retry_after_ms; /* default for ERROR.retry_after_ms */
};

struct srv_wire_err srv_wire_err(int err);

#endif /* PARLEYD_ERRMAP_H */
