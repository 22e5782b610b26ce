/*
 * test_engine_sim.c — the engine simulator's bounded tier (make test):
 * five seeds of 250 steps each (about 11 s on an idle machine) (engine_sim.h).
 * PARLEY_ESIM_SEED=<n> replays one seed; PARLEY_ESIM_SEEDS /
 * PARLEY_ESIM_STEPS override the size.
 */
#include "engine_sim.h"

int main(void)
{
	return esim_main("engine_sim", 1, 5, 250, false);
}
