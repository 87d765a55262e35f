"""A fork server for the kill matrix's runs: the suite imported and collected once, a
forked child per run.

A run as a new process spends about a second of CPU before its first case: Python,
pytest, Hypothesis and the plugin imported, every conformance module imported and
its asserts rewritten. Here that is done once; each run is a child forked from this
warmed process that goes straight to its own session (``cli.main``), in a session of
its own (setsid: the runner kills its process group), its output in its own file.

    python tests/fork_runs.py

Requests on stdin, one JSON object a line: {"id", "argv", "cwd", "output", "env"}.
Answers on stdout, one JSON object a line: {"id", "pid"} once the child runs,
{"id", "status"} (its exit status, negative: the signal) once it ended, {"id",
"error"} if it could not start. The server ends at EOF on stdin, once its children
have.
"""

from __future__ import annotations

import gc
import json
import os
import select
import sys
import traceback


def warm_up() -> None:
    """Import and collect the suite as a run does, output discarded: the children
    inherit the modules (asserts rewritten by pytest's import hook)."""
    from pytest_vfiouser import cli  # noqa: PLC0415 (the point of this function)

    null = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1), os.dup(2)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        cli.main(["--collect-only", "-q", "-p", "no:cacheprovider"])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (null, *saved):
            os.close(fd)
    # What the children inherit is left out of their collections (pytest collects at the
    # end of each session), and their pages stay shared with this process.
    gc.freeze()


def child(request: dict) -> None:
    """In the forked child: become the run, then exit with its status."""
    status = 1
    try:
        os.setsid()
        out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["vfio-user-conformance", *request["argv"]]
        from pytest_vfiouser import cli  # noqa: PLC0415 (imported by warm_up already)

        status = cli.main(list(request["argv"]))
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status & 0xFF)


def answer(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    warm_up()
    answer({"ready": True})
    running: dict[int, int] = {}  # pid -> request id
    buffered = b""
    stdin = sys.stdin.fileno()
    open_ = True
    while open_ or running:
        ready, _, _ = select.select([stdin] if open_ else [], [], [], 0.05)
        if ready:
            data = os.read(stdin, 65536)
            if not data:
                open_ = False
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                request = json.loads(line)
                try:
                    pid = os.fork()
                except OSError as e:
                    answer({"id": request["id"], "error": str(e)})
                    continue
                if pid == 0:
                    child(request)
                running[pid] = request["id"]
                answer({"id": request["id"], "pid": pid})
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in running:
                code = os.waitstatus_to_exitcode(status)
                answer({"id": running.pop(pid), "status": code})
    return 0


if __name__ == "__main__":
    sys.exit(main())
