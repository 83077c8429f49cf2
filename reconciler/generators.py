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

Platform generators, Bottlerocket's early-boot-config identity document, ``netdog`` and
``pluto``, read the instance's metadata (:class:`reconciler.platform.facts.PlatformFacts`,
fetched once at boot when one of their keys is unset) and skip when there is none:

* ``aws-region`` -> ``settings.aws.region`` (the identity document's region);
* ``hostname`` -> ``settings.network.hostname`` (IMDS ``local-hostname``);
* ``node-ip`` -> ``settings.kubernetes.node-ip`` (the primary interface's address);
* ``cluster-dns-ip`` -> ``settings.kubernetes.cluster-dns-ip`` (``172.20.0.10`` in a VPC of
  ``10.0.0.0/8``, else ``10.100.0.10``, as pluto does);
* ``max-pods`` -> ``settings.kubernetes.max-pods`` (ENIs × (IPv4 per ENI − 1) + 2, from the
  instance type's limits; unknown types are skipped and the kubelet falls back to 110);
* ``provider-id`` -> ``settings.kubernetes.provider-id`` (``aws:///<zone>/<instance id>``);
* ``pod-infra-container-image`` -> the pause image in the region's EKS registry.

And ``node-id`` -> ``settings.coordination.node-id``: this host's identity at the fleet's lock
server (128 random bits, as Zincati derives an app-specific id rather than exposing the
machine-id).

Each one is also a command, ``reconciler generate NAME``, which prints the value as JSON or
exits 2 when it has none (sundog's contract); ``GET /metadata/setting-generators`` lists them.
A generator whose key the variant's schema does not declare is not offered.
"""

from __future__ import annotations

import random
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hostcore.keys import InvalidKeyError, is_under, normalize_key, split_key, unflatten
from reconciler.logs import get_logger
from reconciler.platform import facts as platform
from reconciler.platform.facts import PlatformFacts
from reconciler.schema import Schema


@dataclass(frozen=True)
class Context:
    """What a generator may read: randomness and the instance's metadata (None: none known)."""

    rng: random.Random
    facts: PlatformFacts | None = None


Generator = Callable[[Context], Any]

_log = get_logger("generators")
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
def _seed(context: Context) -> int:
    return context.rng.randrange(SEED_RANGE)


def host_id_from_hostname(hostname: str) -> str | None:
    """A valid ``settings.gitops.host-id`` made from a host name, or None if it is no good."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", hostname.strip()).strip("._-")
    if len(name) > 63:
        name = name.split(".", 1)[0][:63].strip("._-")
    if not name or name.lower() in _GENERIC_HOSTNAMES or not _HOST_ID.fullmatch(name):
        return None
    return name


@register("host-id", "settings.gitops.host-id")
def _host_id(context: Context) -> str | None:
    return host_id_from_hostname(socket.gethostname())


@register("node-id", "settings.coordination.node-id")
def _node_id(context: Context) -> str:
    """An app-specific identity for the lock server, as Zincati derives one (never the
    machine-id itself): random (the system's, not ``context.rng``: an identity must not be
    predictable), fixed at first boot."""
    return uuid.uuid4().hex


def _from_facts(name: str, key: str, derive: Callable[[PlatformFacts], Any]) -> None:
    """A platform generator: ``derive(facts)``, skipped when no metadata was read."""
    _PLATFORM.add(name)
    register(name, key)(lambda context: derive(context.facts) if context.facts else None)


_PLATFORM: set[str] = set()
_from_facts("aws-region", "settings.aws.region", lambda f: f.region)
_from_facts("hostname", "settings.network.hostname", lambda f: f.local_hostname)
_from_facts("node-ip", "settings.kubernetes.node-ip", lambda f: f.local_ipv4 or f.ipv6)
_from_facts(
    "cluster-dns-ip", "settings.kubernetes.cluster-dns-ip",
    lambda f: platform.cluster_dns_ip(f.vpc_ipv4_cidrs),
)
_from_facts(
    "max-pods", "settings.kubernetes.max-pods", lambda f: platform.max_pods(f.instance_type)
)
_from_facts("provider-id", "settings.kubernetes.provider-id", platform.provider_id)
_from_facts(
    "pod-infra-container-image", "settings.kubernetes.pod-infra-container-image",
    lambda f: platform.pause_image(f.region),
)


def command_of(name: str) -> str:
    """The command that runs generator ``name`` on its own (sundog's contract)."""
    return f"reconciler generate {name}"


def run_one(name: str, context: Context) -> Any:
    """The value of generator ``name`` (None: it has none); KeyError for an unknown name."""
    return _GENERATORS[name](context)


def generator_names() -> list[str]:
    return sorted(_GENERATORS)


def setting_generators(variant: str) -> dict[str, str]:
    """``{full key: generator name}`` of the variant."""
    schema = Schema.load(variant)
    return {key: name for key, name in sorted(_KEYS.items()) if schema.defines(key)}


def setting_generator_commands(variant: str) -> dict[str, str]:
    """``{full key: command}`` (``GET /metadata/setting-generators``, as Bottlerocket)."""
    return {key: command_of(name) for key, name in setting_generators(variant).items()}


def needs_platform(variant: str, live: Mapping[str, Any]) -> bool:
    """Whether a platform generator has an unset key (only then is the metadata service asked)."""
    present = [_normal(key) for key in live]
    return any(
        name in _PLATFORM and not any(is_under(existing, key) for existing in present)
        for key, name in setting_generators(variant).items()
    )


def _normal(key: str) -> str:
    try:
        return normalize_key(key)
    except InvalidKeyError:
        return key


def generate(
    variant: str,
    live: Mapping[str, Any],
    rng: random.Random | None = None,
    facts: PlatformFacts | None = None,
) -> dict[str, Any]:
    """Flat ``{key: value}`` of generated values, for the generated keys not set in ``live``.

    ``live`` is the flat ``{full key: value}`` map of live settings. Generators run in key
    order and see only ``live`` (not each other's results). The values are checked against the
    schema; an invalid one is a bug and raises ``reconciler.schema.InvalidSettings``.
    """
    schema = Schema.load(variant)
    context = Context(rng if rng is not None else random.SystemRandom(), facts)
    present = [_normal(key) for key in live]
    generated: dict[str, Any] = {}
    for key, name in setting_generators(variant).items():
        if any(is_under(existing, key) for existing in present):
            continue
        value = _GENERATORS[name](context)
        if value is None:
            continue
        if name in _PLATFORM:  # the metadata service's word is input, not code: check it alone
            problems = schema.validate(unflatten({key: value}, strip=1))
            if problems:
                _log.warning("generated value refused", generator=name, key=key,
                             problem=str(problems[0]))
                continue
        generated[key] = value
    if generated:
        schema.check(
            unflatten(generated, strip=1),
            sections={split_key(k)[1] for k in generated},
            origin="setting generators",
        )
    return generated
