"""``ContainerEngine`` on the podman CLI, in storage of our own under the state dir.

Every call is ``podman --root R --runroot RR --tmpdir T ...``: the images and containers (R) live
in ``<state-dir>/containers/storage``; the volatile run root and libpod tmpdir (RR, T) live in a
directory of their own under ``/run`` (``runtime_dir``): podman wants them cleared at boot (that
is how it notices a reboot) and refuses a run root longer than 50 characters. The host's other
containers (default storage and run root) are never seen, let alone touched.

Engine options (OCI runtime, default ulimits, events backend...) belong in podman's own
configuration: podman inherits our environment, so ``CONTAINERS_CONF=FILE`` selects a
containers.conf (see ``examples/containers.conf``). Commands run without a shell, with a timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hostcore.commands import die_with_parent
from reconciler.containers.engine import EngineError, EngineUnavailable, Image, RunSpec
from reconciler.containers.planner import LABEL_MANAGED, ObservedContainer

TIMEOUT_QUICK = 30.0
TIMEOUT_PULL = 600.0
STOP_GRACE = 10  # seconds between SIGTERM and SIGKILL when removing


def runtime_dir(storage: Path) -> Path:
    """A short, per-storage directory on the runtime (tmpfs) file system."""
    tag = hashlib.sha256(str(Path(storage).absolute()).encode()).hexdigest()[:12]
    if os.geteuid() == 0:
        return Path("/run/reconciler-podman") / tag
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/reconciler-podman-{os.geteuid()}"
    return Path(base) / "reconciler-podman" / tag


def read_env_file(path: Path | None) -> dict[str, str]:
    """``KEY=value`` lines of a systemd EnvironmentFile (values may be shell-quoted)."""
    found: dict[str, str] = {}
    if path is None:
        return found
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return found
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#") or not key.replace("_", "").isalnum():
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        found[key] = words[0] if len(words) == 1 else value
    return found


class PodmanEngine:
    def __init__(
        self,
        storage: Path,
        binary: str = "podman",
        runtime: Path | None = None,
        registries_conf: Path | None = None,
        auth_file: Path | None = None,
        proxy_env: Path | None = None,
        ca_bundle: Path | None = None,
    ):
        self.storage = Path(storage)
        self.binary = binary
        self.runtime = Path(runtime) if runtime else runtime_dir(self.storage)
        # The rendered registries.conf (settings.container-registry.mirrors) and auth file
        # (credentials): pulls of host-container images go through the mirrors, with the
        # credentials, like containerd's. Used once the renderer has written them.
        self.registries_conf = registries_conf
        self.auth_file = auth_file
        self.proxy_env = proxy_env  # HTTPS_PROXY / NO_PROXY (settings.network), as containerd's
        self.ca_bundle = ca_bundle  # the host's CA bundle (settings.pki), as SSL_CERT_FILE

    # ---- plumbing ------------------------------------------------------------------------------

    def global_args(self) -> list[str]:
        return [
            "--root",
            str(self.storage / "storage"),
            "--runroot",
            str(self.runtime / "run"),
            "--tmpdir",
            str(self.runtime / "tmp"),
        ]

    def command(self, *args: str) -> list[str]:
        return [self.binary, *self.global_args(), *args]

    def available(self) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary} is not installed (scripts/install-system-deps.sh installs it)"
        return None

    def initialized(self) -> bool:
        return os.path.isdir(os.path.join(self.storage, "storage"))  # once per pass: no pathlib

    def _run(
        self, args: Sequence[str], timeout: float = TIMEOUT_QUICK,
        env: dict[str, str] | None = None,
    ) -> str:
        problem = self.available()
        if problem:
            raise EngineUnavailable(problem)
        argv = self.command(*args)
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env=env,
                preexec_fn=die_with_parent,  # no orphan load or pull holds our storage
            )
        except subprocess.TimeoutExpired:
            raise EngineError(f"podman {args[0]} timed out after {timeout:.0f} s") from None
        except OSError as error:
            raise EngineUnavailable(f"cannot run {self.binary}: {error}") from None
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            lines = [line for line in message.splitlines() if line.strip()]
            tail = " ".join(lines[-3:])[-600:] or f"exit status {result.returncode}"
            raise EngineError(f"podman {args[0]}: {tail}")
        return result.stdout

    # ---- ContainerEngine -----------------------------------------------------------------------

    def list(self) -> list[ObservedContainer]:
        if not self.initialized():
            return []
        raw = self._run(["ps", "--all", "--format", "json"])
        answer = []
        for item in json.loads(raw or "[]") or []:
            names = item.get("Names") or [""]
            exited = item.get("Exited") or item.get("State") == "exited"
            answer.append(
                ObservedContainer(
                    name=names[0],
                    id=item.get("Id", ""),
                    state=item.get("State", "unknown"),
                    labels=dict(item.get("Labels") or {}),
                    image_id=item.get("ImageID", ""),
                    exit_code=item.get("ExitCode") if exited else None,
                )
            )
        return answer

    def local_image(self, reference: str) -> Image | None:
        """The image ``reference`` (a tag or a digest) names in our store, if it is there."""
        if not self.initialized():
            return None
        try:
            found = self._run(["image", "inspect", "--format", "{{.Id}} {{.Digest}}", reference])
        except EngineError as error:
            if any(m in str(error).lower() for m in ("not known", "unknown", "no such")):
                return None
            raise
        parts = found.split()
        return Image(parts[0], parts[1] if len(parts) > 1 else "") if parts else None

    def load(self, archive: Path) -> None:
        """Load an image archive (its names come with it) into our store."""
        self._run(["load", "--quiet", "--input", str(archive)], timeout=TIMEOUT_PULL)

    def pull_options(self) -> tuple[list[str], dict[str, str] | None]:
        """``podman pull`` flags and environment for the rendered registry files (if written).

        An operator's own ``CONTAINERS_REGISTRIES_CONF`` wins over ours.
        """
        args: list[str] = []
        extra: dict[str, str] = {}
        if self.auth_file is not None and self.auth_file.is_file():
            args += ["--authfile", str(self.auth_file)]
        if self._registries_conf_needed():
            extra["CONTAINERS_REGISTRIES_CONF"] = str(self.registries_conf)
        extra.update(read_env_file(self.proxy_env))
        with contextlib.suppress(OSError):
            if self.ca_bundle is not None and self.ca_bundle.stat().st_size > 0:
                extra["SSL_CERT_FILE"] = str(self.ca_bundle)
        return args, ({**os.environ, **extra} if extra else None)

    def _registries_conf_needed(self) -> bool:
        """Point podman at our registries file only when it has mirrors and podman would not
        read it anyway: under ``--root /`` it is a drop-in of /etc/containers/registries.conf.d,
        and the variable would hide the system's registries.conf (its search registries)."""
        path = self.registries_conf
        if path is None or "CONTAINERS_REGISTRIES_CONF" in os.environ:
            return False
        if path.parent == Path("/etc/containers/registries.conf.d"):
            return False
        try:
            return "[[registry]]" in path.read_text(encoding="utf-8")
        except OSError:
            return False

    def pull(self, source: str, timeout: float = TIMEOUT_PULL) -> Image:
        flags, env = self.pull_options()
        output = self._run(["pull", "--quiet", *flags, source], timeout=timeout, env=env)
        lines = output.split()
        if not lines:
            raise EngineError(f"podman pull {source}: no image id in the answer")
        image_id = lines[-1].removeprefix("sha256:")
        digest = ""
        with contextlib.suppress(EngineError):
            digest = self._run(["image", "inspect", "--format", "{{.Digest}}", image_id]).strip()
        return Image(image_id, digest)

    def run(self, spec: RunSpec) -> str:
        return self._run(self._run_args(spec, "--detach"), timeout=TIMEOUT_PULL).strip()

    def run_to_completion(self, spec: RunSpec, timeout: float) -> tuple[int, str]:
        """Run a container in the foreground until it exits (``--rm``); its status and output.

        Past ``timeout`` it is removed and that is an ``EngineError``."""
        self.remove(spec.name)  # a leftover of a boot that died while it ran
        argv = self.command(*self._run_args(spec, "--rm"))
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                    text=True, timeout=timeout, check=False,
                                    preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(EngineError):
                self.remove(spec.name)
            raise EngineError(f"{spec.name} still running after {timeout:.0f} s; removed") from None
        except OSError as error:
            raise EngineUnavailable(f"cannot run {self.binary}: {error}") from None
        return result.returncode, (result.stdout + result.stderr)

    def _run_args(self, spec: RunSpec, mode: str) -> list[str]:
        args = ["run", mode, "--name", spec.name, "--hostname", spec.name.replace(".", "-")]
        for key, value in sorted(spec.labels.items()):
            args += ["--label", f"{key}={value}"]
        for key, value in sorted(spec.env.items()):
            args += ["--env", f"{key}={value}"]
        for mount in spec.mounts:
            options = "ro" if mount.read_only else "rw"
            args += ["--volume", f"{mount.source}:{mount.target}:{options}"]
        if spec.privileged:
            args.append("--privileged")
        if spec.host_pid:
            args += ["--pid", "host"]
        if spec.host_network:
            args += ["--network", "host"]
        args.append(spec.image)
        return args

    def start(self, name: str) -> None:
        self._run(["start", name])

    def remove(self, name: str) -> None:
        try:
            self._run(
                ["rm", "--force", "--ignore", "--time", str(STOP_GRACE), name],
                timeout=STOP_GRACE + TIMEOUT_QUICK,
            )
        except EngineError as error:
            if "no such container" not in str(error).lower():
                raise

    def logs(self, name: str, lines: int = 20) -> str:
        argv = self.command("logs", "--tail", str(lines), name)
        try:
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=TIMEOUT_QUICK, check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return (result.stdout + result.stderr).strip()

    def events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """Container events of managed containers, until ``stop`` is set (or podman exits)."""
        argv = self.command(
            "events",
            "--format",
            "json",
            "--filter",
            "type=container",
            "--filter",
            f"label={LABEL_MANAGED}=true",
        )
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=os.environ.copy(),
        )

        def stopper() -> None:
            stop.wait()
            if process.poll() is None:
                process.terminate()

        threading.Thread(target=stopper, name="podman-events-stop", daemon=True).start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def reset(self) -> None:
        """Remove every container and image of our storage and unmount it (tests, teardown)."""
        if self.initialized():
            self._run(["system", "reset", "--force"], timeout=TIMEOUT_PULL)
        shutil.rmtree(self.runtime, ignore_errors=True)
