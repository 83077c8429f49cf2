"""Fuzzing: the API against its OpenAPI spec, documents, manifest.json and GPT tables.

Every API operation takes ``FUZZ_EXAMPLES`` hypothesis examples per generation mode, every pure
parser test four times as many (default 25: about two thousand cases in ~20 s for ``make test``;
``bench/bench_fuzz.py`` runs it with ``FUZZ_EXAMPLES=200``, tens of thousands). Each module run
prints one line per target with the number of cases actually run. What is asserted:

* API: no 5xx and responses conforming to the spec, for valid and invalid requests;
* documents (user data, git files): bytes of any shape parse to a document or raise DocumentError,
  and validation answers problems (InvalidSettings), never anything else;
* manifest.json: a Manifest or ManifestError;
* GPT: a mutated table is refused with GptError (or read as a table that is internally sane),
  never a crash, whether or not the mutation fixed the CRCs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import os
import socket
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from hostcore.documents import DocumentError, parse_document, settings_of
from reconciler.api.server import make_app
from reconciler.boot import boot
from reconciler.events import Events
from reconciler.host import open_host
from reconciler.metrics import Metrics
from reconciler.schema import InvalidSettings, Schema
from reconciler.worker import Worker
from tests.daemon import REPO
from updates import gpt
from updates.manifest import ManifestError, parse_manifest

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SPEC = REPO / "reconciler/api/openapi.yaml"
CASES: Counter[str] = Counter()
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                database=None)
LOCAL_FUZZ = settings(FUZZ, max_examples=4 * EXAMPLES)  # pure parsers: cheap, so 4x the cases


@pytest.fixture(scope="module", autouse=True)
def report(request) -> Iterator[None]:
    """One line per fuzz target with the number of cases run (shown without -s too)."""
    yield
    lines = [f"fuzz {target}: {count} cases (FUZZ_EXAMPLES={EXAMPLES})"
             for target, count in sorted(CASES.items())]
    lines.append(f"fuzz total: {sum(CASES.values())} cases")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)


# --- the API against its spec ---------------------------------------------------------------------

# Bodies of these are settings documents (schemas/ decide, not the spec), and commits answer 422
# when nothing is pending: a request valid for the spec may be refused by design.
STATE_OR_SETTINGS_DEPENDENT = {
    "PATCH /settings", "PATCH /settings/keypair", "POST /tx/commit", "POST /tx/commit_and_apply",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    """The real app (store, worker, renderers) on loopback TCP, for schemathesis."""
    state = tmp_path_factory.mktemp("fuzz-api")
    host = open_host(Path(state), variant="aws-dev")
    boot(host.store, host.schema, [REPO / "examples/user-data/aws-dev.toml"])
    port = _free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        worker = Worker(host, Events(), Metrics(), interval=3600)
        app = make_app(host, worker, Events(), Metrics())
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        task = asyncio.create_task(worker.run())
        started.set()
        await stop.wait()
        worker.stop()
        await task
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    host.store.close()


def _cases() -> list:
    """(operation, mode): valid requests for every operation, invalid ones where there is an
    input to get wrong (a parameter or a body)."""
    schema = schemathesis.openapi.from_path(SPEC)
    cases = []
    for result in schema.get_all_operations():
        operation = result.ok()
        cases.append(pytest.param(operation, GenerationMode.POSITIVE,
                                  id=f"{operation.label} positive"))
        if list(operation.iter_parameters()) or operation.definition.raw.get("requestBody"):
            cases.append(pytest.param(operation, GenerationMode.NEGATIVE,
                                      id=f"{operation.label} negative"))
    return cases


@pytest.mark.parametrize(("operation", "mode"), _cases())
def test_api_fuzz(operation, mode, base_url):
    checks = [schemathesis.checks.not_a_server_error]
    if mode is GenerationMode.POSITIVE:
        excluded = []
        if operation.label in STATE_OR_SETTINGS_DEPENDENT:
            excluded.append(schemathesis.checks.positive_data_acceptance)
    else:
        # Invalid input must be refused (4xx) or, where the server is lenient by design (unknown
        # query parameters are ignored, as in Bottlerocket), answered correctly, never with 5xx.
        excluded = [schemathesis.checks.negative_data_rejection,
                    schemathesis.checks.positive_data_acceptance]

    @given(case=operation.as_strategy(generation_mode=mode))
    @FUZZ
    def check(case) -> None:
        CASES["api"] += 1
        case.call_and_validate(base_url=base_url, additional_checks=checks,
                               excluded_checks=excluded)

    check()


# --- documents: user data and the fleet repository's files ---------------------------------------

SEEDS = sorted(
    [*REPO.glob("examples/user-data/*.toml"), *REPO.glob("examples/user-data/*.yaml"),
     *REPO.glob("examples/fleet-repo/**/*.toml")]
)
SCHEMAS = {v: Schema.load(v) for v in ("aws-dev", "aws-k8s", "aws-ecs")}
ORIGINS = ["user-data.toml", "user-data.yaml", "user-data.json", "user-data", "u.toml.gz",
           "repo/hosts/h.yml"]


def _seed_documents() -> list[tuple[str, bytes]]:
    docs = [(p.name, p.read_bytes()) for p in SEEDS]
    for name, data in list(docs):  # the same settings as JSON too
        if name.endswith(".toml"):
            parsed = parse_document(data, name)
            docs.append((name[:-5] + ".json", json.dumps(parsed).encode()))
    return docs


SEED_DOCUMENTS = _seed_documents()


def _check_document(data: bytes, origin: str) -> None:
    """The contract: DocumentError or InvalidSettings, nothing else, whatever the bytes."""
    try:
        settings_ = settings_of(parse_document(data, origin), origin)
    except DocumentError:
        return
    for schema in SCHEMAS.values():
        problems = schema.validate(settings_)
        assert isinstance(problems, list)
        for problem in problems:
            assert str(problem).startswith("settings")
        try:
            schema.check(settings_, origin=origin)
        except InvalidSettings as error:
            assert str(error)
        schema.secret_keys(settings_)


@st.composite
def mutated(draw, seeds: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """A seed with a few byte-level edits: flips, inserts, deletes, splices, truncation."""
    name, data = draw(st.sampled_from(seeds))
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "splice", "truncate", "token"]))
        pos = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos:pos + draw(st.integers(1, 32))]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))[1]
            start = draw(st.integers(0, max(0, len(other) - 1)))
            buf[pos:pos] = other[start:start + draw(st.integers(1, 200))]
        elif op == "truncate":
            del buf[pos:]
        else:
            token = draw(st.sampled_from([
                b"[", b"]", b"{", b"}", b'"', b"'", b"=", b":", b"\n", b"- ", b"&a ", b"*a",
                b"!!binary ", b"!!python/object:os.system ", b"1e999", b"nan", b"9" * 5000,
                b"1979-05-27T07:32:00Z", b"\x00", b"\xff", b"\\u0000", b"[[settings]]",
                b"settings = 1\n", b"<<: *a\n", b"? [a]\n: 1\n",
            ]))
            buf[pos:pos] = token
    origin = draw(st.sampled_from([name, *ORIGINS]))
    data = bytes(buf)
    if draw(st.booleans()) and draw(st.booleans()):
        data = gzip.compress(data)
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
    return origin, data


# JSON-like values with awkward keys and scalars, shaped like settings
KEYS = st.one_of(
    st.sampled_from(["motd", "ntp", "time-servers", "host-containers", "admin", "source",
                     "enabled", "superpowered", "user-data", "updates", "kubernetes", "aws",
                     "region", "node-labels", "gitops", "url", "ecs", "a.b/c", ""]),
    st.text(max_size=12),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(["latest", "v1.2.3", "https://x.example/r.git", "us-west-2",
                     base64.b64encode(b"hello").decode(), "a\nb", "\u202e", "\x00"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(KEYS, children, max_size=5)),
    max_leaves=30,
)


def _to_yaml(value) -> bytes:
    from io import StringIO

    from ruamel.yaml import YAML

    out = StringIO()
    YAML(typ="safe", pure=True).dump(value, out)
    return out.getvalue().encode()


@given(data=st.binary(max_size=512), origin=st.sampled_from(ORIGINS))
@LOCAL_FUZZ
def test_documents_random_bytes(data: bytes, origin: str) -> None:
    CASES["documents: random bytes"] += 1
    _check_document(data, origin)


@given(case=mutated(SEED_DOCUMENTS))
@LOCAL_FUZZ
def test_documents_mutated(case: tuple[str, bytes]) -> None:
    CASES["documents: mutated seeds"] += 1
    _check_document(case[1], case[0])


@given(settings_=st.dictionaries(KEYS, VALUES, max_size=6), form=st.sampled_from(["json", "yaml"]))
@LOCAL_FUZZ
def test_documents_structured(settings_: dict, form: str) -> None:
    """Well-formed documents with random settings: validation answers, never crashes."""
    CASES["documents: structured"] += 1
    document = {"settings": settings_}
    data = json.dumps(document).encode() if form == "json" else _to_yaml(document)
    _check_document(data, f"fuzz.{form}")


def test_document_bombs_refused() -> None:
    """Crashes the fuzzer found (fixed): deep nesting, recursive and exploding YAML aliases,
    integers too long to convert. Each is a DocumentError now, quickly."""
    laughs = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    laughs += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    laughs.append("settings: {motd: *a9}")
    bombs = {
        "deep.json": b'{"settings": ' + b"[" * 50000 + b"]" * 50000 + b"}",
        "deep.toml": b"settings = " + b"[" * 50000 + b"]" * 50000 + b"\n",
        "deep.yaml": b"settings: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        "recursive.yaml": b"settings: &a\n  motd: *a\n",
        "recursive-list.yaml": b"settings:\n  motd: &a [*a]\n",
        "laughs.yaml": "\n".join(laughs).encode(),
        "long-int.toml": b"[settings]\nmotd = " + b"9" * 5000 + b"\n",
        "long-int.yaml": b"settings:\n  motd: " + b"9" * 5000 + b"\n",
        "long-int.json": b'{"settings": {"motd": ' + b"9" * 5000 + b"}}",
    }
    for origin, data in bombs.items():
        CASES["documents: bombs"] += 1
        with pytest.raises(DocumentError):
            parse_document(data, origin)


# --- manifest.json --------------------------------------------------------------------------------

MANIFEST = json.dumps({
    "updates": [
        {"variant": "aws-dev", "arch": "x86_64", "version": "1.1.0", "max_version": "1.2.0",
         "waves": {"0": "2024-01-01T00:00:00Z", "512": "2024-01-02T00:00:00Z",
                   "2048": "2024-01-03T00:00:00Z"},
         "images": {"boot": "boot.lz4", "root": "root.lz4", "hash": "hash.lz4"}},
    ],
    "migrations": {"(1.0.0, 1.1.0)": ["migrate_a.lz4"], "(1.1.0,1.2.0)": []},
}, indent=2).encode()


def _check_manifest(data: bytes | str) -> None:
    try:
        manifest = parse_manifest(data)
    except ManifestError:
        return
    assert all(u.images.boot for u in manifest.updates) or not manifest.updates


@given(case=mutated([("manifest.json", MANIFEST)]))
@LOCAL_FUZZ
def test_manifest_mutated(case: tuple[str, bytes]) -> None:
    CASES["manifest: mutated"] += 1
    _check_manifest(case[1])


UPDATE_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "variant": VALUES, "arch": VALUES, "version": st.one_of(VALUES, st.just("1.0.0")),
        "max_version": st.one_of(VALUES, st.just("2.0.0")),
        "waves": st.one_of(VALUES, st.dictionaries(
            st.one_of(st.text(max_size=12), st.integers(-5, 2**40).map(str)),
            st.one_of(VALUES, st.just("2024-01-01T00:00:00Z"), st.text(max_size=30)),
            max_size=4)),
        "images": st.one_of(VALUES, st.fixed_dictionaries(
            {}, optional={"boot": VALUES, "root": VALUES, "hash": VALUES})),
    },
)


@given(
    updates=st.one_of(VALUES, st.lists(UPDATE_FIELDS, max_size=3)),
    migrations=st.one_of(VALUES, st.dictionaries(
        st.one_of(st.text(max_size=16), st.sampled_from(["(1.0.0, 1.1.0)", "(a, b)", "(1,2)"])),
        st.one_of(VALUES, st.lists(st.text(max_size=10), max_size=3)), max_size=3)),
    extra=st.dictionaries(st.text(max_size=8), VALUES, max_size=2),
)
@LOCAL_FUZZ
def test_manifest_structured(updates, migrations, extra) -> None:
    CASES["manifest: structured"] += 1
    _check_manifest(json.dumps({**extra, "updates": updates, "migrations": migrations}))


@given(data=st.binary(max_size=256))
@LOCAL_FUZZ
def test_manifest_random_bytes(data: bytes) -> None:
    CASES["manifest: random bytes"] += 1
    _check_manifest(data)


# --- GPT tables -----------------------------------------------------------------------------------

DISK_SECTORS = 8192  # a 4 MiB image: primary at LBA 1-33, backup at the end


@pytest.fixture(scope="module")
def disk_image(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("gpt") / "disk.img"
    gpt.create_disk(path, DISK_SECTORS * gpt.SECTOR)
    return path.read_bytes()


def _fix_crcs(buf: bytearray, header_lba: int) -> None:
    """Recompute a header's CRCs (entry array and header) so the mutation gets past them."""
    base = header_lba * gpt.SECTOR
    size = int.from_bytes(buf[base + 12:base + 16], "little")
    entries_lba = int.from_bytes(buf[base + 72:base + 80], "little")
    count = int.from_bytes(buf[base + 80:base + 84], "little")
    esize = int.from_bytes(buf[base + 84:base + 88], "little")
    start = entries_lba * gpt.SECTOR
    if count * esize <= 1 << 20 and start + count * esize <= len(buf):
        crc = zlib.crc32(bytes(buf[start:start + count * esize])) & 0xFFFFFFFF
        buf[base + 88:base + 92] = crc.to_bytes(4, "little")
    if 92 <= size <= gpt.SECTOR:
        header = bytearray(buf[base:base + size])
        header[16:20] = b"\0\0\0\0"
        buf[base + 16:base + 20] = (zlib.crc32(bytes(header)) & 0xFFFFFFFF).to_bytes(4, "little")


HEADER_FIELDS = [  # (offset, width) of each header field after the signature
    (8, 4), (12, 4), (16, 4), (20, 4), (24, 8), (32, 8), (40, 8), (48, 8), (56, 16), (72, 8),
    (80, 4), (84, 4), (88, 4),
]


@st.composite
def gpt_mutation(draw) -> list[tuple[str, int, int, int, int]]:
    """Edits of the primary or backup header (fields set to edge values) or any table byte."""
    edits = []
    for _ in range(draw(st.integers(1, 6))):
        which = draw(st.sampled_from(["primary", "backup"]))
        if draw(st.booleans()):
            offset, width = draw(st.sampled_from(HEADER_FIELDS))
            top = (1 << (8 * width)) - 1
            value = draw(st.one_of(st.sampled_from([0, 1, 2, 33, 34, 127, 128, 129, 256, 1024,
                                                    1025, DISK_SECTORS - 1, DISK_SECTORS,
                                                    top, top - 1, top // 2]),
                                   st.integers(0, top)))
            edits.append(("field", 0 if which == "primary" else 1, offset, width, value))
        else:
            # a byte in the header sector or the entry array
            position = draw(st.integers(0, gpt.SECTOR * 33 - 1))
            edits.append(("byte", 0 if which == "primary" else 1, position, 1,
                          draw(st.integers(0, 255))))
    return edits


def _apply(image: bytes, edits, fix: bool) -> bytes:
    buf = bytearray(image)
    total = len(buf) // gpt.SECTOR
    headers = (1, total - 1)
    for kind, copy, offset, width, value in edits:
        if kind == "field":
            base = headers[copy] * gpt.SECTOR + offset
            buf[base:base + width] = value.to_bytes(width, "little")
        else:  # primary: LBA 1-33; backup: entry array then header at the last LBA
            start = gpt.SECTOR if copy == 0 else (total - 33) * gpt.SECTOR
            buf[start + offset] = value
    if fix:
        for lba in headers:
            _fix_crcs(buf, lba)
    return bytes(buf)


def _read(tmp_path: Path, image: bytes) -> None:
    path = tmp_path / "mutated.img"
    path.write_bytes(image)
    fd = gpt.open_disk(path, writable=False)
    try:
        try:
            result = gpt.read_table(fd)
        except gpt.GptError:
            return
    finally:
        os.close(fd)
    table = result.table
    assert len(table.entries) == gpt.NUM_ENTRIES
    total = len(image) // gpt.SECTOR
    assert table.last_lba == total - 1
    for _, entry in table.partitions():  # a table we accept only points inside the disk
        assert 0 < entry.first_lba <= entry.last_lba < total, entry
    assert 0 < table.first_usable <= table.last_usable < total


@given(edits=gpt_mutation(), fix=st.booleans())
@LOCAL_FUZZ
def test_gpt_mutated(edits, fix: bool, disk_image: bytes, tmp_path_factory) -> None:
    CASES["gpt: mutated tables"] += 1
    _read(tmp_path_factory.getbasetemp(), _apply(disk_image, edits, fix))


@given(header=st.binary(min_size=92, max_size=512))
@LOCAL_FUZZ
def test_gpt_random_header(header: bytes) -> None:
    CASES["gpt: random headers"] += 1
    with contextlib.suppress(gpt.GptError):
        gpt.parse_header(header.ljust(gpt.SECTOR, b"\0"))
    # with a signature and a good CRC, the checks behind them are reached too
    buf = bytearray(gpt.SIGNATURE + header[8:].ljust(gpt.SECTOR - 8, b"\0"))
    size = int.from_bytes(buf[12:16], "little")
    if 92 <= size <= gpt.SECTOR:
        check = bytearray(buf[:size])
        check[16:20] = b"\0\0\0\0"
        buf[16:20] = (zlib.crc32(bytes(check)) & 0xFFFFFFFF).to_bytes(4, "little")
    with contextlib.suppress(gpt.GptError):
        gpt.parse_header(bytes(buf))
