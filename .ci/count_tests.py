#!/usr/bin/env python3
"""Counts test cases in Bazel's test.xml files and prints "N passed, M failed".

A gtest binary writes one <testcase> per case; a crashed or timed-out target
gets a Bazel-written test.xml whose <testcase> holds an <error>. Skipped or
disabled cases (status="notrun") count as neither. Exits 1 if any failed or
no test ran at all.
"""
import os
import sys
import xml.etree.ElementTree as ET


def main(root):
    passed = failed = skipped = 0
    failed_names = []
    for dirpath, _, files in os.walk(root, followlinks=True):
        if "test.xml" not in files:
            continue
        path = os.path.join(dirpath, "test.xml")
        try:
            tree = ET.parse(path)
        except ET.ParseError:
            failed += 1
            failed_names.append(path + " (unreadable test.xml)")
            continue
        for case in tree.iter("testcase"):
            if case.get("status") == "notrun" or case.find("skipped") is not None:
                skipped += 1
            elif case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                failed_names.append(
                    "%s.%s" % (case.get("classname", ""), case.get("name", "")))
            else:
                passed += 1
    for name in failed_names:
        print("FAILED: " + name)
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bazel-testlogs"))
