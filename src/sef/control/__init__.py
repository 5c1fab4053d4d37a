"""Control applications: make a fleet of batteries and water heaters follow a target.

``scenario`` (TOML scenarios), ``controllers`` (MPC, baseline, optimum), ``allocation``
(integer kW rates, ``EnergyMethod`` events), ``simulator`` (vectorized fleet simulation)
and ``report`` (metrics, CSV, plots). See ``docs/control.md``.
"""
