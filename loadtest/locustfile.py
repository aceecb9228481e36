"""The tornado-auth load-test scenario: people who sign up or sign in, look around, sign out.

Run it headless against a running server (see README "Load testing"):

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8888 \\
        -u 50 -r 10 -t 1m --csv loadtest/report/run --html loadtest/report/report.html

Each simulated user registers a fresh account (or signs in when LOADTEST_EMAIL and
LOADTEST_PASSWORD are set), then mostly reads its dashboard and profile, sometimes lists its
sessions or holds the live dashboard socket open for a moment, and finally signs out.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import websocket
from locust import HttpUser, between, events, task

PASSWORD = "load-test-password-1"


class Visitor(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.client.headers["Content-Type"] = "application/json"
        email, password = os.environ.get("LOADTEST_EMAIL"), os.environ.get("LOADTEST_PASSWORD")
        if email and password:
            self.client.post("/api/login", json={"email": email, "password": password})
            return
        self.email = f"load-{uuid.uuid4().hex[:16]}@example.com"
        body = {"email": self.email, "password": PASSWORD, "name": "Load Test"}
        self.client.post("/api/register", json=body, name="/api/register")

    def on_stop(self) -> None:
        self.client.post("/api/logout", name="/api/logout")

    @task(10)
    def dashboard(self) -> None:
        self.client.get("/api/dashboard")

    @task(4)
    def profile(self) -> None:
        self.client.get("/api/profile")

    @task(2)
    def sessions(self) -> None:
        self.client.get("/api/sessions")

    @task(1)
    def live_dashboard(self) -> None:
        """Open the WebSocket with the session cookie, read the greeting, close."""
        url = self.host.replace("http", "ws", 1) + "/ws/dashboard"
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.client.cookies)
        started = time.perf_counter()
        error, length = None, 0
        try:
            socket = websocket.create_connection(url, cookie=cookie, timeout=10)
            try:
                hello = json.loads(socket.recv())
                length = len(json.dumps(hello))
                if hello.get("type") != "hello":
                    error = RuntimeError(f"unexpected first message {hello}")
            finally:
                socket.close()
        except Exception as failure:  # reported to Locust as a failed request
            error = failure
        events.request.fire(
            request_type="WS",
            name="/ws/dashboard",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )
