"""``sef demo``: the whole system on one machine, each device and agent its own process."""

from sef.demo._fleet import BATTERY_GROUP, HEATER_GROUP, Fleet
from sef.demo._processes import DemoProcesses, ProcessFailed

__all__ = ["BATTERY_GROUP", "HEATER_GROUP", "DemoProcesses", "Fleet", "ProcessFailed"]
