/*
 * test_engine_sim_long.c — the engine simulator's long tier (make
 * test-long, label "long"): many more seeds, longer runs, starting where
 * the bounded tier stops.
 */
#include "engine_sim.h"

int main(void)
{
	return esim_main("engine_sim_long", 100000, 400, 1000, false);
}
