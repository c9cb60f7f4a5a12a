"""atomic.py: what gets replaced, written through or refused, and the output checks made before a run."""

import os
import stat
import threading

import pytest

import pabench.atomic
from pabench.atomic import atomic_write_text, check_output_path, check_outputs, output_kind
from pabench.errors import ConfigError, OutputError


def _stat_of(mode: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, 0, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("mode, kind", [
    (stat.S_IFREG | 0o644, "replace"),
    (stat.S_IFCHR | 0o666, "stream"),   # /dev/null, /dev/stdout's target, a tty: never replaced
    (stat.S_IFIFO | 0o600, "stream"),
    (stat.S_IFDIR | 0o755, "refuse"),
    (stat.S_IFBLK | 0o660, "refuse"),   # a disk: never written, never replaced
    (stat.S_IFSOCK | 0o777, "refuse"),
])
def test_output_kind_decides_from_stat(mode, kind):
    assert output_kind(_stat_of(mode)) == kind


def test_output_kind_of_nothing_is_a_new_file():
    assert output_kind(None) == "replace"


def test_a_fifo_is_written_through_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write_text(fifo, "a,b\n1,2\n")
    reader.join(10)
    assert got == [b"a,b\n1,2\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temp file left beside it


def test_a_symlink_is_followed_and_its_target_replaced(tmp_path):
    (tmp_path / "runs").mkdir()
    real = tmp_path / "runs" / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to("runs/real.csv")
    written = atomic_write_text(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == "runs/real.csv"
    assert real.read_text() == "new\n" and written == real.resolve()


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "latest.csv"
    link.symlink_to(tmp_path / "sub" / "real.csv")
    atomic_write_text(link, "x\n")
    assert link.is_symlink() and (tmp_path / "sub" / "real.csv").read_text() == "x\n"


def test_a_directory_is_refused_with_the_users_path(tmp_path):
    with pytest.raises(OutputError, match=f"cannot write {tmp_path}: it is a directory"):
        atomic_write_text(tmp_path, "x")


def test_dash_is_stdout(capfdbinary):
    atomic_write_text("-", "a,b\n")
    assert capfdbinary.readouterr().out == b"a,b\n"


def test_a_failed_write_names_the_users_path_not_the_temp_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pabench.atomic.os, "fsync", boom)
    with pytest.raises(OutputError) as error:
        atomic_write_text(tmp_path / "out.csv", "x")
    assert str(error.value) == f"cannot write {tmp_path / 'out.csv'}: No space left on device"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "out.csv"

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(pabench.atomic.os, failing, boom)
    with pytest.raises(OutputError, match="disk on fire"):
        atomic_write_text(target, "new\n")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file
    monkeypatch.undo()
    atomic_write_text(target, "old\n")
    monkeypatch.setattr(pabench.atomic.os, failing, boom)
    with pytest.raises(OutputError):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]


def test_atomic_write_keeps_usual_permissions(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    fresh = atomic_write_text(tmp_path / "new.txt", "x")
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~mask
    (tmp_path / "old.txt").write_text("y")
    (tmp_path / "old.txt").chmod(0o640)
    assert atomic_write_text(tmp_path / "old.txt", "z").stat().st_mode & 0o777 == 0o640


# ---- checks before a run ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path, message", [
    ("", "--csv: empty path"),
    ("  ", "--csv: empty path"),
    ("{tmp}", "--csv {tmp}: is a directory"),
    ("{tmp}/new/", "--csv {tmp}/new/: names a directory"),
    ("{tmp}/file.csv/x.csv", "--csv {tmp}/file.csv/x.csv: {tmp}/file.csv is not a directory"),
])
def test_check_output_path_refuses(tmp_path, path, message):
    (tmp_path / "file.csv").write_text("x")
    with pytest.raises(ConfigError) as error:
        check_output_path(path.format(tmp=tmp_path), "--csv")
    assert str(error.value).startswith(message.format(tmp=tmp_path))


def test_check_output_path_accepts_new_files_fifos_and_links(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    for path in ("-", tmp_path / "a.csv", tmp_path / "deep" / "er" / "a.csv", tmp_path / "pipe", tmp_path / "link.csv"):
        check_output_path(path, "--csv")


def test_check_output_path_refuses_a_read_only_filesystem(tmp_path, monkeypatch):
    monkeypatch.setattr(pabench.atomic, "_read_only_fs", lambda path: path == str(tmp_path))
    with pytest.raises(ConfigError, match="is on a read-only filesystem"):
        check_output_path(tmp_path / "sub" / "a.csv", "--json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere permissions allow nothing")
def test_check_output_path_refuses_a_directory_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="permission denied"):
        check_output_path(locked / "a.csv", "--csv")


def test_check_outputs_refuses_two_outputs_naming_one_file(tmp_path):
    (tmp_path / "link.csv").symlink_to(tmp_path / "a.csv")
    with pytest.raises(ConfigError, match="--csv and --json name the same file"):
        check_outputs({"--csv": tmp_path / "a.csv", "--json": tmp_path / "./a.csv"})
    with pytest.raises(ConfigError, match="--csv and --json name the same file"):
        check_outputs({"--csv": tmp_path / "a.csv", "--json": tmp_path / "link.csv"})
    with pytest.raises(ConfigError, match="--csv and --json both write to stdout"):
        check_outputs({"--csv": "-", "--json": "-"})
    check_outputs({"--csv": tmp_path / "a.csv", "--json": None})


def test_check_outputs_refuses_overwriting_an_input(tmp_path):
    (tmp_path / "r.csv").write_text("backend\n")
    with pytest.raises(ConfigError, match="would overwrite its input"):
        check_outputs({"--output": tmp_path / "r.csv"}, {"input 1": tmp_path / "r.csv"})


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_link_to_a_pipe_is_written_through(tmp_path):
    """/dev/stdout is a link to /proc/self/fd/1, whose target (pipe:[123]) is no path: open it by its name."""
    read_end, write_end = os.pipe()
    link = tmp_path / "stdout"
    link.symlink_to(f"/proc/self/fd/{write_end}")  # what /dev/stdout is when stdout is a pipe
    try:
        check_outputs({"--json": link})
        atomic_write_text(link, "{}\n")
        os.close(write_end)
        assert os.read(read_end, 100) == b"{}\n"
    finally:
        os.close(read_end)
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["stdout"]
