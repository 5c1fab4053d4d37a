"""Client side: an async SunSpec client over Modbus TCP (pymodbus).

:class:`SunSpecClient` finds the ``SunS`` marker (probing protocol addresses 40000, 0,
50000 like pysunspec2), walks the model chain to the end marker, and reads or writes
points by name in engineering units (raw × 10^SF). It works with any SunSpec device,
not only SEF's emulator, because it trusts nothing but the chain it scans.

Example::

    async with SunSpecClient("127.0.0.1", 1502, unit=1) as c:
        await c.scan()
        bat = await c.read_model(802)           # {"SoC": 50.0, "V": 416.0, ...}
        await c.write_points(124, {"InWRte": 50.0, "OutWRte": -50.0, "StorCtl_Mod": 3})
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from .errors import (
    ModelMissingError,
    NotSunSpecError,
    PointError,
    SunSpecCommError,
    SunSpecError,
    SunSpecExceptionResponse,
    SunSpecValueError,
)
from .mdef import (
    BASE_ADDRESSES,
    END_MODEL_ID,
    SUNS_MARKER,
    ModelDef,
    PointValue,
    decode_point,
    decode_raw,
    encode_point,
    model_def,
)

__all__ = ["ModelInstance", "PointValue", "SunSpecClient"]

_MAX_READ = 125  # registers per FC3 request (Modbus limit)
_MAX_MODELS = 256


@dataclass(frozen=True)
class ModelInstance:
    """A model found in the device's chain.

    Attributes:
        model_id: SunSpec model ID.
        address: protocol address of its ``ID`` register.
        length: its ``L`` (registers after the header).
        definition: the model definition, or None if pysunspec2 has none for the ID.
    """

    model_id: int
    address: int
    length: int
    definition: ModelDef | None


class SunSpecClient:
    """Async SunSpec client for one Modbus TCP device (one unit id).

    Parameters:
        host: device host name or IP.
        port: Modbus TCP port.
        unit: Modbus unit (device) id.
        timeout_s: per-request timeout (s).
        retries: pymodbus retries per request.
        base_addresses: protocol addresses probed for ``SunS``.
    """

    def __init__(
        self,
        host: str,
        port: int = 502,
        unit: int = 1,
        timeout_s: float = 3.0,
        retries: int = 1,
        base_addresses: Iterable[int] = BASE_ADDRESSES,
    ) -> None:
        self.host, self.port, self.unit = host, port, unit
        self.timeout_s = timeout_s
        self.base_addresses = tuple(base_addresses)
        self.base_address: int | None = None
        self.models: list[ModelInstance] = []
        self._client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout_s, retries=retries, reconnect_delay=0.0
        )
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> SunSpecClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """True while the TCP connection is up."""
        return bool(self._client.connected)

    async def connect(self) -> None:
        """Open the TCP connection; :class:`SunSpecCommError` if it fails."""
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise SunSpecCommError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        if not ok:
            raise SunSpecCommError(f"cannot connect to {self.host}:{self.port}")

    def close(self) -> None:
        """Close the TCP connection (idempotent)."""
        self._client.close()

    # -- raw register access -------------------------------------------------------

    async def _call(self, what: str, address: int, request: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``request()`` (a pymodbus client call, made only here: pymodbus raises at
        the call itself, not at the await, when the link is down)."""
        if not self._client.connected:
            await self.connect()
        try:
            async with self._lock:
                rr = await request()
        except (TimeoutError, ModbusException, OSError) as exc:
            raise SunSpecCommError(f"{what} at {address} failed: {exc}") from exc
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            raise SunSpecExceptionResponse(
                f"{what} at {address}: Modbus exception {code}", code, address
            )
        return rr

    async def read_registers(self, address: int, count: int) -> list[int]:
        """Read ``count`` holding registers (FC3) from protocol ``address``."""
        out: list[int] = []
        while count > 0:
            n = min(count, _MAX_READ)
            rr = await self._call(
                "read",
                address,
                partial(self._client.read_holding_registers, address, count=n, device_id=self.unit),
            )
            regs = list(rr.registers)
            if len(regs) != n:
                raise SunSpecCommError(f"read at {address}: asked {n} registers, got {len(regs)}")
            out.extend(regs)
            address += n
            count -= n
        return out

    async def write_registers(self, address: int, values: list[int]) -> None:
        """Write registers: FC6 for one register, FC16 for more (like pysunspec2)."""
        if len(values) == 1:
            request = partial(self._client.write_register, address, values[0], device_id=self.unit)
        else:
            request = partial(self._client.write_registers, address, values, device_id=self.unit)
        await self._call("write", address, request)

    # -- chain ----------------------------------------------------------------------

    async def scan(self) -> list[ModelInstance]:
        """Find ``SunS`` and walk the model chain; returns (and keeps) the models.

        Raises :class:`NotSunSpecError` if no base address holds ``SunS``,
        :class:`SunSpecCommError` if the device cannot be reached.
        """
        errors: list[str] = []
        self.base_address = None
        for base in self.base_addresses:
            try:
                regs = await self.read_registers(base, 2)
            except SunSpecExceptionResponse as exc:
                errors.append(f"{base}: exception {exc.exception_code}")
                continue
            if tuple(regs) == SUNS_MARKER:
                self.base_address = base
                break
            errors.append(f"{base}: no SunS marker")
        if self.base_address is None:
            raise NotSunSpecError(
                f"{self.host}:{self.port} unit {self.unit} is not SunSpec ({'; '.join(errors)})"
            )
        models: list[ModelInstance] = []
        addr = self.base_address + 2
        for _ in range(_MAX_MODELS):
            mid = (await self.read_registers(addr, 1))[0]
            if mid == END_MODEL_ID:
                break
            length = (await self.read_registers(addr + 1, 1))[0]
            try:
                mdef: ModelDef | None = model_def(mid)
            except SunSpecError:
                mdef = None
            models.append(ModelInstance(mid, addr, length, mdef))
            addr += length + 2
            if addr > 0xFFFF:
                raise SunSpecCommError("model chain runs past the address space")
        else:
            raise SunSpecCommError(f"no end marker after {_MAX_MODELS} models")
        self.models = models
        return models

    def has_model(self, model_id: int) -> bool:
        """True if the last scan found ``model_id``."""
        return any(m.model_id == model_id for m in self.models)

    def model(self, model_id: int, index: int = 0) -> ModelInstance:
        """The ``index``-th instance of ``model_id``; :class:`ModelMissingError` if none."""
        found = [m for m in self.models if m.model_id == model_id]
        if index >= len(found):
            scanned = [m.model_id for m in self.models]
            raise ModelMissingError(
                f"model {model_id} (instance {index}) not found; device has {scanned}"
            )
        inst = found[index]
        if inst.definition is None:
            raise ModelMissingError(f"model {model_id} has no known definition")
        return inst

    # -- points ----------------------------------------------------------------------

    async def read_model(self, model_id: int, index: int = 0) -> dict[str, PointValue]:
        """Every point of a model, in engineering units (None = not implemented)."""
        inst = self.model(model_id, index)
        mdef = inst.definition
        assert mdef is not None
        regs = await self.read_registers(inst.address, min(inst.length, mdef.length) + 2)
        return _decode_all(mdef, regs)

    async def read_points(
        self, model_id: int, names: Iterable[str], index: int = 0
    ) -> dict[str, PointValue]:
        """Selected points (and their scale factors) in one request per contiguous span."""
        inst = self.model(model_id, index)
        mdef = inst.definition
        assert mdef is not None
        wanted = [mdef.point(n) for n in names]
        sf_names = {p.sf for p in wanted if isinstance(p.sf, str)}
        involved = wanted + [mdef.point(s) for s in sf_names]
        lo = min(p.offset for p in involved)
        hi = max(p.offset + p.size for p in involved)
        regs = await self.read_registers(inst.address + lo, hi - lo)
        full = [0] * lo + regs
        values = _decode_all(mdef, full + [0] * (mdef.length + 2 - len(full)))
        return {p.name: values[p.name] for p in wanted}

    async def read_point(self, model_id: int, name: str, index: int = 0) -> PointValue:
        """One point in engineering units."""
        return (await self.read_points(model_id, [name], index))[name]

    async def write_points(
        self,
        model_id: int,
        values: Mapping[str, PointValue],
        index: int = 0,
        *,
        scale_factors: Mapping[str, PointValue] | None = None,
    ) -> None:
        """Write points given in engineering units, scaled with the device's current SFs.

        Points given in register order that are adjacent are written by one request
        (function 16), so they take effect together. ``scale_factors``: SF points of this
        model read moments before (e.g. while the command was being checked, see
        :meth:`sef.agents.DeviceAdapter.prepare`); the SFs this write needs are read
        first unless all of them are given. Raises :class:`PointError` for unknown or
        read-only points, :class:`SunSpecValueError` if a value does not fit, and
        :class:`SunSpecExceptionResponse` if the device refuses the write.
        """
        inst = self.model(model_id, index)
        mdef = inst.definition
        assert mdef is not None
        points = [mdef.point(n) for n in values]
        for p in points:
            if not p.writable:
                raise PointError(f"model {model_id} point {p.name} is read-only")
        sf_names = sorted({p.sf for p in points if isinstance(p.sf, str)})
        if scale_factors is not None and all(n in scale_factors for n in sf_names):
            sfs: Mapping[str, PointValue] = scale_factors
        else:
            sfs = await self.read_points(model_id, sf_names, index) if sf_names else {}
        encoded: list[tuple[int, list[int]]] = []
        for p in points:
            sf = 0
            if isinstance(p.sf, int):
                sf = p.sf
            elif isinstance(p.sf, str):
                found = sfs[p.sf]
                if not isinstance(found, int):
                    raise SunSpecValueError(f"{p.name}: scale factor {p.sf} not implemented")
                sf = found
            encoded.append((p.offset, encode_point(p, values[p.name], sf)))
        # points that sit next to each other go in one request, so they change together
        for offset, regs in _contiguous_runs(encoded):
            await self.write_registers(inst.address + offset, regs)

    async def write_point(
        self, model_id: int, name: str, value: PointValue, index: int = 0
    ) -> None:
        """Write one point in engineering units."""
        await self.write_points(model_id, {name: value}, index)


def _contiguous_runs(encoded: list[tuple[int, list[int]]]) -> list[tuple[int, list[int]]]:
    """Merge (offset, registers) pieces that follow each other, in the caller's order."""
    runs: list[tuple[int, list[int]]] = []
    for offset, regs in encoded:
        if runs and runs[-1][0] + len(runs[-1][1]) == offset:
            runs[-1][1].extend(regs)
        else:
            runs.append((offset, list(regs)))
    return runs


def _decode_all(mdef: ModelDef, regs: list[int]) -> dict[str, PointValue]:
    """Decode every point of ``mdef`` from registers starting at its ID register.

    Points beyond ``regs`` (a device with a shorter legacy ``L``) decode as None.
    """
    sfs: dict[str, int | str | None] = {}
    for p in mdef.points.values():
        if p.type == "sunssf" and p.offset + p.size <= len(regs):
            sfs[p.name] = decode_raw(p, regs[p.offset : p.offset + p.size])
    out: dict[str, PointValue] = {}
    for p in mdef.points.values():
        chunk = regs[p.offset : p.offset + p.size]
        if len(chunk) < p.size:
            out[p.name] = None
            continue
        sf: int | None = 0
        if isinstance(p.sf, int):
            sf = p.sf
        elif isinstance(p.sf, str):
            found = sfs.get(p.sf)
            sf = found if isinstance(found, int) else None
        out[p.name] = decode_point(p, chunk, sf)
    return out
