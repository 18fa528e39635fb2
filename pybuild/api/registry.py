"""The registry commands: pull, push, login, logout, and the `--insecure-registry` setting they share.

`report` callbacks get one line per step (what the CLI prints to standard error). A password is never
echoed, logged or put in an error message. The registry modules (and httpx) are imported when a function
runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

from pybuild.api.opening import Warn, open_store
from pybuild.errors import ConfigError
from pybuild.record import record

__all__ = ["LoginRequest", "LogoutRequest", "LogoutResult", "PullRequest", "PullResult", "PushRequest",
           "PushResult", "allow_insecure_registries", "login", "logout", "pull", "push"]

Report = Callable[[str], None]


def allow_insecure_registries(hosts: Iterable[str]) -> None:
    """Allow plain HTTP (and unchecked TLS) for each `HOST[:PORT]`, for the rest of this process."""
    hosts = list(hosts)
    if hosts:
        from pybuild.registry.settings import add_insecure_registry

        for host in hosts:
            add_insecure_registry(host)


@record(kw_only=True)
class PullRequest:
    """`pybuild pull NAME`; `platform` None: the host's."""

    name: str
    platform: str | None = None
    insecure_registries: tuple[str, ...] = ()
    store_root: str | None = None


@record(kw_only=True)
class PullResult:
    """The pulled image's manifest digest and the familiar name it is stored under."""

    manifest_digest: str
    name: str


def pull(request: PullRequest, warn: Warn | None = None, report: Report | None = None) -> PullResult:
    """Pull the image (only the layers the store lacks)."""
    from pybuild.registry.pull import pull_image
    from pybuild.store.images import familiar_name

    allow_insecure_registries(request.insecure_registries)
    with open_store(request.store_root, warn) as store:
        result = pull_image(store, request.name, platform=request.platform, report=report)
    return PullResult(manifest_digest=result.image.manifest_digest, name=familiar_name(result.name))


@record(kw_only=True)
class PushRequest:
    """`pybuild push NAME [DEST]`: the stored image `name`, pushed to `dest` (None: `name`)."""

    name: str
    dest: str | None = None
    compression: str = "gzip"
    compression_level: int | None = None
    force_compression: bool = False
    format: Literal["oci", "docker"] = "oci"
    insecure_registries: tuple[str, ...] = ()
    store_root: str | None = None


@record(kw_only=True)
class PushResult:
    """The pushed manifest's digest."""

    digest: str


def push(request: PushRequest, warn: Warn | None = None, report: Report | None = None) -> PushResult:
    """Push the image; blobs the registry has are never sent. The name and the compression options are
    checked (as for `-o type=image,push=true`) before the store opens."""
    from pybuild.export.outputs import parse_output
    from pybuild.registry.push import check_push_name, push_image
    from pybuild.store.images import resolve_image

    allow_insecure_registries(request.insecure_registries)
    dest = request.dest or request.name
    check_push_name(dest)
    # the same checks as -o type=image,push=true (level ranges, zstd needs OCI media types)
    spec = parse_output(",".join(["type=image", f"name={dest}", f"compression={request.compression}",
                                  f"oci-mediatypes={'true' if request.format == 'oci' else 'false'}"]
                                 + ([f"compression-level={request.compression_level}"]
                                    if request.compression_level is not None else [])))
    with open_store(request.store_root, warn) as store:
        image = resolve_image(store, request.name)
        result = push_image(store, image, dest, compression=spec.compression, level=spec.compression_level,
                            oci_mediatypes=spec.use_oci_mediatypes, force=request.force_compression,
                            report=report)
    return PushResult(digest=result.digest)


@record(kw_only=True)
class LoginRequest:
    """`pybuild login SERVER`: check the credentials against the registry, then store them as `docker
    login` does (`~/.docker/config.json` or its credential helper)."""

    server: str
    username: str
    password: str
    insecure_registries: tuple[str, ...] = ()


def login(request: LoginRequest) -> None:
    """Log in; ConfigError when the user name or the password is empty."""
    allow_insecure_registries(request.insecure_registries)
    if not request.username or not request.password:
        raise ConfigError("login needs a user name and a password")
    from pybuild.registry.login import login as check_and_store

    check_and_store(request.server, request.username, request.password)


@record(kw_only=True)
class LogoutRequest:
    """`pybuild logout SERVER`."""

    server: str


@record(kw_only=True)
class LogoutResult:
    """`logged_in`: there were credentials for the server (now forgotten)."""

    logged_in: bool


def logout(request: LogoutRequest) -> LogoutResult:
    """Forget the login for the server."""
    from pybuild.registry.dockerconfig import logout as forget

    return LogoutResult(logged_in=forget(request.server))
