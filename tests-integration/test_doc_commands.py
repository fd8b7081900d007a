"""Every command line the docs show parses against the real CLIs, as written.

README.md and docs/*.md show ``openbeepboop-server``, ``openbeepboop-node``
and ``openbeepboop-client`` command lines in fenced shell (``bash``, ``sh``,
``console``, ``shell``) and unlabelled blocks. Each one is parsed by the
installed click command exactly as a shell would hand it over, without running
it: the subcommand chain must exist, every flag must exist on the command it
is given to, values must convert, required flags must be there. A renamed
command or a flag the docs invent fails here, naming the file and line.

Two forms are read:

* A command line (what a user types): comments, ``\\`` continuations, pipes,
  ``;``/``&&``, redirections and ``$(...)`` are handled the way a shell splits
  them, and every CLI invocation in the line is parsed in full.
* A synopsis (``[--flag X]`` brackets, ``A|B`` alternatives, ``...``): the
  line without its bracketed parts and with each alternative's first choice
  must parse, and every flag named anywhere in it must exist on that command.

The quick start's ``nox -s demo -- ARGS`` lines are parsed by
demo/quickstart.py's own argparse parser the same way.

The same test compiles the ``python`` blocks of every doc (docs/client.md and
docs/openai.md above all), so an example a user copies is at least valid
Python, and checks that what it imports from ``openbeepboop`` exists.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from openbeepboop.cli import main as client_cli
from openbeepboop_node.cli import main as node_cli
from openbeepboop_server.cli import main as server_cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLIS: dict[str, click.Command] = {
    "openbeepboop-server": server_cli,
    "openbeepboop-node": node_cli,
    "openbeepboop-client": client_cli,
}
#: Blocks a user copies commands from; ``text`` holds transcripts (``$ `` lines).
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}
#: A fence, possibly indented (inside a list item), with its language tag.
FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
#: A fence line: an opening one may name a language, a closing one holds nothing else.
FENCE_LINE = re.compile(r"^[ \t]*```(.*)$")
#: Inline code that starts with one of the CLIs, in prose.
INLINE = re.compile(
    r"(?<!`)`((?:openbeepboop-(?:server|node|client)|(?:\S*/)?nox -s demo)\b[^`]*)`(?!`)"
)
#: The quick start's ``nox -s demo -- ARGS``: ARGS go to demo/quickstart.py.
DEMO = "nox -s demo --"
#: What marks a line as a synopsis rather than something to type.
SYNOPSIS = re.compile(r"\[-|\[\w|\w\|\w|\.\.\.\]")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
#: Shell operators that end one command and start another (or a file name).
OPERATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")", "<", ">", ">>", ">&", "<&", "&>"}
#: Words that run the command after them (``sudo openbeepboop-node run``).
PREFIX_WORDS = {"sudo", "exec", "nohup", "time", "env", "command"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


@dataclass(frozen=True)
class DocCommand:
    """One CLI invocation found in a doc, and where, for the failure message."""

    where: str
    program: str
    args: tuple[str, ...]
    synopsis: bool
    #: Named in prose (inline code): may be partial, but every word must exist.
    mention: bool = False
    #: Why a shell could not even split the line into words.
    shell_error: str | None = None

    def __str__(self) -> str:
        if self.shell_error:
            return f"{self.where}: {self.args[0]}"
        if self.program == DEMO:
            return f"{self.where}: {self.program} {shlex.join(self.args)}"
        return f"{self.where}: {shlex.join([self.program, *self.args])}"


def fenced_blocks(text: str) -> Iterator[tuple[str, str, int]]:
    """Each fenced block's language, body and first body line number (1-based)."""
    for match in FENCE.finditer(text):
        first_line = text.count("\n", 0, match.start(2)) + 1
        yield match.group(1), match.group(2), first_line


def logical_lines(body: str, first_line: int, language: str) -> Iterator[tuple[int, str]]:
    """A block's lines as a shell reads them: ``\\`` continuations joined.

    A synopsis wrapped onto indented lines starting with ``[`` or ``-`` is
    joined too. In a ``console`` block only ``$ `` lines are commands.
    """
    lines: list[tuple[int, str]] = []
    pending = ""
    for number, line in enumerate(body.splitlines(), start=first_line):
        if language == "console" and not line.startswith("$ "):
            continue
        if line.lstrip().startswith("$ "):
            line = line.lstrip()[2:]
        if pending:
            lines[-1] = (lines[-1][0], pending + " " + line)
        elif lines and line[:1].isspace() and line.lstrip()[:1] in ("[", "-"):
            lines[-1] = (lines[-1][0], lines[-1][1] + " " + line.strip())
        else:
            lines.append((number, line))
        pending = lines[-1][1][:-1] if lines[-1][1].endswith("\\") else ""
    yield from lines


def substitutions(line: str) -> tuple[str, list[str]]:
    """The line with each ``$(...)`` replaced by a word, and the inner commands."""
    inner: list[str] = []
    pattern = re.compile(r"\$\(([^()]*)\)")
    while match := pattern.search(line):
        inner.append(match.group(1))
        line = line[: match.start()] + "SUBSTITUTED" + line[match.end() :]
    return line, inner


def without_comment(line: str) -> str:
    """The line up to a ``#`` that starts a word outside quotes, as a shell reads it.

    (``shlex`` would also cut ``http://host/#part`` at its ``#``.)
    """
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def simple_commands(line: str) -> Iterator[list[str]]:
    """The words of each simple command in one shell line, operators dropped."""
    outer, inner = substitutions(without_comment(line))
    for text in [outer, *inner]:
        lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;()<>")
        lexer.whitespace_split = True
        lexer.commenters = ""
        words: list[str] = []
        for token in lexer:
            if token in OPERATORS or (token and set(token) <= set("|&;()<>")):
                if words and words[-1].isdigit() and token.startswith((">", "<")):
                    words.pop()  # the fd of 2>&1
                yield words
                words = []
            else:
                words.append(token)
        yield words


def invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """The CLI and its arguments if this simple command runs one of ours."""
    index = 0
    while index < len(words) and (
        ENV_ASSIGNMENT.match(words[index]) or words[index] in PREFIX_WORDS
    ):
        index += 1
    if index < len(words) and (program := Path(words[index]).name) in CLIS:
        return program, words[index + 1 :]
    if words[index : index + 1] and Path(words[index]).name == "nox":
        session = words[index + 1 :]
        if session[:2] == ["-s", "demo"]:
            return DEMO, session[3:] if session[2:3] == ["--"] else []
    return None


def synopsis_commands(line: str) -> Iterator[tuple[str, list[str]]]:
    """A synopsis line's program and words, comments dropped, nothing split on ``|``."""
    text = re.sub(r"\s#.*$", "", line)
    words = text.split()
    found = invocation(words)
    if found:
        yield found


def doc_commands() -> list[DocCommand]:
    """Every invocation of one of the three CLIs in the docs' shell blocks."""
    found: list[DocCommand] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for language, body, first_line in fenced_blocks(text):
            if language not in SHELL_LANGUAGES:
                continue
            for number, line in logical_lines(body, first_line, language):
                where = f"{path.relative_to(ROOT)}:{number}"
                synopsis = bool(SYNOPSIS.search(re.sub(r"\s#.*$", "", line)))
                if synopsis:
                    for program, args in synopsis_commands(line):
                        found.append(DocCommand(where, program, tuple(args), True))
                    continue
                try:
                    commands = list(simple_commands(line))
                except ValueError as error:  # an unclosed quote
                    if any(program in line for program in CLIS):
                        found.append(
                            DocCommand(where, "sh", (line,), False, shell_error=str(error))
                        )
                    continue
                for words in commands:
                    if hit := invocation(words):
                        found.append(DocCommand(where, hit[0], tuple(hit[1]), False))
        found.extend(inline_mentions(path, text))
    return found


def inline_mentions(path: Path, text: str) -> Iterator[DocCommand]:
    """The CLI invocations named in inline code outside fenced blocks."""
    prose = FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    for match in INLINE.finditer(prose):
        number = prose.count("\n", 0, match.start()) + 1
        words = re.sub(r"\s+", " ", match.group(1)).split(" ")
        synopsis = bool(SYNOPSIS.search(match.group(1)))
        where = f"{path.relative_to(ROOT)}:{number}"
        if Path(words[0]).name == "nox":
            program, args = invocation(words) or (DEMO, [])
            yield DocCommand(where, program, tuple(args), synopsis)
            continue
        for args in alternatives(words[1:]):
            yield DocCommand(where, words[0], tuple(args), synopsis, mention=True)


def alternatives(words: list[str]) -> Iterator[list[str]]:
    """``keys create|update --x`` as ``keys create --x`` and ``keys update --x``."""
    for index, word in enumerate(words):
        if word.startswith(("-", "[")):
            break
        if "|" in word:
            for choice in word.split("|"):
                yield from alternatives([*words[:index], choice, *words[index + 1 :]])
            return
    yield words


def parse(program: str, args: list[str]) -> click.Context:
    """Parse ``args`` down the subcommand chain as click would; the innermost context.

    Nothing is invoked: only the parsing (conversion, required options,
    unknown flags) that happens before a command's code runs.
    """
    context = CLIS[program].make_context(program, list(args), resilient_parsing=False)
    while isinstance(context.command, click.Group):
        group = context.command
        rest = [*context._protected_args, *context.args]
        if not rest:
            if group.invoke_without_command:
                break
            raise click.UsageError("Missing command.", context)
        name, command, rest = group.resolve_command(context, rest)
        assert command is not None and name is not None
        context = command.make_context(name, rest, parent=context)
    return context


def minimal_form(words: list[str]) -> list[str]:
    """A synopsis without its optional parts: brackets dropped, first alternative kept."""
    text = " ".join(words)
    while (cut := re.sub(r"\[[^\[\]]*\]", "", text)) != text:
        text = cut
    return [word.split("|")[0] for word in text.split() if word != "..."]


def flags_of(context: click.Context) -> set[str]:
    """Every flag spelling the command and the groups above it accept."""
    flags: set[str] = set()
    while context is not None:
        for param in context.command.get_params(context):
            flags.update(param.opts)
            flags.update(param.secondary_opts)
        context = context.parent  # type: ignore[assignment]
    return flags


def mentioned_context(command: DocCommand) -> click.Context:
    """The context of the deepest subcommand a prose mention names.

    A mention may stop short of a runnable command (``keys create --role
    NODE``), so only the words that must exist are checked: each word after a
    group names one of its subcommands, until the first flag or value.
    """
    cli = CLIS[command.program]
    context = click.Context(cli, info_name=command.program)
    for word in command.args:
        if not isinstance(context.command, click.Group) or word.startswith("-"):
            break
        sub = context.command.get_command(context, word)
        if sub is None:
            pytest.fail(f"{command}\n  no such command: {word!r}", pytrace=False)
        context = click.Context(sub, info_name=word, parent=context)
    return context


def check_flags(command: DocCommand, context: click.Context) -> None:
    """Every flag the doc names exists on the command or a group above it."""
    known = flags_of(context)
    named = {flag for word in command.args for flag in FLAG.findall(word.split("=")[0])}
    unknown = sorted(named - known)
    assert not unknown, f"{command}\n  names flags the command lacks: {unknown}"


@functools.cache
def demo_parser() -> Callable[[list[str]], object]:
    """demo/quickstart.py's own argument parsing (the script is not a package)."""
    name = "openbeepboop_demo_quickstart"
    spec = importlib.util.spec_from_file_location(name, ROOT / "demo" / "quickstart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.parse_args  # type: ignore[no-any-return]


def check_demo(command: DocCommand, args: list[str]) -> None:
    """``nox -s demo -- ARGS`` parses: argparse exits 2 on a flag it does not know."""
    try:
        demo_parser()(args)
    except SystemExit as done:
        if done.code not in (0, None):
            pytest.fail(f"{command}\n  demo/quickstart.py refuses it", pytrace=False)


def check(command: DocCommand, as_typed: list[str] | None = None) -> None:
    """Fail with the doc's location when the command would not parse.

    ``as_typed`` is the argument list with the doc's placeholders made real
    (shortened paths); the message shows the doc's own words.
    """
    assert command.shell_error is None, f"{command}\n  {command.shell_error}"
    if command.mention:
        check_flags(command, mentioned_context(command))
        return
    words = list(command.args) if as_typed is None else as_typed
    if command.program == DEMO:
        check_demo(command, words)
        return
    args = minimal_form(words) if command.synopsis else words
    try:
        context = parse(command.program, args)
    except click.exceptions.Exit as done:  # --help, --version
        if done.exit_code != 0:
            pytest.fail(f"{command}\n  exits {done.exit_code}", pytrace=False)
        return
    except click.UsageError as error:
        pytest.fail(f"{command}\n  does not parse: {error.format_message()}", pytrace=False)
    if command.synopsis:
        check_flags(command, context)


COMMANDS = doc_commands()


def test_the_docs_show_commands_of_all_three_clis() -> None:
    """Guards the extraction itself: a parser that finds nothing checks nothing."""
    programs = {command.program for command in COMMANDS}
    assert {*CLIS, DEMO} <= programs, programs
    assert sum(command.synopsis for command in COMMANDS) >= 10
    assert sum(not command.synopsis for command in COMMANDS) >= 20


#: How a transcript shortens a path (docs/quickstart.md: "paths shortened").
SHORTENED = "…/"
#: A relative file name a command reads (``prompts.jsonl``): a user has made it.
USER_FILE = re.compile(r"^[\w-]+(\.[\w-]+)*\.(jsonl|json|toml|txt)$")


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_doc_command_parses(
    command: DocCommand, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = []
    for word in command.args:
        if word.startswith(SHORTENED):  # a transcript's shortened path
            word = str(tmp_path / word.removeprefix(SHORTENED))
        if USER_FILE.match(Path(word).name):
            Path(word).parent.mkdir(parents=True, exist_ok=True)
            Path(word).touch()
        args.append(word)
    check(command, args)


def test_a_made_up_flag_fails() -> None:
    """The checker itself catches what it is for: flags and commands that do not exist."""
    bad = [
        DocCommand("x", "openbeepboop-client", ("submit", "hi", "--no-such-flag"), False),
        DocCommand("x", "openbeepboop-client", ("list", "--limit", "many"), False),
        DocCommand("x", "openbeepboop-client", ("submit", "hi", "--model"), False),
        DocCommand("x", "openbeepboop-server", ("keys", "create", "--name", "a"), False),
        DocCommand("x", "openbeepboop-server", ("no-such-command",), False),
        DocCommand("x", "openbeepboop-server", ("keys",), False),
        DocCommand("x", "openbeepboop-client", ("status", "[--no-such-flag]"), True),
        DocCommand("x", "openbeepboop-server", ("keys", "make"), False, mention=True),
        DocCommand("x", "openbeepboop-node", ("run", "--no-such-flag"), False, mention=True),
        DocCommand("x", DEMO, ("--api-base", "http://x"), False),  # needs --litellm-model
        DocCommand("x", DEMO, ("--kept",), False),
        DocCommand("x", "sh", ("openbeepboop-client submit 'hi",), False, shell_error="quote"),
    ]
    for command in bad:
        with pytest.raises((pytest.fail.Exception, AssertionError)):
            check(command)


def test_doc_fences_are_well_formed() -> None:
    """A closing fence with text after it is no fence: the block runs on into
    the prose (and the commands in it go unchecked)."""
    faults = []
    for path in DOCS:
        in_fence = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if match := FENCE_LINE.match(line):
                rest = match.group(1).strip()
                if in_fence and rest:
                    faults.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
                in_fence = not in_fence if not (in_fence and rest) else in_fence
    assert not faults, "closing fences with text after them:\n" + "\n".join(faults)


def python_blocks() -> list[tuple[str, str]]:
    """The ``python`` blocks of the docs, with where they start."""
    return [
        (f"{path.relative_to(ROOT)}:{first_line}", body)
        for path in DOCS
        for language, body, first_line in fenced_blocks(path.read_text(encoding="utf-8"))
        if language == "python"
    ]


@pytest.mark.parametrize(
    ("where", "source"), python_blocks(), ids=[where for where, _ in python_blocks()]
)
def test_doc_python_example_compiles(where: str, source: str) -> None:
    tree = compile(source, where, "exec", ast.PyCF_ONLY_AST)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("openbeepboop"):
            module = importlib.import_module(node.module or "")
            missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
            assert not missing, f"{where}: {node.module} has no {missing}"
