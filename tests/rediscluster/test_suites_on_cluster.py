"""Existing Redis suites re-run unchanged against the three-primary cluster.

The ``redis_client`` fixture of this directory is the cluster client (ITS_REDIS_CLUSTER=true), so
each test below runs its Lua scripts, transactions and pipelines through Redis Cluster: the
consumer framework (read with the head check in one MULTI, claim, ack, dead-letter, dead-consumer
script with its liveness key), the Redis lease (two-key scripts), the trimmer (scripts, INFO),
the simulated broker reading the trades shards of several nodes (one XREAD per slot), the
alerter's Redis memory (INFO of every primary), heartbeat (SCAN of every primary) and lag rules,
the features processor (feature entries, caches, the live symbol list, the market clock).
"""

from __future__ import annotations

from tests.alerter.test_rules import (
    test_heartbeat_missing,
    test_loader_lag_pending_and_backlog,
    test_redis_memory_threshold,
)
from tests.common.test_consumer import (
    running,
    test_a_crashed_consumer_rereads_its_own_pending_entries_on_restart,
    test_a_deleted_stream_recreates_the_group,
    test_an_entry_delivered_too_often_is_dead_lettered_before_handling,
    test_dead_consumers_are_claimed_and_removed_but_never_a_live_peer,
    test_entries_are_acked_only_after_the_handler_returns,
    test_entries_trimmed_before_they_were_read_become_a_gap_window,
    test_lag_metrics,
    test_pending_entries_trimmed_before_they_were_handled_are_counted,
    test_poison_goes_to_the_dead_letter_stream_with_its_reason,
    test_stop_finishes_and_acks_the_batch_in_hand,
)
from tests.common.test_trimming import (
    test_a_lagging_group_keeps_its_unread_entries_past_maxlen,
    test_a_stream_without_groups_is_trimmed_by_the_policy,
    test_age_trimming_removes_read_entries_older_than_the_policy_age,
    test_delivered_but_unacked_entries_are_kept,
    test_entries_every_group_read_and_acked_are_trimmed_to_maxlen,
    test_over_the_high_water_mark_unread_entries_are_trimmed_counted_logged_and_reported,
    test_the_trimmer_runs_periodically_until_stopped,
)
from tests.features_service.test_features_service import (
    test_features_follow_the_live_symbol_list,
    test_processor_publishes_stream_entries_and_the_cache,
    test_the_market_clock_is_awaited_before_assembling,
)
from tests.leader.test_redis_lease import (
    test_a_lost_token_counter_restarts_above_the_old_tokens,
    test_a_standby_elector_takes_over_when_the_leader_stops_and_releases,
    test_an_unrenewed_lease_expires_and_the_renewal_extends_it,
    test_one_holder_and_a_larger_token_for_every_new_holder,
)
from tests.trader.conftest import db_url
from tests.trader.test_simbroker import (
    test_fills_at_the_next_trade_never_at_a_price_seen_before_the_order,
    test_with_stream_shards_each_symbol_fills_from_its_own_shard,
)

__all__ = [
    "db_url",
    "running",
    "test_a_crashed_consumer_rereads_its_own_pending_entries_on_restart",
    "test_a_deleted_stream_recreates_the_group",
    "test_a_lagging_group_keeps_its_unread_entries_past_maxlen",
    "test_a_lost_token_counter_restarts_above_the_old_tokens",
    "test_a_standby_elector_takes_over_when_the_leader_stops_and_releases",
    "test_a_stream_without_groups_is_trimmed_by_the_policy",
    "test_age_trimming_removes_read_entries_older_than_the_policy_age",
    "test_an_entry_delivered_too_often_is_dead_lettered_before_handling",
    "test_an_unrenewed_lease_expires_and_the_renewal_extends_it",
    "test_dead_consumers_are_claimed_and_removed_but_never_a_live_peer",
    "test_delivered_but_unacked_entries_are_kept",
    "test_entries_are_acked_only_after_the_handler_returns",
    "test_entries_every_group_read_and_acked_are_trimmed_to_maxlen",
    "test_entries_trimmed_before_they_were_read_become_a_gap_window",
    "test_features_follow_the_live_symbol_list",
    "test_fills_at_the_next_trade_never_at_a_price_seen_before_the_order",
    "test_heartbeat_missing",
    "test_lag_metrics",
    "test_loader_lag_pending_and_backlog",
    "test_one_holder_and_a_larger_token_for_every_new_holder",
    "test_over_the_high_water_mark_unread_entries_are_trimmed_counted_logged_and_reported",
    "test_pending_entries_trimmed_before_they_were_handled_are_counted",
    "test_poison_goes_to_the_dead_letter_stream_with_its_reason",
    "test_processor_publishes_stream_entries_and_the_cache",
    "test_redis_memory_threshold",
    "test_stop_finishes_and_acks_the_batch_in_hand",
    "test_the_market_clock_is_awaited_before_assembling",
    "test_the_trimmer_runs_periodically_until_stopped",
    "test_with_stream_shards_each_symbol_fills_from_its_own_shard",
]
