"""``sef openadr status|events|opt|policy`` in a subprocess against the real API stack with a
stand-in DrOperator (tests/dr_operator_standin.py): tables and JSON, the operator's opt
override reaching the bridge, the viewer refused, and the answer without a bridge."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from api_stack import Stack
from dr_operator_standin import StandInOperator, event
from sef.ems._dr_board import set_dr_board
from sef.openadr import Opt, install_operator


async def sef(stack: Stack, role: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """``sef ARGS --api URL`` with ``role``'s token, in a thread (the loop serves the API)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sef", *args, "--api", stack.url],
        capture_output=True,
        text=True,
        timeout=30.0,
        input=stdin,
        env={
            **os.environ,
            "COLUMNS": "250",
            "NO_COLOR": "1",
            "SEF_API_TOKEN": stack.tokens[role],
        },
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the CLI only sees the API
async def test_sef_openadr(stack: Stack, tmp_path: Path) -> None:
    (code, out, _), (pcode, _, perr) = await asyncio.gather(
        sef(stack, "viewer", "openadr", "status"), sef(stack, "viewer", "openadr", "policy")
    )
    assert code == 0 and "OpenADR is not configured" in out
    assert pcode == 2 and "OpenADR is not configured" in perr
    now = stack.ems.clock.now()
    operator = StandInOperator(now)
    operator.history.add(event("evt-[bold]1", now, start_in_s=-300, requested_kw=-12.0))
    operator.history.add(event("evt-2", now, start_in_s=3600, program="eco", received_s=now))
    install_operator(stack.ems, operator)
    try:
        (code, out, err), (jcode, jout, _), (scode, sout, _) = await asyncio.gather(
            sef(stack, "viewer", "openadr", "events"),
            sef(stack, "viewer", "openadr", "events", "--json", "--status", "active"),
            sef(stack, "viewer", "openadr", "status"),
        )
        assert code == 0, err
        assert out.index("evt-2") < out.index("evt-[bold]1")  # newest first, markup shown
        assert "-12.0" in out and "scheduled" in out and "eco" in out
        assert jcode == 0 and [r["event_id"] for r in json.loads(jout)] == ["evt-[bold]1"]
        assert scode == 0 and "ven-7" in sout and "peak, eco" in sout

        bad = tmp_path / "policy.json"
        bad.write_text('{"max_shortfall_kw": -3}')
        refusals = await asyncio.gather(  # none of these changes anything
            sef(stack, "viewer", "openadr", "opt", "oadr2b", "evt-2", "out"),
            sef(stack, "operator", "openadr", "opt", "oadr2b", "evt-2", "maybe"),
            sef(stack, "operator", "openadr", "opt", "oadr2b", "nope", "in"),
            sef(stack, "operator", "openadr", "policy", "--set", str(bad)),
        )
        assert [code for code, _, _ in refusals] == [2, 2, 2, 2]
        assert "403" in refusals[0][2] and "needs the operator role" in refusals[0][2]
        assert "answer must be out or in" in refusals[1][2]
        assert "404 no event 'nope'" in refusals[2][2]
        assert "422 policy: max_shortfall_kw must be 0..1e6" in refusals[3][2]
        assert operator.overrides == [] and operator.policy["max_shortfall_kw"] == 0.0

        (code, out, err), (pcode, pout, perr) = await asyncio.gather(
            sef(stack, "operator", "openadr", "opt", "oadr2b", "evt-2", "out", "-r", "storm"),
            sef(stack, "operator", "openadr", "policy", "--set", "-",
                stdin='{"opt_out_programs": ["eco"]}'),
        )  # fmt: skip
        assert code == 0, err
        assert "optOut, opted_out — operator: olivia: storm" in out
        assert operator.overrides == [("oadr2b", "evt-2", Opt.OUT, "operator: olivia: storm")]
        assert pcode == 0, perr
        assert json.loads(pout)["opt_out_programs"] == ["eco"]
        assert operator.policy["opt_out_programs"] == ["eco"]
        code, out, _ = await sef(stack, "viewer", "openadr", "events", "--id", "evt-2", "--json")
        assert code == 0 and json.loads(out)[0]["opt"] == "optOut"
    finally:
        set_dr_board(stack.ems, None)
