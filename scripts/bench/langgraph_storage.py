#!/usr/bin/env python3
"""Storage of an agent conversation in LangGraph's SQLite checkpointer: the peer that
`stasis-bench context` compares the context log with.

    python3 scripts/bench/langgraph_storage.py --messages TURNS.json --db FILE \
        [--points 100,250,500,1000] [--durability async|sync|exit] [--state messages|delta]

TURNS.json (written by stasis-bench) is a list of turns, each
{"user": str, "assistant": str, "toolCall": {"id", "name", "arguments"}, "toolResult": str,
 "final": str}.

The graph is the usual tool-calling agent: START -> agent -> tools -> agent -> END, on
MessagesState, compiled with SqliteSaver. The "model" and the "tool" are scripted: they return
the turn's messages, so nothing but LangGraph and its checkpointer does any work. Each turn is
one `invoke` on the same thread; LangGraph writes a checkpoint per super-step, each holding the
whole message list, which is what this measures. `--state delta` uses LangGraph's experimental
DeltaChannel instead (beta in LangGraph 1.2), which stores the new messages of each step and a
full snapshot every 100 updates.

Prints one JSON object on stdout: the database size (file + WAL, after a TRUNCATE checkpoint of
the WAL) empty and at each point, the number of checkpoints and writes, and the versions used.
Needs: pip install langgraph langgraph-checkpoint-sqlite
"""

import argparse
import json
import os
import sqlite3
import sys
import time
from importlib import metadata

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph


def delta_state():
    """A messages state on DeltaChannel (experimental in LangGraph 1.2; imported only when asked)."""
    from typing import Annotated, TypedDict

    from langgraph.channels.delta import DeltaChannel
    from langgraph.graph.message import _messages_delta_reducer

    class DeltaMessagesState(TypedDict):
        messages: Annotated[list, DeltaChannel(_messages_delta_reducer)]

    return DeltaMessagesState


def build_graph(turns, current, checkpointer, state):
    """The agent loop; `current[0]` is the index of the turn being run."""

    def agent(state):
        turn = turns[current[0]]
        last = state["messages"][-1]
        if isinstance(last, ToolMessage):
            return {"messages": [AIMessage(content=turn["final"])]}
        call = turn["toolCall"]
        return {
            "messages": [
                AIMessage(
                    content=turn["assistant"],
                    tool_calls=[{"id": call["id"], "name": call["name"], "args": json.loads(call["arguments"])}],
                )
            ]
        }

    def tools(state):
        turn = turns[current[0]]
        call = turn["toolCall"]
        return {"messages": [ToolMessage(content=turn["toolResult"], tool_call_id=call["id"], name=call["name"])]}

    def route(state):
        last = state["messages"][-1]
        return "tools" if getattr(last, "tool_calls", None) else END

    builder = StateGraph(state)
    builder.add_node("agent", agent)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


def stored_bytes(conn, path):
    # Fold the WAL into the database first, as the Swift side does for the context log.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", required=True, help="the turns, JSON (written by stasis-bench)")
    parser.add_argument("--db", required=True, help="the SQLite file to create")
    parser.add_argument("--points", default="100,250,500,1000", help="turn counts at which to measure")
    parser.add_argument("--durability", default="async", choices=["async", "sync", "exit"],
                        help="LangGraph's checkpoint durability mode (default: LangGraph's default, async)")
    parser.add_argument("--state", default="messages", choices=["messages", "delta"],
                        help="MessagesState (the default and documented way) or DeltaChannel (experimental)")
    parser.add_argument("--max-seconds", type=float, default=0,
                        help="stop at the last point that ends within this many seconds (0: no limit)")
    args = parser.parse_args()

    with open(args.messages, encoding="utf-8") as f:
        turns = json.load(f)
    points = sorted({int(p) for p in args.points.split(",") if p.strip()})
    if points and points[-1] > len(turns):
        sys.exit(f"langgraph_storage: {len(turns)} turns in {args.messages}, points go to {points[-1]}")

    if os.path.exists(args.db):
        os.remove(args.db)
    conn = sqlite3.connect(args.db, check_same_thread=False)
    saver = SqliteSaver(conn)
    current = [0]
    graph = build_graph(turns, current, saver, delta_state() if args.state == "delta" else MessagesState)
    config = {"configurable": {"thread_id": "bench"}}

    # The empty database, as LangGraph sets it up, is turn 0.
    saver.setup()
    results = [{"turn": 0, "bytes": stored_bytes(conn, args.db), "checkpoints": 0, "writes": 0, "seconds": 0.0}]
    start = time.monotonic()
    for index in range(points[-1] if points else 0):
        current[0] = index
        graph.invoke({"messages": [HumanMessage(content=turns[index]["user"])]}, config, durability=args.durability)
        done = index + 1
        if done in points:
            size = stored_bytes(conn, args.db)
            checkpoints = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
            writes = conn.execute("SELECT COUNT(*) FROM writes").fetchone()[0]
            elapsed = time.monotonic() - start
            results.append({"turn": done, "bytes": size, "checkpoints": checkpoints, "writes": writes,
                            "seconds": round(elapsed, 3)})
            print(f"langgraph: turn {done}: {size} bytes, {checkpoints} checkpoints, {elapsed:.1f} s",
                  file=sys.stderr, flush=True)
            # Each turn rewrites the whole conversation, so time grows with the square of the turns:
            # stop here if the next point would end past the budget.
            following = [p for p in points if p > done]
            projected = elapsed * (following[0] / done) ** 2 if following else 0
            if args.max_seconds and projected > args.max_seconds:
                print(f"langgraph: stopping after turn {done}: turn {following[0]} would end after about "
                      f"{projected:.0f} s, past --max-seconds {args.max_seconds:g}", file=sys.stderr, flush=True)
                break
    messages = len(graph.get_state(config).values.get("messages", []))
    conn.close()

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    json.dump({
        "points": results,
        "messages": messages,
        "durability": args.durability,
        "state": args.state,
        "sqlite": sqlite3.sqlite_version,
        "python": sys.version.split()[0],
        "langgraph": version("langgraph"),
        "langgraphCheckpointSqlite": version("langgraph-checkpoint-sqlite"),
        "langchainCore": version("langchain-core"),
    }, sys.stdout)
    print()


if __name__ == "__main__":
    main()
