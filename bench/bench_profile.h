/*
 * bench_profile.h — chat workload profiles for parley-bench (the workload
 * mode drives one, the planner sizes a deployment for one).
 *
 * File format (examples in bench/profiles/): one `key = value` per
 * line; `#` starts a comment (whole line or after the value); blank lines
 * are ignored. Every key may appear once. Numbers are decimal (1e6, 0.3).
 * A distribution is a list of `value:weight` pairs separated by spaces or
 * commas, e.g. `body_bytes = 20:0.5 80:0.3 400:0.2`; weights need not sum
 * to 1 (they are normalised) but must be > 0.
 *
 *   name                           text, for reports
 *   users                          daily active users (>= 1)
 *   devices_per_user               mean devices per user (>= 1)
 *   online_fraction                devices connected at peak (0..1]
 *   conversations_per_user         active conversations per user (>= 1)
 *   group_share                    fraction of messages sent to groups [0..1]
 *   group_size                     distribution of group sizes (members >= 3)
 *   messages_per_user_day          messages each user sends per day
 *   peak_factor                    peak-hour rate / day-average rate (>= 1)
 *   body_bytes                     distribution of body sizes (1..65536)
 *   read_receipts_per_message      read receipts sent per message received
 *   delivery_receipts_per_message  delivery receipts per message received
 *   typing_per_message             typing notifications per message sent
 *   history_reads_per_user_day     history pages each user reads per day
 *   reconnects_per_device_day      reconnects (network changes) per device
 *   replication_factor             copies of every message (planner; 1..9)
 *   retention_days                 how long history is kept (planner)
 *   target_utilisation             fraction of measured capacity a node may
 *                                  use at peak (planner; headroom = 1 - it)
 *   target_p99_ms                  send-ack p99 the capacity is measured at
 *
 * Unknown keys, duplicates, bad numbers, out-of-range values and lines
 * without `=` are errors naming the file and line. Missing keys take the
 * defaults in bench_profile_defaults() (documented in the examples).
 *
 * Pure apart from bench_profile_load (reads one file). One thread.
 */
#ifndef PARLEY_BENCH_PROFILE_H
#define PARLEY_BENCH_PROFILE_H

#include <stddef.h>

#define BP_MAX_DIST 16
#define BP_MAX_LINE 1024
#define BP_NAME_LEN 64

struct bp_dist {
	unsigned n;
	double value[BP_MAX_DIST];
	double weight[BP_MAX_DIST]; /* normalised to sum 1 after parsing */
};

struct bench_profile {
	char name[BP_NAME_LEN];
	double users;
	double devices_per_user;
	double online_fraction;
	double conversations_per_user;
	double group_share;
	struct bp_dist group_size;
	double messages_per_user_day;
	double peak_factor;
	struct bp_dist body_bytes;
	double read_receipts_per_message;
	double delivery_receipts_per_message;
	double typing_per_message;
	double history_reads_per_user_day;
	double reconnects_per_device_day;
	double replication_factor;
	double retention_days;
	double target_utilisation;
	double target_p99_ms;
};

void bench_profile_defaults(struct bench_profile *p);
/* Parses text (NUL-terminated); `file` names it in errors. 0, or
 * -PARLEY_EINVAL with "FILE:LINE: what" in err. *p starts from the
 * defaults. */
int bench_profile_parse(const char *text, const char *file, struct bench_profile *p,
			char *err, size_t errcap);
int bench_profile_load(const char *path, struct bench_profile *p, char *err, size_t errcap);
double bp_dist_mean(const struct bp_dist *d);
/* The value whose cumulative weight first reaches u in [0,1). */
double bp_dist_pick(const struct bp_dist *d, double u);

#endif /* PARLEY_BENCH_PROFILE_H */
