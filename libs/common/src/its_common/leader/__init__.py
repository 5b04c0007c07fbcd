"""Leader election for the singleton services (trader, inference, features).

One replica leads; the others wait hot (process up, ready, not acting) and take over when the
leader's lease expires. In a cluster the lease is a ``coordination.k8s.io/v1`` Lease
(:mod:`its_common.leader.k8s_lease`); outside one it is a Redis key with a fencing token
(:mod:`its_common.leader.redis_lease`). :mod:`its_common.leader.elector` keeps the lease and
answers "am I the leader, with which fencing token"; :mod:`its_common.leader.gate` runs a service's
main only while it leads.
"""
