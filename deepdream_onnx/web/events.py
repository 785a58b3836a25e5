"""GET /api/dreams/{id}/events: a dream's changes as Server-Sent Events.

Each event is one `data:` line of JSON: {"type": "progress", ...} after steps,
{"type": "preview", "url": ...} after octaves, {"type": "status", ...} (what GET
/api/dreams/{id} returns) whenever the status, queue position, message or preview
changes.  The stream ends after a final status.  The job queue's worker threads wake the
stream through the event loop; a client that leaves cancels the generator, whose finally
unsubscribes it.
"""

import asyncio
import json

from deepdream_onnx.web.jobs import FINAL

KEEPALIVE_S = 15     # a comment line this often, so proxies and dead clients show up
COALESCE_S = 0.1     # at most about ten events a second: a GPU makes steps faster than a page draws
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def stream(jobs, job_id):
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake():  # called in a worker thread
        try:
            loop.call_soon_threadsafe(changed.set)
        except RuntimeError:  # the loop is closed: the server stopped
            pass

    jobs.subscribe(job_id, wake)
    try:
        sent_status, sent_progress, sent_preview = None, None, 0
        while True:
            changed.clear()
            status, preview = jobs.state(job_id)
            if status is None:  # forgotten meanwhile
                return
            news = []
            if status["progress"] is not None and status["progress"] != sent_progress:
                sent_progress = status["progress"]
                news.append({"type": "progress", **sent_progress})
            if status["has_preview"] and preview > sent_preview:
                sent_preview = preview
                news.append({"type": "preview", "url": f"/api/dreams/{job_id}/preview?v={preview}"})
            shown = {key: status[key] for key in ("status", "position", "message", "has_preview")}
            final = status["status"] in FINAL
            if shown != sent_status:
                sent_status = shown
                # A new status first (running, then its steps), but a final one last: it ends the stream.
                news.insert(len(news) if final else 0, {"type": "status", **status})
            for data in news:
                yield _event(data)
            if final:
                return
            try:
                await asyncio.wait_for(changed.wait(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
            await asyncio.sleep(COALESCE_S)
    finally:
        jobs.unsubscribe(job_id, wake)


def _event(data):
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
