/*
 * admin.c — the admin HTTP thread and the Prometheus text of /metrics.
 * See admin.h for the contract, the banner below for the connection
 * state machine.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "chat.h"
#include "live.h"
#include "parley_engine_hooks.h"
#include "peer_node.h"
#include "proxy.h"
#include "tail_relay.h"
#include "presence.h"
#include "ratelimit.h"
#include "srv.h"

struct aconn;

struct admin {
	struct srv *s;
	int fd;                  /* listener (non-blocking) */
	struct pollfd *pfd;      /* [max_conns + 1], the thread's poll set */
	uint32_t *pidx;          /* [max_conns + 1] */
	atomic_bool stop;
	atomic_int ready;
	pthread_t thr;
	bool compact;            /* POST /admin/compact allowed */
	bool digest;             /* GET /debug/digest allowed */
	/* admin thread only */
	struct aconn *c;         /* max_conns slots */
	uint32_t max_conns, nconns;
	uint64_t timeout_ns;
	/* counters for /metrics (admin thread writes, relaxed) */
	_Atomic uint64_t requests, timeouts, evicted, rejected;
};

/* ---- metrics text ---------------------------------------------------------- */

static void metric(struct srv_text *o, const char *name, const char *type,
		   const char *help, uint64_t v)
{
	srv_text_put(o, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name,
	    type, name, v);
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* The client-facing counters of struct srv_counters, in /metrics order. */
static const struct ctr_metric {
	const char *name, *type;
	size_t off; /* of an _Atomic uint64_t in struct srv_counters */
	const char *help;
} ctr_metrics[] = {
#define CTR(name, type, field, help) {name, type, offsetof(struct srv_counters, field), help}
	CTR("parley_connections_open", "gauge", conns_open,
	    "Client connections open now."),
	CTR("parley_connections_accepted_total", "counter", conns_accepted,
	    "Client connections accepted."),
	CTR("parley_connections_closed_total", "counter", conns_closed,
	    "Client connections closed."),
	CTR("parley_connections_tls_total", "counter", conns_tls,
	    "Client connections accepted on the TLS listener."),
	CTR("parley_frames_received_total", "counter", frames_in,
	    "Frames received from clients."),
	CTR("parley_frames_sent_total", "counter", frames_out,
	    "Frames queued to clients."),
	CTR("parley_bytes_received_total", "counter", bytes_in,
	    "Bytes received on client sockets (TLS: ciphertext)."),
	CTR("parley_bytes_sent_total", "counter", bytes_out,
	    "Bytes sent on client sockets (TLS: ciphertext)."),
	CTR("parley_sends_total", "counter", sends,
	    "SEND requests handed to the engine."),
	CTR("parley_appends_acked_total", "counter", appends,
	    "SENDs acknowledged as durable (SEND_ACK)."),
	CTR("parley_send_duplicates_total", "counter", duplicates,
	    "SENDs answered as duplicates of an earlier client_msg_id."),
	CTR("parley_edits_total", "counter", edits,
	    "EDITs acknowledged as durable (EDIT_ACK)."),
	CTR("parley_deletes_total", "counter", deletes,
	    "DELETEs for everyone acknowledged as durable (DELETE_ACK)."),
	CTR("parley_events_delivered_total", "counter", events_out,
	    "EVENT pushes queued to devices."),
	CTR("parley_history_requests_total", "counter", history,
	    "HISTORY requests."),
	CTR("parley_syncs_total", "counter", syncs,
	    "SYNC requests."),
	CTR("parley_read_markers_total", "counter", read_markers,
	    "READ_MARKER requests."),
	CTR("parley_errors_sent_total", "counter", errors_sent,
	    "ERROR frames sent to clients."),
	CTR("parley_protocol_errors_total", "counter", proto_errors,
	    "Malformed frames or payloads received."),
	CTR("parley_auth_failures_total", "counter", auth_failures,
	    "Rejected tokens."),
	CTR("parley_slow_consumers_total", "counter", slow_consumers,
	    "Connections cut off as slow consumers."),
	CTR("parley_idle_closes_total", "counter", idle_closes,
	    "Connections closed for idleness."),
	CTR("parley_handshake_timeouts_total", "counter", handshake_timeouts,
	    "Connections closed before finishing TLS/HELLO/AUTH in time."),
#undef CTR
};

/*
 * Counters and gauges read from a field (uint64_t or uint32_t) of a
 * component's stats struct, in /metrics order: one table per component
 * instead of one call per series.
 */
struct field_metric {
	const char *name, *type;
	size_t off, size; /* of the field in its struct */
	const char *help;
};
#define FM(st, name, type, field, help)                                        \
	{name, type, offsetof(struct st, field),                               \
	 sizeof(((struct st *)0)->field), help}

static void metric_fields(struct srv_text *o, const struct field_metric *t,
			  size_t n, const void *st)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v = 0;
		PARLEY_ASSERT(t[i].size == 4 || t[i].size == 8);
		if (t[i].size == 4) {
			uint32_t w;
			memcpy(&w, (const char *)st + t[i].off, sizeof w);
			v = w;
		} else {
			memcpy(&v, (const char *)st + t[i].off, sizeof v);
		}
		metric(o, t[i].name, t[i].type, t[i].help, v);
	}
}
#define METRIC_FIELDS(o, table, st)                                            \
	metric_fields(o, table, sizeof table / sizeof table[0], st)

static const struct field_metric ratelimit_metrics[] = {
	FM(ratelimit_stats, "parley_rate_limit_users", "gauge", users,
	   "Users in the per-user rate limit table."),
	FM(ratelimit_stats, "parley_rate_limit_evictions_total", "counter",
	   evictions, "Users evicted from the full rate limit table (LRU)."),
	FM(ratelimit_stats, "parley_rate_limit_lossy_evictions_total",
	   "counter", lossy_evictions,
	   "Evicted users whose buckets were not full (table too small)."),
};

static const struct field_metric presence_metrics[] = {
#define P(name, type, field, help) FM(presence_stats, name, type, field, help)
	P("parley_presence_online_users", "gauge", online,
	  "Users with at least one live session on this node."),
	P("parley_presence_entries", "gauge", entries,
	  "Presence registry entries (online, subscribed or typing)."),
	P("parley_presence_subscriptions", "gauge", subscriptions,
	  "Connection-to-user presence subscriptions."),
	P("parley_typing_received_total", "counter", typing_in,
	  "TYPING notifications accepted."),
	P("parley_typing_pushes_total", "counter", typing_pushes,
	  "TYPING_PUSH frames queued to connections."),
	P("parley_presence_pushes_total", "counter", presence_pushes,
	  "PRESENCE pushes queued to connections."),
	P("parley_presence_pushes_dropped_total", "counter", pushes_dropped,
	  "Typing/presence pushes dropped: presence_push_queue_max "
	  "reached or no memory."),
	P("parley_last_seen_writes_total", "counter", last_seen_writes,
	  "Durable last_seen records written."),
	P("parley_last_seen_write_errors_total", "counter",
	  last_seen_write_errors, "last_seen writes that failed (retried)."),
	P("parley_presence_loads_total", "counter", loads,
	  "Stored last_seen / settings reads for subscriptions."),
	P("parley_presence_relay_out_total", "counter", relay_out,
	  "Presence / typing payloads sent to other nodes."),
	P("parley_presence_relay_in_total", "counter", relay_in,
	  "Presence / typing payloads from other nodes."),
	P("parley_presence_relay_dropped_total", "counter", relay_dropped,
	  "Remote online entries refused (no memory, or online "
	  "on more nodes than PRESENCE_REMOTE_MAX)."),
	P("parley_presence_typing_refused_total", "counter", typing_refused,
	  "Other nodes' group TYPING refused here (this node leads the "
	  "group; the typist's node answers ERROR)."),
	P("parley_presence_typing_refused_in_total", "counter",
	  typing_refused_in,
	  "This node's typists answered ERROR for another node's refusal "
	  "of their group TYPING."),
	P("parley_presence_relay_failed_total", "counter", relay_failed,
	  "Presence payloads that could not be queued or sent to a node "
	  "(each makes the whole online set go again)."),
	P("parley_presence_sets_sent_total", "counter", sets_sent,
	  "Whole online sets sent to other nodes (link up, RESEND, repair, "
	  "every PRESENCE_SET_MS)."),
	P("parley_presence_set_dropped_total", "counter", set_dropped,
	  "Remote online entries a SET_END dropped (their OFFLINE was "
	  "lost)."),
#undef P
};

static const struct field_metric engine_metrics[] = {
	FM(pe_stats, "parley_engine_appends_total", "counter", appends,
	   "Engine append commands acknowledged."),
	FM(pe_stats, "parley_engine_entries_total", "counter", entries,
	   "Engine entries appended."),
	FM(pe_stats, "parley_fsyncs_total", "counter", wal_batches,
	   "WAL write+fdatasync rounds (group commits)."),
	FM(pe_stats, "parley_fsyncs_piped_total", "counter", wal_piped,
	   "WAL group commits submitted while another was in flight."),
	FM(pe_stats, "parley_wal_bytes_total", "counter", wal_bytes,
	   "Bytes written to the WAL."),
};

static const struct field_metric chat_metrics[] = {
#define C(name, type, field, help) FM(chat_stats, name, type, field, help)
	C("parley_fanout_messages_total", "counter", fanout_jobs,
	  "Messages fanned out to inboxes."),
	C("parley_fanout_appends_total", "counter", fanout_appends,
	  "Inbox/list appends completed by the fan-out."),
	C("parley_fanout_errors_total", "counter", fanout_errors,
	  "Fan-out appends that failed."),
	C("parley_fanout_recovered_total", "counter", fanout_recovered,
	  "Messages re-fanned out by recovery (start-up or leader change)."),
	C("parley_fanout_lead_recoveries_total", "counter", lead_recoveries,
	  "Fan-out recoveries run on gaining the leadership of "
	  "partitions (a cluster)."),
	C("parley_fanout_pending", "gauge", fanout_pending,
	  "Messages whose fan-out is not durable yet."),
	C("parley_fanout_uncheckpointed", "gauge", fanout_uncheckpointed,
	  "Messages a crash now would re-fan out at most (not "
	  "covered by a durable fan-out checkpoint)."),
	C("parley_fanout_checkpoints_total", "counter", checkpoints,
	  "Durable fan-out checkpoints written."),
	C("parley_fanout_watermark_ms", "gauge", watermark_ms,
	  "Smallest durable per-partition fan-out cursor (unix ms)."),
	C("parley_groups", "gauge", groups, "Groups that exist."),
	C("parley_group_changes_total", "counter", group_changes,
	  "Group membership events applied."),
	C("parley_group_sends_refused_total", "counter", group_refused,
	  "SENDs stored after their sender left the group, refused "
	  "at their seq (never delivered)."),
	/* early delivery (chat_set_early, conn.c); the connections' side
	 * is in early_ctr_metrics */
	C("parley_early_posted_total", "counter", early_posted,
	  "Early EVENTs (a 1:1 message durable, its inbox pointer "
	  "not yet) handed to connections."),
#undef C
};

/* struct srv_counters fields shown with the chat service's (early
 * delivery), read as ctr_metrics */
static const struct ctr_metric early_ctr_metrics[] = {
	{"parley_early_events_total", "counter",
	 offsetof(struct srv_counters, early_out),
	 "Early EVENTs written to connections."},
	{"parley_early_dropped_total", "counter",
	 offsetof(struct srv_counters, early_dropped),
	 "Early EVENTs not written (their inbox EVENT came first, "
	 "the hold was full, or the connection was busy): the "
	 "inbox EVENT delivered them."},
	{"parley_early_seen_total", "counter",
	 offsetof(struct srv_counters, early_seen),
	 "Inbox EVENTs sent without their body because the "
	 "connection had the message early."},
};

/* read fan-out of large groups (chat_fanout_read.c) */
static const struct field_metric read_fanout_metrics[] = {
#define R(name, type, field, help) FM(chat_rd_stats, name, type, field, help)
	R("parley_read_fanout_messages_total", "counter", msgs,
	  "Group messages fanned out by read (group_read_fanout_min)."),
	R("parley_read_fanout_live_total", "counter", live,
	  "Live EVENTs posted to subscribed connections by the read "
	  "fan-out."),
	R("parley_read_fanout_activity_total", "counter", activity,
	  "ACTIVITY pointers appended for members with no subscribed "
	  "connection."),
	R("parley_read_fanout_coalesced_total", "counter", coalesced,
	  "Members skipped because their ACTIVITY pointer was still "
	  "outstanding."),
	R("parley_read_fanout_catchups_total", "counter", catchups,
	  "GROUP_CATCHUP pages served."),
	R("parley_read_fanout_relayed_total", "counter", relayed,
	  "LIVE payloads (a read-mode message's live EVENT) sent to other "
	  "nodes for their connections: one per node with a member online "
	  "there."),
	R("parley_read_fanout_relay_skipped_total", "counter", relay_skipped,
	  "Members of read-mode messages online on no other node, named in "
	  "no LIVE payload."),
	R("parley_read_fanout_live_remote_total", "counter", live_remote,
	  "Live EVENTs posted here for another node's read fan-out "
	  "(of parley_read_fanout_live_total)."),
	R("parley_read_fanout_live_in_total", "counter", live_in,
	  "LIVE payloads received from other nodes."),
	R("parley_read_fanout_live_in_idle_total", "counter", live_in_idle,
	  "LIVE payloads received that posted nothing here (no subscribed "
	  "connection of the members named)."),
	R("parley_read_fanout_outstanding", "gauge", outstanding,
	  "ACTIVITY pointers outstanding (not acknowledged yet)."),
#undef R
};

/* ctr_metrics-style tables over struct srv_counters */
static void metric_ctrs(struct srv_text *o, const struct ctr_metric *t,
			size_t n, struct srv_counters *c)
{
	for (size_t i = 0; i < n; i++) {
		_Atomic uint64_t *v = (_Atomic uint64_t *)((char *)c + t[i].off);
		metric(o, t[i].name, t[i].type, t[i].help, LD(*v));
	}
}

/*
 * The engine's per-stage append and history read timing (parley_engine.h,
 * pe_stage_stats) as one Prometheus histogram family,
 * parley_engine_stage_seconds{stage=...}.
 * The engine keeps log2 buckets (bucket b: below 2^b ns); buckets under
 * 1 us fold into the first one shown and those over ~17 s into +Inf, which
 * keeps the family at 26 lines per stage.
 */
#define STAGE_LE_FIRST 10u /* 2^10 ns ~ 1 us */
#define STAGE_LE_LAST 34u  /* 2^34 ns ~ 17 s */
static void stage_histograms(struct srv_text *o, struct pe_engine *e)
{
	struct pe_stage_hist st[PE_STAGE_COUNT];
	pe_stage_stats(e, st);
	const char *h = "parley_engine_stage_seconds";
	srv_text_put(o, "# HELP %s Time an engine append spends per stage: queue "
	       "(submitted -> its shard takes it), fill (-> its WAL batch is "
	       "submitted), sync (one batch's write+fdatasync), apply, "
	       "callback; and a history read (entries no longer in memory, "
	       "served by the read pool): read_queue (handed to the pool -> "
	       "started), read_io (block cache, pread, zstd).\n"
	       "# TYPE %s histogram\n", h, h);
	for (unsigned k = 0; k < PE_STAGE_COUNT; k++) {
		const char *name = pe_stage_name((enum pe_stage)k);
		uint64_t cum = 0;
		for (unsigned b = 0; b < PE_HIST_BUCKETS; b++) {
			cum += st[k].buckets[b];
			if (b < STAGE_LE_FIRST || b > STAGE_LE_LAST)
				continue;
			srv_text_put(o, "%s_bucket{stage=\"%s\",le=\"%.9g\"} %" PRIu64
			       "\n", h, name,
			    (double)pe_hist_bucket_le_ns(b) / 1e9, cum);
		}
		srv_text_put(o, "%s_bucket{stage=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
		    h, name, st[k].count);
		srv_text_put(o, "%s_sum{stage=\"%s\"} %.9f\n%s_count{stage=\"%s\"} %"
		       PRIu64 "\n", h, name, (double)st[k].sum_ns / 1e9, h,
		    name, st[k].count);
	}
}

/* Synchronous file operations made on a shard thread (pe_shard_sync_io):
 * 0 unless something blocks the shard thread on the disk again. */
static void shard_sync_io(struct srv_text *o, struct pe_engine *e)
{
	uint64_t n[PE_IO_OP_COUNT];
	pe_shard_sync_io(e, n);
	const char *h = "parley_engine_shard_sync_io_total";
	srv_text_put(o, "# HELP %s Synchronous file operations performed on a "
	       "shard thread while it served (each may wait for the disk); "
	       "0 is the engine's invariant.\n# TYPE %s counter\n", h, h);
	for (unsigned k = 0; k < PE_IO_OP_COUNT; k++)
		srv_text_put(o, "%s{op=\"%s\"} %" PRIu64 "\n", h,
		    pe_io_op_name((enum pe_io_op)k), n[k]);
}

/* Replication (docs/CLUSTER.md): each partition group's role and term as
 * its shard last published them, and a per-node summary: groups led,
 * groups with a known leader, commit -> apply lag, snapshots needed,
 * inbound messages dropped. pe_raft_status never blocks. */
static void raft_metrics(struct srv_text *o, struct pe_engine *e)
{
	uint32_t np = pe_partition_count(e);
	uint64_t led = 0, known = 0, lag_sum = 0, lag_max = 0, snap = 0,
		 dropped = 0, term_max = 0;
	uint64_t flag_max = 0, inactive = 0, elections = 0, rd_ok = 0,
		 rd_fail = 0, learners = 0;
	struct pe_raft_status sn = {0}; /* snapshot counters, summed */
	srv_text_put(o, "# HELP parley_raft_role Role of this node in a partition's "
	       "group (0 follower, 1 pre-candidate, 2 candidate, 3 leader).\n"
	       "# TYPE parley_raft_role gauge\n");
	for (uint32_t p = 0; p < np; p++) {
		struct pe_raft_status st;
		if (pe_raft_status(e, p, &st))
			continue;
		srv_text_put(o, "parley_raft_role{partition=\"%u\"} %d\n", p, (int)st.role);
	}
	srv_text_put(o, "# HELP parley_raft_term Current term of a partition's group on "
	       "this node.\n# TYPE parley_raft_term gauge\n");
	for (uint32_t p = 0; p < np; p++) {
		struct pe_raft_status st;
		if (pe_raft_status(e, p, &st))
			continue;
		srv_text_put(o, "parley_raft_term{partition=\"%u\"} %" PRIu64 "\n", p,
		    st.term);
		led += st.role == PE_LEADER;
		known += st.leader != 0;
		uint64_t lag = st.commit > st.applied ? st.commit - st.applied : 0;
		lag_sum += lag;
		lag_max = PARLEY_MAX(lag_max, lag);
		snap += st.snapshot_needed;
		dropped += st.dropped;
		sn.snap_sends_started += st.snap_sends_started;
		sn.snap_sends_completed += st.snap_sends_completed;
		sn.snap_sends_failed += st.snap_sends_failed;
		sn.snap_sent_bytes += st.snap_sent_bytes;
		sn.snap_received_bytes += st.snap_received_bytes;
		sn.snap_installed += st.snap_installed;
		sn.snap_install_failed += st.snap_install_failed;
		term_max = PARLEY_MAX(term_max, st.term);
		flag_max = PARLEY_MAX(flag_max, st.lag_max);
		for (uint32_t k = 0; k < st.n_members; k++)
			inactive += st.members[k].node != st.leader &&
				    !st.members[k].active;
		elections += st.elections;
		learners += st.nlearners;
		rd_ok += st.reads_served;
		rd_fail += st.reads_failed;
	}
	metric(o, "parley_raft_partitions", "gauge",
	       "Partition groups on this node.", np);
	metric(o, "parley_raft_partitions_led", "gauge",
	       "Partition groups this node leads.", led);
	metric(o, "parley_raft_partitions_leader_known", "gauge",
	       "Partition groups whose leader this node knows.", known);
	metric(o, "parley_raft_term_max", "gauge",
	       "Largest term of any partition group on this node.", term_max);
	metric(o, "parley_raft_apply_lag_entries", "gauge",
	       "Committed entries not applied yet, summed over partitions.",
	       lag_sum);
	metric(o, "parley_raft_apply_lag_max_entries", "gauge",
	       "Committed entries not applied yet, largest partition.", lag_max);
	metric(o, "parley_raft_snapshot_needed_total", "counter",
	       "Times a follower needed a snapshot this leader had to make.",
	       snap);
	metric(o, "parley_snapshot_sends_started_total", "counter",
	       "Snapshot transfers to a lagging follower started (leader).",
	       sn.snap_sends_started);
	metric(o, "parley_snapshot_sends_completed_total", "counter",
	       "Snapshot transfers the follower installed (leader).",
	       sn.snap_sends_completed);
	metric(o, "parley_snapshot_sends_failed_total", "counter",
	       "Snapshot transfers abandoned before the follower installed "
	       "(leader).", sn.snap_sends_failed);
	metric(o, "parley_snapshot_sent_bytes_total", "counter",
	       "Snapshot chunk bytes sent (leader).", sn.snap_sent_bytes);
	metric(o, "parley_snapshot_received_bytes_total", "counter",
	       "Snapshot chunk bytes received and stored (follower).",
	       sn.snap_received_bytes);
	metric(o, "parley_snapshot_installed_total", "counter",
	       "Snapshots installed (follower).", sn.snap_installed);
	metric(o, "parley_snapshot_install_failed_total", "counter",
	       "Received snapshots refused or not installed (follower).",
	       sn.snap_install_failed);
	metric(o, "parley_raft_dropped_total", "counter",
	       "Inbound Raft messages dropped (full shard inbox and the like).",
	       dropped);
	metric(o, "parley_raft_follower_lag_max_entries", "gauge",
	       "Largest replication lag (leader's last index - follower's "
	       "match) of any follower of a group this node leads.", flag_max);
	metric(o, "parley_raft_followers_inactive", "gauge",
	       "Followers of groups this node leads that did not answer within "
	       "the last one to two election timeouts (summed over groups).",
	       inactive);
	metric(o, "parley_raft_learners", "gauge",
	       "Learners in the partitions' configurations as this node has "
	       "them, summed over partitions (an add-node not finished).",
	       learners);
	metric(o, "parley_raft_elections_total", "counter",
	       "Elections this node started as a candidate (all groups).",
	       elections);
	metric(o, "parley_raft_reads_served_total", "counter",
	       "Linearizable (ReadIndex) reads served.", rd_ok);
	metric(o, "parley_raft_reads_failed_total", "counter",
	       "Linearizable (ReadIndex) reads failed (NOTLEADER, AGAIN).",
	       rd_fail);
}

/* ---- GET /cluster (docs/CLUSTER.md §3.6) ------------------------------------------ */

/* A JSON string: quotes, backslashes and control bytes escaped. */
static void json_str(struct srv_text *o, const char *v)
{
	srv_text_put(o, "\"");
	for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
		if (*c == '"' || *c == '\\')
			srv_text_put(o, "\\%c", *c);
		else if (*c < 0x20 || *c == 0x7f)
			srv_text_put(o, "\\u%04x", *c);
		else
			srv_text_put(o, "%c", *c);
	}
	srv_text_put(o, "\"");
}

static const char *role_name(enum pe_raft_role r)
{
	switch (r) {
	case PE_FOLLOWER: return "follower";
	case PE_PRECANDIDATE: return "precandidate";
	case PE_CANDIDATE: return "candidate";
	case PE_LEADER: return "leader";
	}
	return "unknown";
}

static bool can_serve(struct srv *s);

static bool same_set(const uint64_t *a, uint32_t na, const uint64_t *b,
		     uint32_t nb)
{
	if (na != nb)
		return false;
	for (uint32_t i = 0; i < na; i++)
		if (!placement_has(b, nb, a[i]))
			return false;
	return true;
}

/* ,"placement":{...}: partition p's replicas by the placement map
 * (§3.7), whether a record placed it (else the founders), and whether
 * the group's configuration as this node has it matches ("matches":
 * false during an operation, or after one that did not finish) */
static void placement_json(struct srv_text *o, struct peer_node *pn,
			   uint32_t p, const struct pe_raft_status *st)
{
	struct placement_part pp;
	bool rec;
	if (!pn || !peer_node_replication_factor(pn) ||
	    !peer_node_placement(pn, p, &pp, &rec))
		return; /* replication_factor 0: every node, no map */
	srv_text_put(o, ",\"placement\":{\"voters\":[");
	for (uint32_t k = 0; k < pp.nvoters; k++)
		srv_text_put(o, "%s%" PRIu64, k ? "," : "", pp.voters[k]);
	srv_text_put(o, "],\"learners\":[");
	for (uint32_t k = 0; k < pp.nlearners; k++)
		srv_text_put(o, "%s%" PRIu64, k ? "," : "", pp.learners[k]);
	bool match = same_set(pp.voters, pp.nvoters, st->voters, st->nvoters) &&
		     same_set(pp.learners, pp.nlearners, st->learners,
			      st->nlearners);
	srv_text_put(o, "],\"recorded\":%s,\"matches\":%s}",
		     rec ? "true" : "false", match ? "true" : "false");
}

/* This node's view of the cluster as one JSON object: ids, readiness,
 * peer links, and per partition its group state and, on the leader, each
 * member's match index and lag (pe_raft_status, never blocks). */
/* A peer's frame set against this node's (docs/CLUSTER.md §1.2): "same",
 * "older" (a subset: a node of an older build), "newer" (a superset),
 * "other", or "unknown" (no link yet). */
static const char *frames_cmp(uint32_t mine, uint32_t theirs)
{
	if (!theirs)
		return "unknown";
	if (theirs == mine)
		return "same";
	if ((theirs & mine) == theirs)
		return "older";
	if ((theirs & mine) == mine)
		return "newer";
	return "other";
}

size_t admin_cluster_json(struct srv *s, bool ready, char *buf, size_t cap)
{
	struct srv_text o = {buf, cap, 0};
	struct pe_engine *e = s->engine;
	uint64_t self = s->peer ? peer_node_id(s->peer) : 1;
	srv_text_put(&o, "{\"node\":%" PRIu64 ",\"cluster\":%" PRIu64
		     ",\"ready\":%s,\"draining\":%s,\"engine_open\":%s",
		     self, s->peer ? peer_node_cluster_id(s->peer) : 0,
		     ready ? "true" : "false",
		     atomic_load(&s->draining) ? "true" : "false",
		     e ? "true" : "false");
	if (s->peer) { /* its own advertised addresses */
		const char *k[3] = {"client", "tls", "admin"};
		for (int i = 0; i < 3; i++) {
			srv_text_put(&o, ",\"%s\":", k[i]);
			json_str(&o, peer_node_self_addr(s->peer, k[i]));
		}
		/* the membership operation running here (§3.7), or null */
		struct peer_node_op op;
		uint64_t ms;
		if (peer_node_op_running(s->peer, &op, &ms)) {
			char d[96];
			peer_node_op_describe(&op, ms, d, sizeof d);
			srv_text_put(&o, ",\"operation\":{\"op\":\"%s\",\"node\":%"
				     PRIu64 ",\"force\":%s,\"elapsed_ms\":%" PRIu64
				     ",\"text\":", peer_node_op_name(op.kind), op.id,
				     op.force ? "true" : "false", ms);
			json_str(&o, d);
			srv_text_put(&o, "}");
		} else {
			srv_text_put(&o, ",\"operation\":null");
		}
		/* the automatic re-placement (replica_replace_ms, §3.7) */
		struct peer_node_replace_stats rs;
		peer_node_replace_stats(s->peer, &rs);
		srv_text_put(&o, ",\"replace\":{\"replace_ms\":%u,\"down\":[",
			     rs.replace_ms);
		for (uint32_t di = 0; di < rs.ndown; di++)
			srv_text_put(&o, "%s%" PRIu64, di ? "," : "", rs.down[di]);
		srv_text_put(&o, "],\"rounds\":%" PRIu64 ",\"failed_rounds\":%"
			     PRIu64 ",\"moves\":%" PRIu64 ",\"pending\":%u,"
			     "\"no_quorum\":%" PRIu64 "}", rs.rounds,
			     rs.failed_rounds, rs.moves, rs.pending, rs.no_quorum);
	}
	uint32_t meta[PLACEMENT_MAX_META], nmeta = 0;
	if (s->peer && e) { /* the meta group (§3.7) */
		nmeta = peer_node_meta_parts(s->peer, meta);
		srv_text_put(&o, ",\"replication_factor\":%u,\"meta\":{"
			     "\"partitions\":[",
			     peer_node_replication_factor(s->peer));
		for (uint32_t i = 0; i < nmeta; i++)
			srv_text_put(&o, "%s%u", i ? "," : "", meta[i]);
		srv_text_put(&o, "],\"voter_nodes\":[");
		struct pe_raft_status m0;
		if (nmeta && !pe_raft_status(e, meta[nmeta - 1], &m0))
			for (uint32_t k = 0; k < m0.nvoters; k++)
				srv_text_put(&o, "%s%" PRIu64, k ? "," : "",
					     m0.voters[k]);
		srv_text_put(&o, "]}");
	}
	uint32_t mine = s->peer ? peer_node_frames(s->peer) : 0;
	if (s->peer)
		srv_text_put(&o, ",\"frames\":\"%x\"", mine);
	srv_text_put(&o, ",\"peers\":[");
	if (s->peer) {
		struct peer_node_link l[PEER_NODE_MAX_PEERS];
		uint32_t n = peer_node_links(s->peer, l, PEER_NODE_MAX_PEERS);
		for (uint32_t i = 0; i < n; i++) {
			srv_text_put(&o, "%s{\"node\":%" PRIu64 ",\"state\":\"%s\""
				     ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
				     ",\"connects\":%" PRIu64 ",\"reconnects\":%" PRIu64
				     ",\"dead\":%" PRIu64 ",\"connect_failures\":%" PRIu64
				     ",\"client\":", i ? "," : "", l[i].node,
				     l[i].up ? "up" : "down", l[i].bytes_in,
				     l[i].bytes_out, l[i].connects, l[i].reconnects,
				     l[i].dead, l[i].connect_failures);
			json_str(&o, l[i].client_addr);
			srv_text_put(&o, ",\"admin\":");
			json_str(&o, l[i].admin_addr);
			srv_text_put(&o, ",\"last_error\":");
			json_str(&o, l[i].last_error);
			/* the frame types it knows (rolling upgrades, §1.2) */
			srv_text_put(&o, ",\"frames\":\"%x\",\"frames_announced\":"
				     "%s,\"protocol\":\"%s\"}", l[i].frames,
				     l[i].frames_announced ? "true" : "false",
				     frames_cmp(mine, l[i].frames));
		}
	}
	srv_text_put(&o, "],\"partitions\":[");
	uint32_t np = e ? pe_partition_count(e) : 0;
	for (uint32_t p = 0; p < np; p++) {
		struct pe_raft_status st;
		if (pe_raft_status(e, p, &st))
			continue;
		srv_text_put(&o, "%s{\"partition\":%u,\"role\":\"%s\",\"term\":%"
			     PRIu64 ",\"leader\":%" PRIu64 ",\"commit\":%" PRIu64
			     ",\"applied\":%" PRIu64 ",\"last_index\":%" PRIu64
			     ",\"apply_lag\":%" PRIu64 ",\"elections\":%" PRIu64
			     ",\"members\":[", p ? "," : "", p, role_name(st.role),
			     st.term, st.leader, st.commit, st.applied, st.last_index,
			     st.commit > st.applied ? st.commit - st.applied : 0,
			     st.elections);
		for (uint32_t k = 0; k < st.n_members; k++)
			srv_text_put(&o, "%s{\"node\":%" PRIu64 ",\"match\":%" PRIu64
				     ",\"lag\":%" PRIu64 ",\"active\":%s,"
				     "\"voter\":%s,\"snapshot\":%s}", k ? "," : "",
				     st.members[k].node, st.members[k].match,
				     st.members[k].lag,
				     st.members[k].active ? "true" : "false",
				     st.members[k].voter ? "true" : "false",
				     st.members[k].snapshot ? "true" : "false");
		/* the configuration as this node has it (every node: shows a
		 * learner left by an add that did not finish, §3.7) */
		srv_text_put(&o, "],\"voters\":[");
		for (uint32_t k = 0; k < st.nvoters; k++)
			srv_text_put(&o, "%s%" PRIu64, k ? "," : "", st.voters[k]);
		srv_text_put(&o, "],\"learners\":[");
		for (uint32_t k = 0; k < st.nlearners; k++)
			srv_text_put(&o, "%s%" PRIu64, k ? "," : "",
				     st.learners[k]);
		srv_text_put(&o, "]");
		placement_json(&o, s->peer, p, &st);
		srv_text_put(&o, "}");
	}
	srv_text_put(&o, "]}\n");
	return o.n;
}

/* Whether this node can serve now (beyond start-up and draining): on a
 * cluster node, a leader of partition 0 must be known (leadership gathers
 * there; with none known, every write is refused until an election ends). */
static bool can_serve(struct srv *s)
{
	if (!s->peer || !s->engine)
		return true;
	struct pe_raft_status st;
	return pe_raft_status(s->engine, 0, &st) == 0 && st.leader != 0;
}

size_t admin_metrics_text(struct srv *s, char *buf, size_t cap)
{
	struct srv_text o = {buf, cap, 0};
	struct srv_counters *c = &s->ctr;
	metric_ctrs(&o, ctr_metrics, sizeof ctr_metrics / sizeof ctr_metrics[0],
		    c);
	if (s->rl) { /* rate limits and admission (ratelimit.h) */
		struct ratelimit_stats rs;
		ratelimit_stats(s->rl, &rs);
		srv_text_put(&o, "# HELP parley_rate_limited_total Requests refused with "
			"RATE (retry-after), by kind.\n# TYPE "
			"parley_rate_limited_total counter\n");
		for (unsigned k = 0; k < RATELIMIT_NKINDS; k++)
			srv_text_put(&o, "parley_rate_limited_total{kind=\"%s\"} %" PRIu64
				"\n", ratelimit_kind_name(k), rs.limited[k]);
		METRIC_FIELDS(&o, ratelimit_metrics, &rs);
	}
	if (s->pres) { /* typing and presence (presence.h) */
		struct presence_stats ps;
		presence_get_stats(s->pres, &ps);
		METRIC_FIELDS(&o, presence_metrics, &ps);
	}
	if (s->adm) {
		metric(&o, "parley_handshakes_in_progress", "gauge",
		       "Connections holding a handshake slot (accept to AUTH_OK).",
		       LD(s->adm->in_progress));
		metric(&o, "parley_handshakes_rejected_total", "counter",
		       "HELLOs refused by admission control (AGAIN + retry-after).",
		       LD(s->adm->rejected));
	}

	const char *h = "parley_ack_latency_seconds";
	srv_text_put(&o, "# HELP %s SEND received to SEND_ACK queued (durable).\n"
		"# TYPE %s histogram\n", h, h);
	uint64_t cum = 0;
	for (int i = 0; i < 10; i++) {
		cum += LD(c->ack_lat_bucket[i]);
		srv_text_put(&o, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", h,
		    srv_ack_lat_bounds_s[i], cum);
	}
	cum += LD(c->ack_lat_bucket[10]);
	srv_text_put(&o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", h, cum);
	srv_text_put(&o, "%s_sum %.9f\n%s_count %" PRIu64 "\n", h,
	    (double)LD(c->ack_lat_ns_sum) / 1e9, h, LD(c->ack_lat_count));

	if (s->engine) {
		struct pe_stats es;
		pe_stats(s->engine, &es);
		METRIC_FIELDS(&o, engine_metrics, &es);
		srv_text_put(&o, "# HELP parley_fsync_seconds_total Time spent in WAL "
			"write+fdatasync.\n# TYPE parley_fsync_seconds_total "
			"counter\nparley_fsync_seconds_total %.9f\n",
		    (double)es.fsync_ns_total / 1e9);
		stage_histograms(&o, s->engine);
		shard_sync_io(&o, s->engine);
		raft_metrics(&o, s->engine);
	}
	if (s->peer && s->engine) {
		o.n += peer_node_metrics_text(s->peer, o.n < o.cap ? o.b + o.n : NULL,
					      o.n < o.cap ? o.cap - o.n : 0);
		if (s->proxy)
			o.n += proxy_metrics_text(s->proxy,
						  o.n < o.cap ? o.b + o.n : NULL,
						  o.n < o.cap ? o.cap - o.n : 0);
		if (s->tail)
			o.n += tail_relay_metrics_text(s->tail,
						       o.n < o.cap ? o.b + o.n : NULL,
						       o.n < o.cap ? o.cap - o.n : 0);
		metric(&o, "parley_ready_leader_known", "gauge",
		       "1 when a leader of partition 0 is known (/readyz).",
		       can_serve(s));
		struct peer_node_op op;
		uint64_t ms = 0;
		metric(&o, "parley_cluster_operation_running", "gauge",
		       "1 while an add-node / remove-node / rebalance (or a "
		       "re-placement round) runs on this node.",
		       peer_node_op_running(s->peer, &op, &ms) ? 1 : 0);
		struct peer_node_replace_stats rs;
		peer_node_replace_stats(s->peer, &rs);
		metric(&o, "parley_replica_replace_down_nodes", "gauge",
		       "Nodes down for replica_replace_ms as this node (the "
		       "leader of partition 0) sees them.", rs.ndown);
		metric(&o, "parley_replica_replace_rounds_total", "counter",
		       "Automatic re-placement rounds run here.", rs.rounds);
		metric(&o, "parley_replica_replace_failed_rounds_total",
		       "counter", "Re-placement rounds that failed (retried).",
		       rs.failed_rounds);
		metric(&o, "parley_replica_replace_moves_total", "counter",
		       "Replicas added by re-placement rounds.", rs.moves);
		metric(&o, "parley_replica_replace_pending", "gauge",
		       "Partitions the last round left for later rounds "
		       "(throttle).", rs.pending);
		metric(&o, "parley_replica_replace_no_quorum", "gauge",
		       "Partitions the last round could not move: their live "
		       "replicas are not a quorum.", rs.no_quorum);
	}
	/* the server's own stages (srv.h): send and delivery */
	o.n += srv_stage_metrics(s, o.n < o.cap ? o.b + o.n : NULL,
				 o.n < o.cap ? o.cap - o.n : 0);
	if (s->chat) {
		struct chat_stats cs;
		chat_get_stats(s->chat, &cs);
		METRIC_FIELDS(&o, chat_metrics, &cs);
		metric_ctrs(&o, early_ctr_metrics, sizeof early_ctr_metrics /
			    sizeof early_ctr_metrics[0], c);
		struct chat_rd_stats rs;
		chat_rd_get_stats(s->chat, &rs);
		METRIC_FIELDS(&o, read_fanout_metrics, &rs);
		if (s->live)
			metric(&o, "parley_live_connections", "gauge",
			       "Subscribed connections registered for live group "
			       "EVENTs.", live_count(s->live));
	}
	metric(&o, "parley_memory_budget_bytes", "gauge",
	       "Configured memory budget (memory_budget_bytes).", s->mem.limit);
	metric(&o, "parley_memory_used_bytes", "gauge",
	       "Memory counted against the budget now.", membudget_used(&s->mem));
	metric(&o, "parley_memory_used_high_water_bytes", "gauge",
	       "Largest memory counted against the budget so far.",
	       LD(s->mem.high_water));
	metric(&o, "parley_memory_connection_bytes", "gauge",
	       "Connections' receive buffers and outbound queues.",
	       (uint64_t)PARLEY_MAX(0, (int64_t)LD(s->mem.conn_bytes)));
	metric(&o, "parley_memory_engine_bytes", "gauge",
	       "Engine memtables, idempotency keys and queued requests.",
	       LD(s->mem.engine_bytes));
	metric(&o, "parley_memory_over_budget", "gauge",
	       "1 while client sockets are not read (budget exceeded).",
	       LD(s->mem.over) ? 1 : 0);
	metric(&o, "parley_memory_pauses_total", "counter",
	       "Times the budget was exceeded and reading stopped.",
	       LD(s->mem.pauses));
	metric(&o, "parley_recv_paused_total", "counter",
	       "Connections whose reading was paused by the budget.",
	       LD(c->recv_paused));
	metric(&o, "parley_frame_timeouts_total", "counter",
	       "Connections closed for a frame not completed in frame_timeout_ms.",
	       LD(c->frame_timeouts));
	metric(&o, "parley_preauth_frame_rejects_total", "counter",
	       "Frames over preauth_max_frame before AUTH_OK (connection closed).",
	       LD(c->preauth_too_big));
	metric(&o, "parley_draining", "gauge", "1 while a drain is in progress.",
	       atomic_load(&s->draining) ? 1 : 0);
	return o.n;
}

/* The admin server's own counters, after admin_metrics_text's. */
static size_t admin_own_metrics(struct admin *a, char *buf, size_t cap)
{
	struct srv_text o = {buf, cap, 0};
	metric(&o, "parley_admin_requests_total", "counter",
	       "Admin HTTP requests answered.", LD(a->requests));
	metric(&o, "parley_admin_timeouts_total", "counter",
	       "Admin connections closed with 408 (request deadline).",
	       LD(a->timeouts));
	metric(&o, "parley_admin_evicted_total", "counter",
	       "Admin connections closed with 503 to make room.", LD(a->evicted));
	metric(&o, "parley_admin_rejected_total", "counter",
	       "Admin requests refused with 431 (too large).", LD(a->rejected));
	return o.n;
}

/* ---- HTTP ------------------------------------------------------------------------- */

/*
 * One thread, one poll() loop, every socket non-blocking: no client can
 * make the thread wait for it. Per connection:
 *
 *   accept --> READING --(blank line)--> WRITING --(all sent)--> closed
 *                 |     \                    ^
 *                 |      +-(add/remove-node, rebalance)-> WAITING --(op result)--+
 *                 |  deadline: accept + request_timeout_ms (total, not
 *                 |  reset by each byte) -> 408, closed
 *                 |  ADMIN_MAX_REQUEST bytes without a blank line -> 431
 *                 +  evicted (oldest first, WAITING ones last) when a new
 *                    connection arrives and max_conns are open -> 503,
 *                    closed
 *              WRITING: deadline = start of the response + request_timeout_ms
 *              WAITING: the socket is not polled; the operation's result
 *                is looked at every ADMIN_OP_POLL_MS; deadline = the
 *                operation's bound + ADMIN_OP_GRACE_MS -> 504
 *
 * Error answers (400, 408, 431, 503) are best effort: one non-blocking
 * send, then close.
 */

struct aconn {
	int fd;                 /* -1: free slot */
	uint64_t t_accept_ns;   /* eviction order */
	uint64_t deadline_ns;
	size_t rlen;
	char *out;              /* response being written (owned), NULL: reading */
	size_t olen, ooff;
	/* WAITING: a membership operation (peer_node_op_start) runs for this
	 * request; the answer is built when its result is there */
	bool op_wait;
	uint64_t op_ticket;
	int op_kind; /* enum peer_node_op_kind it waits for */
	char req[ADMIN_MAX_REQUEST + 1];
};

static char *response(int code, const char *reason, const char *ctype,
		      const char *extra_hdr, const char *body, size_t blen,
		      bool head, size_t *len)
{
	char hdr[384];
	int n = snprintf(hdr, sizeof hdr,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: "
			 "%zu\r\n%sConnection: close\r\n\r\n",
			 code, reason, ctype, blen, extra_hdr ? extra_hdr : "");
	size_t bl = head ? 0 : blen;
	char *o = malloc((size_t)n + bl + 1);
	if (!o)
		return NULL;
	memcpy(o, hdr, (size_t)n);
	if (bl)
		memcpy(o + n, body, bl);
	*len = (size_t)n + bl;
	return o;
}

static char *simple(int code, const char *reason, const char *body, bool head,
		    size_t *len)
{
	return response(code, reason, "text/plain", code == 405 ? "Allow: GET, HEAD\r\n" : NULL,
			body, strlen(body), head, len);
}

/* Best effort for error answers: one non-blocking send, then the caller
 * closes. */
static void send_now(int fd, int code, const char *reason, const char *body)
{
	size_t len;
	char *r = simple(code, reason, body, false, &len);
	if (r) {
		ssize_t k = send(fd, r, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)k;
		free(r);
	}
}

static void aconn_close(struct admin *a, struct aconn *c)
{
	/* take what the client already sent, so close() sends FIN after our
	 * answer rather than a reset that could discard it (bounded) */
	char junk[1024];
	for (int i = 0; i < 8 && recv(c->fd, junk, sizeof junk, MSG_DONTWAIT) > 0; i++)
		;
	close(c->fd);
	c->fd = -1;
	free(c->out);
	c->out = NULL;
	c->op_wait = false; /* an operation it waited for runs on */
	a->nconns--;
}

/* POST /admin/compact (admin_compact = 1): flush every partition's
 * memtable into a segment and merge all its segments, applying deletions
 * and retention now instead of at the next retention_interval_ms. For
 * tests and maintenance; the admin thread waits for it (other admin
 * requests wait meanwhile; clients are not affected beyond the I/O). */
static char *admin_compact(struct admin *a, size_t *len)
{
	if (!a->compact)
		return simple(403, "Forbidden", "admin_compact is off\n", false,
			      len);
	struct pe_engine *e = a->s->engine;
	if (!e)
		return simple(503, "Service Unavailable", "not ready\n", false, len);
	uint32_t np = pe_partition_count(e);
	for (uint32_t p = 0; p < np; p++) {
		int rc = pe_flush_sync(e, p);
		if (!rc)
			rc = pe_compact_sync(e, p, true);
		if (rc) {
			PLOG_W("admin", "compaction failed", "partition=%u err=%s", p,
			       parley_errname(rc));
			return simple(500, "Internal Server Error",
				      "compaction failed\n", false, len);
		}
	}
	/* inline inbox copies of what retention removed: not delivered */
	if (a->s->chat)
		chat_retention_refresh(a->s->chat);
	PLOG_I("admin", "flushed and compacted", "partitions=%u", np);
	return simple(200, "OK", "compacted\n", false, len);
}

/* GET /debug/digest (admin_digest = 1): one line per partition,
 *   partition <p> applied <i> commit <c> role <r> streams <s> entries <n>
 *   digest <hex> damaged <d> repaired <n> superseded <s>
 * (pe_partition_digest: the partition's visible state at its applied
 * index), or, when it could not be taken (the partition kept applying, or
 * reads are refused: a new leader catching up),
 *   partition <p> applied <i> commit <c> role <r> damaged <d> repaired <n>
 *   superseded <s> error <name>
 * with the group's published state (pe_raft_status). For
 * comparing replicas in tests (tests/cluster/netns_chaos.c) once a load
 * stopped; reads every partition whole, on the admin thread. */
static char *admin_digest(struct admin *a, bool head, size_t *len)
{
	if (!a->digest)
		return simple(403, "Forbidden", "admin_digest is off\n", head, len);
	struct pe_engine *e = a->s->engine;
	if (!e)
		return simple(503, "Service Unavailable", "not ready\n", head, len);
	uint32_t np = pe_partition_count(e);
	struct srv_text o = {.cap = 256u * np + 64};
	o.b = malloc(o.cap);
	if (!o.b)
		return NULL;
	for (uint32_t p = 0; p < np; p++) {
		struct pe_digest d;
		struct pe_raft_status st;
		int rc = pe_partition_digest(e, p, &d);
		int src = pe_raft_status(e, p, &st);
		if (src)
			srv_text_put(&o, "partition %u error %s\n", p,
				     parley_errname(src));
		else if (rc)
			srv_text_put(&o, "partition %u applied %" PRIu64
				     " commit %" PRIu64 " role %d damaged %"
				     PRIu64 " repaired %" PRIu64 " superseded %"
				     PRIu64 " error %s\n",
				     p, st.applied, st.commit, (int)st.role,
				     st.damaged_found, st.damaged_repaired,
				     st.damaged_superseded, parley_errname(rc));
		else
			srv_text_put(&o, "partition %u applied %" PRIu64
				     " commit %" PRIu64 " role %d streams %"
				     PRIu64 " entries %" PRIu64 " digest %016"
				     PRIx64 " damaged %" PRIu64 " repaired %"
				     PRIu64 " superseded %" PRIu64 "\n", p,
				     d.applied, d.commit, (int)st.role, d.streams,
				     d.entries, d.digest, st.damaged_found,
				     st.damaged_repaired, st.damaged_superseded);
	}
	char *r = response(200, "OK", "text/plain", NULL, o.b,
			   PARLEY_MIN(o.n, o.cap - 1), head, len);
	free(o.b);
	return r;
}

/* ---- cluster membership (docs/CLUSTER.md §3.7) ---------------------------- */

#define ADMIN_CLUSTER_WAIT_MS 60000u /* add-node / remove-node, at most */
#define ADMIN_OP_POLL_MS 20u         /* a WAITING request looks this often */
#define ADMIN_OP_GRACE_MS 15000u     /* beyond the bound: 504 "still running" */

/* The value of `key` in a query string "k=v&k=v" (no escapes: ids and
 * numeric addresses), copied into out; false when absent. */
static bool query_get(const char *q, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	for (const char *p = q; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t n = amp ? (size_t)(amp - p) : strlen(p);
		if (n > kl && !strncmp(p, key, kl) && p[kl] == '=') {
			size_t vl = n - kl - 1;
			if (vl >= cap)
				return false;
			memcpy(out, p + kl + 1, vl);
			out[vl] = '\0';
			return true;
		}
		p = amp ? amp + 1 : NULL;
	}
	return false;
}

static void aconn_op_check(struct admin *a, struct aconn *c, uint64_t now);

/* The answer to a finished membership operation (peer_node.h). */
static char *cluster_answer(int kind, int rc, char *msg, size_t mcap,
			    size_t *len)
{
	bool add = kind == PEER_NODE_OP_ADD;
	if (!rc)
		return simple(200, "OK", msg, false, len);
	if (kind == PEER_NODE_OP_REBALANCE && rc == -PARLEY_EAGAIN)
		return simple(503, "Service Unavailable", msg, false, len);
	if (rc == -PARLEY_ENOTLEADER || rc == -PARLEY_EPERM ||
	    (!add && rc == -PARLEY_EAGAIN))
		return simple(409, "Conflict", msg, false, len); /* EPERM: an
			unsafe removal refused; EAGAIN: no other current voter
			to hand leadership to (§3.7) */
	if (rc == -PARLEY_EINVAL)
		return simple(400, "Bad Request", msg, false, len);
	if (rc == -PARLEY_ETIMEDOUT)
		return simple(504, "Gateway Timeout", msg, false, len);
	if (rc == -PARLEY_ECLOSED)
		return simple(503, "Service Unavailable", msg, false, len);
	snprintf(msg, mcap, "failed: %s\n", parley_errname(rc));
	return simple(503, "Service Unavailable", msg, false, len);
}

/* Starts op on the membership worker for the request on c: NULL with
 * c->op_wait set (its answer comes from aconn_op_check), or the answer
 * (409 while another runs). */
static char *op_start(struct admin *a, struct aconn *c,
		      const struct peer_node_op *op, size_t *len)
{
	struct peer_node *pn = a->s->peer;
	/* a request still waiting for the last operation gets its answer
	 * first: a new one would replace that result */
	uint64_t now = parley_mono_ns();
	for (uint32_t k = 0; k < a->max_conns; k++)
		if (a->c[k].fd >= 0 && a->c[k].op_wait && &a->c[k] != c)
			aconn_op_check(a, &a->c[k], now);
	char msg[512];
	int rc = peer_node_op_start(pn, op, &c->op_ticket, msg, sizeof msg);
	if (rc == -PARLEY_EAGAIN) /* another operation runs */
		return simple(409, "Conflict", msg, false, len);
	if (rc)
		return cluster_answer(op->kind, rc, msg, sizeof msg, len);
	c->op_wait = true;
	c->op_kind = op->kind;
	PLOG_I("admin", "membership operation started", "op=%s node=%" PRIu64
	       "%s", peer_node_op_name(op->kind), op->id,
	       op->force ? " force=1" : "");
	return NULL;
}

/* POST /cluster/add-node?id=N&peer=addr:port[&client=host:port]
 * [&admin=host:port] and POST /cluster/remove-node?id=N[&force=1], on the
 * node that leads partition 0 (another answers 409 naming the leader's
 * node id and admin address; the leader asked to remove itself hands its
 * leadership over and answers the same, docs/CLUSTER.md §3.7).
 * The operation runs on the membership worker (peer_node_op_start): this
 * request WAITS for its result (at most ADMIN_CLUSTER_WAIT_MS, then the
 * operation answers 504 itself) while the admin thread answers other
 * requests; a second operation meanwhile gets 409 "operation in
 * progress". Returns the answer, or NULL with c->op_wait set. */
static char *admin_cluster(struct admin *a, struct aconn *c, bool add,
			   const char *q, size_t *len)
{
	struct peer_node *pn = a->s->peer;
	if (!pn || !a->s->engine)
		return simple(400, "Bad Request", "not a cluster node (or not "
			      "ready)\n", false, len);
	struct peer_node_op op = {.kind = add ? PEER_NODE_OP_ADD
					      : PEER_NODE_OP_REMOVE,
				  .wait_ms = ADMIN_CLUSTER_WAIT_MS};
	char ids[32], force[8] = "";
	char *end = NULL;
	op.id = query_get(q, "id", ids, sizeof ids) ? strtoull(ids, &end, 10)
						     : 0;
	if (!op.id || !end || *end)
		return simple(400, "Bad Request", "id=N required\n", false, len);
	if (add) {
		if (!query_get(q, "peer", op.peer, sizeof op.peer))
			return simple(400, "Bad Request",
				      "peer=addr:port required\n", false, len);
		(void)query_get(q, "client", op.client, sizeof op.client);
		(void)query_get(q, "admin", op.admin, sizeof op.admin);
	} else if (query_get(q, "force", force, sizeof force)) {
		if (strcmp(force, "1") && strcmp(force, "0"))
			return simple(400, "Bad Request", "force=1 or force=0\n",
				      false, len);
		op.force = !strcmp(force, "1");
	}
	return op_start(a, c, &op, len);
}


/* POST /cluster/transfer?partition=P&to=N (this node leads P: hand it
 * to voter N), blocking on the admin thread, at most
 * ADMIN_PLACEMENT_WAIT_MS; and POST /cluster/rebalance (hand this node's
 * partitions beyond its share to the least loaded nodes), which runs on
 * the membership worker like add-node / remove-node (this request waits
 * for it while the admin thread answers others; 409 while another
 * operation runs), docs/CLUSTER.md §3.2. NULL: c waits. */
#define ADMIN_PLACEMENT_WAIT_MS 10000u
static char *admin_placement(struct admin *a, struct aconn *c,
			     bool rebalance, const char *q, size_t *len)
{
	struct peer_node *pn = a->s->peer;
	if (!pn || !a->s->engine)
		return simple(400, "Bad Request", "not a cluster node (or not "
			      "ready)\n", false, len);
	if (rebalance) {
		struct peer_node_op op = {.kind = PEER_NODE_OP_REBALANCE,
					  .wait_ms = ADMIN_PLACEMENT_WAIT_MS};
		return op_start(a, c, &op, len);
	}
	char msg[1024];
	char ps[16], ts[32];
	char *e1 = NULL, *e2 = NULL;
	unsigned long part = query_get(q, "partition", ps, sizeof ps)
				     ? strtoul(ps, &e1, 10) : 0;
	uint64_t to = query_get(q, "to", ts, sizeof ts)
			      ? strtoull(ts, &e2, 10) : 0;
	if (!e1 || *e1 || !e2 || *e2 || !to || part > UINT32_MAX)
		return simple(400, "Bad Request",
			      "partition=P&to=N required\n", false, len);
	int rc = peer_node_transfer(pn, (uint32_t)part, to,
				    ADMIN_PLACEMENT_WAIT_MS, msg, sizeof msg);
	if (!rc)
		return simple(200, "OK", msg, false, len);
	if (rc == -PARLEY_ENOTLEADER)
		return simple(409, "Conflict", msg, false, len);
	if (rc == -PARLEY_EINVAL)
		return simple(400, "Bad Request", msg, false, len);
	if (rc == -PARLEY_ETIMEDOUT)
		return simple(504, "Gateway Timeout", msg, false, len);
	snprintf(msg, sizeof msg, "failed: %s\n", parley_errname(rc));
	return simple(503, "Service Unavailable", msg, false, len);
}

/* POST /cluster/conf?partition=P&op=add-learner|promote|remove&node=N,
 * on P's leader (docs/CLUSTER.md §3.7): one membership change of P, as
 * the node running an add-node / remove-node asks it of the leader of a
 * partition it does not lead (peer_node_conf_one: idempotent; 409 with
 * the `leader=` line elsewhere, 503 while a learner catches up or a
 * change is pending). Blocks the admin thread for one commit. */
static char *admin_conf(struct admin *a, const char *q, size_t *len)
{
	struct peer_node *pn = a->s->peer;
	if (!pn || !a->s->engine)
		return simple(400, "Bad Request", "not a cluster node (or not "
			      "ready)\n", false, len);
	char ps[16], ops[16], ns[32];
	char *e1 = NULL, *e2 = NULL;
	unsigned long part = query_get(q, "partition", ps, sizeof ps)
				     ? strtoul(ps, &e1, 10) : 0;
	uint64_t node = query_get(q, "node", ns, sizeof ns)
				? strtoull(ns, &e2, 10) : 0;
	enum pe_conf_op op = 0;
	if (query_get(q, "op", ops, sizeof ops))
		op = !strcmp(ops, "add-learner") ? PE_CONF_ADD_LEARNER
		     : !strcmp(ops, "promote")	 ? PE_CONF_PROMOTE
		     : !strcmp(ops, "remove")	 ? PE_CONF_REMOVE
						 : 0;
	if (!e1 || *e1 || !e2 || *e2 || !node || !op || part > UINT32_MAX)
		return simple(400, "Bad Request", "partition=P&op=add-learner|"
			      "promote|remove&node=N required\n", false, len);
	char msg[512];
	int rc = peer_node_conf_one(pn, (uint32_t)part, op, node, msg,
				    sizeof msg);
	if (!rc)
		return simple(200, "OK", msg, false, len);
	if (rc == -PARLEY_ENOTLEADER)
		return simple(409, "Conflict", msg, false, len);
	if (rc == -PARLEY_EINVAL)
		return simple(400, "Bad Request", msg, false, len);
	if (rc != -PARLEY_EAGAIN)
		snprintf(msg, sizeof msg, "failed: %s\n", parley_errname(rc));
	return simple(503, "Service Unavailable", msg, false, len);
}

/* The request is complete in c->req[0..rlen): build the answer. */
static char *route(struct admin *a, struct aconn *c, size_t *len)
{
	char method[16], target[256], version[16];
	char *eol = strpbrk(c->req, "\r\n");
	if (eol)
		*eol = '\0';
	if (sscanf(c->req, "%15s %255s %15s", method, target, version) != 3 ||
	    strncmp(version, "HTTP/1.", 7) || target[0] != '/')
		return simple(400, "Bad Request", "bad request\n", false, len);
	char *q = strchr(target, '?');
	if (q)
		*q = '\0';
	bool get = !strcmp(method, "GET"), head = !strcmp(method, "HEAD");
	if (!strcmp(method, "POST") && !strcmp(target, "/admin/compact"))
		return admin_compact(a, len);
	if (!strcmp(method, "POST") && (!strcmp(target, "/cluster/add-node") ||
					!strcmp(target, "/cluster/remove-node")))
		return admin_cluster(a, c, target[9] == 'a', q ? q + 1 : "",
				     len);
	if (!strcmp(method, "POST") && !strcmp(target, "/cluster/conf"))
		return admin_conf(a, q ? q + 1 : "", len);
	if (!strcmp(method, "POST") && (!strcmp(target, "/cluster/transfer") ||
					!strcmp(target, "/cluster/rebalance")))
		return admin_placement(a, c, target[9] == 'r', q ? q + 1 : "", len);
	if (!get && !head)
		return simple(405, "Method Not Allowed", "GET or HEAD only\n", false,
			      len);
	if (!strcmp(target, "/debug/digest"))
		return admin_digest(a, head, len);
	if (!strcmp(target, "/livez"))
		return simple(200, "OK", "ok\n", head, len);
	if (!strcmp(target, "/readyz")) {
		if (atomic_load(&a->ready) && !atomic_load(&a->s->draining) &&
		    can_serve(a->s))
			return simple(200, "OK", "ready\n", head, len);
		return simple(503, "Service Unavailable", "not ready\n", head, len);
	}
	if (!strcmp(target, "/cluster")) {
		bool ready = atomic_load(&a->ready) &&
			     !atomic_load(&a->s->draining) && can_serve(a->s);
		size_t cap = admin_cluster_json(a->s, ready, NULL, 0) + 4096;
		char *b = malloc(cap);
		if (!b)
			return NULL;
		size_t bl = admin_cluster_json(a->s, ready, b, cap);
		char *r = response(200, "OK", "application/json", NULL, b,
				   PARLEY_MIN(bl, cap - 1), head, len);
		free(b);
		return r;
	}
	if (!strcmp(target, "/metrics")) {
		size_t cap = admin_metrics_text(a->s, NULL, 0) +
			     admin_own_metrics(a, NULL, 0) + 4096;
		char *b = malloc(cap);
		if (!b)
			return NULL;
		size_t bl = admin_metrics_text(a->s, b, cap);
		if (bl < cap)
			bl += admin_own_metrics(a, b + bl, cap - bl);
		char *r = response(200, "OK", "text/plain; version=0.0.4", NULL, b,
				   PARLEY_MIN(bl, cap - 1), head, len);
		free(b);
		return r;
	}
	return simple(404, "Not Found", "not found\n", head, len);
}

static void aconn_write(struct admin *a, struct aconn *c)
{
	while (c->ooff < c->olen) {
		ssize_t k = send(c->fd, c->out + c->ooff, c->olen - c->ooff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		c->ooff += (size_t)k;
	}
	aconn_close(a, c);
}

/* Starts writing answer r (NULL: out of memory) and closes when done. */
static void aconn_answer(struct admin *a, struct aconn *c, char *r, size_t len,
			 uint64_t now)
{
	if (!r) {
		send_now(c->fd, 500, "Internal Server Error", "out of memory\n");
		aconn_close(a, c);
		return;
	}
	atomic_fetch_add(&a->requests, 1);
	c->out = r;
	c->olen = len;
	c->ooff = 0;
	c->deadline_ns = now + a->timeout_ns;
	aconn_write(a, c);
}

static void aconn_read(struct admin *a, struct aconn *c, uint64_t now)
{
	for (;;) {
		if (c->rlen == ADMIN_MAX_REQUEST) {
			atomic_fetch_add(&a->rejected, 1);
			send_now(c->fd, 431, "Request Header Fields Too Large",
				 "request too large\n");
			aconn_close(a, c);
			return;
		}
		ssize_t k = recv(c->fd, c->req + c->rlen, ADMIN_MAX_REQUEST - c->rlen,
				 MSG_DONTWAIT);
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			aconn_close(a, c);
			return;
		}
		c->rlen += (size_t)k;
		c->req[c->rlen] = '\0';
		if (memchr(c->req, '\0', c->rlen) || strstr(c->req, "\r\n\r\n") ||
		    strstr(c->req, "\n\n"))
			break;
	}
	size_t len = 0;
	char *r = memchr(c->req, '\0', c->rlen)
			  ? simple(400, "Bad Request", "bad request\n", false, &len)
			  : route(a, c, &len);
	if (!r && c->op_wait) {
		c->deadline_ns = now + (uint64_t)(ADMIN_CLUSTER_WAIT_MS +
						  ADMIN_OP_GRACE_MS) * 1000000ull;
		return;
	}
	aconn_answer(a, c, r, len, now);
}

/* WAITING: the membership operation's answer once it ended (or 504 at
 * the deadline). */
static void aconn_op_check(struct admin *a, struct aconn *c, uint64_t now)
{
	int orc = 0;
	char msg[512];
	int r = peer_node_op_result(a->s->peer, c->op_ticket, &orc, msg,
				    sizeof msg);
	if (r == -PARLEY_EAGAIN && c->deadline_ns > now)
		return;
	size_t len = 0;
	char *o;
	c->op_wait = false;
	if (r == 0)
		o = cluster_answer(c->op_kind, orc, msg, sizeof msg, &len);
	else if (r == -PARLEY_EAGAIN)
		o = simple(504, "Gateway Timeout", "the operation is still "
			   "running: see GET /cluster, repeat the command "
			   "once it ended\n", false, &len);
	else
		o = simple(500, "Internal Server Error", "the operation's "
			   "result was lost\n", false, &len);
	aconn_answer(a, c, o, len, now);
}

static void admin_accept(struct admin *a, uint64_t now)
{
	for (int i = 0; i < 64; i++) {
		int fd = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		if (a->nconns == a->max_conns) {
			/* full: the oldest connection makes room (a slow or idle
			 * client cannot keep a probe out); one waiting for a
			 * membership operation only when all are */
			struct aconn *old = NULL;
			for (int pass = 0; pass < 2 && !old; pass++)
				for (uint32_t k = 0; k < a->max_conns; k++)
					if (a->c[k].fd >= 0 &&
					    (pass || !a->c[k].op_wait) &&
					    (!old || a->c[k].t_accept_ns <
							     old->t_accept_ns))
						old = &a->c[k];
			atomic_fetch_add(&a->evicted, 1);
			if (!old->out)
				send_now(old->fd, 503, "Service Unavailable",
					 "too many admin connections\n");
			aconn_close(a, old);
		}
		struct aconn *c = NULL;
		for (uint32_t k = 0; k < a->max_conns && !c; k++)
			if (a->c[k].fd < 0)
				c = &a->c[k];
		PARLEY_ASSERT(c);
		c->fd = fd;
		c->t_accept_ns = now;
		c->deadline_ns = now + a->timeout_ns;
		c->rlen = 0;
		c->out = NULL;
		c->op_wait = false;
		a->nconns++;
		/* a probe usually sent its request with the handshake: answer
		 * it now, before more connections could evict it */
		aconn_read(a, c, now);
	}
}

static void *admin_main(void *arg)
{
	struct admin *a = arg;
	/* allocated by admin_start, so a failure stops the start */
	struct pollfd *p = a->pfd;
	uint32_t *idx = a->pidx;
	while (!atomic_load(&a->stop)) {
		uint64_t now = parley_mono_ns();
		int timeout_ms = 200; /* the stop flag's latency */
		nfds_t n = 0;
		p[n++] = (struct pollfd){.fd = a->fd, .events = POLLIN};
		for (uint32_t k = 0; k < a->max_conns; k++) {
			struct aconn *c = &a->c[k];
			if (c->fd >= 0 && c->op_wait) {
				aconn_op_check(a, c, now);
				if (c->op_wait) { /* still running */
					if ((int)ADMIN_OP_POLL_MS < timeout_ms)
						timeout_ms = (int)ADMIN_OP_POLL_MS;
					continue;
				}
			}
			if (c->fd < 0)
				continue;
			if (c->deadline_ns <= now) {
				if (!c->out) {
					atomic_fetch_add(&a->timeouts, 1);
					send_now(c->fd, 408, "Request Timeout",
						 "request timeout\n");
				}
				aconn_close(a, c);
				continue;
			}
			uint64_t left_ms = (c->deadline_ns - now + 999999) / 1000000;
			if (left_ms < (uint64_t)timeout_ms)
				timeout_ms = (int)left_ms;
			idx[n] = k;
			p[n++] = (struct pollfd){.fd = c->fd,
						 .events = c->out ? POLLOUT : POLLIN};
		}
		if (poll(p, n, timeout_ms) <= 0)
			continue;
		now = parley_mono_ns();
		for (nfds_t i = 1; i < n; i++) {
			if (!p[i].revents)
				continue;
			struct aconn *c = &a->c[idx[i]];
			if (c->fd < 0)
				continue;
			if (c->out)
				aconn_write(a, c);
			else
				aconn_read(a, c, now);
		}
		if (p[0].revents & POLLIN)
			admin_accept(a, now);
	}
	for (uint32_t k = 0; k < a->max_conns; k++)
		if (a->c[k].fd >= 0)
			aconn_close(a, &a->c[k]);
	return NULL;
}

int admin_start(struct srv *s, const struct admin_opts *o, struct admin **out)
{
	*out = NULL;
	if (!o->port)
		return 0;
	if (!o->max_conns || !o->request_timeout_ms)
		return -PARLEY_EINVAL;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char ps[8];
	snprintf(ps, sizeof ps, "%u", o->port);
	if (getaddrinfo(o->host, ps, &hints, &res))
		return -PARLEY_EINVAL;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1, rc = 0;
	if (fd < 0) {
		rc = -errno;
	} else {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 128)) {
			rc = -errno;
			close(fd);
		}
	}
	freeaddrinfo(res);
	if (rc)
		return rc;
	struct admin *a = calloc(1, sizeof *a);
	struct aconn *c = calloc(o->max_conns, sizeof *c);
	struct pollfd *pfd = calloc(o->max_conns + 1, sizeof *pfd);
	uint32_t *pidx = calloc(o->max_conns + 1, sizeof *pidx);
	if (!a || !c || !pfd || !pidx) {
		free(a);
		free(c);
		free(pfd);
		free(pidx);
		close(fd);
		return -PARLEY_ENOMEM;
	}
	a->pfd = pfd;
	a->pidx = pidx;
	a->s = s;
	a->fd = fd;
	a->c = c;
	a->max_conns = o->max_conns;
	a->compact = o->compact;
	a->digest = o->digest;
	a->timeout_ns = (uint64_t)o->request_timeout_ms * 1000000ull;
	for (uint32_t k = 0; k < o->max_conns; k++)
		c[k].fd = -1;
	rc = pthread_create(&a->thr, NULL, admin_main, a);
	if (rc) {
		close(fd);
		free(c);
		free(pfd);
		free(pidx);
		free(a);
		return -rc;
	}
	*out = a;
	return 0;
}

void admin_set_ready(struct admin *a, int ready)
{
	if (a)
		atomic_store(&a->ready, ready);
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	atomic_store(&a->stop, true);
	pthread_join(a->thr, NULL);
	close(a->fd);
	free(a->c);
	free(a->pfd);
	free(a->pidx);
	free(a);
}
