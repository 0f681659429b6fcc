#!/usr/bin/env python3
"""The agent loop of `stasis-bench replay-vs-snapshot`, run on DBOS Transact (pip package `dbos`,
system database on SQLite) as a peer of Stasis's Replay module.

The workflow has the shape of the Swift one (Sources/Agents/ReplayAgent.swift): for each turn a
user message is added to the transcript, a "model" step is asked for a reply, each tool call it
returns runs as a "tool" step, and the model is asked again until it answers without a tool call.
The model is a Python copy of Stasis's scripted model (one `$ COMMAND` line per turn: one tool
call, then a summary whose text quotes the result), and the tool returns the same bytes as the
Swift benchmark's tool, so the steps' results have the same sizes as on the Swift side (DBOS
stores them pickled and base64-encoded, the Swift journal as JSON).

    python3 dbos_agent.py bench --turns 10,100,1000,5000 --reps 5,5,5,3 --work DIR

For each N it runs, in child processes:
  run      a fresh workflow of N+1 turns; at the first step of turn N+1 the process records its
           timings and kills itself with SIGKILL: a process killed mid-workflow, N turns recorded.
  recover  a new process that constructs DBOS on the same database and launches it; DBOS's
           start-up recovery re-executes the pending workflow from the top (recorded steps return
           their outputs without running) until it reaches turn N+1, where the process records the
           time and kills itself again, so that the next repetition recovers the same state.
Prints one JSON object on stdout. Exits 3, printing the reason, if dbos cannot be imported.
"""

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time

# The benchmark's deterministic payloads; stasis-bench's BenchTool and AgentScript make the same.
FILLER_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
SUMMARY_LINE_LIMIT = 200
LAST_RESULT_LIMIT = 2000
SYSTEM_PROMPT = "You are a coding agent. Run the commands you are asked to run."


def user_message(turn):
    """The user message of `turn` (from 1): one shell command, so one tool call per turn."""
    return f"Turn {turn}: please run this and tell me what it printed.\n$ echo turn-{turn} && cat notes.txt"


def tool_output(command, size):
    """The tool's result: the command, then numbered filler lines, cut to exactly `size` bytes."""
    lines = [f"ran: {command}"]
    n = 0
    total = len(lines[0]) + 1
    while total < size:
        words = " ".join(FILLER_WORDS[(n + i) % len(FILLER_WORDS)] for i in range(8))
        line = f"{n:04d} {words}"
        lines.append(line)
        total += len(line) + 1
        n += 1
    return "\n".join(lines)[:size]


def scripted_reply(messages):
    """Stasis's scripted model, for `shell` commands only: one tool call per command line of the
    last user message, then a summary of the results."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    user_count = sum(1 for m in messages if m["role"] == "user")
    commands = [line[2:] for line in messages[last_user]["content"].splitlines() if line.startswith("$ ")]
    results = [m["content"] for m in messages[last_user + 1:] if m["role"] == "tool"]
    if len(results) < len(commands):
        k = len(results)
        arguments = json.dumps({"command": commands[k]}, sort_keys=True)
        call = {"id": f"call_{user_count}_{k}", "name": "shell", "arguments": arguments}
        return {"role": "assistant", "content": "", "tool_calls": [call], "stop_reason": "tool_use"}
    lines = []
    for command, result in zip(commands, results):
        first = (result.splitlines() or [""])[0]
        lines.append(f"$ {command} -> {first[:SUMMARY_LINE_LIMIT]}")
    lines.append("")
    lines.append((results[-1] if results else "")[:LAST_RESULT_LIMIT])
    return {"role": "assistant", "content": "\n".join(lines), "tool_calls": [], "stop_reason": "end_turn"}


def child(args):
    """`run` and `recover`: one process, killed (by itself) at the first step of turn `stop_turn`."""
    t_import = time.perf_counter()
    from dbos import DBOS, SetWorkflowID  # noqa: E402 (timed)
    import_s = time.perf_counter() - t_import

    state = {"body_s": 0.0, "steps": 0, "t_start": None, "ru_start": None}

    def finish_and_die():
        now = time.perf_counter()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out = {
            "mode": args.mode, "import_s": import_s, "elapsed_s": now - state["t_start"],
            "cpu_s": (ru.ru_utime + ru.ru_stime) - state["ru_start"], "body_s": state["body_s"], "steps": state["steps"],
        }
        with open(args.out, "w") as f:
            json.dump(out, f)
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    if args.unsynced:
        # Only to build a large history in time (see --unsynced-above); never in a measured recovery.
        import sqlalchemy

        @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
        def unsynced(dbapi_conn, _record):
            dbapi_conn.execute("PRAGMA synchronous=OFF")

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    state["ru_start"] = ru0.ru_utime + ru0.ru_stime
    state["t_start"] = time.perf_counter()
    DBOS(config={"name": "stasis-replay-bench", "system_database_url": f"sqlite:///{args.db}",
                 "application_version": "bench-1", "log_level": "ERROR"})

    @DBOS.step()
    def model(turn, messages):
        if turn == args.stop_turn:
            finish_and_die()
        t = time.perf_counter()
        reply = scripted_reply(messages)
        state["body_s"] += time.perf_counter() - t
        state["steps"] += 1
        return reply

    @DBOS.step()
    def tool(turn, call):
        t = time.perf_counter()
        command = json.loads(call["arguments"])["command"]
        result = {"id": call["id"], "name": call["name"], "content": tool_output(command, args.tool_bytes),
                  "is_error": False}
        state["body_s"] += time.perf_counter() - t
        state["steps"] += 1
        return result

    @DBOS.workflow()
    def agent(messages, context_turns):
        transcript = []
        turn_starts = []
        last = ""
        for index, text in enumerate(messages):
            turn = index + 1
            turn_starts.append(len(transcript))
            transcript.append({"role": "user", "content": text})
            for _ in range(32):
                start = turn_starts[max(0, len(turn_starts) - context_turns)] if context_turns else 0
                window = [{"role": "system", "content": SYSTEM_PROMPT}] + transcript[start:]
                reply = model(turn, window)
                transcript.append({"role": "assistant", "content": reply["content"], "tool_calls": reply["tool_calls"]})
                if not reply["tool_calls"]:
                    last = reply["content"]
                    break
                for call in reply["tool_calls"]:
                    result = tool(turn, call)
                    transcript.append({"role": "tool", "content": result["content"], "tool_call_id": result["id"]})
        return last

    DBOS.launch()  # recover: start-up recovery re-executes the pending workflow on a DBOS thread
    if args.mode == "run":
        # The clock of a run starts at the workflow, as the Swift side's does.
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        state["ru_start"] = ru1.ru_utime + ru1.ru_stime
        state["t_start"] = time.perf_counter()
        with SetWorkflowID(args.workflow_id):
            agent([user_message(t) for t in range(1, args.stop_turn + 1)], args.context_turns)
        print("the workflow finished without reaching the stop turn", file=sys.stderr)
        sys.exit(1)
    time.sleep(args.timeout)
    print(f"recovery did not reach turn {args.stop_turn} in {args.timeout} s", file=sys.stderr)
    sys.exit(1)


def stored_bytes(db):
    return sum(os.path.getsize(p) for p in (db, db + "-wal", db + "-journal") if os.path.exists(p))


def spawn(script, mode, db, stop_turn, out, args, unsynced=False):
    command = [sys.executable, script, mode, "--db", db, "--stop-turn", str(stop_turn), "--out", out,
               "--tool-bytes", str(args.tool_bytes), "--context-turns", str(args.context_turns),
               "--workflow-id", "agent", "--timeout", str(args.timeout)] + (["--unsynced"] if unsynced else [])
    t = time.perf_counter()
    done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    if done.returncode != -signal.SIGKILL:
        raise RuntimeError(f"{mode} at turn {stop_turn} exited {done.returncode}, not killed: {done.stderr.decode()[-2000:]}")
    with open(out) as f:
        result = json.load(f)
    os.unlink(out)
    result["process_s"] = wall
    return result


def median(values):
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def bench(args):
    try:
        import dbos  # noqa: F401
        from importlib.metadata import version
        dbos_version = version("dbos")
    except Exception as error:  # the Swift side reports this and skips the peer
        print(json.dumps({"error": f"cannot import dbos: {error}"}))
        sys.exit(3)
    import sqlite3
    turns = [int(x) for x in args.turns.split(",")]
    reps = [int(x) for x in args.reps.split(",")]
    script = os.path.abspath(__file__)
    os.makedirs(args.work, exist_ok=True)
    rows = []
    for i, n in enumerate(turns):
        count = reps[min(i, len(reps) - 1)]
        db = os.path.join(args.work, f"dbos-{n}.sqlite")
        for suffix in ("", "-wal", "-journal"):
            if os.path.exists(db + suffix):
                os.unlink(db + suffix)
        out = os.path.join(args.work, f"dbos-{n}.json")
        unsynced = args.unsynced_above > 0 and n > args.unsynced_above
        run = spawn(script, "run", db, n + 1, out, args, unsynced=unsynced)
        steps = run["steps"]
        print(f"dbos N={n}: run {run['elapsed_s']:.2f} s, {steps} steps, "
              f"{(run['elapsed_s'] - run['body_s']) / max(steps, 1) * 1e6:.0f} us/step", file=sys.stderr)
        recoveries = []
        for r in range(count):
            rec = spawn(script, "recover", db, n + 1, out, args)
            recoveries.append(rec)
            print(f"dbos N={n}: recovery {r + 1}/{count}: {rec['elapsed_s'] * 1000:.0f} ms in-process, "
                  f"{rec['process_s'] * 1000:.0f} ms with process start", file=sys.stderr)
        with sqlite3.connect(db) as connection:
            outputs = connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(output)), 0) FROM operation_outputs").fetchone()
        rows.append({
            "turns": n, "steps": steps, "unsyncedBuild": unsynced, "runSeconds": run["elapsed_s"], "runCPUSeconds": run["cpu_s"],
            "bodySeconds": run["body_s"],
            "stepOverheadMicros": (run["elapsed_s"] - run["body_s"]) / max(steps, 1) * 1e6,
            "recoveryMillis": [x["elapsed_s"] * 1000 for x in recoveries],
            "recoveryMedianMillis": median([x["elapsed_s"] * 1000 for x in recoveries]),
            "recoveryWithProcessMillis": median([x["process_s"] * 1000 for x in recoveries]),
            "importMillis": median([x["import_s"] * 1000 for x in recoveries]),
            "storedBytes": stored_bytes(db), "outputRows": outputs[0], "outputBytes": outputs[1],
        })
    print(json.dumps({"dbosVersion": dbos_version, "python": sys.version.split()[0], "rows": rows}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["bench", "run", "recover"])
    parser.add_argument("--turns", default="10,100,1000,5000")
    parser.add_argument("--reps", default="5,5,5,3", help="recoveries per N (the last value repeats)")
    parser.add_argument("--work", default="/tmp/dbos-agent-bench")
    parser.add_argument("--tool-bytes", type=int, default=1024)
    parser.add_argument("--context-turns", type=int, default=20, help="turns the model is shown; 0: all")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--unsynced-above", type=int, default=1000,
                        help="build the histories of N above this with PRAGMA synchronous=OFF, to fit the time budget "
                             "(their run is then not a step-overhead figure; recoveries always use DBOS's defaults); 0: never")
    parser.add_argument("--unsynced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db")
    parser.add_argument("--stop-turn", type=int)
    parser.add_argument("--out")
    parser.add_argument("--workflow-id", default="agent")
    args = parser.parse_args()
    if args.mode == "bench":
        bench(args)
    else:
        child(args)


if __name__ == "__main__":
    main()
