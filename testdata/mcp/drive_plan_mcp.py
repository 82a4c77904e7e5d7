"""Drives `plan mcp` with the official MCP Python SDK: initialize, list_tools, and call_tool
for plan, run (waiting for the report, with progress notifications) and show, plus a show
of an unknown run. Prints one JSON object with what it saw; the Rust test checks it.

Usage: python drive_plan_mcp.py PLAN_BINARY [plan mcp arguments...]
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def texts(result):
    return [c.text for c in result.content if getattr(c, "type", "") == "text"]


async def main() -> None:
    binary, args = sys.argv[1], sys.argv[2:]
    server = StdioServerParameters(command=binary, args=["mcp", *args], env=dict(os.environ))
    seen = {}
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            seen["server_name"] = init.server_info.name
            tools = await session.list_tools()
            seen["tools"] = sorted(t.name for t in tools.tools)
            seen["run_schema"] = next(t.input_schema for t in tools.tools if t.name == "run")

            plan = await session.call_tool("plan", {"goal": "Compare two things"})
            seen["plan_is_error"] = plan.is_error
            seen["plan"] = json.loads(texts(plan)[0])

            progress = []

            async def on_progress(value, total, message):
                progress.append({"progress": value, "total": total, "message": message})

            run = await session.call_tool(
                "run", {"goal": "Compare two things", "wait_secs": 60}, progress_callback=on_progress
            )
            seen["run_is_error"] = run.is_error
            seen["run_texts"] = texts(run)
            seen["run"] = run.structured_content
            seen["progress"] = progress

            run_id = run.structured_content["run_id"]
            show = await session.call_tool("show", {"run_id": run_id})
            seen["show_is_error"] = show.is_error
            seen["show"] = show.structured_content

            # A run the caller does not wait for goes on in the background.
            bg = await session.call_tool("run", {"goal": "Compare two things", "wait_secs": 0})
            seen["bg"] = bg.structured_content
            seen["bg_texts"] = texts(bg)
            status = None
            for _ in range(200):
                later = await session.call_tool("show", {"run_id": bg.structured_content["run_id"]})
                status = later.structured_content["status"]
                if status not in ("running", "pending", "queued"):
                    break
                await asyncio.sleep(0.1)
            seen["bg_final_status"] = status

            missing = await session.call_tool("show", {"run_id": "no-such-run"})
            seen["missing_is_error"] = missing.is_error
            seen["missing_texts"] = texts(missing)

            bad = await session.call_tool("plan", {"goal": "x", "colour": "red"})
            seen["bad_is_error"] = bad.is_error
            seen["bad_texts"] = texts(bad)
    print(json.dumps(seen))


asyncio.run(main())
