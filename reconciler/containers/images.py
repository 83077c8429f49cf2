"""The image a host container runs on, and running it.

The image comes from ``Pulls`` (off the pass, with its own deadline and backoff: a slow source
answers ``PullPending`` and the old container keeps running). A container whose cached image went
away behind our back (``podman rmi``) is run again on a fresh pull; a run that fails leaves no
half-made container behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hostcore import faults
from reconciler.containers.engine import ContainerEngine, EngineError, Image, RunSpec
from reconciler.containers.pulls import Pulls


def run_on_image(engine: ContainerEngine, pulls: Pulls, name: str, source: str,
                 pulled: tuple[Image, bool], spec: Callable[[Image], RunSpec],
                 replace: bool) -> Image:
    """Run container ``name`` on ``pulled`` (the image and whether it came from the cache),
    replacing the old container first when ``replace``; the image it runs on."""
    image, cached = pulled
    if replace:
        engine.remove(name)
        faults.point(f"container-removed:{name}")
    try:
        engine.run(spec(image))
        faults.point(f"container-created:{name}")
    except EngineError:
        with contextlib.suppress(EngineError):
            engine.remove(name)  # no half-made container left behind
        if not cached:
            raise
        pulls.forget(source)  # the image went away behind our back: again
        image, _ = pulls.image(name, source)
        engine.run(spec(image))
    return image
