"""The `falback` command as a real subprocess with a config's environment: one-shot
commands run to completion, and long-running ones (relay, cron) bounded in time and
always stopped, with their output collected for assertions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.config import Config
from tests.support.wait import wait_for


def command_env(config: Config) -> dict[str, str]:
    """This process's environment plus the variables that make a child read `config`."""
    return {**os.environ, **config.as_env()}


def falback(
    config: Config, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `falback ARGS...` to completion; its exit code and output are the caller's to
    check. `env` adds variables over the config's (say, a value Config would refuse)."""
    return subprocess.run(
        [sys.executable, "-m", "falback", *args],
        env={**command_env(config), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Spawned:
    """A long-running command whose output lines (stdout and stderr) are collected as they
    come. With `group`, it gets a process group of its own and stop() signals the whole
    group, as a platform stopping a Procfile process does."""

    def __init__(
        self, argv: list[str], *, env: dict[str, str], cwd: Path | None = None, group: bool = False
    ) -> None:
        self.lines: list[str] = []
        self.group = group
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=group,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def wait_for_log(self, text: str, timeout: float = 10, times: int = 1) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"process exited ({self.process.returncode}):\n{self.output}")
            return self.count(text) >= times

        try:
            wait_for(seen, timeout, repr(text))
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- output ---\n{self.output}") from None

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; return the exit code."""
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(5)
        if self.group:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # whatever it left behind
            except ProcessLookupError:
                pass
        self._reader.join(5)
        return self.process.returncode

    def _signal(self, signum: int) -> None:
        if self.group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)


class Background(Spawned):
    """A long-running `falback` command run with `config` as its environment."""

    def __init__(self, config: Config, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(
            [sys.executable, "-m", "falback", *args],
            env={**command_env(config), "PYTHONUNBUFFERED": "1", **(env or {})},
        )


@contextmanager
def background(config: Config, *args: str, env: dict[str, str] | None = None) -> Iterator[Background]:
    process = Background(config, *args, env=env)
    try:
        yield process
    finally:
        process.stop()
