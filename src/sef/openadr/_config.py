"""The EMS's demand-response configuration file (``sef ems --openadr FILE.toml``).

::

    [bridge]
    mapping = "my-mapping.toml"   # optional: the operator's mapping table
    rng_seed = 7                  # optional: seed of the random start offsets

    [policy]                      # optional: automatic opt-out (docs/openadr.md)
    blocked_programs = ["TEST-PROGRAM"]
    must_deliver = true

    [oadr2b]                      # optional: an OpenADR 2.0b VTN
    vtn_url = "https://vtn.utility.example/OpenADR2/Simple/2.0b"
    ven_name = "aggregator-7"
    cert = "ven.crt"              # TLS client certificate, also signs the XML
    key = "ven.key"
    ca_file = "utility-ca.crt"
    vtn_fingerprint = "AA:BB:…"

    [oadr3]                       # optional: an OpenADR 3 VTN
    vtn_url = "https://vtn.utility.example/openadr3/3.1.0"
    ven_name = "aggregator-7"
    client_id = "aggregator-7"
    client_secret_file = "oa3.secret"   # the secret itself never sits in this file

Relative paths are read from the file's directory. Secure by default: a plain ``http://``
VTN, a 2.0b VEN without a client certificate, unsigned 2.0b messages or an unchecked TLS
certificate are refused unless the section says ``insecure = true`` (for a lab).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sef.openadr._mapping_tables import MappingTable, load_mapping
from sef.openadr._oadr2b import Oadr2bConfig
from sef.openadr._oadr3_config import Oadr3Config
from sef.openadr._policy import OptPolicy

__all__ = ["DrConfig", "load_dr_config"]

_SECTIONS = ("bridge", "policy", "oadr2b", "oadr3")
_PATH_KEYS_2B = ("cert", "key", "ca_file")


@dataclass(frozen=True)
class DrConfig:
    """What ``--openadr FILE`` configures.

    Attributes:
        mapping: the mapping table (the packaged one unless the file names another).
        policy: the automatic opt-out policy.
        rng_seed: seed of the random start offsets (``None``: from the OS).
        oadr2b: the OpenADR 2.0b VTN, if any.
        oadr3: the OpenADR 3 VTN, if any.
    """

    mapping: MappingTable
    policy: OptPolicy
    rng_seed: int | None = None
    oadr2b: Oadr2bConfig | None = None
    oadr3: Oadr3Config | None = None


def load_dr_config(path: Path) -> DrConfig:
    """Read and check the file.

    Raises:
        ValueError: unreadable TOML, an unknown section or key, a missing required key, or
            an insecure setting without ``insecure = true``; the message names the key.
        OSError: the file (or one it names) cannot be read.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not TOML: {exc}") from None
    for section in data:
        if section not in _SECTIONS:
            raise ValueError(f"{path}: unknown section [{section}] (known: {', '.join(_SECTIONS)})")
    for section in _SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise ValueError(f"{path}: {section} must be a table [{section}]")
    base = path.parent
    bridge = dict(data.get("bridge", {}))
    unknown = set(bridge) - {"mapping", "rng_seed"}
    if unknown:
        raise ValueError(f"{path}: [bridge] unknown key {sorted(unknown)[0]!r}")
    mapping_path = bridge.get("mapping")
    if mapping_path is not None and not isinstance(mapping_path, str):
        raise ValueError(f"{path}: [bridge] mapping must be a path")
    mapping = load_mapping(base / mapping_path if mapping_path else None)
    seed = bridge.get("rng_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"{path}: [bridge] rng_seed must be an integer")
    try:
        policy = OptPolicy.from_json(data.get("policy", {}))
    except ValueError as exc:
        raise ValueError(f"{path}: [policy] {exc}") from None
    oadr2b = _oadr2b(path, base, data["oadr2b"]) if "oadr2b" in data else None
    oadr3 = _oadr3(path, base, data["oadr3"]) if "oadr3" in data else None
    if oadr2b is None and oadr3 is None:
        raise ValueError(f"{path}: no VTN: add an [oadr2b] or [oadr3] section")
    return DrConfig(mapping=mapping, policy=policy, rng_seed=seed, oadr2b=oadr2b, oadr3=oadr3)


def _kwargs(path: Path, section: str, raw: dict[str, Any], cls: type) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ValueError(f"{path}: [{section}] unknown key {key!r}")
        out[key] = tuple(value) if isinstance(value, list) else value
    for required in ("vtn_url", "ven_name"):
        if not isinstance(out.get(required), str) or not out[required]:
            raise ValueError(f"{path}: [{section}] {required} is required (a string)")
    return out


def _oadr2b(path: Path, base: Path, section: dict[str, Any]) -> Oadr2bConfig:
    raw = dict(section)
    insecure = raw.pop("insecure", False)
    kwargs = _kwargs(path, "oadr2b", raw, Oadr2bConfig)
    for key in _PATH_KEYS_2B:
        if key in kwargs:
            kwargs[key] = base / str(kwargs[key])
    if insecure is not True:
        problems = []
        if not kwargs["vtn_url"].startswith("https://"):
            problems.append("the VTN URL is not https://")
        if "cert" not in kwargs:
            problems.append("no client certificate (cert, key)")
        if kwargs.get("disable_signature"):
            problems.append("XML signatures are off")
        if kwargs.get("check_hostname") is False:
            problems.append("the VTN's host name is not checked")
        if problems:
            raise ValueError(
                f"{path}: [oadr2b] insecure: {'; '.join(problems)} (the 2.0b profile asks for "
                "TLS with client certificates and signatures; add insecure = true for a lab)"
            )
    try:
        return Oadr2bConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: [oadr2b] {exc}") from None


def _oadr3(path: Path, base: Path, section: dict[str, Any]) -> Oadr3Config:
    raw = dict(section)
    insecure = raw.pop("insecure", False)
    secret_file = raw.pop("client_secret_file", None)
    token_file = raw.pop("token_file", None)
    kwargs = _kwargs(path, "oadr3", raw, Oadr3Config)
    if "client_secret" in kwargs or "token" in kwargs:
        raise ValueError(
            f"{path}: [oadr3] put the secret in a file of its own "
            "(client_secret_file, token_file), not in this file"
        )
    if secret_file is not None:
        kwargs["client_secret"] = (base / str(secret_file)).read_text(encoding="utf-8").strip()
    if token_file is not None:
        kwargs["token"] = (base / str(token_file)).read_text(encoding="utf-8").strip()
    if "ca_file" in kwargs:
        kwargs["ca_file"] = str(base / str(kwargs["ca_file"]))
    if insecure is not True:
        problems = []
        if not kwargs["vtn_url"].startswith("https://"):
            problems.append("the VTN URL is not https://")
        if kwargs.get("verify_tls") is False:
            problems.append("the VTN's certificate is not checked")
        if problems:
            raise ValueError(
                f"{path}: [oadr3] insecure: {'; '.join(problems)} (add insecure = true for a lab)"
            )
    try:
        return Oadr3Config(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: [oadr3] {exc}") from None
