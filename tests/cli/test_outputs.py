"""Where `pabench` writes: output paths refused before the run, streams written through, links followed, Ctrl-C
keeping what finished, plot formats by extension; plus the small CLI conventions (--version, help, conflicts)."""

import io
import os
import stat
import subprocess
import sys
import threading

import pandas as pd
import pytest
from typer.testing import CliRunner

from pabench.cli import app

runner = CliRunner()
SMALL = ["--num-requests", "4", "--no-progress", "--max-model-len", "256", "--layers", "1"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(res) -> str:
    """The one error line on stderr (other stderr lines, such as 'wrote ...', are not errors)."""
    lines = [line for line in res.stderr.strip().splitlines() if not line.startswith("wrote ")]
    assert len(lines) == 1 and lines[0].startswith("pabench: error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--csv", "{tmp}"], "--csv {tmp}: is a directory"),
    (["--csv", ""], "--csv: empty path"),
    (["--json", "{tmp}/file.csv/r.json"], "--json {tmp}/file.csv/r.json: {tmp}/file.csv is not a directory"),
    (["--csv", "{tmp}/r.csv", "--json", "{tmp}/r.csv"], "--csv and --json name the same file"),
    (["--csv", "{tmp}/ok.csv", "--json", "{tmp}"], "--json {tmp}: is a directory"),
    (["--csv", "-", "--json", "-"], "--csv and --json both write to stdout"),
])
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_bad_output_paths_fail_before_anything_runs(tmp_path, command, args, message):
    (tmp_path / "file.csv").write_text("x")
    before = sorted(os.listdir(tmp_path))
    res = invoke(command, *SMALL, *[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 1
    assert one_error_line(res).startswith(f"pabench: error: {message.format(tmp=tmp_path)}")
    assert res.stdout == ""  # no header, no table: nothing ran
    assert sorted(os.listdir(tmp_path)) == before  # not even the good one of two outputs


def test_a_read_only_parent_fails_before_the_run(tmp_path, monkeypatch):
    import pabench.atomic

    monkeypatch.setattr(pabench.atomic, "_read_only_fs", lambda path: path == str(tmp_path))
    res = invoke("run", *SMALL, "--csv", tmp_path / "r.csv")
    assert res.exit_code == 1 and "read-only filesystem" in one_error_line(res) and res.stdout == ""


def test_kernels_checks_its_outputs_before_timing(tmp_path):
    res = invoke("kernels", "--csv", tmp_path, "--device", "cpu")
    assert res.exit_code == 1 and one_error_line(res).endswith("is a directory; give a file name inside it")


def test_run_writes_through_a_fifo_and_follows_a_symlink(tmp_path):
    fifo = tmp_path / "csv.pipe"
    os.mkfifo(fifo)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "7.json").write_text("{}")
    link = tmp_path / "latest.json"
    link.symlink_to("runs/7.json")
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    res = invoke("run", *SMALL, "--backend", "paged,contiguous-oracle", "--csv", fifo, "--json", link)
    reader.join(60)
    assert res.exit_code == 0, res.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert list(pd.read_csv(io.StringIO(got[0]))["backend"]) == ["paged", "contiguous-oracle"]
    assert '"rows"' in (tmp_path / "runs" / "7.json").read_text()


def test_csv_to_stdout_keeps_stdout_for_the_csv(tmp_path):
    res = invoke("run", *SMALL, "--backend", "paged", "--csv", "-")
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(io.StringIO(res.stdout))  # nothing but the CSV on stdout
    assert list(frame["backend"]) == ["paged"]
    assert "out tok/s" in res.stderr  # the tables went to stderr


def _interrupt_at(monkeypatch, backend_name: str):
    """Make `run_backend` raise KeyboardInterrupt (what Ctrl-C raises) when it reaches `backend_name`."""
    import pabench.bench.runner as runner_module

    real = runner_module.run_backend

    def run_backend(p, name, on_progress=None):
        if name == backend_name:
            raise KeyboardInterrupt
        return real(p, name, on_progress)

    monkeypatch.setattr(runner_module, "run_backend", run_backend)


def test_ctrl_c_keeps_the_finished_backends_marked_interrupted(tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, "contiguous-pow2")
    res = invoke("run", *SMALL, "--csv", tmp_path / "r.csv", "--json", tmp_path / "r.json")
    assert res.exit_code == 130
    assert one_error_line(res) == ("pabench: error: interrupted before contiguous-pow2, contiguous-oracle "
                                   "finished; the finished runs were written, marked interrupted")
    frame = pd.read_csv(tmp_path / "r.csv")
    assert list(frame["backend"]) == ["paged", "contiguous-max"] and frame["interrupted"].all()
    assert "contiguous-max" in res.stdout and "did not finish" in res.stdout


def test_ctrl_c_before_any_backend_finished_writes_nothing(tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, "paged")
    res = invoke("run", *SMALL, "--csv", tmp_path / "r.csv")
    assert res.exit_code == 130 and "no result file was written" in one_error_line(res)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_a_sweep_keeps_the_finished_points(tmp_path, monkeypatch):
    import pabench.bench.runner as runner_module

    real, calls = runner_module.run_backend, []

    def run_backend(p, name, on_progress=None):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(p, name, on_progress)

    monkeypatch.setattr(runner_module, "run_backend", run_backend)
    res = invoke("sweep", *SMALL, "--backend", "paged", "--page-sizes", "8,16", "--csv", tmp_path / "s.csv")
    assert res.exit_code == 130, res.output
    frame = pd.read_csv(tmp_path / "s.csv")
    assert list(frame["sweep_page_size"]) == [8] and frame["interrupted"].all()


def test_a_real_sigint_keeps_what_finished(tmp_path):
    """The signal itself, in a real process: the second backend's start sends SIGINT to the process."""
    code = ("import os, signal, sys\n"
            "import pabench.bench.runner as r\n"
            "real = r.run_backend\n"
            "def run_backend(p, name, cb=None):\n"
            "    if name == 'contiguous-oracle':\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "    return real(p, name, cb)\n"
            "r.run_backend = run_backend\n"
            "from pabench.cli import main\n"
            "main(sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-c", code, "run", *SMALL, "--backend", "paged,contiguous-oracle",
                           "--csv", str(tmp_path / "r.csv")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("pabench: error: interrupted before contiguous-oracle")
    assert "Traceback" not in done.stderr
    assert list(pd.read_csv(tmp_path / "r.csv")["backend"]) == ["paged"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]  # no temp file left


@pytest.fixture(scope="module")
def sweep_csv():
    return os.path.join(os.path.dirname(__file__), "..", "fixtures", "sweep_grid.csv")


@pytest.mark.parametrize("name, magic", [("out.pdf", b"%PDF"), ("out.svg", b"<?xml"), ("out.png", b"\x89PNG")])
def test_plot_writes_the_format_its_extension_names(tmp_path, sweep_csv, name, magic):
    pytest.importorskip("matplotlib")
    res = invoke("plot", sweep_csv, "-o", tmp_path / name)
    assert res.exit_code == 0, res.output
    assert (tmp_path / name).read_bytes().startswith(magic)


@pytest.mark.parametrize("output, message", [
    ("{tmp}/out.jpg", "extension .jpg; name the image .png, .pdf or .svg"),
    ("{tmp}/out", "no extension; name the image .png, .pdf or .svg"),
    ("{tmp}", "--output {tmp}: is a directory"),
])
def test_plot_refuses_what_it_cannot_write(tmp_path, sweep_csv, output, message):
    res = invoke("plot", sweep_csv, "-o", output.format(tmp=tmp_path))
    assert res.exit_code == 1 and message.format(tmp=tmp_path) in one_error_line(res)


def test_plot_refuses_to_overwrite_its_input(tmp_path):
    (tmp_path / "r.png").write_text("backend\npaged\n")
    res = invoke("plot", tmp_path / "r.png", "-o", tmp_path / "r.png")
    assert res.exit_code == 1 and "would overwrite its input" in one_error_line(res)


@pytest.mark.parametrize("args, message", [
    (["--backend", "paged+prefix,paged-noprefix", "--no-prefix-caching"],
     "--no-prefix-caching contradicts backend paged+prefix, which sets prefix caching on itself"),
    (["--backend", "paged-noprefix", "--prefix-caching"],
     "--prefix-caching contradicts backend paged-noprefix, which sets prefix caching off itself"),
])
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_prefix_flag_contradicting_a_backend_is_an_error(command, args, message):
    res = invoke(command, *SMALL, *args)
    assert res.exit_code == 1 and message in one_error_line(res) and res.stdout == ""


def test_version():
    import pabench

    done = subprocess.run([sys.executable, "-m", "pabench", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"pabench {pabench.__version__}"


@pytest.mark.parametrize("command", ["run", "sweep", "kernels", "explain", "check"])
def test_help_shows_flags_without_bool_metavars(command):
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "160"})
    assert res.exit_code == 0 and "--help" in res.stdout
    assert "<bool>" not in res.stdout


def test_sigint_exit_code_is_130_not_a_traceback_when_nothing_ran():
    """Ctrl-C while preparing: one line, 130."""
    code = ("import os, signal, sys\n"
            "import pabench.bench.runner as r\n"
            "def prepare(cfg, model=None):\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "r.prepare = prepare\n"
            "from pabench.cli import main\n"
            "main(sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-c", code, "run", "--no-progress"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130 and done.stderr.strip() == "pabench: error: interrupted; no result file was written"



def test_ctrl_c_during_repeats_stops_them_and_keeps_what_finished(tmp_path, monkeypatch):
    import pabench.bench.runner as runner_module

    real, calls = runner_module.run_backend, []

    def run_backend(p, name, on_progress=None):
        calls.append(name)
        if len(calls) == 3:  # repeat 2's first backend
            raise KeyboardInterrupt
        return real(p, name, on_progress)

    monkeypatch.setattr(runner_module, "run_backend", run_backend)
    res = invoke("run", *SMALL, "--backend", "paged,contiguous-oracle", "--repeat", "3", "--csv", tmp_path / "r.csv")
    assert res.exit_code == 130, res.output
    assert len(calls) == 3  # no third repeat after the Ctrl-C
    frame = pd.read_csv(tmp_path / "r.csv")
    assert list(frame["backend"]) == ["paged", "contiguous-oracle"] and frame["interrupted"].all()


def test_kernels_help_names_every_impl():
    """`--impls` help lists every implementation `pabench kernels` knows, FlashInfer's two paths included."""
    from pabench.kernelbench.run import IMPLS

    result = CliRunner().invoke(app, ["kernels", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    missing = [name for name in IMPLS if name not in text]
    assert not missing, missing
