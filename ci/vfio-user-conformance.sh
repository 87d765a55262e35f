#!/usr/bin/env bash
# The conformance run of this repository's CI templates (action.yml, and
# ci/gitlab-vfio-user-conformance.yml), configured by the environment:
#   VFU_SERVER    the server's command line, with {socket} or {fd} (required)
#   VFU_PROFILE   its device profile (TOML), if any
#   VFU_REVISION  the spec revision under test: 0.9.1 (default) or 0.9.2
#   VFU_STRICT    true: SHOULD failures fail the job too (default: false)
#   VFU_ARGS      more options of vfio-user-conformance, split on spaces
# The reports go to reports/ (HTML, JSON, JUnit, log files); the verdict summary also to
# reports/summary.txt and, on GitHub, to the job's summary page. The exit status is the
# suite's: 0 when no MUST failed and nothing crashed or hung, 4 for a wrong setting.
set -uo pipefail

if [ -z "${VFU_SERVER:-}" ]; then
    echo "VFU_SERVER: the server's command line, with {socket} or {fd}, is required" >&2
    exit 4
fi
args=(--vfu-server "$VFU_SERVER" --vfu-spec "${VFU_REVISION:-0.9.1}")
if [ -n "${VFU_PROFILE:-}" ]; then
    args+=(--vfu-profile "$VFU_PROFILE")
fi
case "${VFU_STRICT:-false}" in
    true) args+=(--vfu-strict) ;;
    false | "") ;;
    *)
        echo "VFU_STRICT: true or false, not '$VFU_STRICT'" >&2
        exit 4
        ;;
esac
read -r -a more <<<"${VFU_ARGS:-}"

mkdir -p reports
vfio-user-conformance "${args[@]}" "${more[@]}" | tee reports/terminal.txt
status=${PIPESTATUS[0]}
sed -n '/= vfio-user conformance =/,$p' reports/terminal.txt >reports/summary.txt
if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -s reports/summary.txt ]; then
    {
        echo '### vfio-user conformance'
        echo '```'
        tail -n +2 reports/summary.txt
        echo '```'
    } >>"$GITHUB_STEP_SUMMARY"
fi
exit "$status"
