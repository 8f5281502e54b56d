"""Local venue simulators: WebSocket servers on loopback that speak each venue's protocol.

- :mod:`feeds.sim.server`: the reusable base (:class:`SimServer`, faults, burst mode)
  and a tiny REST endpoint (:class:`SimHttpServer`); its docstring explains how to add
  a venue.
- :mod:`feeds.sim.market`: a seeded synthetic market (books, trades, account activity)
  held as exact integer ticks/lots, and a recorded-Binance source.
- :mod:`feeds.sim.cadenza`: Cadenza (Centrifugo client protocol, JSON v2).
- :mod:`feeds.sim.binance`: recorded Binance combined streams and the REST depth snapshot.
- one more module per venue, each built on :class:`SimServer`.

Command line: ``python -m feeds.sim <venue> --port N --seed S`` (``--help`` lists the
venues: every module with a ``from_cli`` function).
"""
from feeds.sim.server import HttpHandler, SimClient, SimHttpServer, SimServer

__all__ = ["HttpHandler", "SimClient", "SimHttpServer", "SimServer"]
