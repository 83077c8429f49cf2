"""The bottom layer: what every other package builds on, importing nothing of ours.

`keys` (dotted settings keys, flat <-> nested, merge patch), `durable` (all-or-nothing file
replacement), `faults` (named crash points for the crash tests), `commands` (the subprocess
runner behind a small interface), `documents` (TOML/YAML/JSON settings documents, gzip) and
`unixhttp` (apiclient's minimal HTTP/1.1 client over a Unix socket).

Layers point one way: ``reconciler`` composes ``renderers`` and ``updates``, which build on
``hostcore`` (the import-linter contract in ``pyproject.toml``, run by ``make test``). Everything
here is standard library only on ``apiclient``'s path (``documents`` imports ruamel.yaml lazily,
for YAML alone), so the client can ship these modules in its zipapp.
"""
