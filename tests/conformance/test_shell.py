"""BuildKit's shell-expansion tables (README section 2) run through `pybuild.dockerfile.shell.Lexer`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pybuild.dockerfile.shell import Lexer, build_env_map
from pybuild.errors import DockerfileError
from tests.conftest import conformance_path

SHELL_DIR = "buildkit-shell"
ENV_VAR_ENV = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]
UNIX = Lexer("\\")
WINDOWS = Lexer("\\", case_insensitive=True)


def _params(name: str, load: Any) -> list[Any]:
    """Parametrize over the cases in `name`."""
    return [pytest.param(case, id=case_id) for case_id, case in load(conformance_path(SHELL_DIR, name))]


def _load_env_var_test(path: Path) -> list[tuple[str, tuple[str, str, str]]]:
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        fields = line.strip().split("|")
        assert len(fields) == 3, f"envVarTest:{number}: expected 3 fields"
        platform, source, expected = (field.strip() for field in fields)
        assert platform in ("A", "U", "W"), f"envVarTest:{number}: bad platform {platform}"
        cases.append((f"L{number}-{platform}", (platform, source, expected)))
    return cases


def _load_words_test(path: Path) -> list[tuple[str, tuple[tuple[str, ...], str, list[str]]]]:
    cases = []
    env: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            env.append(line[3:].lstrip(" "))
            continue
        fields = line.split("|")
        assert len(fields) == 2, f"wordsTest:{number}: expected exactly one |"
        expected = fields[1].lstrip(" ").split(",")
        cases.append((f"L{number}", (tuple(env), fields[0].strip(), expected)))
    return cases


def _json_section(section: str) -> Any:
    def load(path: Path) -> list[tuple[str, Any]]:
        cases = json.loads(path.read_text(encoding="utf-8"))[section]
        return [(f"{i}-{case.get('input', case.get('lookup', ''))}", case) for i, case in enumerate(cases)]

    return load


def _load_platform(path: Path) -> list[tuple[str, Any]]:
    example = json.loads(path.read_text(encoding="utf-8"))["platform_filename_example"]
    return [(f"run{i}", (example["input"], run)) for i, run in enumerate(example["runs"])]


@pytest.mark.parametrize("case", _params("envVarTest", _load_env_var_test))
def test_env_var_test(case: tuple[str, str, str]) -> None:
    platform, source, expected = case
    lexers = {"A": (UNIX, WINDOWS), "U": (UNIX,), "W": (WINDOWS,)}[platform]
    for lexer in lexers:
        for env in (ENV_VAR_ENV, build_env_map(ENV_VAR_ENV)):
            if expected == "error":
                with pytest.raises(DockerfileError):
                    lexer.process_word(source, env)
            else:
                assert lexer.process_word(source, env) == expected


@pytest.mark.parametrize("case", _params("wordsTest", _load_words_test))
def test_words_test(case: tuple[tuple[str, ...], str, list[str]]) -> None:
    env, source, expected = case
    for env_form in (list(env), build_env_map(list(env))):
        try:
            result = UNIX.process_words(source, env_form)
        except DockerfileError:
            result = ["error"]
        assert result == expected


@pytest.mark.parametrize("case", _params("process_word_cases.json", _json_section("process_word_with_matches")))
def test_process_word_with_matches(case: dict[str, Any]) -> None:
    if case.get("expected_error"):
        with pytest.raises(DockerfileError):
            UNIX.process_word_with_matches(case["input"], case["envs"])
        return
    result = UNIX.process_word_with_matches(case["input"], case["envs"])
    assert result.words == (case["expected"],)
    assert result.matched == frozenset(case["matched"])
    assert result.unmatched == frozenset(case["unmatched"])


@pytest.mark.parametrize("case", _params("process_word_cases.json", _load_platform))
def test_platform_filename_example(case: tuple[str, dict[str, Any]]) -> None:
    source, run = case
    assert UNIX.process_word(source, run["envs"]) == run["expected"]


@pytest.mark.parametrize("case", _params("process_word_cases.json", _json_section("mandatory_var_cases")))
def test_mandatory_var_cases(case: dict[str, Any]) -> None:
    env_list = [f"{key}={value}" for key, value in case["envs"].items()]
    if "expected_error_contains" in case:
        with pytest.raises(DockerfileError, match=case["expected_error_contains"]):
            UNIX.process_word(case["input"], env_list)
    else:
        assert UNIX.process_word(case["input"], env_list) == case["expected"]


@pytest.mark.parametrize("case", _params("process_word_cases.json", _json_section("env_lookup_cases")))
def test_env_lookup_cases(case: dict[str, Any]) -> None:
    assert build_env_map(case["env_list"]).get(case["lookup"], "") == case["expected"]
    assert UNIX.process_word("${" + case["lookup"] + "}", case["env_list"]) == case["expected"]
