#!/usr/bin/env bash
# Runs the README walk-through (the ```sh blocks between <!-- walkthrough --> markers) exactly as
# a reader pastes them into one interactive shell, against examples/mcpserver on loopback, then
# checks the answers. The only rewrites: free ports instead of 8080/9090/4222 and a temporary data
# directory instead of ./data, so that it never disturbs a running `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(free_port); up=$(free_port); nats=$(free_port)

# Extract the blocks.
awk '/<!-- walkthrough -->/{on=1; next} /<!-- \/walkthrough -->/{on=0} on && !/^```/' README.md > "$work/steps.sh"
sed -i \
  -e "s#127.0.0.1:8080#127.0.0.1:$http#g" \
  -e "s#127.0.0.1:9090#127.0.0.1:$up#g" \
  -e "s#^bin/mcpserver &#bin/mcpserver -addr 127.0.0.1:$up \&#" \
  -e "s#data/#$work/data/#g" \
  "$work/steps.sh"

export VAULT_HTTP_ADDR=127.0.0.1:$http VAULT_NATS_LISTEN=127.0.0.1:$nats VAULT_DATA_DIR=$work/data
# A shell with job control, as in a terminal, so that `kill %n` stops whole jobs.
out=$work/out.txt
set +e
timeout 900 bash -m -e -o pipefail "$work/steps.sh" >"$out" 2>&1
rc=$?
set -e
sleep 1
fail() {
  echo "walkthrough: $*" >&2
  echo "--- steps ---" >&2; cat "$work/steps.sh" >&2
  echo "--- output ---" >&2; cat "$out" >&2
  exit 1
}
[ $rc -eq 0 ] || fail "the steps exited with $rc"
grep -q '"object":"mcp.server.test","connected":true' "$out" || fail "testServer did not connect"
grep -q '"authorization_preview":"\*\*\*\*...1234"' "$out" || fail "the list did not show the credential"
grep -q '"revoked_at":"' "$out" || fail "the revoke did not answer a revoked credential"
grep -q 'mcp.credential.revoked' "$out" || fail "the audit follower did not receive the revoke event"
for i in $(seq 50); do ss -ltn 2>/dev/null | grep -qE "127.0.0.1:($http|$up|$nats)\b" || break; sleep 0.1; done
if taken=$(ss -ltnp 2>/dev/null | grep -E "127.0.0.1:($http|$up|$nats)\b"); then fail "still listening 5 s after the last step: $taken"; fi
echo "walkthrough: OK (every step ran; testServer connected; audit events followed; all stopped)"
