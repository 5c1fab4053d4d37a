"""``sef ems --openadr FILE``: the configuration file (secure by default), the service that
starts the bridge, its adapters and the operator board beside the EMS, and the CLI wiring,
against a real openleadr VTN on loopback and a real Mosquitto."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from oadr2b_vtn import TestVtn, make_pki

from sef.broker import free_port
from sef.clock import ScaledClock
from sef.ems import EMS
from sef.ems._dr_board import dr_board
from sef.openadr import DrService, load_dr_config
from support import wait_for


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the file ---------------------------------------------------------------------------


def test_a_secure_2b_section_loads_with_paths_from_the_files_directory(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    cfg = write(
        tmp_path / "dr.toml",
        f"""
[bridge]
rng_seed = 7
[policy]
blocked_programs = ["TEST"]
must_deliver = true
[oadr2b]
vtn_url = "https://vtn.example/OpenADR2/Simple/2.0b"
ven_name = "agg-7"
cert = "pki/{pki.ven_cert.relative_to(tmp_path / "pki")}"
key = "pki/{pki.ven_key.relative_to(tmp_path / "pki")}"
ca_file = "pki/{pki.ca.relative_to(tmp_path / "pki")}"
vtn_fingerprint = "{pki.vtn_fingerprint}"
report_groups = ["batteries", "*"]
""",
    )
    config = load_dr_config(cfg)
    assert config.oadr2b is not None and config.oadr3 is None
    assert config.oadr2b.cert == pki.ven_cert and config.oadr2b.ca_file == pki.ca
    assert config.oadr2b.report_groups == ("batteries", "*")
    assert config.rng_seed == 7
    assert config.policy.must_deliver and config.policy.blocked_programs == frozenset({"TEST"})


@pytest.mark.parametrize(
    ("section", "words"),
    [
        (
            'vtn_url = "http://vtn.example/x"\nven_name = "v"\ncert="c"\nkey="k"\nca_file="a"',
            "not https://",
        ),
        ('vtn_url = "https://vtn.example/x"\nven_name = "v"', "no client certificate"),
        (
            'vtn_url = "https://v/x"\nven_name = "v"\ncert="c"\nkey="k"\nca_file="a"\n'
            "disable_signature = true",
            "XML signatures are off",
        ),
        (
            'vtn_url = "https://v/x"\nven_name = "v"\ncert="c"\nkey="k"\nca_file="a"\n'
            "check_hostname = false",
            "host name is not checked",
        ),
    ],
)
def test_an_insecure_2b_section_is_refused_without_insecure_true(
    tmp_path: Path, section: str, words: str
) -> None:
    cfg = write(tmp_path / "dr.toml", f"[oadr2b]\n{section}\n")
    with pytest.raises(ValueError, match=words) as caught:
        load_dr_config(cfg)
    assert "insecure = true" in str(caught.value)
    write(cfg, f"[oadr2b]\ninsecure = true\n{section}\n")
    assert load_dr_config(cfg).oadr2b is not None


def test_oadr3_secrets_come_from_files_of_their_own(tmp_path: Path) -> None:
    write(tmp_path / "oa3.secret", "s3cret\n")
    cfg = write(
        tmp_path / "dr.toml",
        '[oadr3]\nvtn_url = "https://vtn.example/openadr3/3.1.0"\nven_name = "agg"\n'
        'client_id = "agg"\nclient_secret_file = "oa3.secret"\nprograms = ["P1"]\n',
    )
    config = load_dr_config(cfg)
    assert config.oadr3 is not None and config.oadr3.client_secret == "s3cret"
    assert config.oadr3.programs == ("P1",)
    write(
        cfg,
        '[oadr3]\nvtn_url = "https://v/x"\nven_name = "a"\nclient_id = "a"\n'
        'client_secret = "inline"\n',
    )
    with pytest.raises(ValueError, match="file of its own"):
        load_dr_config(cfg)
    write(cfg, '[oadr3]\nvtn_url = "http://v/x"\nven_name = "a"\ntoken_file = "oa3.secret"\n')
    with pytest.raises(ValueError, match=r"\[oadr3\] insecure: the VTN URL is not https://"):
        load_dr_config(cfg)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "no VTN"),
        ("[nonsense]\n", "unknown section [nonsense]"),
        ("[oadr2b]\ninsecure = true\nven_name = 'v'\n", "vtn_url is required"),
        (
            "[oadr2b]\ninsecure = true\nvtn_url = 'http://x'\nven_name = 'v'\ncolour = 1\n",
            "unknown key 'colour'",
        ),
        (
            "[policy]\nmust_deliver = 'yes'\n[oadr3]\nvtn_url='https://x'\nven_name='v'\ntoken_file='t'\n",
            "[policy]",
        ),
        ("[bridge]\nrng_seed = 'x'\n", "rng_seed must be an integer"),
        ("[bridge]\nmapping = 'missing.toml'\n", "missing.toml"),
        ("this is = not = toml", "not TOML"),
        ("oadr2b = 3\n", "must be a table"),
    ],
)
def test_a_bad_file_is_refused_naming_what_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    write(tmp_path / "t", "tok")
    with pytest.raises((ValueError, OSError)) as caught:
        load_dr_config(write(tmp_path / "dr.toml", text))
    assert words in str(caught.value)


# -- the service beside a running EMS -----------------------------------------------------


def _plain_config(tmp_path: Path, url: str) -> Path:
    return write(
        tmp_path / "dr.toml",
        f'[bridge]\nrng_seed = 1\n[oadr2b]\ninsecure = true\nvtn_url = "{url}"\n'
        'ven_name = "sef-ems"\nregister_timeout_s = 5\n',
    )


async def test_the_service_registers_serves_the_board_and_stops(
    broker_url: str, tmp_path: Path
) -> None:
    vtn = await TestVtn().start()
    ems = EMS(broker_url, "ems-dr", clock=ScaledClock(speed=1.0))
    await ems.start()
    try:
        service = DrService(ems, load_dr_config(_plain_config(tmp_path, vtn.url)))
        async with service:
            board = dr_board(ems)
            assert board is not None
            (adapter,) = board.status()["adapters"]
            assert adapter["source"] == "oadr2b" and adapter["registered"] is True
            assert list(vtn.vens) == ["VEN-sef-ems"]
        assert dr_board(ems) is None  # off the API once stopped
    finally:
        await ems.stop()
        await vtn.stop()


async def test_an_unreachable_vtn_is_retried_until_it_answers(
    broker_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vtn = TestVtn()  # not started yet: its port refuses connections
    ems = EMS(broker_url, "ems-dr", clock=ScaledClock(speed=1.0))
    await ems.start()
    service = DrService(ems, load_dr_config(_plain_config(tmp_path, vtn.url)), retry_s=0.2)
    try:
        with caplog.at_level("WARNING", logger="sef.openadr"):
            await service.start()  # does not raise: the EMS keeps running
            assert service.pending == 1
            assert "cannot register" in caplog.text
            await vtn.start()
            await wait_for(lambda: not service.pending, 15.0)
        assert service.bridge.statuses()[0].registered
    finally:
        await service.stop()
        await ems.stop()
        await vtn.stop()


# -- the CLI -------------------------------------------------------------------------------


async def test_sef_ems_openadr_registers_and_shows_it_on_the_api(
    broker_url: str, tmp_path: Path
) -> None:
    vtn = await TestVtn().start()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sef",
            "ems",
            "--insecure",
            "--broker",
            broker_url,
            "--id",
            "ems-dr-cli",
            "--api",
            f"127.0.0.1:{free_port()}",
            "--openadr",
            str(_plain_config(tmp_path, vtn.url)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30.0)
        assert line.startswith("API on http://127.0.0.1:"), line
        async with httpx.AsyncClient(base_url=line.split()[-1]) as http:
            status = (await http.get("/openadr/status")).json()
        assert status["configured"] is True
        (adapter,) = status["adapters"]
        assert adapter["registered"] is True and adapter["vtn"] == vtn.url
        assert "VEN-sef-ems" in vtn.vens
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = await asyncio.to_thread(process.wait, 30.0)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        await vtn.stop()
    assert code == 0


def test_sef_ems_refuses_an_insecure_openadr_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "dr.toml", '[oadr2b]\nvtn_url = "http://v/x"\nven_name = "v"\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sef",
            "ems",
            "--insecure",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--openadr",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "not https://" in done.stderr and "--openadr" in done.stderr
