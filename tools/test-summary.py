#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# The closing summary of `tools/dev.sh test`, read from the logs of the last `meson test` run:
#   BUILD/meson-logs/testlog.json       one JSON object per meson test (result, stdout)
#   BUILD/meson-logs/testlog.junit.xml  every gtest case of the gtest-protocol tests (skips with their reasons)
# It prints how many reference checks ran (flashvsr-parity's fixtures, the fixture cases of the unit and
# element tests) and every SKIP with its reason: meson tests that SKIPped as a whole, and the cases that
# skipped inside tests that passed. It only reads; the exit status is 0 unless the logs cannot be read.
#   usage: test-summary.py BUILD_DIR [LOGBASE]   (LOGBASE: meson test --logbase, default testlog)
import json
import os
import re
import sys
import xml.etree.ElementTree as ET


def short(name):
    # "gst-flashvsr:model / colour-cuda" -> "colour-cuda"
    return name.split(" / ", 1)[-1]


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    logs = os.path.join(build, "meson-logs")
    base = sys.argv[2] if len(sys.argv) > 2 else "testlog"
    try:
        with open(os.path.join(logs, base + ".json"), encoding="utf-8") as f:
            tests = [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        print(f"test summary: cannot read the meson test log: {e}")
        return 1

    # gtest cases, per meson test (junit suites are named "<project>.<meson test name>.<gtest suite>").
    cases = {t["name"]: [] for t in tests}
    try:
        root = ET.parse(os.path.join(logs, base + ".junit.xml")).getroot()
    except (OSError, ET.ParseError):
        root = None
    if root is not None:
        for suite in root.iter("testsuite"):
            sname = suite.get("name", "")
            owner = max((n for n in cases if sname.startswith(f"{project(n)}.{n}.")), key=len, default=None)
            if owner is None:
                continue
            gsuite = sname[len(f"{project(owner)}.{owner}."):]
            for case in suite.iter("testcase"):
                if case.get("status") == "notrun":
                    continue
                skipped = case.find("skipped")
                failed = case.find("failure") is not None or case.find("error") is not None
                reason = ""
                if skipped is not None:
                    msg = (skipped.get("message") or skipped.text or "").strip().splitlines()
                    reason = msg[-1] if msg else ""
                cases[owner].append({"name": f"{gsuite}.{case.get('name')}",
                                     "result": "SKIP" if skipped is not None else "FAIL" if failed else "OK",
                                     "reason": reason})

    counts = {}
    for t in tests:
        counts[t["result"]] = counts.get(t["result"], 0) + 1
    print(f"== Test summary ({len(tests)} meson tests: "
          + ", ".join(f"{n} {r}" for r, n in sorted(counts.items())) + ")")

    # Reference checks: flashvsr-parity's closing line, and the gtest cases of fixture suites.
    print("Reference checks (golden fixtures made by the reference):")
    checked_by_parity = []
    for t in tests:
        out = t.get("stdout", "") + t.get("stderr", "")
        lines = [l for l in out.splitlines() if l.startswith("parity: ")]
        if not lines:
            continue
        m = re.match(r"parity: (\d+) fixture\(s\) checked(?: \(([^)]*)\))?", lines[-1])
        if m and m.group(2):
            checked_by_parity += [n.strip() for n in m.group(2).split(",")]
        print(f"  {short(t['name'])} [{t['result']}]: {lines[-1][len('parity: '):]}")
    fixture_cases = [(n, c) for n, cs in cases.items() for c in cs if "Fixture" in c["name"].split(".")[0]]
    passed = [c for _, c in fixture_cases if c["result"] == "OK"]
    skipped = [c for _, c in fixture_cases if c["result"] == "SKIP"]
    failed = [c for _, c in fixture_cases if c["result"] == "FAIL"]
    print(f"  fixture cases of the unit and element tests: {len(passed)} passed, {len(skipped)} skipped, "
          f"{len(failed)} failed")
    print(f"  => {len(checked_by_parity)} fixture(s) checked end to end by flashvsr-parity"
          + (f": {', '.join(checked_by_parity)}" if checked_by_parity else " (NONE)"))

    # Every SKIP, with its reason.
    skips = [t for t in tests if t["result"] == "SKIP"]
    if skips:
        print("SKIP (whole meson tests):")
    for t in skips:
        reasons = sorted({c["reason"] for c in cases.get(t["name"], []) if c["result"] == "SKIP" and c["reason"]})
        if not reasons:
            out = [l for l in (t.get("stdout", "") + t.get("stderr", "")).splitlines() if l.strip()]
            par = [l for l in out if l.startswith("parity: ")]
            reasons = [(par or out or ["(no output)"])[-1]]
        print(f"  {short(t['name'])}: {'; '.join(reasons)}")
    inner = [(n, c) for n, cs in cases.items() for c in cs
             if c["result"] == "SKIP" and next(t for t in tests if t["name"] == n)["result"] != "SKIP"]
    # Fixtures skipped inside a case that loops over fixtures (test_support.h: skip_unsupported_fixture):
    # "[ SKIPPED  ] name: why" (gtest's own lines read "[  SKIPPED ]"), under the case that printed them.
    for t in tests:
        if t["result"] == "SKIP":
            continue
        running = "?"
        for line in t.get("stdout", "").splitlines():
            if line.startswith("[ RUN      ] "):
                running = line[len("[ RUN      ] "):]
            elif line.startswith("[ SKIPPED  ] "):
                inner.append((t["name"], {"name": running, "reason": line[len("[ SKIPPED  ] "):]}))
    if inner:
        print("Skipped inside tests that passed (cases; fixtures skipped by a case):")
    for n, c in inner:
        print(f"  {short(n)}: {c['name']}: {c['reason']}")
    return 0


def project(name):
    # "gst-flashvsr:model / colour" -> "gst-flashvsr"
    return name.split(":", 1)[0]


if __name__ == "__main__":
    sys.exit(main())
