"""OS updates: a TUF-secured update repository and the host's client.

Functional core (pure, plain data): `semver`, `timefmt`, `waves`, `manifest`, `selection`.
Imperative shell: `fetcher` (http/file transport), `lock`, `tuf_client` (python-tuf
ngclient with a persistent cache and streaming verified downloads), `check` (updog's
check-update pipeline), `repo` (repository side), and the CLIs `updog`, `updata`,
`conformance` (`updog tuf-client`).
"""
