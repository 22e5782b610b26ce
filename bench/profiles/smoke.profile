# smoke.profile — a tiny 1:1 workload for the end-to-end test and quick
# checks: a few users, one device each, everyone online.
name = smoke
users = 8
devices_per_user = 1
online_fraction = 1
conversations_per_user = 3
group_share = 0.25               # driven as "not exercised (server lacks groups)"
group_size = 5:1
messages_per_user_day = 100
peak_factor = 2
body_bytes = 20:0.5 200:0.5
read_receipts_per_message = 1
typing_per_message = 0.5
history_reads_per_user_day = 20  # 1 read per 5 sends
reconnects_per_device_day = 5    # 1 reconnect per 20 sends
