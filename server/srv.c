/*
 * srv.c — the server-wide context's shared parts (srv.h): the SEND ->
 * SEND_ACK histogram bounds and the text of the per-stage histograms.
 * Kept apart from loop.c so that conn.c links without the event loop (its
 * unit test runs it against a fake loop).
 *
 * Threads: srv_stage_metrics from the admin thread (it only reads
 * relaxed atomics).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "chat.h"
#include "srv.h"

void srv_oom(const char *what)
{
	PLOG_E("server", "out of memory where no answer is possible: "
	       "aborting (restart recovers from the log)", "what=\"%s\"",
	       what);
	abort();
}

const double srv_ack_lat_bounds_s[10] = {0.0001, 0.00025, 0.0005, 0.001,
					 0.0025, 0.005, 0.01, 0.025,
					 0.05, 0.1};

void srv_text_put(struct srv_text *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(o->n < o->cap ? o->b + o->n : NULL,
			  o->n < o->cap ? o->cap - o->n : 0, fmt, ap);
	va_end(ap);
	if (k > 0)
		o->n += (size_t)k;
}

/* Buckets as parley_engine_stage_seconds prints them (admin.c): those
 * under 1 us fold into the first shown, those over ~17 s into +Inf. */
#define LE_FIRST 10u /* 2^10 ns ~ 1 us */
#define LE_LAST 34u  /* 2^34 ns ~ 17 s */

static void family_head(struct srv_text *o, const char *h, const char *help)
{
	srv_text_put(o, "# HELP %s %s\n# TYPE %s histogram\n", h, help, h);
}

static void family_stage(struct srv_text *o, const char *h, const char *name,
			 const struct pe_stage_hist *st)
{
	uint64_t cum = 0;
	for (unsigned b = 0; b < PE_HIST_BUCKETS; b++) {
		cum += st->buckets[b];
		if (b < LE_FIRST || b > LE_LAST)
			continue;
		srv_text_put(o, "%s_bucket{stage=\"%s\",le=\"%.9g\"} %" PRIu64 "\n", h,
		    name, (double)pe_hist_bucket_le_ns(b) / 1e9, cum);
	}
	srv_text_put(o, "%s_bucket{stage=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", h, name,
	    st->count);
	srv_text_put(o, "%s_sum{stage=\"%s\"} %.9f\n%s_count{stage=\"%s\"} %" PRIu64 "\n",
	    h, name, (double)st->sum_ns / 1e9, h, name, st->count);
}

size_t srv_stage_metrics(struct srv *s, char *buf, size_t cap)
{
	static const char *const send_names[SRV_SEND_NSTAGES] = {
		"recv", "submit", "durable", "reply"};
	static const char *const deliver_names[SRV_DELIVER_NSTAGES] = {
		"notify", "pending", "resolve", "early"};
	struct srv_text o = {buf, cap, 0};
	struct pe_stage_hist st;
	const char *h = "parley_send_stage_seconds";
	family_head(&o, h, "Time a SEND spends per stage: recv (its last bytes "
		    "in -> decoded), submit (-> append issued), durable (-> "
		    "fdatasync'd), reply (-> SEND_ACK queued).");
	for (unsigned k = 0; k < SRV_SEND_NSTAGES; k++) {
		srv_hist_read(&s->stages.send[k], &st);
		family_stage(&o, h, send_names[k], &st);
	}
	h = "parley_delivery_stage_seconds";
	family_head(&o, h, "Time a message's delivery spends per stage: fanout "
		    "(durable -> inbox appends issued), inbox (-> durable), "
		    "notify (subscription -> the connection's loop), pending "
		    "(waiting for the event window), resolve (-> EVENT queued), "
		    "early (message durable -> early EVENT queued).");
	if (s->chat) {
		struct pe_stage_hist cs[CHAT_STAGE_COUNT];
		chat_stage_stats(s->chat, cs);
		for (unsigned k = 0; k < CHAT_STAGE_COUNT; k++)
			family_stage(&o, h, chat_stage_name((enum chat_stage)k),
				     &cs[k]);
	}
	for (unsigned k = 0; k < SRV_DELIVER_NSTAGES; k++) {
		srv_hist_read(&s->stages.deliver[k], &st);
		family_stage(&o, h, deliver_names[k], &st);
	}
	return o.n;
}
