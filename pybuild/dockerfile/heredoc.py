"""Heredoc words: which `<<WORD` tokens open a heredoc, their name, fd, expand and chomp flags.

The scanner calls `heredocs_from_line` on a RUN/COPY/ADD line (shell form only) and then reads the
bodies. BuildKit's rules (parser.go `heredocsFromLine`, `ParseHeredoc`): the line is split into shell
words (quotes and escapes kept); a word `[fd]<<[-]NAME` opens a heredoc; `<<` or `<<-` followed by a
separate word also does. The name is the word with shell quoting removed; when quoting removed any quote
character, the body is not expanded. `$VAR` stays literal (no environment at parse time).
"""

from __future__ import annotations

import re

from pybuild.dockerfile.ast import Heredoc
from pybuild.errors import DockerfileError

_HEREDOC = re.compile(r"([0-9]*)<<(-?)([^<]*)\Z", re.DOTALL)
_OPENER = re.compile(r"[0-9]*<<-?\Z")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_SPACE = " \t\n\v\f\r"
_MAX_FD = 2**64


def shell_words(text: str, *, raw: bool) -> list[str]:
    """Split `text` into shell words; with `raw` quotes and escapes are kept in the words.

    Raises DockerfileError on an unterminated quote. Escape character is always `\\` (as BuildKit).
    """
    words: list[str] = []
    out: list[str] = []
    in_word = False
    pos, end = 0, len(text)
    while pos < end:
        ch = text[pos]
        pos += 1
        if ch in _SPACE:
            if in_word:
                words.append("".join(out))
                out, in_word = [], False
            continue
        in_word = True
        if ch == "\\":
            if raw:
                out.append(ch)
            if pos < end:
                out.append(text[pos])
                pos += 1
        elif ch == "'":
            pos = _single_quoted(text, pos, out, raw)
        elif ch == '"':
            pos = _double_quoted(text, pos, out, raw)
        else:
            out.append(ch)
    if in_word:
        words.append("".join(out))
    return words


def _single_quoted(text: str, pos: int, out: list[str], raw: bool) -> int:
    close = text.find("'", pos)
    if close < 0:
        raise DockerfileError("unexpected end of statement while looking for matching single-quote")
    out.append(text[pos - 1 : close + 1] if raw else text[pos:close])
    return close + 1


def _double_quoted(text: str, pos: int, out: list[str], raw: bool) -> int:
    if raw:
        out.append('"')
    end = len(text)
    while pos < end:
        ch = text[pos]
        pos += 1
        if ch == '"':
            if raw:
                out.append(ch)
            return pos
        if ch == "\\" and pos < end and text[pos] in '"$\\':
            if raw:
                out.append(ch)
            ch = text[pos]
            pos += 1
        out.append(ch)
    raise DockerfileError("unexpected end of statement while looking for matching double-quote")


def parse_heredoc(word: str) -> Heredoc | None:
    """The heredoc a word such as `<<EOF`, `3<<-'EOF'` or `<< EOF` opens, or None; content is empty.

    Raises DockerfileError when the name's quotes are unbalanced (`<<'EOF`).
    """
    match = _HEREDOC.match(word)
    if match is None or not match.group(3):
        return None
    fd_text, dash, rest = match.groups()
    words = shell_words(rest, raw=False)
    if len(words) != 1:
        return None
    raw_words = shell_words(rest, raw=True)
    name = words[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw_words[0].count("'") + raw_words[0].count('"')
    fd = int(fd_text) if fd_text else 0
    return Heredoc(
        name=name,
        file_descriptor=fd if fd < _MAX_FD else 0,
        expand=quotes == raw_quotes,
        chomp=dash == "-",
        content="",
    )


def heredocs_from_line(line: str) -> list[Heredoc]:
    """The heredocs opened on one instruction line, in order (bodies not read yet)."""
    try:
        words = shell_words(line, raw=True)
    except DockerfileError:
        return []
    docs: list[Heredoc] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if _OPENER.match(word) and index < len(words):
            word = word + " " + words[index]
            index += 1
        doc = parse_heredoc(word)
        if doc is not None:
            docs.append(doc)
    return docs


def chomp_heredoc_content(content: str) -> str:
    """Remove leading tabs from every line (the `<<-` form), as BuildKit's ChompHeredocContent."""
    return _LEADING_TABS.sub("", content)
