#!/usr/bin/env bash
# Install what the test suite needs beyond `pip install ".[test]"`: Debian's chromium, the
# headless browser the report test (tests/test_report_html.py) opens the HTML reports in.
# Idempotent and non-interactive: does nothing when /usr/bin/chromium exists; otherwise installs
# it with apt-get (as root, as in CI). Not root and missing: says what to run and exits 1.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: /usr/bin/chromium is missing and this is not root; install Debian's chromium" \
         "(sudo apt-get install -y chromium) or set COSIM_SKIP_BROWSER=1 to skip the report browser test" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "install-test-deps: /usr/bin/chromium is missing and there is no apt-get to install it" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing Debian's chromium (apt-get)"
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
