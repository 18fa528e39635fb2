"""Heredoc words: which `<<WORD` tokens open a heredoc, their name, fd, expand and chomp flags.

The scanner calls `heredocs_from_line` on a RUN/COPY/ADD line (shell form only) and then reads the
bodies. BuildKit's rules (parser.go `heredocsFromLine`, `ParseHeredoc`): the line is split into shell
words (quotes and escapes kept); a word `[fd]<<[-]NAME` opens a heredoc; `<<` or `<<-` followed by a
separate word also does. The name is the word with shell quoting removed; when quoting removed any quote
character, the body is not expanded. `$VAR` stays literal (no environment at parse time), but the
lexer still checks `${...}`: when it fails anywhere on the line (`${a`, `${a b}`, an unterminated quote),
BuildKit ignores the error and the line opens no heredoc at all. Checked against BuildKit's parser by
tests/differential/test_oracle.py.
"""

from __future__ import annotations

import re

from pybuild.dockerfile.ast import Heredoc
from pybuild.dockerfile.words import GO_SPACE
from pybuild.errors import DockerfileError

_HEREDOC = re.compile(r"([0-9]*)<<(-?)([^<]*)\Z", re.DOTALL)
_OPENER = re.compile(r"[0-9]*<<-?\Z")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
# Go's unicode.IsSpace: BuildKit's shell lexer splits words on any of these.
_SPACE = frozenset(GO_SPACE)
_MAX_FD = 2**64
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


def shell_words(text: str, *, raw: bool) -> list[str]:
    """Split `text` into shell words like BuildKit's lexer with no variables set and SkipUnsetEnv.

    With `raw` quotes and escapes are kept in the words. `$name` and `${...}` stay as written, but their
    syntax is checked as BuildKit checks it (`${a`, `${}`, `${a b}` are errors), and what they produce is
    split on blanks like any expansion. Raises DockerfileError on an unterminated quote or a bad `${`.
    The escape character is always `\\` (as BuildKit's heredoc code uses it).
    """
    lexer = _Lexer(text, raw)
    _, words = lexer.scan("")
    return words


class _Lexer:
    """BuildKit's shell word lexer (frontend/dockerfile/shell/lex.go), reduced to what heredocs need."""

    __slots__ = ("text", "pos", "raw")

    def __init__(self, text: str, raw: bool) -> None:
        # Go's text/scanner reads undecodable bytes as U+FFFD and skips a BOM at the very start.
        if not text.isascii():
            text = _UNDECODABLE.sub("\ufffd", text).removeprefix("\ufeff")
        self.text = text
        self.pos = 0
        self.raw = raw

    def scan(self, stop: str) -> tuple[str, list[str]]:
        """Read up to `stop` ("" = end of text): the processed text and the words (processStopOn)."""
        text, end = self.text, len(self.text)
        result: list[str] = []
        words: list[str] = []
        word: list[str] = []
        while self.pos < end:
            ch = text[self.pos]
            if ch == stop:
                self.pos += 1
                _add_word(words, word)
                return "".join(result), words
            if ch == "$":
                value = self.dollar()
                result.append(value)
                for part in value:  # an expansion is split on blanks (addString)
                    if part in _SPACE:
                        _add_word(words, word)
                        word = []
                    else:
                        word.append(part)
                continue
            if ch in "'\"":
                value = self.single() if ch == "'" else self.double()
                result.append(value)
                word.append(value)
                continue
            self.pos += 1
            if ch == "\\":
                if self.raw:
                    word.append(ch)
                    result.append(ch)
                if self.pos >= end:
                    break
                ch = text[self.pos]
                self.pos += 1
                word.append(ch)
            elif ch in _SPACE:
                _add_word(words, word)
                word = []
            else:
                word.append(ch)
            result.append(ch)
        if stop:
            raise DockerfileError(f"unexpected end of statement while looking for matching {stop}")
        _add_word(words, word)
        return "".join(result), words

    def single(self) -> str:
        start = self.pos
        close = self.text.find("'", start + 1)
        if close < 0:
            raise DockerfileError("unexpected end of statement while looking for matching single-quote")
        self.pos = close + 1
        return self.text[start : close + 1] if self.raw else self.text[start + 1 : close]

    def double(self) -> str:
        text, end = self.text, len(self.text)
        out = ['"'] if self.raw else []
        self.pos += 1
        while self.pos < end:
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                if self.raw:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.pos += 1
            if ch == "\\":
                if self.raw:
                    out.append(ch)
                if self.pos < end and text[self.pos] in '"$\\':
                    ch = text[self.pos]
                    self.pos += 1
                elif self.pos >= end:
                    continue
            out.append(ch)
        raise DockerfileError("unexpected end of statement while looking for matching double-quote")

    def dollar(self) -> str:
        """`$...` with no variable set: the text back as written, or DockerfileError (processDollar)."""
        text, end = self.text, len(self.text)
        self.pos += 1
        if self.pos >= end or text[self.pos] != "{":
            return "$" + self.name()
        self.pos += 1
        if self.pos >= end:
            raise DockerfileError("syntax error: missing '}'")
        if text[self.pos] in "{}:":
            raise DockerfileError("syntax error: bad substitution")
        name = self.name()
        if self.pos >= end:
            raise DockerfileError(f"unsupported modifier in substitution: ${{{name}")
        op = text[self.pos]
        self.pos += 1
        if op == "}":
            return "${" + name + "}"
        if op == "/":
            if self.pos < end and text[self.pos] == "/":
                self.pos += 1
                op = "//"
            pattern = self.modifier_word("/")
            return "${" + name + op + pattern + "/" + self.modifier_word("}") + "}"
        if op == ":":
            op += text[self.pos] if self.pos < end else ""
            self.pos += 1
            if op[1:] in ("#", "%"):
                raise DockerfileError(f"unsupported modifier ({op}) in substitution")
        elif op not in "+-?#%":
            raise DockerfileError(f"unsupported modifier ({op}) in substitution")
        return "${" + name + op + self.modifier_word("}") + "}"

    def modifier_word(self, stop: str) -> str:
        try:
            word, _ = self.scan(stop)
        except DockerfileError:
            if self.pos >= len(self.text):
                raise DockerfileError(f"syntax error: missing '{stop}'") from None
            raise
        return word

    def name(self) -> str:
        """A variable name (processName): digits, one special parameter, or letters/digits/_."""
        text, end, start = self.text, len(self.text), self.pos
        if start >= end:
            return ""
        ch = text[start]
        if ch.isdecimal():
            while self.pos < end and text[self.pos].isdecimal():
                self.pos += 1
            return text[start : self.pos]
        if ch in "@*#?-$!0":
            self.pos += 1
            return ch
        while self.pos < end and _is_name_char(text[self.pos]):
            self.pos += 1
        return text[start : self.pos]


def _is_name_char(ch: str) -> bool:
    return ch.isalpha() or ch.isdecimal() or ch == "_"  # Go's unicode.IsLetter, unicode.IsDigit


def _add_word(words: list[str], out: list[str]) -> None:
    word = "".join(out)
    if word:  # BuildKit keeps no empty words: `""` alone is no word at all
        words.append(word)


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
