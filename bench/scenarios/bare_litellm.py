"""A bare LiteLLM loop: the node's work with no queue around it (run as its own process).

``python bench/scenarios/bare_litellm.py --api-base URL --concurrency 16 --calls 2000``
prints ``{"calls": N, "seconds": S}``: ``calls`` chat completions through
``litellm.acompletion`` with at most ``concurrency`` in flight: the same
call the node makes (``openai/`` model, ``api_base``, key, no retries, inside
the node's ``unlogged()``, with the provider named as the node names it:
``provider_hint``), on LiteLLM configured by the node's own ``load_litellm``
and, like the node, with the stand-in's model registered as free
(``price_unknown_model_as_free``).
With ``--serve`` it stays up after its warm-up and runs one timed batch per
number written to its stdin, so that a benchmark can alternate it with a
node seconds apart instead of waiting for LiteLLM's import every time. All
batches run on one event loop, as a node's calls do: LiteLLM keeps its HTTP
client and connections from one batch to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from openbeepboop_node.litellm_bookkeeping import unlogged
from openbeepboop_node.provider_hints import provider_hint

#: What the bench's nodes call LiteLLM with (``litellm_model``).
MODEL = "openai/standin-model"


async def _loop(litellm: Any, api_base: str, concurrency: int, calls: int, tag: str) -> float:
    semaphore = asyncio.Semaphore(concurrency)
    key = "sk-standin-provider-key"
    provider = provider_hint(litellm, MODEL, api_base, key)

    async def one(index: int) -> None:
        async with semaphore:
            with unlogged():  # as the node calls it: LiteLLM logs nothing
                response = await litellm.acompletion(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"{tag} prompt number {index}"}],
                    max_tokens=16,
                    api_base=api_base,
                    api_key=key,
                    custom_llm_provider=provider,
                    timeout=600.0,
                    stream=False,
                    num_retries=0,
                    max_retries=0,
                )
            response.model_dump()  # the node turns every answer into a dict too

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return time.perf_counter() - started


async def _serve(litellm: Any, api_base: str, concurrency: int) -> None:
    """Warm up, say ``ready``, then one timed batch per number read on stdin, until its end."""
    loop = asyncio.get_running_loop()
    await _loop(litellm, api_base, concurrency, 4 * concurrency, "warm")
    print("ready", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        calls = int(line)
        seconds = await _loop(litellm, api_base, concurrency, calls, "bare")
        print(json.dumps({"calls": calls, "seconds": seconds}), flush=True)


def main() -> None:
    """Warm up, then time ``--calls`` calls."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after the warm-up, print 'ready', then run one timed batch per number read on stdin",
    )
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # LiteLLM set up exactly as the node sets it up (offline, no telemetry, no
    # callbacks), so that the ratio measures the node's own work and nothing else.
    from openbeepboop_node.inference import load_litellm, price_unknown_model_as_free

    litellm = load_litellm()
    price_unknown_model_as_free(MODEL)
    if args.serve:
        asyncio.run(_serve(litellm, args.api_base, args.concurrency))
        return
    asyncio.run(_loop(litellm, args.api_base, args.concurrency, 4 * args.concurrency, "warm"))
    seconds = asyncio.run(_loop(litellm, args.api_base, args.concurrency, args.calls, "bare"))
    print(json.dumps({"calls": args.calls, "seconds": seconds}))


if __name__ == "__main__":
    main()
