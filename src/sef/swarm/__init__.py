"""``sef swarm``: many lightweight, protocol-conformant SEF agents for load tests and demos.

Each agent has its own MQTT connection, will, birth, telemetry and call handling
(``docs/protocol.md``; see :mod:`sef.swarm._agent`), spread over a few worker processes
(:mod:`sef.swarm._worker`) run by :class:`SwarmRunner`. Usage and figures: ``docs/swarm.md``.

**Why a hand-written MQTT client** (:mod:`sef.swarm._mqtt`). Measured on the development
VM (2 CPUs, Mosquitto 2.0.11 on loopback, 2 000 clients connecting one after another, each
with a will and four QoS 1 subscriptions; load average 0.3):

==================  ==================  ==========================
client              RSS per connection  CPU per connect+subscribe
==================  ==================  ==========================
gmqtt 0.8.0         19.9 KiB            0.94 ms (+ 1 task/client)
lean asyncio        1.7 KiB             0.49 ms
==================  ==================  ==========================

At 30 000 agents gmqtt would need ~600 MB and 30 000 tasks before any agent state; the
lean client, which does only what an agent needs (MQTT 3.1.1, QoS 0/1, one shared
keepalive ticker per process), ~50 MB.
"""

from sef.swarm._agent import SwarmAgent
from sef.swarm._runner import SwarmConfig, SwarmError, SwarmRunner, plan_processes
from sef.swarm._shared import SwarmShared
from sef.swarm._stats import SwarmStats, WorkerStats, percentile

__all__ = [
    "SwarmAgent",
    "SwarmConfig",
    "SwarmError",
    "SwarmRunner",
    "SwarmShared",
    "SwarmStats",
    "WorkerStats",
    "percentile",
    "plan_processes",
]
