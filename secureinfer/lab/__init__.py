"""The lab: local networks for tests and demos, network namespaces, and the benchmarks behind `secureinfer bench`.

  simulate.py   LocalNetwork: N real node processes on loopback with certificates made on the spot
  netns.py      NetnsNetwork: each node in its own network namespace, links capped by tbf
  bench/        the benchmarks (ops, model, network, load, plaintext, sweep)

Nothing here is needed to use or run the network: the SDK and the daemon never import it.
"""
