"""OS updates: a TUF-secured update repository and the host's client.

Functional core (pure, plain data): `semver`, `timefmt`, `waves`, `manifest`, `selection`.
Imperative shell: `fetcher` (http/file transport), `lock`, `tuf_client` (python-tuf
ngclient with a persistent cache and streaming verified downloads), `check` (updog's
check-update pipeline), `repo` (repository side), and the CLIs `updog`, `updata`,
`conformance` (`updog tuf-client`).

A/B updates (issue 7): `gpt` (GUID partition tables), `gptprio` (flag bits, GRUB's rule and the
signpost operations, pure), `osimage` (the version header of a root image), `partitions` (the OS
disk, its two sets, the boot simulator), `apply` (stream images into the inactive set, cache for
the migrator), `migrations` (declarative documents, offline TUF verification), `status` (the
update API state machine, pure), `manager` (the dispatcher behind the API), `health`
(health-gated boot success), CLIs `signpost` and `updog update*`.

Layering: this package builds on `hostcore` alone and never imports `reconciler`; the migrator,
which needs the settings store, lives above it (`reconciler.migrator`).
"""
