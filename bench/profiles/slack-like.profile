# slack-like.profile — team chat: most messages go to channels (groups),
# desktop + phone per user, long working-hours plateau, lots of scrolling.
# Format: bench/bench_profile.h. Illustrative figures for sizing exercises.
name = slack-like
users = 5000000
devices_per_user = 2             # desktop + phone
online_fraction = 0.6            # logged in all day at work
conversations_per_user = 30      # channels + DMs
group_share = 0.7                # channel messages
group_size = 5:0.4 20:0.35 100:0.2 1000:0.05
messages_per_user_day = 60
peak_factor = 2.5
body_bytes = 30:0.3 100:0.4 400:0.25 3000:0.05
read_receipts_per_message = 0.3  # read markers per channel, not per message
delivery_receipts_per_message = 0
typing_per_message = 1
history_reads_per_user_day = 25  # channel switches load the last page
reconnects_per_device_day = 6
replication_factor = 3
retention_days = 730
target_utilisation = 0.6
target_p99_ms = 100
