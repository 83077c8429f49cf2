"""The project's own host-container images, ``admin`` and ``control``, built offline.

``reconciler images build`` makes ``localhost/host-reconciler/{admin,control}:v<version>``:

1. a Debian base rootfs by ``mmdebstrap`` (the only network use: Debian's package registry),
   kept as a tarball keyed by its package list;
2. ``podman import`` of that tarball as the base image, in a builder storage of our own;
3. ``podman build --pull=never`` of one small layer per role (``files/Containerfile.<role>``):
   the tools zipapp, the start script, ``sheltie``;
4. ``podman save`` of each image to a ``docker-archive`` in the machine's image directory.

Every daemon's engine has a storage of its own (under its state dir), so the images reach it
through that directory: a ``localhost/host-reconciler/...`` source missing from the engine's
store is loaded from its archive there (``reconciler.containers.pulls``), never pulled. Each
step is skipped when the hash of its inputs matches what was built (``<dir>/<role>.inputs``).
"""
