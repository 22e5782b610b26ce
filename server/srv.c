/*
 * srv.c — the server-wide context's shared constants (srv.h). Kept apart
 * from loop.c so that conn.c links without the event loop (its unit test
 * runs it against a fake loop).
 */
#include "srv.h"

const double srv_ack_lat_bounds_s[10] = {0.0001, 0.00025, 0.0005, 0.001,
					 0.0025, 0.005, 0.01, 0.025,
					 0.05, 0.1};
