/*
 * test_engine_sim_replay.c — a seed replays bit for bit: each seed of the
 * engine simulator runs twice in this process and the two runs' trace
 * hashes (every result the simulator observed, and every stored file's
 * bytes at the end) must be equal. The engine runs stepped (no threads of
 * its own; parley_engine_hooks.h), so nothing but the seed decides a run.
 * PARLEY_ESIM_SEED / _SEEDS / _STEPS as for test_engine_sim.
 */
#include "engine_sim.h"

int main(void)
{
	return esim_main("engine_sim_replay", 1, 2, 120, true);
}
