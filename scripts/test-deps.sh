#!/usr/bin/env bash
# What the tests need beyond npm packages, installed when missing (Debian/Ubuntu, apt-get):
#   redis-server  the scale-out suites start their own on a free port
#   chromium      the status-page test drives it
#   wrk, nginx    the benchmark harness's quick run (test/e2e/bench.e2e.test.ts)
#   bubblewrap    the sandbox of stdio servers (test/e2e/sandbox.e2e.test.ts), with util-linux's prlimit and setpriv
#   python3-venv  the sandbox's Python example: a virtualenv of the system's python3 (test/e2e/sandbox-examples.e2e.test.ts)
# Run by `npm test` (its pretest script) and by .ci/run. Says what it installs, and why it cannot.
set -uo pipefail

# nginx lives in /usr/sbin, which a user's PATH may lack.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()   # Debian package names
have redis-server || missing+=(redis-server)
have chromium || missing+=(chromium)
have wrk || missing+=(wrk)
have nginx || missing+=(nginx-light)
have bwrap || missing+=(bubblewrap)
{ have prlimit && have setpriv; } || missing+=(util-linux)
/usr/bin/python3 -c "import venv" >/dev/null 2>&1 || missing+=(python3-venv)

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "test-deps: the tests need ${missing[*]} (Debian packages); installing them with apt-get"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: no apt-get on this machine: install ${missing[*]} (or your system's equivalents) and run the tests again" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "test-deps: not root and no sudo: run 'apt-get install -y ${missing[*]}' as root, then the tests again" >&2
    exit 1
  fi
  sudo="sudo"
fi
if ! ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null); then
  echo "test-deps: could not install ${missing[*]}" >&2
  exit 1
fi
# The package starts a system instance on 6379; the tests use their own.
case " ${missing[*]} " in *" redis-server "*) ($sudo service redis-server stop >/dev/null 2>&1 || true) ;; esac
echo "test-deps: installed ${missing[*]}"
