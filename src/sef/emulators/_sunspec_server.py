"""A SunSpec register image served over Modbus TCP by pymodbus, for device emulators.

:class:`SunSpecServer` owns the transport part every SunSpec emulator shares: a pymodbus
``ModbusTcpServer`` with one ``SimDevice`` whose action hook advances the device model
before each read (so reads are fresh) and validates writes point by point — a write must
cover whole writable points, every value must pass :meth:`SunSpecServer.valid`, then the
model is advanced to "now" under the old controls, the registers are stored and
:meth:`SunSpecServer.apply` sees the new engineering values. Any other unit id answers
"gateway target did not respond". Subclasses implement :meth:`advance`, :meth:`valid` and
:meth:`apply`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from sef.clock import Clock
from sef.protocols.sunspec import SunSpecError, SunSpecImage
from sef.protocols.sunspec.mdef import decode_point

__all__ = ["MIN_REAL_TICK_S", "SunSpecServer", "Written"]

#: Engineering values of one accepted write, by (model id, point name).
Written = dict[tuple[int, str], Any]

_WRITE_FCS = {5, 6, 15, 16, 22, 23}
#: Shortest real time between background model steps (s).
MIN_REAL_TICK_S = 0.02


class SunSpecServer(ABC):
    """Base of a SunSpec Modbus TCP emulator (see the module docstring).

    Attributes:
        host, port, unit: where it listens (``port`` 0 = a free port) and its unit id.
        clock: the time source.
        image: the register image served.
        tick_s: clock seconds between background :meth:`advance` calls.
        address: the bound (host, port) once started.
    """

    def __init__(
        self, image: SunSpecImage, host: str, port: int, unit: int, clock: Clock, tick_s: float
    ) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit must be 1..247, got {unit}")
        self.image, self.host, self.port, self.unit = image, host, port, unit
        self.clock, self.tick_s = clock, tick_s
        self.address: tuple[str, int] | None = None
        self._server: ModbusTcpServer | None = None

    @abstractmethod
    def advance(self) -> None:
        """Step the device model to the clock's present and refresh the image."""

    @abstractmethod
    def valid(self, model_id: int, name: str, value: Any) -> bool:
        """True if ``value`` (engineering units) may be written to the point."""

    @abstractmethod
    def apply(self, new: Written) -> None:
        """React to an accepted write (registers already stored)."""

    def on_bound(self, port: int) -> None:  # noqa: B027 - an optional hook
        """Called once the server listens on ``port`` (e.g. to fix a serial number)."""

    @staticmethod
    def finite(value: Any) -> bool:
        """True for a finite int/float (not None, not a string)."""
        return isinstance(value, int | float) and math.isfinite(value)

    # -- Modbus ---------------------------------------------------------------------

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Hook of pymodbus: refresh on reads, validate and apply writes."""
        try:
            if function_code in _WRITE_FCS and values is not None:
                return self._write(address, [int(v) for v in values])
            self.advance()
            i = address - start_address
            registers[i : i + count] = self.image.slice(address, count)
            return None
        except Exception:  # never let a request crash the server
            return ExcCodes.DEVICE_FAILURE

    def _write(self, address: int, values: list[int]) -> ExcCodes | None:
        img = self.image
        try:
            touched = img.points_in(address, len(values))
        except SunSpecError:
            return ExcCodes.ILLEGAL_ADDRESS
        for mdef, p in touched:
            start = img.model_address[mdef.model_id] + p.offset
            if not p.writable or start < address or start + p.size > address + len(values):
                return ExcCodes.ILLEGAL_ADDRESS
        new: Written = {}
        for mdef, p in touched:
            i = img.model_address[mdef.model_id] + p.offset - address
            new[(mdef.model_id, p.name)] = decode_point(
                p, values[i : i + p.size], img.sf_of(mdef.model_id, p)
            )
        if not all(self.valid(mid, name, v) for (mid, name), v in new.items()):
            return ExcCodes.ILLEGAL_VALUE
        self.advance()  # the old controls were in force until now
        img.store(address, values)
        self.apply(new)
        return None

    async def start(self) -> tuple[str, int]:
        """Start serving in the background; returns the bound (host, port)."""
        device = SimDevice(
            id=self.unit,
            simdata=SimData(
                self.image.base, values=list(self.image.registers), datatype=DataType.REGISTERS
            ),
            action=self._action,
        )
        other_units = SimDevice(  # any other unit id: "gateway target did not respond"
            id=0,
            simdata=SimData(0, count=0x10000, values=0, datatype=DataType.REGISTERS),
            action=_no_such_unit,
        )
        self._server = ModbusTcpServer([device, other_units], address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        sockets = getattr(self._server.transport, "sockets", None) or []
        port = int(sockets[0].getsockname()[1]) if sockets else self.port
        self.address = (self.host, port)
        self.on_bound(port)
        return self.address

    async def run(self) -> None:
        """Advance every tick until cancelled (the server must be started)."""
        while True:
            await self.clock.sleep(max(self.tick_s, self.clock.to_clock(MIN_REAL_TICK_S)))
            self.advance()

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None


async def _no_such_unit(*_args: object) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE
