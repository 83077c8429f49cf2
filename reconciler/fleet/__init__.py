"""The fleet's coordination: reboot slots over the FleetLock protocol, kept in etcd under leases.

``protocol`` is the wire format Zincati and airlock speak (pure); ``semaphore`` the counting
semaphore with recursive locking and ownership (pure, over plain data); ``etcd`` keeps it in etcd,
airlock's key layout plus one leased key per holder; ``server`` is ``fleetlock serve``; ``client``
is what a host uses to take and give back its slot. No consensus of our own: etcd's transactions
decide every race.

Config rollouts: ``rollout`` is the policy of a fleet repository (``rollout.toml``) and the pure
decision for one revision and one health window; ``reports`` keeps each host's (revision,
result) in etcd under its lease; ``rollout_watch`` is the daemon's side (the git source's gate,
the health-window watch, publishing); ``view`` is ``reconciler fleet status``.
"""
