# Shared by the shell tests of the command line: `check NAME EXPECTED_RC REGEX -- command...` runs
# a command (with a timeout of CHECK_TIMEOUT seconds, 120 by default), expects its exit code and a
# line of its output matching REGEX, and counts. `check_summary` prints the tally and is the
# script's last command (its status is the test's).
# Source it after setting `out` (a scratch file for the command's output).
fails=0 total=0
check() {
  local name=$1 want_rc=$2 regex=$3
  shift 4
  total=$((total + 1))
  timeout "${CHECK_TIMEOUT:-120}" "$@" >"$out" 2>&1
  local rc=$?
  if [ "$rc" -ne "$want_rc" ] || ! grep -Eq -- "$regex" "$out"; then
    echo "FAIL $name: rc $rc (want $want_rc), output must match /$regex/:"
    sed 's/^/    /' "$out" | head -40
    fails=$((fails + 1))
  else
    echo "ok   $name"
  fi
}
check_summary() {
  echo "$((total - fails)) passed, $fails failed"
  [ "$fails" -eq 0 ]
}
