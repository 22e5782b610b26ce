/*
 * test_sim_random.c — the bounded random tier (make test): seeds 1..N, each
 * a few thousand ticks of every fault, then liveness. PARLEY_SIM_SEED=<n>
 * replays one seed; PARLEY_SIM_SEEDS / PARLEY_SIM_UNITS override the size.
 */
#include "sim_seeds.h"

int main(void)
{
	return sim_seeds_main("sim_random", 1, 800, 40000);
}
