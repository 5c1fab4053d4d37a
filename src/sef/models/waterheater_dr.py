"""Demand-response state machine of the water-heater model (vectorized).

CTA-2045 defines the messages but not the thermal behaviour (reference notes,
models-and-sunspec.md §2.2), so the behaviour here is a documented choice:

=================  ===========================================================
mode               effect on the thermostat (defaults in :class:`DRSettings`)
=================  ===========================================================
NORMAL             setpoint ``T_set``, deadband ``DB``
SHED               setpoint ``T_set - 5.56 K`` (10 °F; OCHRE's CTA-2045 example
                   and the PSU studies), deadband unchanged
CRITICAL_PEAK      setpoint ``T_set - 11.11 K`` (20 °F, "deeper than Shed"),
                   never below ``comfort_floor_c`` (40.56 °C = 105 °F, OCHRE's
                   mixed-delivery temperature)
GRID_EMERGENCY     lockout: both elements off, except the upper element runs
                   while the upper sensor is below ``safety_floor_c`` (10 °C,
                   freeze protection) and until it is ``DB`` above it
LOAD_UP            setpoint ``T_set + load_up_offset_k`` (0 K: Basic Load Up
                   does not raise the setpoint, EnergyPlus issue #11397),
                   deadband narrowed to 1.11 K (2 °F, PSU), so heating starts now
=================  ===========================================================

Heat-pump water heaters (:mod:`sef.models._heat_pump`) get the same effective
setpoint and deadband, and in addition: SHED and CRITICAL_PEAK run the compressor
only (backup element off, ``heat_pump_elements_in_shed``); LOAD_UP runs the compressor
to the top of the narrowed band (the element keeps its normal far-below-setpoint
rule); GRID_EMERGENCY turns the compressor off and uses the resistance lockout above.

Every event has an end time (s, model clock; ``inf`` = until End Shed). When it
passes, the device returns to NORMAL. A customer override set on a device makes
it ignore the curtailment modes (SHED, CRITICAL_PEAK, GRID_EMERGENCY); the mode
is kept (so the override can be withdrawn) and the operational state reports
"Opted Out" (11/12, CTA-2045-B). LOAD_UP is not curtailment and is not affected.

Outside Comm heartbeat: the first :meth:`DemandResponse.heartbeat` arms a
per-device watchdog; if no heartbeat arrives within ``heartbeat_timeout_s``
(default 300 s: the EPRI CTA-2045 simulator's SGD default
``realSGDNoCommTimeoutValBox=300``, reference cta2045.md §5.2 and §10), the
running event is cancelled and the device runs NORMAL. A heartbeat with status
0 ("no/lost connection") cancels the event at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
#: A device selector: ``None`` (all devices), an index array/sequence/int, or a boolean mask.
Index = int | slice | NDArray[np.integer] | NDArray[np.bool_] | list[int] | None

__all__ = [
    "CURTAILMENT_MODES",
    "DRMode",
    "DRSettings",
    "DemandResponse",
    "Index",
    "OperationalState",
]


class DRMode(enum.IntEnum):
    """Demand-response mode of one water heater (the command being executed)."""

    NORMAL = 0
    SHED = 1
    LOAD_UP = 2
    CRITICAL_PEAK = 3
    GRID_EMERGENCY = 4


#: Modes that curtail consumption (a customer override opts out of them).
CURTAILMENT_MODES = (DRMode.SHED, DRMode.CRITICAL_PEAK, DRMode.GRID_EMERGENCY)


class OperationalState(enum.IntEnum):
    """CTA-2045 operational state codes (Basic DR opcode 0x13, opcode2).

    Names and numbering from the reference notes cta2045.md §6.4 (EPRI VB
    simulator names; Intwine / ``cta2045`` identifiers in brackets).
    """

    IDLE_NORMAL = 0  #: Idle Normal
    RUNNING_NORMAL = 1  #: Running Normal
    RUNNING_CURTAILED_GRID = 2  #: Running Curtailed Grid (RUNNING_CURTAILED)
    RUNNING_HEIGHTENED_GRID = 3  #: Running Heightened Grid (RUNNING_HEIGHTENED)
    IDLE_GRID = 4  #: Idle Grid (Idle Curtailed, IDLE_CURTAILED)
    SGD_ERROR_CONDITION = 5  #: SGD Error Condition
    IDLE_HEIGHTENED = 6  #: Idle Heightened
    CYCLING_ON = 7  #: Cycling On
    CYCLING_OFF = 8  #: Cycling Off
    VARIABLE_FOLLOWING = 9  #: Variable Following
    VARIABLE_NOT_FOLLOWING = 10  #: Variable Not Following
    IDLE_OPTED_OUT = 11  #: Idle Opted Out
    RUNNING_OPTED_OUT = 12  #: Running Opted Out


@dataclass(frozen=True)
class DRSettings:
    """Demand-response behaviour parameters (same for every device of a model).

    Attributes
    ----------
    shed_setback_k : float, default 5.56
        Setpoint reduction during SHED, K (10 °F; OCHRE CTA-2045 example).
    critical_peak_setback_k : float, default 11.11
        Setpoint reduction during CRITICAL_PEAK, K (20 °F).
    comfort_floor_c : float, default 40.56
        Lowest effective setpoint in SHED and CRITICAL_PEAK, °C (105 °F).
    safety_floor_c : float, default 10.0
        GRID_EMERGENCY lockout is broken (upper element only) below this upper
        sensor temperature, °C (freeze protection).
    load_up_deadband_k : float, default 1.11
        Deadband during LOAD_UP, K (2 °F; PSU conformance setting).
    load_up_offset_k : float, default 0.0
        Setpoint increase during LOAD_UP, K (the result is capped at
        ``max_setpoint_c`` of the tank parameters).
    heartbeat_timeout_s : float, default 300
        Outside Comm watchdog timeout, s; ``inf`` disables it.
    heat_pump_elements_in_shed : bool, default False
        Heat pumps may use their backup element during SHED and CRITICAL_PEAK; default
        no: compressor only ("HPWHs typically run compressor only", reference notes
        cta2045.md §9, models-and-sunspec.md §2.2).
    """

    shed_setback_k: float = 5.56
    critical_peak_setback_k: float = 11.11
    comfort_floor_c: float = 40.56
    safety_floor_c: float = 10.0
    load_up_deadband_k: float = 1.11
    load_up_offset_k: float = 0.0
    heartbeat_timeout_s: float = 300.0
    heat_pump_elements_in_shed: bool = False


class DemandResponse:
    """Per-device DR mode, event end time, override flag and comm watchdog.

    Parameters
    ----------
    n : int
        Number of devices.
    settings : DRSettings

    Attributes
    ----------
    mode : numpy.ndarray
        :class:`DRMode` values, int64, shape ``(n,)``.
    event_end_s : numpy.ndarray
        End of the running event on the model clock, s (``inf`` = open-ended).
    override : numpy.ndarray
        Customer override in effect, bool.
    last_heartbeat_s : numpy.ndarray
        Model time of the last Outside Comm heartbeat, s (``nan`` = watchdog not armed).
    """

    def __init__(self, n: int, settings: DRSettings) -> None:
        self.n = n
        self.settings = settings
        self.mode: IntArray = np.zeros(n, dtype=np.int64)
        self.event_end_s: FloatArray = np.full(n, np.inf)
        self.override: BoolArray = np.zeros(n, dtype=bool)
        self.last_heartbeat_s: FloatArray = np.full(n, np.nan)
        #: Extra LOAD_UP setpoint raise of an Advanced Load Up (CTA-2045-B), K; reset by
        #: every new event, End Shed and expiry.
        self.advanced_offset_k: FloatArray = np.zeros(n)

    def select(self, idx: Index) -> NDArray[np.intp]:
        """Indices of the heaters that ``idx`` selects."""
        if idx is None:
            return np.arange(self.n)
        return np.arange(self.n)[idx].reshape(-1)

    def start(self, idx: Index, mode: DRMode, now_s: float, duration_s: float | None) -> None:
        """Start an event (replaces any running one).

        Parameters
        ----------
        idx : Index
            Devices.
        mode : DRMode
        now_s : float
            Model time, s.
        duration_s : float or None
            Event length, s; ``None`` or ``0`` = until further notice (CTA-2045
            duration byte 0).
        """
        sel = self.select(idx)
        self.mode[sel] = int(mode)
        end = np.inf if not duration_s else now_s + float(duration_s)
        self.event_end_s[sel] = end
        self.advanced_offset_k[sel] = 0.0

    def end(self, idx: Index) -> None:
        """End any event (End Shed / Run Normal)."""
        sel = self.select(idx)
        self.mode[sel] = int(DRMode.NORMAL)
        self.event_end_s[sel] = np.inf
        self.advanced_offset_k[sel] = 0.0

    def set_override(self, idx: Index, on: bool) -> None:
        """Set or clear the customer override."""
        self.override[self.select(idx)] = on

    def heartbeat(self, idx: Index, now_s: float, status: int = 1) -> None:
        """Record an Outside Comm Connection Status message.

        Parameters
        ----------
        idx : Index
        now_s : float
            Model time, s.
        status : int, default 1
            0 = no/lost connection (cancels the event now), 1 = good, 2 = poor
            (1 and 2 both feed the watchdog).
        """
        sel = self.select(idx)
        if status == 0:
            self.end(sel)
            self.last_heartbeat_s[sel] = np.nan
        else:
            self.last_heartbeat_s[sel] = now_s

    def expire(self, now_s: float) -> None:
        """Return devices to NORMAL whose event ended or whose watchdog fired."""
        done = self.event_end_s <= now_s
        lost = (now_s - self.last_heartbeat_s) > self.settings.heartbeat_timeout_s
        stop = done | lost  # nan compares False: unarmed watchdogs never fire
        if stop.any():
            self.mode[stop] = int(DRMode.NORMAL)
            self.event_end_s[stop] = np.inf
            self.advanced_offset_k[stop] = 0.0
            self.last_heartbeat_s[lost] = np.nan

    def effective_mode(self) -> IntArray:
        """Mode after the customer override (curtailment → NORMAL when overridden)."""
        mode = self.mode.copy()
        opted = np.flatnonzero(self.override)  # few or none: only these can differ
        if opted.size:
            sub = mode[opted]
            mode[opted] = np.where(np.isin(sub, CURTAILMENT_MODES), int(DRMode.NORMAL), sub)
        return mode

    def thermostat(
        self,
        setpoint_c: FloatArray,
        deadband_k: FloatArray,
        max_setpoint_c: FloatArray,
    ) -> tuple[FloatArray, FloatArray, BoolArray]:
        """Effective thermostat settings for the current modes.

        Parameters
        ----------
        setpoint_c : numpy.ndarray
            Normal setpoint (top of the band), °C.
        deadband_k : numpy.ndarray
            Normal deadband, K.
        max_setpoint_c : numpy.ndarray
            Highest allowed setpoint, °C.

        Returns
        -------
        setpoint_c : numpy.ndarray
            Effective setpoint, °C.
        deadband_k : numpy.ndarray
            Effective deadband, K.
        lockout : numpy.ndarray
            Bool, elements locked out (GRID_EMERGENCY not overridden).
        """
        s = self.settings
        mode = self.effective_mode()
        sp = np.array(np.broadcast_to(setpoint_c, mode.shape), dtype=np.float64)
        db = np.array(np.broadcast_to(deadband_k, mode.shape), dtype=np.float64)
        # element-wise on the devices in each mode only (most are NORMAL): the same
        # values as evaluating every formula over the fleet and selecting
        changed = np.flatnonzero(mode != DRMode.NORMAL)
        if changed.size:
            sub = mode[changed]
            for m, setback in (
                (DRMode.SHED, s.shed_setback_k),
                (DRMode.CRITICAL_PEAK, s.critical_peak_setback_k),
            ):
                i = changed[sub == m]
                if i.size:
                    floor = np.minimum(s.comfort_floor_c, sp[i])
                    sp[i] = np.maximum(sp[i] - setback, floor)
            i = changed[sub == DRMode.LOAD_UP]
            if i.size:
                raised = sp[i] + s.load_up_offset_k + self.advanced_offset_k[i]
                sp[i] = np.minimum(raised, np.broadcast_to(max_setpoint_c, mode.shape)[i])
                db[i] = np.minimum(s.load_up_deadband_k, db[i])
        lockout = mode == DRMode.GRID_EMERGENCY
        return sp, db, lockout

    def heat_pump_elements_allowed(self) -> BoolArray:
        """Bool per device: a heat pump may use its backup element now (not while a
        SHED or CRITICAL_PEAK is in force, unless ``heat_pump_elements_in_shed``)."""
        if self.settings.heat_pump_elements_in_shed:
            return np.ones(self.n, dtype=bool)
        mode = self.effective_mode()
        return np.asarray((mode != DRMode.SHED) & (mode != DRMode.CRITICAL_PEAK))

    def operational_state(self, running: BoolArray, error: BoolArray) -> IntArray:
        """CTA-2045 operational state per device.

        Parameters
        ----------
        running : numpy.ndarray
            Bool, an element (or a heat-pump compressor) was on during the last step.
        error : numpy.ndarray
            Bool, the device is in an error condition (non-finite state).

        Returns
        -------
        numpy.ndarray
            :class:`OperationalState` codes, int64.
        """
        mode = self.mode
        curtailed = np.isin(mode, CURTAILMENT_MODES)
        opted_out = curtailed & self.override
        st = np.where(running, OperationalState.RUNNING_NORMAL, OperationalState.IDLE_NORMAL)
        st = np.where(
            curtailed,
            np.where(running, OperationalState.RUNNING_CURTAILED_GRID, OperationalState.IDLE_GRID),
            st,
        )
        st = np.where(
            mode == DRMode.LOAD_UP,
            np.where(
                running, OperationalState.RUNNING_HEIGHTENED_GRID, OperationalState.IDLE_HEIGHTENED
            ),
            st,
        )
        st = np.where(
            opted_out,
            np.where(running, OperationalState.RUNNING_OPTED_OUT, OperationalState.IDLE_OPTED_OUT),
            st,
        )
        st = np.where(error, OperationalState.SGD_ERROR_CONDITION, st)
        return st.astype(np.int64)
