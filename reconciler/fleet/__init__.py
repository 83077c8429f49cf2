"""The fleet's coordination: reboot slots over the FleetLock protocol, kept in etcd under leases.

``protocol`` is the wire format Zincati and airlock speak (pure); ``semaphore`` the counting
semaphore with recursive locking and ownership (pure, over plain data); ``etcd`` keeps it in etcd,
airlock's key layout plus one leased key per holder; ``server`` is ``fleetlock serve``; ``client``
is what a host uses to take and give back its slot. No consensus of our own: etcd's transactions
decide every race.
"""
