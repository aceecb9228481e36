"""The framework's floor: a bare Tornado process answering what the dashboard answers (the same
JSON body, no session, no cookie, no security headers, no metrics), for ``bench/peers.py``; on
the event loop ``tornado-auth serve`` runs on by default (uvloop when installed).

    python bench/peers/bare_tornado.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import tornado.web

BODY = {"message": "Welcome to dashboard", "userId": "0" * 24, "email": "user0@example.com"}


class Dashboard(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(BODY)


async def main(port: int) -> None:
    app = tornado.web.Application([(r"/.*", Dashboard)])
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(int(sys.argv[1])))
