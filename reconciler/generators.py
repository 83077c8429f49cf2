"""Setting generators: values computed once, at boot, for settings nobody has set.

Bottlerocket ran a command per generated key (``bork seed``, ``pluto node-ip``...); here a
generator is a plain Python function registered under a name, with no shell and no network.
A generator gets a :class:`random.Random` and returns the value, or ``None`` to skip the key
(Bottlerocket's exit code 2). It never overwrites: the generator of key ``K`` is skipped when
``K`` or any key below it is live, so user data, the API and earlier boots always win.

Generators kept, because they make sense on any host:

* ``seed`` -> ``settings.updates.seed``: a uniform integer in [0, 2048), the host's place in
  update waves;
* ``host-id`` -> ``settings.gitops.host-id``: the host name (``socket.gethostname()``) made a
  valid host id (characters other than letters, digits, ``.``, ``_`` and ``-`` become ``-``, at
  most 63 characters; too long a name falls back to its first label). Skipped when the name is
  empty or generic (``localhost``...), since every host would then share one id. Like every
  generated value it is fixed at first boot: renaming the host later does not change it (set or
  delete the key to change it).

The AWS-specific generators of Bottlerocket (``pluto``: max-pods, node-ip, cluster-dns-ip,
pause image; ``schnauzer`` templates for host-container sources and update URLs) are not kept:
they need instance metadata, and the settings they filled are user data or defaults here.
"""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.keys import InvalidKeyError, is_under, normalize_key, split_key, unflatten
from reconciler.schema import Schema

Generator = Callable[[random.Random], Any]

_GENERATORS: dict[str, Generator] = {}
# key -> generator name, for every variant that has the key's section
_KEYS: dict[str, str] = {}

SEED_RANGE = 2048
_GENERIC_HOSTNAMES = frozenset({"localhost", "localhost.localdomain", "localdomain", "none"})
_HOST_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def register(name: str, key: str) -> Callable[[Generator], Generator]:
    """Register ``function`` as generator ``name`` of setting ``key``."""

    def decorate(function: Generator) -> Generator:
        if name in _GENERATORS or key in _KEYS:
            raise ValueError(f"generator {name!r} or key {key!r} is already registered")
        _GENERATORS[name] = function
        _KEYS[normalize_key(key)] = name
        return function

    return decorate


@register("seed", "settings.updates.seed")
def _seed(rng: random.Random) -> int:
    return rng.randrange(SEED_RANGE)


def host_id_from_hostname(hostname: str) -> str | None:
    """A valid ``settings.gitops.host-id`` made from a host name, or None if it is no good."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", hostname.strip()).strip("._-")
    if len(name) > 63:
        name = name.split(".", 1)[0][:63].strip("._-")
    if not name or name.lower() in _GENERIC_HOSTNAMES or not _HOST_ID.fullmatch(name):
        return None
    return name


@register("host-id", "settings.gitops.host-id")
def _host_id(rng: random.Random) -> str | None:
    return host_id_from_hostname(socket.gethostname())


def setting_generators(variant: str) -> dict[str, str]:
    """``{full key: generator name}`` of the variant (``GET /metadata/setting-generators``)."""
    sections = set(Schema.load(variant).sections)
    return {key: name for key, name in sorted(_KEYS.items()) if split_key(key)[1] in sections}


def generator_command(name: str) -> str:
    """The command that prints generator ``name``'s value as JSON (exit 2: nothing to set)."""
    return f"reconciler generate {name}"


def generator_commands(variant: str) -> dict[str, str]:
    """``{full key: command}`` of the variant (Bottlerocket's ``/metadata/setting-generators``)."""
    return {k: generator_command(name) for k, name in setting_generators(variant).items()}


def run_generator(name: str, rng: random.Random | None = None) -> Any:
    """The value of generator ``name`` (None: it has nothing to set); KeyError if unknown."""
    if name not in _GENERATORS:
        raise KeyError(f"unknown generator {name!r}; known: {', '.join(sorted(_GENERATORS))}")
    return _GENERATORS[name](rng if rng is not None else random.SystemRandom())


def _normal(key: str) -> str:
    try:
        return normalize_key(key)
    except InvalidKeyError:
        return key


def generate(
    variant: str, live: Mapping[str, Any], rng: random.Random | None = None
) -> dict[str, Any]:
    """Flat ``{key: value}`` of generated values, for the generated keys not set in ``live``.

    ``live`` is the flat ``{full key: value}`` map of live settings. Generators run in key
    order and see only ``live`` (not each other's results). The values are checked against the
    schema; an invalid one is a bug and raises ``reconciler.schema.InvalidSettings``.
    """
    rng = rng if rng is not None else random.SystemRandom()
    present = [_normal(key) for key in live]
    generated: dict[str, Any] = {}
    for key, name in setting_generators(variant).items():
        if any(is_under(existing, key) for existing in present):
            continue
        value = _GENERATORS[name](rng)
        if value is not None:
            generated[key] = value
    if generated:
        Schema.load(variant).check(
            unflatten(generated, strip=1),
            sections={split_key(k)[1] for k in generated},
            origin="setting generators",
        )
    return generated
