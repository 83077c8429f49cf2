"""Facts about the instance (plain data) and the settings pluto derives from them (pure).

``PlatformFacts`` is what the metadata service said, read once at boot by :func:`read_facts`;
everything else here is a pure function of it, so that the rules (Bottlerocket's pluto) are
tested on values, not on a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from reconciler.platform.imds import ImdsClient, ImdsUnavailable

# EC2 instance types -> (network interfaces, IPv4 addresses per interface), from the EC2 user
# guide's "IP addresses per network interface per instance type" table, for the families a
# Kubernetes fleet runs most. A type missing here gets no generated max-pods (as pluto exits 2),
# and the kubelet template falls back to 110.
_ENI_LIMITS: dict[str, tuple[int, int]] = {}


def _family(names: str, sizes: dict[str, tuple[int, int]]) -> None:
    for name in names.split():
        for size, limits in sizes.items():
            _ENI_LIMITS[f"{name}.{size}"] = limits


_T3 = {"nano": (2, 2), "micro": (2, 2), "small": (3, 4), "medium": (3, 6), "large": (3, 12),
       "xlarge": (4, 15), "2xlarge": (4, 15)}
_GENERAL = {"large": (3, 10), "xlarge": (4, 15), "2xlarge": (4, 15), "4xlarge": (8, 30),
            "8xlarge": (8, 30), "12xlarge": (8, 30), "16xlarge": (15, 50), "24xlarge": (15, 50),
            "metal": (15, 50)}
_GRAVITON = {"medium": (2, 4), "large": (3, 10), "xlarge": (4, 15), "2xlarge": (4, 15),
             "4xlarge": (8, 30), "8xlarge": (8, 30), "12xlarge": (8, 30), "16xlarge": (15, 50),
             "metal": (15, 50)}
_C5 = {"large": (3, 10), "xlarge": (4, 15), "2xlarge": (4, 15), "4xlarge": (8, 30),
       "9xlarge": (8, 30), "12xlarge": (8, 30), "18xlarge": (15, 50), "24xlarge": (15, 50),
       "metal": (15, 50)}
_family("t3 t3a", _T3)
_family("m5 m5a m5d r5 r5a r5d m6i r6i c6i", _GENERAL)
_family("m6g m7g c6g c7g r6g r7g", _GRAVITON)
_family("c5 c5d", _C5)

CLUSTER_DNS_IP_IN_10 = "172.20.0.10"  # the VPC uses 10.0.0.0/8: keep the service range apart
CLUSTER_DNS_IP = "10.100.0.10"
PAUSE_IMAGE = "eks/pause:3.1-eksbuild.1"
_ECR_ACCOUNT = "602401143452"
# Regions whose EKS images live in another account (EKS user guide, "Amazon container image
# registries").
_ECR_ACCOUNTS = {
    "af-south-1": "877085696533", "ap-east-1": "800184023465", "ap-south-2": "900889452093",
    "ap-southeast-3": "296578399912", "ap-southeast-4": "491585149902",
    "ca-west-1": "761377655185", "cn-north-1": "918309763551", "cn-northwest-1": "961992271922",
    "eu-central-2": "900612956339", "eu-south-1": "590381155156", "eu-south-2": "455263428931",
    "il-central-1": "066635153087", "me-central-1": "759879836304",
    "me-south-1": "558608220178", "us-gov-east-1": "151742754352",
    "us-gov-west-1": "013241004608",
}


@dataclass(frozen=True)
class PlatformFacts:
    """What the instance metadata service said about this instance (absent: ``None``)."""

    region: str | None = None
    availability_zone: str | None = None
    instance_id: str | None = None
    instance_type: str | None = None
    local_ipv4: str | None = None
    ipv6: str | None = None
    local_hostname: str | None = None
    vpc_ipv4_cidrs: tuple[str, ...] = field(default_factory=tuple)


def max_pods(instance_type: str | None) -> int | None:
    """Pods the VPC CNI can address: ENIs × (IPv4 per ENI − 1) + 2 (host-network pods)."""
    limits = _ENI_LIMITS.get(instance_type or "")
    if limits is None:
        return None
    enis, per_eni = limits
    return enis * (per_eni - 1) + 2


def cluster_dns_ip(vpc_ipv4_cidrs: tuple[str, ...]) -> str | None:
    """The EKS default service DNS address, chosen not to collide with the VPC's range."""
    if not vpc_ipv4_cidrs:
        return None
    return CLUSTER_DNS_IP_IN_10 if vpc_ipv4_cidrs[0].startswith("10.") else CLUSTER_DNS_IP


def ecr_registry(region: str) -> str:
    """The registry of EKS's own images (pause, credential provider) in ``region``."""
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{_ECR_ACCOUNTS.get(region, _ECR_ACCOUNT)}.dkr.ecr.{region}.{domain}"


def pause_image(region: str | None) -> str | None:
    return f"{ecr_registry(region)}/{PAUSE_IMAGE}" if region else None


def provider_id(facts: PlatformFacts) -> str | None:
    """The kubelet's ``--provider-id`` as the AWS cloud provider spells it."""
    if not (facts.availability_zone and facts.instance_id):
        return None
    return f"aws:///{facts.availability_zone}/{facts.instance_id}"


_IDENTITY = "/latest/dynamic/instance-identity/document"
_META = "/latest/meta-data/"


def read_facts(imds: ImdsClient) -> PlatformFacts:
    """Ask the metadata service; raises :class:`ImdsUnavailable` when it cannot answer."""
    body = imds.get(_IDENTITY)
    try:
        identity = json.loads(body) if body else {}
    except ValueError:
        raise ImdsUnavailable(f"{imds.endpoint}{_IDENTITY}: not a JSON document") from None
    if not isinstance(identity, dict):
        raise ImdsUnavailable(f"{imds.endpoint}{_IDENTITY}: not a JSON object")
    mac = imds.get_text(_META + "mac")
    interface = _META + f"network/interfaces/macs/{mac}/"
    cidrs = imds.get_text(interface + "vpc-ipv4-cidr-blocks") if mac else None
    ipv6 = imds.get_text(interface + "ipv6s") if mac else None

    def text(name: str) -> str | None:
        value = identity.get(name)
        return value if isinstance(value, str) and value else None

    return PlatformFacts(
        region=text("region"),
        availability_zone=text("availabilityZone"),
        instance_id=text("instanceId"),
        instance_type=text("instanceType"),
        local_ipv4=text("privateIp") or imds.get_text(_META + "local-ipv4"),
        ipv6=(ipv6.split()[0] if ipv6 else None),
        local_hostname=imds.get_text(_META + "local-hostname"),
        vpc_ipv4_cidrs=tuple(cidrs.split()) if cidrs else (),
    )
