/*
 * errmap.c — internal error code -> wire code (see errmap.h). One row per
 * PARLEY_E* code; a code without a row is a bug caught by
 * tests/unit/server/parleyd/test_errmap.c.
 *
 * Why the non-identity rows: CORRUPT, FATAL, SEQ (our own precondition)
 * and LOCKED are server-side failures a client cannot act on: IO.
 * INCOMPLETE never leaves the codec: PROTO if it ever did.
 */
#include <errno.h>

#include "errmap.h"
#include "parley_common.h"

static const struct {
	int internal;            /* positive PARLEY_E* */
	struct srv_wire_err w;
} ROWS[] = {
	{PARLEY_EINVAL, {PARLEY_EINVAL, 0}},
	{PARLEY_ECORRUPT, {PARLEY_EIO, 0}},
	{PARLEY_ENOTFOUND, {PARLEY_ENOTFOUND, 0}},
	{PARLEY_ETOOBIG, {PARLEY_ETOOBIG, 0}},
	{PARLEY_EFULL, {PARLEY_EFULL, 50}},
	{PARLEY_ESEQ, {PARLEY_EIO, 0}},
	{PARLEY_ECLOSED, {PARLEY_ECLOSED, 1000}},
	{PARLEY_EIO, {PARLEY_EIO, 0}},
	{PARLEY_EFATAL, {PARLEY_EIO, 0}},
	{PARLEY_EPROTO, {PARLEY_EPROTO, 0}},
	{PARLEY_EAGAIN, {PARLEY_EAGAIN, 100}},
	{PARLEY_EAUTH, {PARLEY_EAUTH, 0}},
	{PARLEY_EPERM, {PARLEY_EPERM, 0}},
	{PARLEY_EEXIST, {PARLEY_EEXIST, 0}},
	{PARLEY_ENOTLEADER, {PARLEY_ENOTLEADER, 50}},
	{PARLEY_ETIMEDOUT, {PARLEY_ETIMEDOUT, 100}},
	{PARLEY_EVERSION, {PARLEY_EVERSION, 0}},
	{PARLEY_ETRIMMED, {PARLEY_ETRIMMED, 0}},
	{PARLEY_EINCOMPLETE, {PARLEY_EPROTO, 0}},
	{PARLEY_ERATE, {PARLEY_ERATE, 1000}},
	{PARLEY_ENOMEM, {PARLEY_ENOMEM, SRV_NOMEM_RETRY_MS}},
	{PARLEY_ELOCKED, {PARLEY_EIO, 0}},
	{PARLEY_EEXPIRED, {PARLEY_EEXPIRED, 0}},
	{PARLEY_EDELETED, {PARLEY_EDELETED, 0}},
	{PARLEY_ELIMIT, {PARLEY_ELIMIT, 0}},
};

struct srv_wire_err srv_wire_err(int err)
{
	if (err == -ENOMEM)
		return (struct srv_wire_err){PARLEY_ENOMEM, SRV_NOMEM_RETRY_MS};
	for (size_t i = 0; i < sizeof ROWS / sizeof *ROWS; i++)
		if (-err == ROWS[i].internal)
			return ROWS[i].w;
	return (struct srv_wire_err){PARLEY_EIO, 0};
}
