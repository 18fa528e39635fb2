"""Unit tests for `pybuild.dockerfile.shell`: edge cases beyond BuildKit's tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pybuild.dockerfile.shell import MAX_EXPANSION, Expansion, Lexer, build_env_map, split_words
from pybuild.errors import DockerfileError, InternalError

LEX = Lexer()
BACKTICK = Lexer("`")
ENV = {"PWD": "/home", "EMPTY": "", "SPACE": " a  b ", "V": "1.2.3"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("he`$PWD", "he$PWD"),
        ("a\\b", "a\\b"),
        ('"a`"b"', 'a"b'),
        ('"a\\"', "a\\"),
        ('"a``b"', "a`b"),
        ('"a`xb"', "a`xb"),
        ("a`", "a"),
        ("${X:-`}}", "}"),
    ],
)
def test_backtick_escape(word: str, expected: str) -> None:
    assert BACKTICK.process_word(word, ENV) == expected


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${a:-${b:-c}}", "c"),
        ("${a:-${b:-${PWD}}}/x", "/home/x"),
        ("${PWD:+${a:-x}${PWD}}", "x/home"),
        ("${a:-'}'}", "}"),
        ('${a:-"$PWD"}', "/home"),
        ("${a:-\\}}", "}"),
    ],
)
def test_nested_expansions(word: str, expected: str) -> None:
    assert LEX.process_word(word, ENV) == expected


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${PWD", "failed to process \"${PWD\": syntax error: missing '}'"),
        ("${}", "bad substitution"),
        ("${PWD:=x}", "unsupported modifier (:=) in substitution"),
        ("${PWD=x}", "unsupported modifier (=) in substitution"),
        ("${PWD:#x}", "unsupported modifier (:#) in substitution"),
        ("${X:?}", "X: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${X?need $PWD}", "X: need /home"),
        ("'abc", "matching single-quote"),
        ('"abc', "matching double-quote"),
        ("${PWD#\\x}", "invalid pattern (\\x) in substitution"),
        ("${PWD/a", "missing '/' in ${}"),
        ("${PWD/a/b", "missing '}'"),
    ],
)
def test_errors_are_dockerfile_errors_with_clear_messages(word: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        LEX.process_word(word, ENV)
    assert message in str(info.value)
    assert str(info.value).startswith("failed to process ")


def test_matches_report_names_as_written() -> None:
    result = LEX.process_word_with_matches("$PWD ${EMPTY} $NOPE ${1} $@", ENV)
    assert result == Expansion(("/home    ",), frozenset({"PWD", "EMPTY"}), frozenset({"NOPE", "1", "@"}))


def test_words_with_matches() -> None:
    result = LEX.process_words_with_matches('$SPACE"$SPACE"x \\ y', ENV)
    assert result.words == ("a", "b", " a  b x", " y")
    assert result.matched == frozenset({"SPACE"})


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$EMPTY", []),
        ('""', []),
        ("''", []),
        ("a '' b", ["a", "b"]),
        ('${X:-"x y"}', ["x", "y"]),  # BuildKit splits a $-expansion's result, even a quoted default
        ("a\u3000b", ["a", "b"]),
        ("a\x1cb", ["a\x1cb"]),  # not a space for Go's unicode.IsSpace
        ("  a\t\nb  ", ["a", "b"]),
    ],
)
def test_word_splitting(word: str, expected: list[str]) -> None:
    assert LEX.process_words(word, ENV) == expected


def test_raw_quotes_keeps_quotes_but_groups_words() -> None:
    lexer = Lexer(raw_quotes=True)
    assert lexer.process_word("\"a $PWD\"'$x'", ENV) == "\"a /home\"'$x'"
    assert lexer.process_words('a "b c"', ENV) == ["a", '"b c"']


def test_skip_unset_leaves_undefined_references() -> None:
    lexer = Lexer(skip_unset=True)
    word = "$X ${X} ${X:-d} ${X#p} ${X/a/b} ${X//a/b} $1 $PWD ${EMPTY:-e}"
    assert lexer.process_word(word, ENV) == "$X ${X} ${X:-d} ${X#p} ${X/a/b} ${X/a/b} $1 /home e"


def test_raw_escapes_keeps_escape_characters() -> None:
    lexer = Lexer(raw_escapes=True)
    assert lexer.process_word('a\\ b"\\$x\\q"', ENV) == 'a\\ b\\$x\\\\q'
    assert lexer.process_words("a\\ b c", ENV) == ["a\\ b", "c"]


def test_case_insensitive_lookup() -> None:
    lexer = Lexer(case_insensitive=True)
    env = ["Path=/a", "PATH=/b"]
    result = lexer.process_word_with_matches("$path:${PaTh}", env)
    assert result.words == ("/b:/b",)
    assert result.matched == frozenset({"path", "PaTh"})
    assert LEX.process_word("$path", env) == ""


@pytest.mark.parametrize(
    "env",
    [
        {"A": "x", "B": ""},
        ["A=y", "A=x", "B"],
        [("A", "x"), ("B", "")],
        ("A=x", "B="),
    ],
)
def test_env_forms(env: object) -> None:
    result = LEX.process_word_with_matches("$A${B-unset}$C", env)  # type: ignore[arg-type]
    assert result == Expansion(("x",), frozenset({"A", "B"}), frozenset({"C"}))


def test_env_as_string_is_a_bug() -> None:
    with pytest.raises(InternalError):
        LEX.process_word("$A", "A=b")


def test_build_env_map_last_wins() -> None:
    assert build_env_map(["a=1", "b", "a=2=3"]) == {"a": "2=3", "b": ""}
    assert build_env_map({"K": "1", "k": "2"}, case_insensitive=True) == {"k": "2"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${V%.*}", "1.2"),
        ("${V%%.*}", "1"),
        ("${V#*.}", "2.3"),
        ("${V##*.}", "3"),
        ("${V#?.}", "2.3"),
        ("${V%\\*}", "1.2.3"),
        ("${V/./-}", "1-2.3"),
        ("${V//./-}", "1-2-3"),
        ("${V//./'[$0]'}", "1[.]2[.]3"),  # Go template in //: $0 is the match
        ("${V/./'[$0]'}", "1[$0]2.3"),  # the single form splices literally
        ("${V//./'$$'}", "1$2$3"),
        ("${V//./'$1'}", "123"),
        ("${V//*/x}", "x"),  # Go's ReplaceAll skips the empty match after a match
        ("${V//?/}", ""),
    ],
)
def test_patterns(word: str, expected: str) -> None:
    assert LEX.process_word(word, ENV) == expected


def test_brackets_are_literal_in_patterns() -> None:
    # BuildKit escapes `[` and `]`: there are no bracket expressions.
    assert LEX.process_word("${F#[ab]}", {"F": "[ab]c"}) == "c"
    assert LEX.process_word("${F#[ab]}", {"F": "ac"}) == "ac"


def test_star_does_not_cross_newlines() -> None:
    # Go's `.` does not match `\n`, and neither does the translated pattern.
    assert LEX.process_word("${F#*b}", {"F": "a\nb"}) == "a\nb"


def test_invalid_escape_token() -> None:
    with pytest.raises(DockerfileError):
        Lexer("ab")


def test_fast_path_returns_word_unchanged() -> None:
    assert LEX.process_word_with_matches("plain word", ENV) == Expansion(("plain word",), frozenset(), frozenset())
    assert LEX.process_words_with_matches("plain  word", ENV).words == ("plain", "word")
    assert BACKTICK.process_word("a\\b", {}) == "a\\b"


PLAIN = st.text(st.characters(exclude_characters="$'\"\\`", exclude_categories=["Cs"]))
ANY = st.lists(st.sampled_from(list("ab :-+?#%/{}$'\"\\` \t*") + ["PWD", "EMPTY", "é", "\n"])).map("".join)


@given(PLAIN)
def test_plain_text_fast_path_matches_slow_path(text: str) -> None:
    # A leading '' forces the slow path without changing the result.
    assert LEX.process_word("''" + text, ENV) == LEX.process_word(text, ENV) == text
    assert LEX.process_words("''" + text, ENV) == LEX.process_words(text, ENV) == split_words(text)


@given(st.text(st.characters(exclude_characters="$\"\\", exclude_categories=["Cs"]), min_size=1))
def test_double_quotes_keep_one_word(text: str) -> None:
    assert LEX.process_words(f'"{text}"', ENV) == [text]


@given(ANY, st.booleans(), st.booleans(), st.booleans())
def test_only_dockerfile_errors_escape(text: str, raw_quotes: bool, skip_unset: bool, raw_escapes: bool) -> None:
    for escape in ("\\", "`"):
        lexer = Lexer(escape, raw_quotes=raw_quotes, skip_unset=skip_unset, raw_escapes=raw_escapes)
        try:
            single = lexer.process_word_with_matches(text, ENV)
            multi = lexer.process_words_with_matches(text, ENV)
        except DockerfileError:
            continue
        assert len(single.words) == 1
        assert single.matched == multi.matched and single.unmatched == multi.unmatched


# -- the size cap (MAX_EXPANSION) ----------------------------------------------------------------------

HALF = {"h": "x" * (MAX_EXPANSION // 2 + 64), "one": "1"}  # two of them pass the cap


@pytest.mark.parametrize("word", ["$h$h", "${h}${h}", '"$h$h"', "'a'$h$h", "${none:-$h$h}", "${h:+$h$h}",
                                  "${h/x/$h$h}", "${h//x/xx}", "${h//?/$one$one}", "a$h${h}b"])
def test_expansion_past_the_cap_is_an_error(word: str) -> None:
    for lexer in (LEX, Lexer(raw_quotes=True, raw_escapes=True)):
        with pytest.raises(DockerfileError, match="over 1 MiB larger than written"):
            lexer.process_word(word, HALF)
        with pytest.raises(DockerfileError, match="over 1 MiB larger than written"):
            lexer.process_words(word, HALF)


def test_expansion_up_to_the_cap_and_literal_text_are_kept() -> None:
    value = "y" * (MAX_EXPANSION // 2)
    assert LEX.process_word("$v$v", {"v": value}) == value * 2
    assert LEX.process_word("${v//y/yy}", {"v": value}) == value * 2
    literal = "z" * (2 * MAX_EXPANSION)
    assert LEX.process_word(literal + "$v", {"v": "1"}) == literal + "1"


def test_a_replacement_template_cannot_multiply_past_the_cap() -> None:
    # `${v//p/r}` takes r as a Go template: `$0` is the match (`\$0` keeps the lexer from expanding it
    # first; the template keeps the backslash)
    env = {"v": "x" * 1024}
    assert LEX.process_word("${v//x*/\\$0\\$0}", env) == ("\\" + "x" * 1024) * 2
    with pytest.raises(DockerfileError, match="over 1 MiB larger than written"):
        LEX.process_word("${v//x*/" + "\\$0" * 1100 + "}", env)
