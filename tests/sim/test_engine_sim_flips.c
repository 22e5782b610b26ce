/*
 * test_engine_sim_flips.c — the engine simulator with many bit flips that
 * are flipped back (PARLEY_ESIM_FLIP_PM=100: a tenth of the steps): after
 * every repair, everything acknowledged must read back. A flipped bit in
 * the last WAL batch reads like a torn tail; recovery used to zero it and
 * write the next batches over it, so the loss outlived the repair (seeds
 * 1, 3, 4 and 8 here fail that way on that code, at steps 22, 49, 84
 * and 82).
 * PARLEY_ESIM_* as for test_engine_sim.
 */
#include <stdlib.h>

#include "engine_sim.h"

int main(void)
{
	setenv("PARLEY_ESIM_FLIP_PM", "100", 0);
	return esim_main("engine_sim_flips", 1, 8, 100, false);
}
