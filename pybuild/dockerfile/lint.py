"""Build checks: BuildKit's Dockerfile lint rules, as data.

`lint(result)` runs over the AST (it needs no typed stages and no base image) and returns a `LintReport`
whose warnings are `Diagnostic`s with the rule name, BuildKit's message and its documentation link. The
`# check=skip=<rules|all>;error=true` directive (BuildKit's) turns rules off or makes warnings fatal.

Rules implemented: NoEmptyContinuation (from the parser), StageNameCasing, FromAsCasing,
ConsistentInstructionCasing, DuplicateStageName, ReservedStageName, JSONArgsRecommended,
MaintainerDeprecated, UndefinedArgInFrom, WorkdirRelativePath, MultipleInstructionsDisallowed,
LegacyKeyValueFormat, SecretsUsedInArgOrEnv, ExposeProtoCasing, FromPlatformFlagConstDisallowed and
RedundantTargetPlatform. UndefinedVar, InvalidDefaultArgInFrom, InvalidBaseImagePlatform and CopyIgnoredFile
need the base image or the context and belong to the build.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pybuild.dockerfile.ast import Node, ParseResult
from pybuild.errors import DockerfileError, at
from pybuild.record import record
from pybuild.source import Diagnostic, Span

RULE_URL = "https://docs.docker.com/go/dockerfile/rule/{}/"

# The platform args BuildKit defines before the first FROM (see the ARG reference).
AUTOMATIC_ARGS = frozenset({
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "TARGETSTAGE",
    "BUILDKIT_SYNTAX",
})
RESERVED_STAGE_NAMES = frozenset({"scratch", "context"})
SINGLE_PER_STAGE = ("cmd", "entrypoint", "healthcheck")
# BuildKit's SecretsUsedInArgOrEnv heuristic: a secret-looking token delimited by `_` or the name's ends.
_SECRET_TOKEN = re.compile(r"(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
                           re.IGNORECASE)
_SECRET_ALLOW = re.compile(r"(?:_|^)public(?:_|$)", re.IGNORECASE)


@record
class LintReport:
    """What `lint` found. `failed` is True when `check=error=true` and there is a warning."""

    warnings: tuple[Diagnostic, ...]
    failed: bool


@record
class CheckConfig:
    """The parsed `# check=` directive."""

    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    error: bool = False


def parse_check_directive(value: str | None) -> CheckConfig:
    """Parse `skip=A,B;error=true` (BuildKit's check directive); unknown keys are errors."""
    if not value:
        return CheckConfig()
    skip: set[str] = set()
    error = False
    for part in value.split(";"):
        key, sep, val = part.strip().partition("=")
        key = key.strip().lower()
        if not sep:
            raise DockerfileError(f"invalid check directive {value!r}: expected key=value")
        if key == "skip":
            skip.update(name.strip() for name in val.split(",") if name.strip())
        elif key == "error":
            if val.strip().lower() not in ("true", "false"):
                raise DockerfileError(f"invalid check directive: error must be true or false, got {val!r}")
            error = val.strip().lower() == "true"
        else:
            raise DockerfileError(f"invalid check directive: unknown key {key!r}")
    return CheckConfig(frozenset(skip - {"all"}), "all" in skip, error)


def lint(result: ParseResult) -> LintReport:
    """Run every rule over `result`; apply the check directive."""
    with at(Span(result.source.name, _directive_line(result, "check"), 1), result.source):
        config = parse_check_directive(result.directives.check)
    found = list(result.warnings) + list(_run_rules(result))
    kept = tuple(d for d in found if not config.skip_all and d.rule not in config.skip)
    return LintReport(kept, config.error and bool(kept))


def _directive_line(result: ParseResult, key: str) -> int:
    """The line of the `# key=` directive at the top of the file (1 when it cannot be found)."""
    pattern = re.compile(rf"\s*(#|//)\s*{key}\s*=", re.IGNORECASE)
    for number, line in enumerate(result.source.text.splitlines()[:20], start=1):
        if pattern.match(line):
            return number
    return 1


def _warn(rule: str, message: str, node: Node) -> Diagnostic:
    kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", rule).lower().replace("j-s-o-n", "json")
    return Diagnostic(rule, message, node.span, RULE_URL.format(kebab))


def _run_rules(result: ParseResult) -> Iterator[Diagnostic]:
    nodes = result.nodes
    yield from _check_casing(nodes)
    meta_args = _meta_arg_names(nodes)
    stage_names: set[str] = set()
    for stage in _split_stages(nodes):
        yield from _check_from(stage[0], meta_args, stage_names)
        yield from _check_stage_body(stage)
    for node in nodes:
        yield from _check_node(node)


def _split_stages(nodes: tuple[Node, ...]) -> Iterator[list[Node]]:
    """Each stage as its FROM node followed by its instructions."""
    current: list[Node] | None = None
    for node in nodes:
        if node.cmd == "from":
            if current:
                yield current
            current = [node]
        elif current is not None:
            current.append(node)
    if current:
        yield current


def _meta_arg_names(nodes: tuple[Node, ...]) -> set[str]:
    names = set(AUTOMATIC_ARGS)
    for node in nodes:
        if node.cmd == "from":
            break
        if node.cmd == "arg":
            names.update(arg.split("=", 1)[0] for arg in node.args)
    return names


def _check_casing(nodes: tuple[Node, ...]) -> Iterator[Diagnostic]:
    words = [n.keyword for n in nodes] + [n.inner.keyword for n in nodes if n.inner is not None]
    upper = sum(1 for w in words if w == w.upper())
    lower = sum(1 for w in words if w == w.lower())
    majority = "uppercase" if upper >= lower else "lowercase"
    for node in nodes:
        for item in (node, node.inner):
            if item is None:
                continue
            word = item.keyword
            fits = word == word.upper() if majority == "uppercase" else word == word.lower()
            if not fits:
                yield _warn("ConsistentInstructionCasing",
                            f"Command '{word}' should match the case of the command majority ({majority})", node)


def _check_from(node: Node, meta_args: set[str], seen: set[str]) -> Iterator[Diagnostic]:
    args = node.args
    if len(args) == 3 and args[1].lower() == "as":
        name, as_word = args[2], args[1]
        if name != name.lower():
            yield _warn("StageNameCasing", f"Stage name '{name}' should be lowercase", node)
        from_upper = node.keyword == node.keyword.upper()
        if (from_upper and as_word != as_word.upper()) or (not from_upper and as_word != as_word.lower()):
            yield _warn("FromAsCasing", f"'{as_word}' and '{node.keyword}' keywords' casing do not match", node)
        if name.lower() in RESERVED_STAGE_NAMES:
            yield _warn("ReservedStageName",
                        f"Stage name should not use the same name as reserved stage '{name.lower()}'", node)
        if name.lower() in seen:
            yield _warn("DuplicateStageName",
                        f"Duplicate stage name '{name.lower()}', stage names should be unique", node)
        seen.add(name.lower())
    if args:
        yield from _check_from_args(node, args[0], meta_args)
    for flag in node.flags:
        if flag.startswith("--platform="):
            yield from _check_platform(node, flag.split("=", 1)[1])


def _check_from_args(node: Node, base: str, meta_args: set[str]) -> Iterator[Diagnostic]:
    from pybuild.dockerfile.shell import Lexer

    try:
        expansion = Lexer().process_word_with_matches(base, {})
    except DockerfileError:
        return
    for name in sorted(expansion.unmatched):
        if name not in meta_args and name.isidentifier():
            yield _warn("UndefinedArgInFrom", f"FROM argument '{name}' is not declared", node)


def _check_platform(node: Node, value: str) -> Iterator[Diagnostic]:
    if value in ("$TARGETPLATFORM", "${TARGETPLATFORM}"):
        yield _warn("RedundantTargetPlatform", f"Setting platform to predefined {value} in FROM is redundant "
                    "as this is the default behavior", node)
    elif "$" not in value:
        yield _warn("FromPlatformFlagConstDisallowed",
                    f'FROM --platform flag should not use constant value "{value}"', node)


def _check_stage_body(stage: list[Node]) -> Iterator[Diagnostic]:
    counts = {name: [n for n in stage if n.cmd == name] for name in SINGLE_PER_STAGE}
    for name, found in counts.items():
        for node in found[:-1]:
            yield _warn("MultipleInstructionsDisallowed", f"Multiple {name.upper()} instructions should not be "
                        "used in the same stage because only the last one will be used", node)
    absolute = False
    for node in stage:
        if node.cmd == "workdir" and node.args:
            path = node.args[0]
            if path.startswith("/") or path.startswith("$"):
                absolute = True
            elif not absolute:
                yield _warn("WorkdirRelativePath", f"Relative workdir '{path}' can have unexpected results if "
                            "the base image changes", node)


def _check_node(node: Node) -> Iterator[Diagnostic]:
    cmd = node.cmd
    if cmd in ("cmd", "entrypoint") and not node.json and node.args:
        yield _warn("JSONArgsRecommended", f"JSON arguments recommended for {node.keyword.upper()} to prevent "
                    "unintended behavior related to OS signals", node)
    elif cmd == "maintainer":
        yield _warn("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label", node)
    elif cmd in ("env", "label") and any(sep == "" for sep in node.args[2::3]):
        word = cmd.upper()
        yield _warn("LegacyKeyValueFormat",
                    f'"{word} key=value" should be used instead of legacy "{word} key value" format', node)
    elif cmd == "expose":
        for port in node.args:
            proto = port.rpartition("/")[2] if "/" in port else ""
            if proto and proto != proto.lower():
                yield _warn("ExposeProtoCasing",
                            f"Defined protocol '{port}' in EXPOSE instruction should be lowercase", node)
    if cmd in ("env", "arg"):
        yield from _check_secrets(node)


def _check_secrets(node: Node) -> Iterator[Diagnostic]:
    names = node.args[0::3] if node.cmd == "env" else [a.split("=", 1)[0] for a in node.args]
    for name in names:
        if _SECRET_TOKEN.search(name) and not _SECRET_ALLOW.search(name):
            yield _warn("SecretsUsedInArgOrEnv", "Do not use ARG or ENV instructions for sensitive data "
                        f'({node.cmd.upper()} "{name}")', node)
