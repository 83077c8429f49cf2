"""Setting generators: values computed once at boot, never over a set value."""

from __future__ import annotations

import random
import socket

import pytest

from hostcore.keys import unflatten
from reconciler.generators import generate, host_id_from_hostname, setting_generators
from reconciler.schema import VARIANTS, Schema

SEED = "settings.updates.seed"
HOST_ID = "settings.gitops.host-id"
REGION = "settings.aws.region"
NODE_ID = "settings.coordination.node-id"
EXPECTED_HOST_ID = host_id_from_hostname(socket.gethostname())


PLATFORM_K8S = {f"settings.kubernetes.{name}": name for name in
                ("node-ip", "cluster-dns-ip", "max-pods", "pod-infra-container-image")}


@pytest.mark.parametrize("variant", VARIANTS)
def test_setting_generators(variant):
    generators = setting_generators(variant)
    assert {HOST_ID: "host-id", SEED: "seed", REGION: "aws-region",
            NODE_ID: "node-id"}.items() <= generators.items()
    assert (PLATFORM_K8S.items() <= generators.items()) == ("kubernetes" in
                                                           Schema.load(variant).sections)
    assert list(generators) == sorted(generators)


def test_unknown_variant():
    with pytest.raises(ValueError, match="aws-dev"):
        setting_generators("nope")
    with pytest.raises(ValueError):
        generate("nope", {})


@pytest.mark.parametrize("variant", VARIANTS)
def test_generate_on_an_empty_host(variant):
    generated = generate(variant, {}, random.Random(7))
    assert 0 <= generated[SEED] < 2048
    assert generated.get(HOST_ID) == EXPECTED_HOST_ID
    assert set(generated) <= {SEED, HOST_ID, NODE_ID}
    assert len(generated[NODE_ID]) == 32  # 128 random bits, as hex
    assert Schema.load(variant).validate(unflatten(generated, strip=1)) == []


def test_seed_comes_from_the_rng():
    a = generate("aws-dev", {}, random.Random(42))[SEED]
    assert a == generate("aws-dev", {}, random.Random(42))[SEED]
    assert a == random.Random(42).randrange(2048)
    seeds = {generate("aws-dev", {HOST_ID: "h"}, random.Random(i))[SEED] for i in range(2000)}
    assert min(seeds) < 50 and max(seeds) > 2000 and max(seeds) < 2048
    assert len(seeds) > 1000  # spread over the range


def test_default_rng_is_system_random():
    values = {generate("aws-dev", {HOST_ID: "h"})[SEED] for _ in range(20)}
    assert all(0 <= v < 2048 for v in values)
    assert len(values) > 1


def test_set_values_are_never_overwritten():
    live = {SEED: 5, HOST_ID: "node-1", NODE_ID: "n", "settings.motd": "hi"}
    assert generate("aws-k8s", live, random.Random(1)) == {}
    only_seed = generate("aws-k8s", {HOST_ID: "mine", NODE_ID: "n"}, random.Random(1))
    assert set(only_seed) == {SEED}


def test_skip_is_segment_prefix_based():
    # a key below the generated key counts as set; a look-alike string prefix does not
    live = {SEED + ".x": 1, "settings.gitops.host-idx": "y", "settings.updates.seeds": 3}
    generated = generate("aws-dev", live, random.Random(3))
    assert SEED not in generated
    assert generated.get(HOST_ID) == EXPECTED_HOST_ID
    # quoted spellings of the same key are the same key
    assert SEED not in generate("aws-dev", {'settings."updates".seed': 9}, random.Random(3))


def test_generators_see_live_only():
    live = {"settings.updates.ignore-waves": True}
    assert set(generate("aws-dev", live, random.Random(0))) >= {SEED}


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("node-1", "node-1"),
        ("ip-10-0-0-1.ec2.internal", "ip-10-0-0-1.ec2.internal"),
        ("My Host!", "My-Host"),
        ("  web_01  ", "web_01"),
        ("-lead.trail-", "lead.trail"),
        ("localhost", None),
        ("LOCALHOST.localdomain", None),
        ("", None),
        ("!!!", None),
        ("a" * 70 + ".example.com", "a" * 63),  # first label, cut to 63
        ("short." + "b" * 70, "short"),
        ("x" * 63, "x" * 63),
    ],
)
def test_host_id_from_hostname(hostname, expected):
    result = host_id_from_hostname(hostname)
    assert result == expected
    if result is not None:
        settings = {"gitops": {"host-id": result}}
        assert Schema.load("aws-dev").validate(settings) == []
