"""Run a real Triton server on loopback from the binary ``nvidia-pytriton`` bundles.

For the integration tests and the backend benchmark, not for production (a
deployment runs the Triton image, see ``docker/``). pytriton 0.7.0 ships
``tritonserver`` and the Python backend (no onnxruntime backend), so the
repository must be the ``python`` variant. What pytriton itself does before
launching, done here without importing it (its numpy<2 pin clashes with
ours; ``make triton-server`` installs the wheel with ``--target``):

* the backend stub matching this Python's version is copied next to
  ``libtriton_python.so`` in a private backends dir;
* ``LD_LIBRARY_PATH`` gets the wheel's ``nvidia_pytriton.libs`` (the copied
  backend loses its relative RPATH) and this Python's ``LIBDIR`` (the stub
  embeds libpython, and must embed *this* one, not the system's);
* the stub's embedded Python runs isolated (``PYTHONPATH`` is ignored) and
  finds its environment as the first ``python3`` on ``PATH``, so a throw-away
  venv is put first: its ``.pth`` lists the wheel's install dir, which must
  hold ``numpy<2`` (the stub's pybind11 predates numpy 2 and reads a numpy-2
  array's item size as 0: every output tensor would arrive empty), then this
  interpreter's ``sys.path``, so ``model.py`` uses the same onnxruntime as the
  in-process extractor. ``make triton-server`` installs both into build/.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType

from kiwi_fhir.errors import BackendUnavailableError, ConfigError

_REPO_ROOT = Path(__file__).resolve().parents[2]


def find_tritonserver() -> Path:
    """The ``pytriton/tritonserver`` dist dir: ``$KIWI_FHIR_TRITONSERVER``, import path, build/."""
    candidates: list[Path] = []
    if env := os.environ.get("KIWI_FHIR_TRITONSERVER"):
        candidates.append(Path(env))
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "tritonserver" for p in spec.submodule_search_locations]
    candidates.append(_REPO_ROOT / "build" / "pytriton" / "pytriton" / "tritonserver")
    for c in candidates:
        if (c / "bin" / "tritonserver").is_file():
            return c
    raise ConfigError(
        "no tritonserver binary found; run 'make triton-server' "
        "(installs nvidia-pytriton==0.7.0 into build/pytriton)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalTritonServer:
    """``with LocalTritonServer(repo) as srv: srv.grpc_url`` -- always stopped on exit."""

    def __init__(
        self,
        repository: Path,
        *,
        models: tuple[str, ...] = (),
        startup_timeout_s: float = 180.0,
        dist: Path | None = None,
    ) -> None:
        self.repository = repository
        self.models = models
        self.startup_timeout_s = startup_timeout_s
        self.dist = dist or find_tritonserver()
        self.grpc_port = _free_port()
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self._work = Path(tempfile.mkdtemp(prefix="kiwi-triton-"))
        self.log_path = self._work / "tritonserver.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _backends(self) -> Path:
        backends = self._work / "backends"
        shutil.copytree(self.dist / "backends", backends)
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.dist / "python_backend_stubs" / ver / "triton_python_backend_stub"
        if not stub.is_file():
            raise ConfigError(f"nvidia-pytriton has no Python backend stub for Python {ver}")
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
        return backends

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [
            str(self.dist.parent.parent / "nvidia_pytriton.libs"),
            str(sysconfig.get_config_var("LIBDIR")),
        ]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["PATH"] = os.pathsep.join([str(self._stub_env() / "bin"), env.get("PATH", "")])
        return env

    def _stub_env(self) -> Path:
        """A venv without pip whose site dir points at numpy<2, then at ours."""
        venv = self._work / "stub-env"
        base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python3").symlink_to(base)
        (venv / "pyvenv.cfg").write_text(
            f"home = {base.parent}\ninclude-system-site-packages = false\n", encoding="utf-8"
        )
        ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site = venv / "lib" / ver / "site-packages"
        site.mkdir(parents=True)
        paths = [str(self.dist.parent.parent)]
        paths += [p for p in sys.path if p and Path(p).is_dir() and "site-packages" in p]
        (site / "kiwi_fhir_stub.pth").write_text("\n".join(paths) + "\n", encoding="utf-8")
        return venv

    def start(self) -> LocalTritonServer:
        self._work.mkdir(parents=True, exist_ok=True)  # stop() removed it
        cmd = [
            str(self.dist / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends()}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-http=false",
            "--allow-metrics=false",
            # A unique shm prefix: parallel servers (xdist, CI) must not collide.
            f"--backend-config=python,shm-region-prefix-name=kiwi{os.getpid()}_{secrets.token_hex(3)}",
            "--exit-timeout-secs=10",
            "--log-verbose=0",
        ]
        if self.models:
            cmd += ["--model-control-mode=explicit"] + [f"--load-model={m}" for m in self.models]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + self.startup_timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise BackendUnavailableError(
                        "triton", self.grpc_url, f"tritonserver exited: {self.log_tail()}"
                    )
                with contextlib.suppress(InferenceServerException):
                    if client.is_server_ready(client_timeout=2) and all(
                        client.is_model_ready(m, client_timeout=2) for m in self.models
                    ):
                        return
                time.sleep(0.5)
        finally:
            client.close()
        raise BackendUnavailableError(
            "triton", self.grpc_url, f"not ready before the timeout: {self.log_tail()}"
        )

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole process group (the backend stubs too)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
        shutil.rmtree(self._work, ignore_errors=True)  # the log goes too: read it before

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
