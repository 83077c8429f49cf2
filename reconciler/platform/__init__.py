"""What the platform tells a host about itself: user data and instance metadata.

Bottlerocket's early-boot-config (user-data providers tried in a fixed order) and pluto (settings
computed from instance metadata). ``imds`` is the only module here that does network I/O;
``providers`` reads user data through small provider objects; ``facts`` derives settings from
plain metadata values and is pure.
"""
