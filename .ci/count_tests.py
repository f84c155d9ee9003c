#!/usr/bin/env python3
"""Counts test cases in JUnit XML files and prints "N passed, M failed".

Arguments are directories (walked for Bazel's test.xml files) or XML files
(pytest's --junitxml). A gtest binary writes one <testcase> per case; a
crashed or timed-out target gets a Bazel-written test.xml whose <testcase>
holds an <error>. Skipped or disabled cases (status="notrun", <skipped>)
count as neither and are reported on their own line. The last line printed
is always "N passed, M failed". Exits 1 if any failed or no test ran at all.
"""
import os
import sys
import xml.etree.ElementTree as ET


def xml_files(paths):
    for root in paths:
        if os.path.isfile(root):
            yield root
            continue
        for dirpath, _, files in os.walk(root, followlinks=True):
            if "test.xml" in files:
                yield os.path.join(dirpath, "test.xml")


def main(paths):
    passed = failed = skipped = 0
    failed_names = []
    for path in xml_files(paths):
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
                failed_names.append("%s.%s (%s)" % (
                    case.get("classname", ""), case.get("name", ""), path))
            else:
                passed += 1
    for name in failed_names:
        print("FAILED: " + name)
    if skipped:
        print("%d skipped" % skipped)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["bazel-testlogs"]))
