"""The CPU-contention warning (from readings, no loaded machine needed) and `--threads`."""

import pytest
import torch
from typer.testing import CliRunner

from pabench.cli import app
from pabench.cli.cpuload import CpuReading, LoadWatch, contention, other_busy_cores, read_cpu

runner = CliRunner()


def _at(wall, busy, own):
    return CpuReading(wall_s=wall, busy_s=busy, own_s=own)


def test_other_processes_busy_cores_are_all_busy_time_minus_this_process_s():
    assert other_busy_cores(_at(0, 0, 0), _at(2, 10, 4)) == 3.0  # 10 busy core-seconds, 4 ours, over 2 s
    assert other_busy_cores(_at(0, 0, 0), _at(2, 3, 4)) == 0.0  # rounding of the tick counts: never negative


def test_a_warning_names_the_load_seen_only_when_it_takes_torch_s_cores():
    idle, busy = _at(10, 100, 50), _at(12, 100 + 2 * 8, 50 + 2 * 6)  # 2 s: 8 cores busy, 6 of them ours -> 2 other
    assert contention(idle, busy, num_cores=8, threads=6, what="paged") is None  # 2 cores left free: room enough
    message = contention(idle, busy, num_cores=8, threads=8, what="paged")
    assert message.startswith("warning: other processes kept 2.0 of 8 CPU cores busy during paged (8 torch threads)")
    assert message.endswith("or give --threads 6)")
    slack = _at(12, 100 + 2 * 6.4, 50 + 2 * 6)  # 0.4 other cores: background noise, within SLACK_CORES
    assert contention(idle, slack, num_cores=6, threads=6, what="paged") is None
    assert contention(idle, _at(10.1, 200, 50), 8, 8, "paged") is None  # too short a window to judge
    assert contention(None, busy, 8, 8, "paged") is None  # no /proc/stat: no check


def test_the_watch_closes_one_window_per_label_and_the_last_at_the_end():
    readings = iter([_at(0, 0, 0), _at(1, 2, 1), _at(3, 6, 5), _at(5, 12, 7)])
    warnings = []
    watch = LoadWatch(threads=2, warn=warnings.append, read=lambda: next(readings), num_cores=2)
    watch.seen("paged")  # the first label: its window starts here (reading 2)
    watch.seen("paged")
    watch.seen("contiguous-max")  # paged's window ends: 4 busy, 4 ours in 2 s -> no load
    watch.finish()  # contiguous-max's: 6 busy, 2 ours in 2 s -> 2 other cores
    assert len(warnings) == 1 and "during contiguous-max" in warnings[0] and "kept 2.0 of 2" in warnings[0]


def test_proc_stat_is_read_where_there_is_one(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 1000 7 0 10 5 0 0\ncpu0 1 2 3\n")
    reading = read_cpu(str(stat))
    assert reading is not None and reading.busy_s * __import__("os").sysconf("SC_CLK_TCK") == pytest.approx(165)
    assert read_cpu(str(tmp_path / "missing")) is None


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_sets_torch_s_threads_and_the_header_says_so(torch_threads):
    res = runner.invoke(app, ["run", "--threads", "1", "--num-requests", "2", "--backend", "paged",
                              "--max-model-len", "512", "--no-progress"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert "on cpu, 1 thread |" in res.stdout and torch.get_num_threads() == 1
    res = runner.invoke(app, ["run", "--threads", "0", "--no-progress"])
    assert res.exit_code == 1 and res.stderr.strip() == "pabench: error: --threads must be >= 1, got 0"
