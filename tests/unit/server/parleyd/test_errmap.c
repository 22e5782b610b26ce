/*
 * test_errmap.c — unit tests for server/errmap.c.
 *
 * What is proven: every PARLEY_E* code (walked through the PARLEY_ERRORS
 * X-macro, so a new code without a row fails here) maps to a code that
 * docs/PROTOCOL.md section 8 lists; codes a client can act on map to
 * themselves; server-side failures map to IO; -errno values never leak
 * (-ENOMEM is NOMEM, the rest IO); retryable codes carry a retry_after.
 */
#include <criterion/criterion.h>
#include <errno.h>

#include "errmap.h"
#include "parley_common.h"

/* PROTOCOL.md section 8 */
static const uint32_t SPEC[] = {1000, 1002, 1003, 1004, 1006, 1007, 1009,
				1010, 1011, 1012, 1013, 1014, 1015, 1016,
				1017, 1019, 1020, 1035, 1036, 1045};

static bool in_spec(uint32_t c)
{
	for (size_t i = 0; i < sizeof SPEC / sizeof *SPEC; i++)
		if (SPEC[i] == c)
			return true;
	return false;
}

#define CHECK_ONE(name, val, text)                                             \
	do {                                                                   \
		struct srv_wire_err w = srv_wire_err(-(name));                 \
		cr_assert(in_spec(w.code), #name " -> %u not in the spec",     \
			  w.code);                                             \
		if (in_spec(val))                                              \
			cr_assert_eq(w.code, (uint32_t)(val), #name            \
				     " is a wire code: must map to itself");  \
		n++;                                                           \
	} while (0);

Test(errmap, every_code_maps_into_the_spec)
{
	int n = 0;
	PARLEY_ERRORS(CHECK_ONE)
	cr_assert(n >= 22);
	cr_assert_eq(srv_wire_err(-PARLEY_ECORRUPT).code, PARLEY_EIO);
	cr_assert_eq(srv_wire_err(-PARLEY_EFATAL).code, PARLEY_EIO);
	cr_assert_eq(srv_wire_err(-PARLEY_ESEQ).code, PARLEY_EIO);
	cr_assert_eq(srv_wire_err(-PARLEY_ELOCKED).code, PARLEY_EIO);
	cr_assert_eq(srv_wire_err(-PARLEY_EINCOMPLETE).code, PARLEY_EPROTO);
}

Test(errmap, errno_and_unknown_never_leak)
{
	cr_assert_eq(srv_wire_err(-ENOMEM).code, PARLEY_ENOMEM);
	cr_assert_eq(srv_wire_err(-EIO).code, PARLEY_EIO);
	cr_assert_eq(srv_wire_err(-ENOSPC).code, PARLEY_EIO);
	cr_assert_eq(srv_wire_err(-EBADF).code, PARLEY_EIO);
	cr_assert_eq(srv_wire_err(-1999).code, PARLEY_EIO);
	cr_assert_eq(srv_wire_err(0).code, PARLEY_EIO);
	cr_assert_eq(srv_wire_err(5).code, PARLEY_EIO);
}

Test(errmap, retryable_codes_say_when)
{
	cr_assert(srv_wire_err(-PARLEY_EFULL).retry_after_ms > 0);
	cr_assert(srv_wire_err(-PARLEY_EAGAIN).retry_after_ms > 0);
	cr_assert(srv_wire_err(-PARLEY_ERATE).retry_after_ms > 0);
	cr_assert(srv_wire_err(-PARLEY_ENOMEM).retry_after_ms > 0);
	cr_assert(srv_wire_err(-PARLEY_ENOTLEADER).retry_after_ms > 0);
	cr_assert_eq(srv_wire_err(-PARLEY_EINVAL).retry_after_ms, 0);
	cr_assert_eq(srv_wire_err(-PARLEY_EPERM).retry_after_ms, 0);
}
