"""One OpenVINO Core per process: engines opened and released in any order leave the process's
signal handling intact (issue #25, the single-process suite's SIGSEGV; see ``shared_core``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from edgepath.runtime import open_engine

pytest.importorskip("openvino")

# Opens two OpenVINO engines, releases them first in, first out, then takes a SIGCHLD through a
# Python handler (SA_ONSTACK, like torch DataLoader's). With one Core per engine, OpenVINO's CPU
# plugin left the thread's alternate signal stack unmapped and the kernel killed this process
# with SIGSEGV in waitpid.
CHILD = textwrap.dedent(
    """
    import ctypes, gc, os, signal, sys
    from edgepath.runtime import open_engine

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    def altstack_mapped():
        st = Stack()
        assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(st)) == 0
        if st.flags & 2 or not st.sp:  # SS_DISABLE: no alternate stack
            return True
        for line in open("/proc/self/maps"):
            lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
            if lo <= st.sp and st.sp + st.size <= hi:
                return True
        return False

    a = open_engine(sys.argv[1], engine="openvino")
    b = open_engine(sys.argv[1], engine="openvino")
    a.close(); del a; gc.collect()
    b.close(); del b; gc.collect()
    print("altstack mapped:", altstack_mapped(), flush=True)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("survived SIGCHLD", flush=True)
    """
)


@pytest.fixture(scope="module")
def artifact(tiny_encoder, tmp_path_factory):
    from edgepath.export.onnx import export_onnx
    from edgepath.models.artifact import new_manifest, write_manifest

    folder = tmp_path_factory.mktemp("ov-core")
    export_onnx(tiny_encoder, folder / "model.onnx")
    manifest = new_manifest("export", tiny_encoder.spec, engine="openvino")
    manifest["files"] = {"onnx": "model.onnx"}
    write_manifest(folder, manifest)
    return folder


@pytest.mark.skipif(sys.platform != "linux", reason="sigaltstack and /proc/self/maps: Linux")
def test_engines_released_in_any_order_leave_signals_deliverable(artifact) -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(artifact)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr[-2000:])
    assert "altstack mapped: True" in run.stdout
    assert "survived SIGCHLD" in run.stdout


def test_engines_share_the_process_core(artifact, tiles, monkeypatch) -> None:
    import openvino as ov

    from edgepath.runtime.openvino_engine import shared_core

    core = shared_core()
    assert shared_core() is core

    def no_new_core(*args, **kwargs):
        raise AssertionError("ov.Core() called: take shared_core() instead")

    monkeypatch.setattr(ov, "Core", no_new_core)
    first = open_engine(artifact, engine="openvino").embed_tiles(tiles)
    second = open_engine(artifact, engine="openvino").embed_tiles(tiles)
    assert first.shape == (len(tiles), 128)
    assert (first == second).all()
