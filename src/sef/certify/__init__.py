"""``sef certify``: the conformance suite a vendor runs against a live agent.

The suite checks the rules of ``docs/protocol.md`` (birth, sessions, calls, the demo
interface, robustness) over a real broker and reports PASS / FAIL / SKIP per rule with
its section and the evidence. ``docs/certify.md`` explains how to run it and read the
report. Public names:

* :class:`CertifyOptions` and :func:`run_certification`: run the suite, get a
  :class:`Report` of :class:`CheckResult` (each an :class:`Outcome`, with the rule's
  :class:`Level`);
* :func:`write_junit` and :func:`write_report_dir`: the report as JUnit XML, and as
  ``report.json`` + ``report.md``.
"""

from sef.certify._junit import write_junit, write_report_dir
from sef.certify._model import CheckResult, Level, Outcome, Report
from sef.certify._runner import CertifyOptions, run_certification

__all__ = [
    "CertifyOptions",
    "CheckResult",
    "Level",
    "Outcome",
    "Report",
    "run_certification",
    "write_junit",
    "write_report_dir",
]
