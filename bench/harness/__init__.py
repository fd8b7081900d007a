"""The benchmark harness: real processes on loopback, synthetic nodes, figures, records.

- :mod:`.cluster`: a temp directory with a server, a stand-in LLM and nodes,
  all started as an operator would (the installed console scripts);
- :mod:`.api`: the user side of the HTTP API with pre-encoded bodies, so the
  harness spends as little CPU as possible on its own side;
- :mod:`.synthetic`: nodes that speak the node protocol with httpx, no LLM;
- :mod:`.cpu`: how busy each process was while a figure was measured
  (what bounds it);
- :mod:`.figures`: one measured figure against its target;
- :mod:`.record`: the machine, the table, a run's detail under ``bench/out/``,
  and its place in RESULTS.md when it is recorded.
"""
