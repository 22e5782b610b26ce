# whatsapp-like.profile — a mobile messenger: mostly 1:1, short texts,
# a phone and sometimes a second device, sharp evening peak.
# Format: bench/bench_profile.h (key = value, # comments, value:weight lists).
# Figures are illustrative orders of magnitude for sizing exercises, not
# data about any real service.
name = whatsapp-like
users = 50000000                 # daily active users
devices_per_user = 1.3           # phone + some desktop/web companions
online_fraction = 0.25           # devices holding a connection at peak
conversations_per_user = 15      # active conversations
group_share = 0.2                # fraction of messages sent to groups
group_size = 4:0.5 10:0.3 50:0.15 256:0.05   # members:weight
messages_per_user_day = 40
peak_factor = 3                  # peak-hour rate / day-average rate
body_bytes = 12:0.35 40:0.35 120:0.2 600:0.1 # bytes:weight (text; media by reference)
read_receipts_per_message = 1    # per message received
delivery_receipts_per_message = 1
typing_per_message = 0.5
history_reads_per_user_day = 4   # pages of 50 scrolled back
reconnects_per_device_day = 12   # network changes, app switches
# deployment (planner)
replication_factor = 3
retention_days = 365
target_utilisation = 0.6         # 40% headroom at peak
target_p99_ms = 50               # send -> durable ack
