"""The lab: local networks for tests and demos, network namespaces, and the benchmarks behind `secureinfer bench`.

  simulate.py   LocalNetwork: N real node processes on loopback with certificates made on the spot
  processes.py  how those node processes are launched, signalled, reaped and asked for their health
  netns.py      NetnsNetwork: each node in its own network namespace, links capped by tbf
  bench/        the benchmarks (ops, model, network, load, plaintext, sweep)
  stores.py     the performance stores measured for secureinfer, shipped as package data in data/

Nothing here is needed to use or run the network: the SDK and the daemon never import it.
"""
