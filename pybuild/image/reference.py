"""Docker image references: `[domain/]path[:tag][@digest]`, normalised as docker/distribution does.

Who uses it: the Dockerfile converter (FROM), the registry client (pull/push), the exporters (`--tag`),
the CLI. `parse_reference` is the only way in; it returns a `Reference` or raises ConfigError.

Behaviour taken from distribution/reference (`ParseNormalizedNamed`, `splitDockerDomain`, `FamiliarName`):

* the first `/`-separated component is a domain when it contains `.` or `:`, is `localhost`, or has an
  upper-case letter; otherwise the domain is `docker.io`;
* `index.docker.io` is spelled `docker.io`; a one-component path on `docker.io` gets `library/`;
* the path must be lower case; the name (`domain/path`) is at most 255 characters;
* a 64-hex-character name is refused (it would be read as an image ID);
* the normalised form adds `:latest` only when there is neither a tag nor a digest.

Departure: a digest must use a registered algorithm (sha256, sha512) with the exact hex length
(distribution accepts any algorithm syntactically and fails later).
"""

from __future__ import annotations

import re
from typing import Final

from pybuild.digest import parse_digest
from pybuild.errors import ConfigError, StoreError
from pybuild.record import record, replace

__all__ = ["DEFAULT_DOMAIN", "DEFAULT_TAG", "Reference", "parse_reference"]

DEFAULT_DOMAIN: Final = "docker.io"
DEFAULT_TAG: Final = "latest"
NAME_TOTAL_LENGTH_MAX: Final = 255
_LEGACY_DOMAIN: Final = "index.docker.io"
_OFFICIAL_PREFIX: Final = "library/"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE: Final = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT_RE: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE: Final = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_IMAGE_ID_RE: Final = re.compile(r"[a-f0-9]{64}")


@record
class Reference:
    """A parsed, normalised image reference (`docker.io/library/busybox:latest`).

    `domain` is never empty (`docker.io` by default); `path` has `library/` for official images;
    `tag` and `digest` are None when the text had none.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`domain/path`, the repository name (`docker.io/library/busybox`)."""
        return f"{self.domain}/{self.path}"

    @property
    def normalized(self) -> str:
        """The full reference; `:latest` is added only when there is neither tag nor digest."""
        return self.name + self._suffix()

    @property
    def familiar(self) -> str:
        """Docker's short form: `busybox:latest`, `user/app:v1`, `localhost:5000/x:latest`."""
        return self.familiar_name + self._suffix()

    @property
    def familiar_name(self) -> str:
        """The repository name as docker shows it (`busybox`, `user/app`, `quay.io/a/b`)."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        rest = self.path.removeprefix(_OFFICIAL_PREFIX)
        return rest if rest != self.path and "/" not in rest else self.path

    @property
    def tag_or_latest(self) -> str:
        """The tag, or `latest` when there is none."""
        return self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        """This reference with `tag` (validated) and no digest."""
        _check_tag(tag, tag)
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """This reference pinned to `digest` (validated); the tag is kept."""
        _check_digest(digest, digest)
        return replace(self, digest=digest)

    def _suffix(self) -> str:
        tag = self.tag if self.tag is not None or self.digest is not None else DEFAULT_TAG
        return (f":{tag}" if tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.normalized


def _invalid(text: str, reason: str) -> ConfigError:
    return ConfigError(f"invalid reference format: {reason}", hint=f"in image reference {text!r}")


def _check_tag(tag: str, text: str) -> None:
    if _TAG_RE.fullmatch(tag) is None:
        raise _invalid(text, f"invalid tag {tag!r} (letters, digits, '_', '.', '-'; at most 128; "
                             "not starting with '.' or '-')")


def _check_digest(digest: str, text: str) -> None:
    try:
        parse_digest(digest)
    except StoreError as exc:
        raise _invalid(text, exc.message) from None


def _split_domain(name: str) -> tuple[str, str]:
    """distribution's `splitDockerDomain`."""
    first, slash, rest = name.partition("/")
    if not slash or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, rest = DEFAULT_DOMAIN, name
    else:
        domain = first
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = _OFFICIAL_PREFIX + rest
    return domain, rest


def _check_path(path: str, text: str) -> None:
    if path.lower() != path:
        raise _invalid(text, f"repository name ({path}) must be lowercase")
    for component in path.split("/"):
        if not component:
            raise _invalid(text, f"empty path component in repository name {path!r}")
        if _PATH_COMPONENT_RE.fullmatch(component) is None:
            raise _invalid(text, f"invalid path component {component!r} in repository name (lower-case "
                                 "letters and digits, separated by '.', '_', '__' or '-')")


def _split_suffixes(text: str) -> tuple[str, str | None, str | None]:
    """`name[:tag][@digest]` → (name, tag, digest), checking the tag and digest."""
    rest, at, digest = text.partition("@")
    if at:
        _check_digest(digest, text)
    colon, slash = rest.rfind(":"), rest.rfind("/")
    tag: str | None = None
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        _check_tag(tag, text)
    return rest, tag, digest if at else None


def parse_reference(text: str) -> Reference:
    """Parse and normalise an image reference; ConfigError("invalid reference format: …") when invalid."""
    if not text:
        raise _invalid(text, "repository name must have at least one component")
    if text != text.strip():
        raise _invalid(text, "leading or trailing whitespace")
    name, tag, digest = _split_suffixes(text)
    if not name:
        raise _invalid(text, "repository name must have at least one component")
    if _IMAGE_ID_RE.fullmatch(name):
        raise _invalid(text, f"invalid repository name ({name}), cannot specify 64-byte hexadecimal strings")
    domain, path = _split_domain(name)
    if _DOMAIN_RE.fullmatch(domain) is None:
        raise _invalid(text, f"invalid registry domain {domain!r}")
    _check_path(path, text)
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(text, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    return Reference(domain, path, tag, digest)
