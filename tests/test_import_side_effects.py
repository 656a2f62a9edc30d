"""Importing the package changes nothing in the process (issue 9): the OpenMP wait policy and glibc's
memory setting are made by pipeline.prepare_process, which the entry points call; the umask is read, not
flipped, at import."""
import os
import subprocess
import sys


def test_importing_the_package_sets_no_environment_variable():
    code = ("import os, pipeline, pipeline.sam, pipeline.fileio, pipeline.sweep, pipeline.diffusion.dataset\n"
            "print('OMP' if 'OMP_WAIT_POLICY' in os.environ else 'none', pipeline.OMP_WAIT_POLICY_CHOICE[:11])\n"
            "pipeline.prepare_process()\n"
            "print(pipeline.OMP_WAIT_POLICY_CHOICE[:11] != 'not chosen ')")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["none", "not", "chosen", "True"], out.stdout


def test_atomic_writes_keep_the_umask_permissions(tmp_path):
    from pipeline.fileio import atomic_write_text
    old = os.umask(0o027)
    try:
        import pipeline.fileio as F
        F._UMASK = None  # read afresh: this process's umask now
        p = atomic_write_text(tmp_path / "a.txt", "x")
        assert os.stat(p).st_mode & 0o777 == 0o640 and os.umask(0o027) == 0o027  # read, not changed
    finally:
        os.umask(old)
        F._UMASK = None
