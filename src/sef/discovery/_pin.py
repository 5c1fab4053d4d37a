"""The home an agent is pinned to, kept in a small file so that it survives restarts.

With several homes in mDNS range an agent that takes "the first gateway that answers"
ends up in a neighbour's home whenever its own gateway restarts. An agent that discovers
its broker therefore pins itself to one home (``docs/discovery.md``, "Several homes in
range"): the home given with ``--home``, or else the ``home`` TXT of the first gateway it
joins. The pin is the file ``{state_dir}/{agent_id}/home`` (one home id and a newline;
directory mode 0700, file mode 0600), written atomically.

:func:`load_pin` applies the rules at start-up (configured home, file, certificate) and
raises :class:`PinError` for what cannot run; :class:`~sef.discovery.MdnsResolver` then
accepts only a gateway of the pinned home and writes the pin on its first join.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sef.bus import check_id

__all__ = ["PIN_FILE_NAME", "HomePin", "PinError", "PinFile", "default_state_dir", "load_pin"]

log = logging.getLogger("sef.discovery")

PIN_FILE_NAME = "home"
"""Name of the pin file in the agent's state directory."""


class PinError(Exception):
    """A home pin that cannot be used: unreadable or corrupt file, or a configured home
    that contradicts the certificate."""


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$SEF_STATE_DIR``, else ``$XDG_STATE_HOME/sef``, else ``~/.local/state/sef``."""
    env = os.environ if environ is None else environ
    if env.get("SEF_STATE_DIR"):
        return Path(env["SEF_STATE_DIR"])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "sef"
    return Path.home() / ".local" / "state" / "sef"


def valid_home(home: str) -> bool:
    """Whether ``home`` is a usable home id (the bus's id rule)."""
    try:
        check_id("home", home)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class PinFile:
    """The file that keeps one agent's pinned home."""

    path: Path

    @classmethod
    def for_agent(cls, state_dir: Path, agent_id: str) -> PinFile:
        """``{state_dir}/{agent_id}/home``."""
        return cls(Path(state_dir) / agent_id / PIN_FILE_NAME)

    def read(self) -> str | None:
        """The pinned home, or ``None`` when there is no file.

        Raises:
            PinError: the file cannot be read or does not hold exactly one home id.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PinError(f"the home pin file {self.path} cannot be read: {exc}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        home = (text or "").strip()
        if text is None or "\n" in home or not valid_home(home):
            raise PinError(
                f"the home pin file {self.path} is corrupt: expected one home id, "
                f"found {data[:40]!r}"
            )
        return home

    def write(self, home: str) -> None:
        """Keep ``home`` (atomically: a crash leaves the old pin or the new one).

        Raises:
            PinError: ``home`` is not a valid home id.
            OSError: the file cannot be written.
        """
        if not valid_home(home):
            raise PinError(f"cannot pin to {home!r}: not a valid home id")
        directory = self.path.parent
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.mkdir(exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        tmp = directory / f".{PIN_FILE_NAME}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(home + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class HomePin:
    """An agent's pin at start-up."""

    file: PinFile
    """Where the pin is kept (the resolver writes it on the first join)."""
    home: str | None
    """The pinned home; ``None``: not pinned yet (pins itself on its first gateway)."""
    source: str
    """Where :attr:`home` came from: ``--home``, ``file`` or ``none``."""


def load_pin(
    agent_id: str,
    state_dir: Path,
    configured_home: str | None = None,
    *,
    certificate_home: str | None = None,
    secure: bool = False,
) -> HomePin:
    """The home ``agent_id`` is pinned to, by these rules:

    * ``configured_home`` (``--home``) wins and is written to the file; in ``secure``
      mode it must be ``certificate_home`` (the agent's certificate's home);
    * else the file's home; in secure mode a file naming another home than a
      certificate that has one is refused;
    * a corrupt or unreadable file is logged as an error and written over with
      ``configured_home`` when there is one; without one it is refused (the agent does not
      guess its home);
    * no file and no ``configured_home``: not pinned yet.

    Raises:
        PinError: what cannot run (the message says why and what to do).
    """
    pin_file = PinFile.for_agent(state_dir, agent_id)
    if configured_home is not None:
        if not valid_home(configured_home):
            raise PinError(f"--home {configured_home!r} is not a valid home id")
        if secure and certificate_home != configured_home:
            raise PinError(
                f"--home {configured_home!r} does not match the home of the certificate of "
                f"{agent_id!r} ({certificate_home!r}): a gateway of home {configured_home!r} "
                "would refuse this agent"
            )
    try:
        stored = pin_file.read()
    except PinError as exc:
        if configured_home is None:
            raise PinError(
                f"{exc}; refusing to guess this agent's home: give --home HOME, or remove "
                "the file to let the agent pin itself to the first gateway it joins"
            ) from None
        log.error("%s; using --home %s and writing it over the file", exc, configured_home)
        stored = None
    if configured_home is not None:
        if stored != configured_home:
            if stored is not None:
                log.warning(
                    "agent %s re-pinned from home %r to home %r (--home)",
                    agent_id,
                    stored,
                    configured_home,
                )
            _keep(pin_file, configured_home)
        return HomePin(pin_file, configured_home, "--home")
    if stored is None:
        return HomePin(pin_file, None, "none")
    if secure and certificate_home is not None and stored != certificate_home:
        raise PinError(
            f"the home pin file {pin_file.path} pins {agent_id!r} to home {stored!r}, but "
            f"its certificate is for home {certificate_home!r}: give --home "
            f"{certificate_home} or remove the file"
        )
    return HomePin(pin_file, stored, "file")


def _keep(pin_file: PinFile, home: str) -> None:
    """Write the pin; a failure is logged (the pin still holds for this run)."""
    try:
        pin_file.write(home)
    except OSError as exc:
        log.error(
            "cannot keep the home pin %r in %s: %s (it holds until this agent stops)",
            home,
            pin_file.path,
            exc,
        )
