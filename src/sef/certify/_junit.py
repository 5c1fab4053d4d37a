"""The report as files: JUnit XML for CI systems, and ``report.json`` + ``report.md``.

JUnit: one ``<testsuite>`` per suite (birth, calls, …), one ``<testcase>`` per check
(``classname`` ``sef.certify.<suite>``, ``name`` the check id), a ``<failure>`` or
``<skipped>`` carrying the evidence, and the rule's section and level as properties.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from sef.certify._model import Outcome, Report

__all__ = ["junit_xml", "report_json", "report_markdown", "write_junit", "write_report_dir"]


def junit_xml(report: Report) -> bytes:
    """The report as a JUnit XML document (UTF-8)."""
    root = ET.Element(
        "testsuites",
        name=f"sef certify {report.agent_id}",
        tests=str(len(report.results)),
        failures=str(report.count(Outcome.FAIL)),
        errors="0",
        skipped=str(report.count(Outcome.SKIP)),
        time=f"{report.duration_s:.3f}",
    )
    suites: dict[str, ET.Element] = {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(report.started_at))
    for result in report.results:
        suite_name = result.check.suite
        suite = suites.get(suite_name)
        if suite is None:
            suite = ET.SubElement(
                root,
                "testsuite",
                name=suite_name,
                timestamp=stamp,
                hostname=report.broker,
                tests="0",
                failures="0",
                errors="0",
                skipped="0",
                time="0",
            )
            suites[suite_name] = suite
        _count(suite, "tests")
        suite.set("time", f"{float(suite.get('time', '0')) + result.duration_s:.3f}")
        case = ET.SubElement(
            suite,
            "testcase",
            name=result.check.id,
            classname=f"sef.certify.{suite_name}",
            time=f"{result.duration_s:.3f}",
        )
        props = ET.SubElement(case, "properties")
        for key, value in (
            ("section", result.check.section),
            ("level", result.check.level.value),
            ("title", result.check.title),
        ):
            ET.SubElement(props, "property", name=key, value=value)
        message = f"{result.check.section} {result.check.title}: {result.evidence}"
        if result.outcome is Outcome.FAIL:
            _count(suite, "failures")
            failure = ET.SubElement(case, "failure", message=message[:500], type="CheckFailed")
            failure.text = result.evidence
        elif result.outcome is Outcome.SKIP:
            _count(suite, "skipped")
            ET.SubElement(case, "skipped", message=message[:500])
        else:
            ET.SubElement(case, "system-out").text = result.evidence
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def _count(element: ET.Element, attribute: str) -> None:
    element.set(attribute, str(int(element.get(attribute, "0")) + 1))


def write_junit(report: Report, path: Path) -> None:
    """Write :func:`junit_xml` to ``path`` (its directory is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(junit_xml(report))


def report_json(report: Report) -> dict[str, Any]:
    """The report as a JSON-ready object."""
    return {
        "agent": report.agent_id,
        "broker": report.broker,
        "level": report.level.value,
        "started_at": report.started_at,
        "duration_s": round(report.duration_s, 3),
        "passed": report.passed,
        "summary": {o.value: report.count(o) for o in Outcome},
        "results": [
            {
                "id": r.check.id,
                "suite": r.check.suite,
                "title": r.check.title,
                "section": r.check.section,
                "level": r.check.level.value,
                "outcome": r.outcome.value,
                "evidence": r.evidence,
                "duration_s": round(r.duration_s, 3),
            }
            for r in report.results
        ],
    }


def report_markdown(report: Report) -> str:
    """The report as a Markdown page."""
    counts = ", ".join(f"{report.count(o)} {o.value}" for o in Outcome)
    verdict = "passed" if report.passed else "FAILED"
    lines = [
        f"# sef certify: agent `{report.agent_id}`",
        "",
        f"Broker {report.broker}, level {report.level.value}, started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(report.started_at))}, "
        f"{report.duration_s:.1f} s. **{verdict}**: {counts}.",
        "",
        "| outcome | check | section | level | evidence |",
        "|---|---|---|---|---|",
    ]
    for r in report.results:
        evidence = r.evidence.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r.outcome.value} | `{r.check.id}` {r.check.title} | {r.check.section} | "
            f"{r.check.level.value} | {evidence} |"
        )
    return "\n".join(lines) + "\n"


def write_report_dir(report: Report, directory: Path) -> None:
    """Write ``report.json`` and ``report.md`` into ``directory`` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report_json(report), indent=2) + "\n")
    (directory / "report.md").write_text(report_markdown(report))
