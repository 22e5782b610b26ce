/*
 * test_engine_sim_flips.c — the engine simulator with many bit flips that
 * are flipped back (PARLEY_ESIM_FLIP_PM=100: a tenth of the steps): after
 * every repair, everything acknowledged must read back. A flipped bit in
 * the last WAL batch reads like a torn tail; recovery used to zero it and
 * write the next batches over it, so the loss outlived the repair (seeds
 * 1, 2, 3 and 5 here failed that way). PARLEY_ESIM_* as for
 * test_engine_sim.
 */
#include <stdlib.h>

#include "engine_sim.h"

int main(void)
{
	setenv("PARLEY_ESIM_FLIP_PM", "100", 0);
	return esim_main("engine_sim_flips", 1, 5, 150, false);
}
