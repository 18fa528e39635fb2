"""Hypothesis strategies that write whole Dockerfiles for the differential tests.

`dockerfiles()` draws a parser-directive block (escape backslash or backtick, syntax, BOM), then a mix of
instructions and filler (comments, blank and whitespace-only lines). Each instruction is made as one
logical line (keyword in mixed case, flags, JSON or shell form, ENV/LABEL pairs, ONBUILD nesting, heredoc
tokens), then laid out physically: continuations with the escape character (trailing blanks, comment and
blank lines inside), heredoc bodies after it, LF or CRLF line ends. The text is mostly valid but nothing
forces it to be: invalid JSON, a missing heredoc terminator or `ENV a` must fail in both parsers.

Inputs never hold NUL: the oracle loses everything after a NUL at its C boundary (documented gap).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from hypothesis import strategies as st


@lru_cache(maxsize=None)
def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high)


@lru_cache(maxsize=None)
def _pick(options: tuple[str, ...] | str) -> st.SearchStrategy[str]:
    return st.sampled_from(options)


_BOOLS = st.booleans()


@lru_cache(maxsize=None)
def _text(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(alphabet), min_size=low, max_size=high)


@lru_cache(maxsize=None)
def _odd_text(escape: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(_chars(escape), min_size=low, max_size=high)

_BLANK_AFTER_HEREDOC = re.compile(r"<<(-?)[^\S\n]+")
# `${v#p}`, `${v%p}`, `${v/p/r}` are newer than the oracle (errors in BuildKit v0.12.5, valid since), and
# `${v:#p}` became an error: on a heredoc line that decides whether the heredocs count at all.
_NEWER_SUBSTITUTION = re.compile(r"(\$\{\w*):?([#%/])")


def _avoid_version_gaps(text: str) -> str:
    """Rewrite the spots where the oracle's BuildKit (v0.12.5) and the newer one pybuild follows differ."""
    text = _BLANK_AFTER_HEREDOC.sub(r"<<\1", text)
    return _NEWER_SUBSTITUTION.sub(r"\1-\2", text)

KEYWORDS = (
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
)
UNKNOWN = ("FOO", "RNU", "Copyy", "x", "EOF", "-", "{", "1", "é", "中文")

# Characters that some line splitters treat as line ends or whitespace and Go's does not.
WEIRD = "\x0b\x0c\x1c\x1d\x1e\x85\xa0\u2028\u2029\u3000\ufeff\r"
PLAIN = "abcxyzABCZ0129_-./:@%+,~"
SPECIAL = "$={}[]()*?!&|;<>#'\""
UNICODE = "éß☃中文€🐳Ωж"

FLAG_NAMES = (
    "from", "chown", "chmod", "link", "parents", "exclude", "platform", "mount", "network", "security",
    "interval", "timeout", "start-period", "start-interval", "retries", "keep-git-dir", "checksum", "x",
)
FLAG_VALUES = (
    "", "builder", "0", "1000:1000", "755", "$TARGETPLATFORM", "linux/amd64", "*.md", "none",
    "type=cache,target=/root/.cache", "type=bind,source=.,target=/src", "type=secret,id=tok",
    "type=ssh", "type=tmpfs,target=/tmp", "30s", "3", '"a b"', "'q'", "a\\ b", "true", "é",
)


@lru_cache(maxsize=None)
def _chars(escape: str) -> st.SearchStrategy[str]:
    """One character of a word: mostly plain, sometimes quotes, the escape char, unicode or odd space."""
    return st.one_of(
        _pick(PLAIN),
        _pick(SPECIAL + escape + "\\`"),
        _pick(UNICODE),
        _pick(WEIRD),
        st.characters(codec="utf-8", exclude_characters="\x00\n"),  # utf-8: no lone surrogates
    )


@lru_cache(maxsize=None)
@st.composite
def word(draw: Any, escape: str = "\\") -> str:
    """A word of an argument list, sometimes quoted, sometimes with an escaped space."""
    kind = draw(_ints(0, 9))
    if kind <= 4:
        return str(draw(_text(PLAIN + "$", 1, 8)))
    if kind <= 6:
        return str(draw(_odd_text(escape, 1, 6)))
    if kind == 7:
        quote = draw(_pick("\"'"))
        inner = draw(_text(PLAIN + " \t" + escape, 0, 8))
        return f"{quote}{inner}{quote}"
    if kind == 8:
        return str(draw(_pick(PLAIN)) + escape + " " + draw(_pick(PLAIN)))
    return str(draw(_pick(("<<", "[", "]", "--", "=", "#", "${A:-b}", "<<-", "3<<", escape))))


@lru_cache(maxsize=None)
def _space() -> st.SearchStrategy[str]:
    return _pick((" ", " ", " ", "  ", "\t", " \t ", "\x0b", "\xa0",))


@lru_cache(maxsize=None)
@st.composite
def words(draw: Any, escape: str, min_size: int = 0, max_size: int = 5) -> str:
    items = [draw(word(escape)) for _ in range(draw(_ints(min_size, max_size)))]
    out = ""
    for index, item in enumerate(items):
        out += (draw(_space()) if index else "") + item
    return out


@lru_cache(maxsize=None)
@st.composite
def keyword(draw: Any, name: str) -> str:
    """`name` in upper, lower or mixed case."""
    style = draw(_ints(0, 3))
    if style == 0:
        return name
    if style == 1:
        return name.lower()
    mask = draw(_ints(0, 2 ** len(name) - 1))
    return "".join(ch.lower() if mask >> index & 1 else ch for index, ch in enumerate(name))


@lru_cache(maxsize=None)
@st.composite
def flags(draw: Any) -> str:
    out = []
    for _ in range(draw(_ints(0, 3))):
        name = draw(_pick(FLAG_NAMES))
        if draw(_ints(0, 4)) == 0:
            out.append(f"--{name}")
        else:
            out.append(f"--{name}={draw(_pick(FLAG_VALUES))}")
    if out and draw(_ints(0, 6)) == 0:
        out.append("--")
    return "".join(flag + " " for flag in out)


@lru_cache(maxsize=None)
@st.composite
def json_array(draw: Any) -> str:
    """An exec-form array: valid, invalid (falls back to shell form) or valid-but-not-strings (error)."""
    items = [draw(_odd_text("\\", 0, 6)) for _ in range(draw(_ints(0, 4)))]
    kind = draw(_ints(0, 9))
    if kind <= 5:
        sep = draw(_pick((", ", ",", " , ", ",\t",)))
        body = sep.join(json.dumps(item, ensure_ascii=draw(_BOOLS)) for item in items)
        pad = draw(_pick(("", " ", "  ",)))
        return f"[{pad}{body}{pad}]"
    broken = (
        "['a']", '["a",]', '["a"', '[ "a", "b ]', '["a" "b"]', "[]", '["a"] tail', '[ "a\\"b" ]',
        '["\\u00e9", "\\n"]', "[1]", '["a", ["b"]]', '[null]', '{"a": 1}', '["a", 1]', "[", '"x"',
        '["\\ud800"]', "[1e999]", '["a"]]', "[ ]x", "[NaN]", "[-0]", "[01]", '["a"]\t["b"]', "[true]",
    )
    return str(draw(_pick(broken)))


@lru_cache(maxsize=None)
@st.composite
def heredoc_token(draw: Any) -> tuple[str, str, bool]:
    """`[fd]<<[-][quote]NAME[quote]`: the token, the terminator name, and whether `<<-`."""
    name = draw(_pick(("EOF", "END", "eof", "A", "FILE1", "X_Y", "E$x", "a.b",)))
    fd = draw(_pick(("", "", "", "3", "0", "12",)))
    chomp = draw(_BOOLS)
    quote = draw(_pick(("", "", '"', "'",)))
    token = f"{fd}<<{'-' if chomp else ''}{quote}{name}{quote}"
    if quote == "" and draw(_ints(0, 8)) == 0:
        token = f'{fd}<<"{name[0]}"{name[1:]}'  # a partly quoted delimiter turns expansion off
    return token, name, chomp


@lru_cache(maxsize=None)
@st.composite
def heredoc_body(draw: Any, name: str, chomp: bool, escape: str) -> list[str]:
    lines = []
    for _ in range(draw(_ints(0, 3))):
        kind = draw(_ints(0, 7))
        if kind == 0:
            lines.append("")
        elif kind == 1:
            lines.append("# not a comment " + draw(word(escape)))
        elif kind == 2:
            lines.append("\t" + draw(words(escape, 1, 3)))
        elif kind == 3:
            lines.append(" " + name)  # looks like a terminator, is not one
        elif kind == 4:
            lines.append(draw(words(escape, 1, 3)) + " " + escape)
        else:
            lines.append(draw(words(escape, 1, 4)))
    terminated = draw(_ints(0, 25)) != 0
    if terminated:
        lines.append(("\t" * draw(_ints(0, 2)) if chomp else "") + name)
    return lines


@lru_cache(maxsize=None)
@st.composite
def shell_form(draw: Any, escape: str, heredoc: bool) -> tuple[str, list[list[str]]]:
    """Shell-form arguments, with heredoc tokens (and their bodies) when `heredoc` is True."""
    parts: list[str] = [draw(words(escape, 0, 4))]
    bodies: list[list[str]] = []
    if heredoc and draw(_ints(0, 1)) == 0:
        for _ in range(draw(_ints(1, 3))):
            token, name, chomp = draw(heredoc_token())
            parts.insert(draw(st.integers(0, len(parts))), token)
            bodies.append(draw(heredoc_body(name, chomp, escape)))
        if draw(_BOOLS):
            parts.append(draw(words(escape, 0, 2)))
    return " ".join(part for part in parts if part), bodies


@lru_cache(maxsize=None)
@st.composite
def name_values(draw: Any, escape: str) -> str:
    """ENV/LABEL arguments: the legacy `name value words` form or `k=v` pairs with quotes and escapes."""
    if draw(_ints(0, 3)) == 0:
        return str(draw(word(escape)) + draw(_space()) + draw(words(escape, 0, 3)))
    pairs = []
    for _ in range(draw(_ints(1, 3))):
        key = draw(_pick(("a", "PATH", "app.version", "org.opencontainers.image.title", "K_1", '"k k"',)))
        kind = draw(_ints(0, 5))
        if kind == 0:
            value = ""
        elif kind == 1:
            value = '"' + draw(words(escape, 0, 3)) + '"'
        elif kind == 2:
            value = "'" + draw(_text(PLAIN + " $", 0, 6)) + "'"
        elif kind == 3:
            value = draw(_pick((f"a{escape} b", "$PATH:/usr/local/bin", f'"a{escape}"b"')))
        else:
            value = draw(word(escape))
        pairs.append(f"{key}={value}")
    return " ".join(pairs)


@lru_cache(maxsize=None)
@st.composite
def instruction(draw: Any, escape: str, depth: int = 0) -> tuple[str, list[list[str]]]:
    """One logical instruction line and the heredoc bodies that follow it."""
    name = draw(_pick(KEYWORDS + ("RUN", "COPY", "ENV", "FOO")))
    if name == "FOO":
        args = " " + draw(words(escape, 0, 3)) if draw(_BOOLS) else ""
        return draw(_pick(UNKNOWN)) + args, []
    head = draw(keyword(name)) + draw(_space())
    bodies: list[list[str]] = []
    if name in ("RUN", "CMD", "ENTRYPOINT", "SHELL", "ADD", "COPY", "VOLUME"):
        head += draw(flags()) if name in ("RUN", "ADD", "COPY") or draw(_ints(0, 9)) == 0 else ""
        if draw(_ints(0, 2)) == 0:
            rest = draw(json_array())
        else:
            rest, bodies = draw(shell_form(escape, heredoc=name in ("RUN", "ADD", "COPY")))
    elif name in ("ENV", "LABEL"):
        rest = draw(name_values(escape))
    elif name == "HEALTHCHECK":
        head += draw(flags())
        mode = draw(_ints(0, 5))
        if mode == 0:
            rest = draw(keyword("NONE"))
        elif mode == 1:
            rest = draw(word(escape)) + " " + draw(words(escape, 0, 2))
        else:
            command = draw(json_array()) if draw(_BOOLS) else draw(words(escape, 0, 3))
            rest = draw(keyword("CMD")) + " " + command
    elif name == "ONBUILD":
        head += draw(flags()) if draw(_ints(0, 5)) == 0 else ""
        if depth < 2 and draw(_ints(0, 8)) != 0:
            rest, bodies = draw(instruction(escape, depth + 1))
        else:
            rest = ""
    elif name == "FROM":
        rest = draw(flags()) + draw(
            _pick(("alpine:3.20", "busybox", "scratch", "${BASE}", "gcr.io/x/y@sha256:abc",))
        )
        if draw(_BOOLS):
            rest += " " + draw(keyword("AS")) + " " + draw(_pick(("build", "b1", "Stage",)))
    elif name == "ARG":
        rest = draw(words(escape, 0, 3)) if draw(_BOOLS) else draw(name_values(escape))
    else:  # EXPOSE, USER, WORKDIR, MAINTAINER, STOPSIGNAL
        rest = draw(words(escape, 0, 3))
    return head + rest, bodies


@lru_cache(maxsize=None)
@st.composite
def layout(draw: Any, logical: str, escape: str) -> list[str]:
    """Split a logical line into physical lines at some spaces, with escape continuations."""
    pieces = logical.split(" ")
    lines: list[str] = []
    current = pieces[0]
    for piece in pieces[1:]:
        if draw(_ints(0, 6)) != 0:
            current += " " + piece
            continue
        lines.append(current + draw(_pick(("", " ",))) + escape + draw(_pick(("", " ", "\t", " \t",))))
        for _ in range(draw(_ints(0, 2))):
            lines.append(draw(_pick(("", "  ", "# inner comment", "  # indented comment", "\t",))))
        current = draw(_pick(("", " ", "  ", "\t",))) + piece
    if draw(_ints(0, 15)) == 0 and not current.endswith(("<<", "<<-")):
        lines.append(current + escape)  # ends with a continuation into the next line or EOF
        current = ""
    lines.append(current + draw(_pick(("", "", "", " ", "\t", "  ",))))
    return lines


@lru_cache(maxsize=None)
@st.composite
def filler(draw: Any, escape: str) -> list[str]:
    return [
        draw(_pick(("", "# a comment", "   ", "\t", "#", "  # indented", "# escape=`", "#" + escape,)))
        for _ in range(draw(_ints(0, 2)))
    ]


@lru_cache(maxsize=None)
@st.composite
def directives(draw: Any) -> tuple[list[str], str]:
    """The directive block and the escape character it selects."""
    escape = draw(_pick(("\\", "\\", "`",)))
    lines: list[str] = []
    if draw(_ints(0, 3)) == 0:
        lines.append(draw(_pick(("# syntax=docker/dockerfile:1", "#syntax=docker/dockerfile:1.7",))))
    if escape == "`" or draw(_ints(0, 8)) == 0:
        lines.append(draw(_pick((f"# escape={escape}", f"#escape={escape}", f"# ESCAPE = {escape} ",))))
    if draw(_BOOLS):
        lines.reverse()
    if draw(_ints(0, 5)) == 0:
        # Something that ends the block (or breaks it) before or between the directives.
        odd = draw(_pick(("# foo=bar", "", "#!/bin/sh", "# just a comment", "#  syntax  =  x  ", "# escape=x",
                          f"# escape={escape}", "# escape=\\", "#\tescape\t=\t`", "# escape=", "RUN true")))
        lines.insert(draw(_ints(0, len(lines))), odd)
    return lines, escape


SOUP = (
    "RUN ", "run ", "COPY ", "ADD ", "ENV ", "LABEL ", "ARG ", "ONBUILD ", "HEALTHCHECK ", "CMD ", "FROM ",
    "SHELL ", "EXPOSE ", "USER ", "FOO ", "x", "a=b ", "a b ", '"', "'", "\\", "`", "\\\n", "`\n", "\n",
    "\r\n", "\r", " ", "\t", "\x0b", "\xa0", "\x85", "\u2028", "#", "# c\n", "# escape=`\n",
    "# escape=\\\n", "# syntax=x\n", "# foo=bar\n", "<<", "<<EOF", "<<-EOF", "3<<EOF", "<<'EOF'", '<<"EOF"',
    "EOF\n", "\tEOF\n", "-", "--", "--x ", "--a=b ", "--m='a b' ", "[", "]", '["a"]', '"a", ', "CMD ", "NONE",
    "=", "$", "${a}", "é", "中", "🐳", "\ufeff",
)


@lru_cache(maxsize=None)
@st.composite
def soup(draw: Any) -> str:
    """Token soup: instruction words, quotes, escapes, heredoc markers and line ends in any order."""
    count = draw(_ints(1, 30))
    text = "".join(draw(_pick(SOUP)) for _ in range(count))
    return _avoid_version_gaps(text)


@lru_cache(maxsize=None)
@st.composite
def dockerfiles(draw: Any) -> str:
    """A whole Dockerfile as text (no NUL): mostly structured, one in eight a token soup."""
    if draw(_ints(0, 7)) == 0:
        return str(draw(soup()))
    return str(draw(structured()))


@lru_cache(maxsize=None)
@st.composite
def structured(draw: Any) -> str:
    """A whole Dockerfile as text (no NUL)."""
    lines, escape = draw(directives())
    for _ in range(draw(_ints(1, 6))):
        lines += draw(filler(escape))
        logical, bodies = draw(instruction(escape))
        # No blank right after `<<`: BuildKit v0.12.5 (the oracle) and the newer BuildKit that pybuild follows
        # disagree on `<< EOF` (test_oracle.VERSION_GAPS pins pybuild's side).
        logical = _avoid_version_gaps(logical)
        indent = draw(_pick(("", "", "", " ", "\t",)))
        lines += draw(layout(indent + logical, escape))
        for body in bodies:
            lines += body
    newline = draw(_pick(("\n", "\n", "\n", "\r\n", "\r\n", "mixed")))
    if newline == "mixed":  # LF, CRLF and a stray CR (not a line end for BuildKit) line by line
        text = "".join(line + draw(_pick(("\n", "\r\n", "\r\r\n", "\r"))) for line in lines[:-1]) + lines[-1]
        newline = "\n"
    else:
        text = newline.join(lines)
    if draw(_ints(0, 3)) != 0:
        text += newline
    # Again on the whole text: a continuation can pull heredoc body lines into the instruction line.
    text = _avoid_version_gaps(text)
    if draw(_ints(0, 20)) == 0:
        text = "\ufeff" + text
    return str(text)
