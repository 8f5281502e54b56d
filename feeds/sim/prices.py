"""Prices (Tradevest style) simulator over loopback.

Sends exactly the messages documented in ``feeds.prices`` (served at
``ws://127.0.0.1:<port>/ws/prices``), built from a
:class:`~feeds.sim.market.SyntheticMarket` over EUR pairs (and one USD pair, which a
subscription without markets does not get: "all EUR pairs").

- The client sends one ``{"type":"PRICE_SUBSCRIPTION","markets":[...]}`` (markets
  optional: every ``*-EUR`` market). The server answers with one ``PRICES`` holding
  every subscribed market's whole book, then after every market step a ``PRICES`` with
  the subscribed markets whose book changed (whole books), and every ``keepalive_s``
  a ``PRICES`` whose entries have empty asks and bids.
- Problems are reported with ``{"type":"ERROR","connectionId":…,"message":…}`` and the
  connection is then closed with ``error_close_code`` (1008): a second subscription
  on one connection ("to change markets open a new connection"), an unknown market,
  a message that is not JSON or has an unknown type.
- With ``token`` set, the upgrade request must carry ``Authorization: Bearer <token>``;
  otherwise (and always under the ``reject_auth`` fault) the handshake is refused
  with HTTP 401.

Numbers: prices and quantities with the instrument's tick/lot decimals
(``Instrument.ticks_to_price`` / ``lots_to_qty``); levels best first.

Faults beyond the base ones (drop, close, malformed, oversize, stall, reject_auth):
:meth:`PricesSim.send_error` (ERROR then close), :meth:`PricesSim.skip_update` (market
steps applied but not published: the protocol has no sequence numbers, so this is
its "skipped sequence": the next PRICES of each market heals it). Burst mode
(``burst=N``): see :class:`PricesSim`.
"""
from __future__ import annotations

import argparse
import copy
import json
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from picows import WSUpgradeRequest, WSUpgradeResponse

from engine._core.instrument import Instrument
from feeds.sim.market import BookDelta, Level, SyntheticMarket
from feeds.sim.server import SimClient, SimServer, encode_burst, refuse_handshake

__all__ = ["PricesSim", "encode_prices", "encode_keepalive", "prices_instruments"]


def prices_instruments() -> list[Instrument]:
    """The simulated markets: BTC-EUR (tick 0.01, lot 0.00001), ETH-EUR (0.01, 0.0001),
    SOL-EUR (0.001, 0.001) and BTC-USD (0.01, 0.00001; not an EUR pair)."""
    return [Instrument("BTC-EUR", "0.01", "0.00001"), Instrument("ETH-EUR", "0.01", "0.0001"),
            Instrument("SOL-EUR", "0.001", "0.001"), Instrument("BTC-USD", "0.01", "0.00001")]


_MIDS = {"BTC-EUR": "56890.12", "ETH-EUR": "2420.55", "SOL-EUR": "131.250", "BTC-USD": "61837.63"}


def _side(inst: Instrument, levels: Sequence[Level]) -> str:
    return ",".join(f'{{"price":"{inst.ticks_to_price(p)}","quantity":"{inst.lots_to_qty(q)}"}}'
                    for p, q in levels)


def encode_prices(instruments: dict[str, Instrument],
                  books: dict[str, tuple[Sequence[Level], Sequence[Level]]]) -> str:
    """A ``PRICES`` message with the whole book of each market in ``books``
    ({market: (bids, asks)} best first)."""
    parts = []
    for market, (bids, asks) in books.items():
        inst = instruments[market]
        parts.append(f'"{market}":{{"asks":[{_side(inst, asks)}],"bids":[{_side(inst, bids)}]}}')
    return '{"type":"PRICES","prices":{' + ",".join(parts) + "}}"


def encode_keepalive(markets: Sequence[str]) -> str:
    """The once-a-second "no change" ``PRICES``: empty asks and bids per market."""
    return '{"type":"PRICES","prices":{' + ",".join(
        f'"{m}":{{"asks":[],"bids":[]}}' for m in markets) + "}}"


@dataclass
class _Conn:
    connection_id: str
    markets: list[str] | None = None  # None until the subscription


class PricesSim(SimServer):
    """Prices venue simulator; see the module docstring.

    Parameters: ``market`` (a SyntheticMarket; default one over
    :func:`prices_instruments` with ``seed``), ``token`` (None: no authentication;
    never logged), ``interval_s`` (seconds between market steps; None: only
    :meth:`advance` moves the market), ``keepalive_s`` (None: no keep-alives),
    ``error_close_code``, ``burst``/``burst_market`` (burst mode), plus the
    :class:`SimServer` parameters. ``paused`` (base class) stops the market ticks.

    Burst mode (``burst=N``): the market does not tick. At start, N whole-book PRICES
    frames of ``burst_market`` are encoded from a copy of the market; every client whose
    subscription includes that market gets its first PRICES and then those exact frames
    as fast as the socket takes them. The book it must end with is :attr:`burst_book`.
    """

    name: ClassVar[str] = "prices"
    path: ClassVar[str] = "/ws/prices"
    malformed_payload: ClassVar[bytes] = b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[{"price":"1'

    def __init__(self, market: SyntheticMarket | None = None, *, seed: int = 1, token: str | None = None,
                 interval_s: float | None = 0.05, keepalive_s: float | None = 1.0,
                 error_close_code: int = 1008, burst: int = 0, burst_market: str | None = None,
                 **server_kw: Any) -> None:
        super().__init__(**server_kw)
        self.market = market if market is not None else SyntheticMarket(
            prices_instruments(), seed=seed, mids=_MIDS, depth=10, account_rate=0.0)
        self._token = token
        self.interval_s = None if burst else interval_s
        self.keepalive_s = keepalive_s
        self.error_close_code = error_close_code
        self.instruments: dict[str, Instrument] = dict(self.market.instruments)
        self.eur_markets = [m for m in self.instruments if m.endswith("-EUR")]
        self.subscriptions: list[list[str] | None] = []   # every subscription received, in order
        self.errors_sent: list[tuple[str, str]] = []      # (connectionId, message)
        self._skip = 0
        self.burst_count = burst
        self.burst_market = burst_market or self.eur_markets[0]
        self._burst = encode_burst([])
        #: Burst mode: the N PRICES messages, as sent after the first one (after ``start``).
        self.burst_payloads: list[bytes] = []
        self.burst_book: tuple[list[Level], list[Level]] = ([], [])

    def __repr__(self) -> str:  # the token never appears
        return f"PricesSim(port={self.port}, markets={len(self.instruments)}, clients={len(self.clients)})"

    # -- state -----------------------------------------------------------------------
    def book(self, market: str) -> tuple[list[Level], list[Level]]:
        """The market's current book (bids, asks) best first, as a client must see it."""
        return self.market.book(market)

    def subscribed_clients(self) -> list[SimClient]:
        """Open clients that sent their subscription."""
        return [c for c in self.clients if not c.closed and c.state.markets is not None]

    # -- publishing ------------------------------------------------------------------
    def advance(self, steps: int = 1) -> int:
        """Step the market ``steps`` times, publishing each step's changed books.
        Returns how many PRICES frames were sent."""
        sent = 0
        for _ in range(steps):
            changed = list(dict.fromkeys(e.symbol for e in self.market.step() if isinstance(e, BookDelta)))
            if self._skip:
                self._skip -= 1
                continue
            sent += self.publish(changed)
        return sent

    def publish(self, markets: Sequence[str]) -> int:
        """Send the current whole books of ``markets`` to every subscriber of them."""
        sent = 0
        for c in self.subscribed_clients():
            mine = [m for m in markets if m in c.state.markets]
            if mine:
                c.send(encode_prices(self.instruments, {m: self.market.book(m) for m in mine}))
                sent += 1
        return sent

    def skip_update(self, count: int = 1) -> None:
        """Fault: the next ``count`` market steps change the books but are not sent."""
        self.stats["faults"] += 1
        self._skip += count

    def send_error(self, message: str, client: SimClient | None = None) -> int:
        """Fault: ERROR (with the connection's id) then close, on one or every subscribed
        client. Returns how many."""
        targets = self.fault_targets(client)
        for c in targets:
            self._error(c, message)
        return len(targets)

    def _error(self, client: SimClient, message: str) -> None:
        conn: _Conn = client.state
        self.errors_sent.append((conn.connection_id, message))
        client.send(json.dumps({"type": "ERROR", "connectionId": conn.connection_id, "message": message},
                               separators=(",", ":")))
        client.close(self.error_close_code, message[:100])

    # -- lifecycle and hooks -------------------------------------------------------------
    async def on_start(self) -> None:
        if self.burst_count:
            self.prepare_burst()
        if self.interval_s is not None:
            self.every(self.interval_s, self.advance, "market")  # skipped while ``paused``
        if self.keepalive_s is not None:
            self.every(self.keepalive_s, self.send_keepalives, "keepalive", pausable=False)

    def send_keepalives(self) -> None:
        """The "no change" PRICES (empty asks and bids) to every subscribed client."""
        for c in self.subscribed_clients():
            c.send(encode_keepalive(c.state.markets))

    def accept(self, request: WSUpgradeRequest) -> bool | WSUpgradeResponse:
        """The path, then the bearer token (HTTP 401 when wrong or under reject_auth)."""
        if not super().accept(request):
            return False
        if self._token is not None or self.reject_auth:
            auth = request.headers.get("Authorization")
            if self.reject_auth or auth != f"Bearer {self._token}":
                return refuse_handshake(401, b"unauthorized")
        return True

    def on_connect(self, client: SimClient) -> None:
        client.state = _Conn(str(uuid.UUID(int=(client.client_id << 64) | 0x5EED, version=4)))

    def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
        conn: _Conn = client.state
        try:
            msg = json.loads(payload)
        except ValueError:
            self._error(client, "malformed message")
            return
        if not isinstance(msg, dict) or msg.get("type") != "PRICE_SUBSCRIPTION":
            self._error(client, f"unknown message type {msg.get('type') if isinstance(msg, dict) else None!r}")
            return
        if conn.markets is not None:
            self._error(client, "already subscribed: open a new connection to change markets")
            return
        markets = msg.get("markets")
        if markets is None:
            markets = list(self.eur_markets)
        elif not isinstance(markets, list) or not all(isinstance(m, str) for m in markets):
            self._error(client, "markets must be a list of market names")
            return
        for m in markets:
            if m not in self.instruments:
                self._error(client, f"unknown market {m}")
                return
        conn.markets = list(dict.fromkeys(markets))
        self.subscriptions.append(None if "markets" not in msg else list(conn.markets))
        client.send(encode_prices(self.instruments, {m: self.market.book(m) for m in conn.markets}))
        if self.burst_count and self.burst_market in conn.markets:
            self.spawn(client.burst(self._burst), f"burst-{client.client_id}")

    def prepare_burst(self) -> None:
        """Encode the burst (``start`` does it in burst mode): fills
        :attr:`burst_payloads` and :attr:`burst_book` (the book after them) from a copy
        of the market. O(burst x depth); idempotent."""
        if self.burst_payloads:
            return
        m = self.burst_market
        market = copy.deepcopy(self.market)  # the live market stays at its start state
        frames: list[bytes] = []
        while len(frames) < self.burst_count:
            market.step_book(m)
            frames.append(encode_prices(self.instruments, {m: market.book(m)}).encode())
        self._burst = encode_burst(frames)
        self.burst_payloads = frames
        self.burst_book = market.book(m)


def from_cli(args: argparse.Namespace) -> PricesSim:
    """``python -m feeds.sim prices``: uses ``--seed --interval --burst --burst-symbol
    --host --port``; ``--token`` only with ``--set auth=1`` (default: no
    authentication); ``--set keepalive_s=S`` (default 1)."""
    opts: dict[str, str] = args.options
    return PricesSim(seed=args.seed, token=args.token if opts.get("auth") == "1" else None,
                     interval_s=0.05 if args.interval is None else args.interval,
                     keepalive_s=float(opts.get("keepalive_s", "1.0")), burst=args.burst,
                     burst_market=args.burst_symbol, host=args.host, port=args.port)
