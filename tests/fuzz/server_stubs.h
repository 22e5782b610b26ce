/*
 * server_stubs.h — definitions of the few parleyd symbols that the
 * server/ codec files a fuzz target links (proxy.c, tail_relay.c) reference
 * outside their decoders: the out-of-memory exit, the metrics text writer
 * and the loop's message post. No decoder reaches them; the ones that would
 * mean a decoder touched a live node abort, so the fuzzer reports it.
 * Include in exactly one translation unit of a binary (the target or its
 * corpus generator).
 */
#ifndef PARLEY_FUZZ_SERVER_STUBS_H
#define PARLEY_FUZZ_SERVER_STUBS_H

#include <stdlib.h>

#include "srv.h"

void srv_oom(const char *what)
{
	(void)what;
	abort();
}

void srv_text_put(struct srv_text *o, const char *fmt, ...)
{
	(void)o;
	(void)fmt;
}

struct loop;
struct lmsg;
void loop_post(struct loop *lp, struct lmsg *m);
void loop_post(struct loop *lp, struct lmsg *m)
{
	(void)lp;
	(void)m;
	abort();
}

#endif /* PARLEY_FUZZ_SERVER_STUBS_H */
