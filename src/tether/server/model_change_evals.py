"""Re-runs an agent's eval suite when its served model changes: for a new `model_change` alert
whose `detail.eval` is `queued` (the agent is listed in `watch.eval_on_model_change`), the
newest suite run for the agent is run again with `tether eval run` in a child process against
this server, under a key minted for that eval alone (the agent's identity, revoked when it
ends), and the alert's `detail.eval` follows it: running, then finished (with the eval id and
its success at target cost) or errored (with why)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tether.config import ModelChangeEval, Settings
from tether.store.alerts import Alert, update_detail
from tether.store.evals import get_eval
from tether.store.keys import create_key, revoke_key

log = logging.getLogger("tether.watch")


class ModelChangeEvals:
    """Starts and tracks the evals; one worker thread per eval (they wait on a child)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._children: set[subprocess.Popen[str]] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self, alert: Alert) -> bool:
        """Starts the eval a new model change alert queued; False when it queued none."""
        plan = (alert.detail or {}).get("eval") or {}
        target = self.settings.watch.eval_on_model_change.get(alert.agent or "")
        if alert.kind != "model_change" or plan.get("status") != "queued" or target is None:
            return False
        thread = threading.Thread(target=self._run, args=(alert, plan, target), daemon=True,
                                  name=f"tether-eval-{alert.id}")  # fmt: skip
        with self._lock:
            if self._closed:
                return False
            self._threads.append(thread)
        thread.start()
        return True

    def wait(self, timeout_s: float) -> None:
        """Waits for the evals started so far (tests, shutdown)."""
        for t in list(self._threads):
            t.join(timeout_s)

    def close(self) -> None:
        """Stops the children still running (the server is going away)."""
        with self._lock:
            self._closed = True
            children = list(self._children)
        for child in children:
            child.terminate()

    def _run(self, alert: Alert, plan: dict[str, Any], target: ModelChangeEval) -> None:
        agent = alert.agent or ""
        running = plan | {"status": "running", "started_at": datetime.now(UTC).isoformat()}
        update_detail(self.engine, alert.id, "eval", running)
        key, secret = create_key(self.engine, scopes="admin,agent,ingest", agent=agent,
                                 name=f"model-change eval {alert.id}"[:200],
                                 actor="tether:watch")  # fmt: skip
        try:
            outcome = self._eval(plan, target, secret)
        # The eval's boundary: whatever goes wrong is recorded on the alert, never lost in a
        # thread nobody watches.
        except Exception as exc:
            log.exception("model change eval for %s failed", agent)
            outcome = {"status": "errored", "reason": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            revoke_key(self.engine, key.id, actor="tether:watch")
        done = running | outcome | {"ended_at": datetime.now(UTC).isoformat()}
        update_detail(self.engine, alert.id, "eval", done)

    def _eval(self, plan: dict[str, Any], target: ModelChangeEval, secret: str) -> dict[str, Any]:
        source = get_eval_source(self.engine, plan["from_eval"])
        base = f"http://{self.settings.host}:{self.settings.port}"
        with tempfile.TemporaryDirectory(prefix="tether-eval-") as tmp:
            suite = Path(tmp) / "suite.yaml"
            suite.write_text(source, encoding="utf-8")
            argv = [sys.executable, "-m", "tether.cli.main", "eval", "run", str(suite),
                    "--agent", target.agent, "--version", plan["version"], "--json"]  # fmt: skip
            if target.repeats is not None:
                argv += ["--repeat", str(target.repeats)]
            # the child is tether's own CLI: it reaches this server with the minted key
            env = dict(os.environ) | {"TETHER_URL": base, "TETHER_API_KEY": secret}
            env.pop("TETHER_DATABASE_URL", None)
            child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=tmp)  # fmt: skip
            with self._lock:
                self._children.add(child)
            try:
                out, err = child.communicate(timeout=target.timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
                return {"status": "errored", "reason": f"timed out after {target.timeout_s:g}s"}
            finally:
                with self._lock:
                    self._children.discard(child)
        return _outcome(child.returncode, out, err)


def get_eval_source(engine: Engine, eval_id: str) -> str:
    return str(get_eval(engine, eval_id)["suite_source"])


def _outcome(code: int, out: str, err: str) -> dict[str, Any]:
    try:
        ev = json.loads(out)
    except ValueError:
        tail = (err or out or "").strip().splitlines()[-1:] or [""]
        return {"status": "errored", "exit_code": code, "reason": tail[0][:500]}
    success = ev.get("success") or {}
    return {"status": "finished", "exit_code": code, "eval_id": ev.get("id"),
            "successes": success.get("successes"), "total": success.get("total"),
            "rate": success.get("rate"), "low": success.get("low"),
            "high": success.get("high")}  # fmt: skip
